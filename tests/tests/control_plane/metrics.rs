//! `GET /metrics`, read as Prometheus reads it: the series move with invocations, a
//! quota refusal, a capability denial, a model call and a task; the metrics listener
//! serves them without a key and nothing else; the keyed route is for operator keys;
//! agent names label series only when the operator opts in.

use std::time::{Duration, Instant};

use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app_with};
use corral_tests::plugins::{ECHO, FETCH, TRIAGE};
use corral_tests::providers::{ModelServer, Provider};
use corral_tests::upstream::Upstream;
use prometheus_parse::{Sample, Scrape, Value as Metric};
use reqwest::Method;
use serde_json::json;

crate::on_both_backends!(
    metrics_count_what_happened,
    only_metrics_are_served_without_a_key,
    agent_names_label_series_only_when_asked,
);

const KEY: &str = "sk-metrics-test-key";

/// `GET /metrics` on the main listener with the admin key, parsed.
async fn scrape(app: &TestApp) -> Scrape {
    let reply = app
        .send_request(app.request(Method::GET, "/metrics", Some(ADMIN_KEY)))
        .await;
    assert_eq!(reply.status, 200, "{:#}", reply.body);
    let content_type = reply.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(reply.body.as_str().expect("text"))
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

/// The samples of `name` whose labels include `labels`.
fn samples<'a>(
    scrape: &'a Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> impl Iterator<Item = &'a Sample> {
    let labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    scrape.samples.iter().filter(move |s| {
        s.metric == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(k) == Some(v.as_str()))
    })
}

/// The value of the one sample of `name` with `labels`.
#[track_caller]
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = samples(scrape, name, labels).collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:#?}");
    match found[0].value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => v,
        ref other => panic!("{name} is not a number: {other:?}"),
    }
}

fn catalogue(dir: &std::path::Path, server: &ModelServer) -> std::path::PathBuf {
    let path = dir.join("models.json");
    let config = json!({
        "providers": { "local": { "kind": "openai", "base_url": server.url(), "api_key": KEY } },
        "models": { "fast": { "provider": "local", "model": "fast",
                              "input_per_million": "0.15", "output_per_million": "0.60" } },
    });
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

async fn metrics_count_what_happened(backend: Backend) {
    let server = ModelServer::start(Provider::OpenAi, KEY).await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let models = catalogue(dir.path(), &server);
    let app = spawn_app_with(backend, |config| config.llm_config = Some(models)).await;
    let before = scrape(&app).await;
    for outcome in ["succeeded", "agent_error", "host_failure"] {
        let count = value(&before, "corral_executions_total", &[("outcome", outcome)]);
        assert_eq!(count, 0.0, "{outcome}");
    }
    assert_eq!(value(&before, "corral_run_seconds_count", &[]), 0.0);
    assert_eq!(
        value(&before, "corral_tasks", &[("state", "succeeded")]),
        0.0
    );

    for (name, plugin) in [("echo", ECHO), ("fetch", FETCH), ("triage", TRIAGE)] {
        app.agent_with(name, plugin).await;
    }
    // One run, then a refusal by the rate quota.
    app.set_policy(
        "echo",
        json!({ "quotas": { "rate": { "requests": 1, "per": "hour", "burst": 1 } } }),
    )
    .await;
    let echo = json!({ "action": "echo", "input": { "n": 1 } });
    app.invoke("echo", ADMIN_KEY, echo.clone()).await.ok(200);
    app.invoke("echo", ADMIN_KEY, echo.clone())
        .await
        .assert_error(429, "rate_limited");
    app.set_policy("echo", json!({})).await;
    // A denial: fetch has no HTTP grant.
    let denied = app
        .invoke(
            "fetch",
            ADMIN_KEY,
            json!({ "action": "get", "input": { "url": upstream.url("/hello") } }),
        )
        .await
        .ok(200);
    assert_eq!(denied["outcome"], "agent_error", "{denied:#}");
    // A model call.
    app.set_policy(
        "triage",
        json!({ "grants": { "llm": { "models": ["fast"] } } }),
    )
    .await;
    let summarized = app
        .invoke(
            "triage",
            ADMIN_KEY,
            json!({ "action": "summarize", "input": { "text": "alpha beta" } }),
        )
        .await
        .ok(200);
    assert_eq!(summarized["outcome"], "succeeded", "{summarized:#}");
    let llm = &summarized["usage"]["llm"];
    // A task.
    let task = app
        .post("/v1/agents/echo/tasks", ADMIN_KEY, echo.clone())
        .await
        .ok(202);
    let id = task["id"].as_str().unwrap();
    let done = app
        .get(&format!("/v1/tasks/{id}?wait=10s"), ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(done["state"], "succeeded", "{done:#}");

    // Tasks are counted at most every few seconds: wait for the count to catch up.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let after = scrape(&app).await;
        if value(&after, "corral_tasks", &[("state", "succeeded")]) == 1.0 {
            break after;
        }
        assert!(Instant::now() < deadline, "the task was never counted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let count = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels);
    // echo, triage and the task succeeded; fetch failed; the refused one never ran.
    assert_eq!(
        count("corral_executions_total", &[("outcome", "succeeded")]),
        3.0
    );
    assert_eq!(
        count("corral_executions_total", &[("outcome", "agent_error")]),
        1.0
    );
    for histogram in [
        "run_seconds",
        "queue_wait_seconds",
        "commit_seconds",
        "peak_memory_bytes",
    ] {
        assert_eq!(
            count(&format!("corral_{histogram}_count"), &[]),
            4.0,
            "{histogram}"
        );
    }
    assert!(count("corral_fuel_total", &[]) > 0.0);
    assert!(count("corral_charged_picodollars_total", &[]) > 0.0);
    assert!(count("corral_peak_memory_bytes_sum", &[]) > 0.0);
    assert_eq!(
        count("corral_quota_refusals_total", &[("code", "rate_limited")]),
        1.0
    );
    let denials = |capability| {
        count(
            "corral_capability_denials_total",
            &[("capability", capability)],
        )
    };
    assert_eq!(denials("http"), 1.0);
    assert_eq!(denials("llm"), 0.0);
    let requests = |capability| {
        count(
            "corral_capability_requests_total",
            &[("capability", capability)],
        )
    };
    assert_eq!(requests("llm"), 1.0);
    assert_eq!(requests("http"), 0.0, "the denied request was not sent");
    assert_eq!(count("corral_model_calls_total", &[]), 1.0);
    assert_eq!(count("corral_model_calls_failed_total", &[]), 0.0);
    for direction in ["input", "output"] {
        let tokens = llm[format!("{direction}_tokens")].as_u64().unwrap();
        assert!(tokens > 0, "{llm:#}");
        assert_eq!(
            count("corral_model_tokens_total", &[("direction", direction)]),
            tokens as f64
        );
    }
    assert_eq!(
        count("corral_model_picodollars_total", &[]),
        llm["cost_picodollars"].as_i64().unwrap() as f64
    );
    // Three uploads compiled; the runs were served from memory.
    assert_eq!(count("corral_compiles_total", &[]), 3.0);
    assert_eq!(count("corral_compile_seconds_count", &[]), 3.0);
    assert!(count("corral_component_cache_hits_total", &[]) >= 4.0);
    // Every record was committed in some group commit.
    assert!(count("corral_group_commit_batch_size_count", &[]) >= 1.0);
    assert!(count("corral_group_commit_batch_size_sum", &[]) >= 4.0);
    assert!(count("corral_group_commit_seconds_count", &[]) >= 1.0);
    // Nothing runs now; the pools are as configured.
    assert_eq!(count("corral_instances_in_use", &[]), 0.0);
    assert_eq!(count("corral_instances_max", &[]), 1024.0);
    assert_eq!(count("corral_db_connections_max", &[]), 16.0);
    assert!(count("corral_db_connections", &[("state", "idle")]) >= 1.0);
    assert_eq!(count("corral_tasks", &[("state", "queued")]), 0.0);
    // Never an execution id, nor an agent's name without the opt-in.
    assert!(
        after
            .samples
            .iter()
            .all(|s| s.labels.get("agent").is_none())
    );
    app.stop().await;
}

async fn only_metrics_are_served_without_a_key(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let metrics_url = app.metrics_url.clone().expect("a metrics listener");
    let open = app
        .http
        .get(format!("{metrics_url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let text = open.text().await.unwrap();
    let parsed = parse(&text);
    assert_eq!(
        value(
            &parsed,
            "corral_executions_total",
            &[("outcome", "succeeded")]
        ),
        0.0
    );
    // Nothing else: not the API, not even with a key.
    for path in ["/v1/agents", "/healthz", "/v1/openapi.json", "/"] {
        let other = app
            .http
            .get(format!("{metrics_url}{path}"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 404, "{path}");
        let body: serde_json::Value = other.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{body:#}");
    }
    let post = app
        .http
        .post(format!("{metrics_url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);

    // The main listener keeps its key.
    app.send_request(app.request(Method::GET, "/metrics", None))
        .await
        .assert_error(401, "unauthenticated");
    let viewer = app.key("viewer").await;
    let seen = app
        .send_request(app.request(Method::GET, "/metrics", Some(&viewer)))
        .await;
    assert_eq!(seen.status, 200, "any role of the operator tenant");
    let (_, other) = app.tenant("other").await;
    app.send_request(app.request(Method::GET, "/metrics", Some(&other)))
        .await
        .assert_error(403, "forbidden");
    app.stop().await;
}

async fn agent_names_label_series_only_when_asked(backend: Backend) {
    let app = spawn_app_with(backend, |config| config.metrics_agent_labels = true).await;
    app.agent_with("echo", ECHO).await;
    let echo = json!({ "action": "echo", "input": { "n": 1 } });
    let ran = app.invoke("echo", ADMIN_KEY, echo).await.ok(200);
    let after = scrape(&app).await;
    let labels = [("outcome", "succeeded"), ("agent", "echo")];
    assert_eq!(value(&after, "corral_executions_total", &labels), 1.0);
    assert_eq!(
        value(&after, "corral_fuel_total", &[("agent", "echo")]),
        ran["usage"]["fuel"].as_u64().unwrap() as f64
    );
    let id = ran["execution_id"].as_str().unwrap();
    assert!(
        after
            .samples
            .iter()
            .all(|s| !format!("{:?}", s.labels).contains(id))
    );
    app.stop().await;
}
