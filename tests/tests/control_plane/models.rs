//! Model calls under `corral serve`, on both backends: the operator's catalogue, grants
//! checked against it, every call recorded with its exact cost in `llm_calls` and in
//! the execution's cost, token budgets refusing and bounding, the refusal audited, and
//! no provider key in any response or row. And the same agent under `corral run`.

use std::process::Command;

use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app_with};
use corral_tests::harness::corral_bin;
use corral_tests::plugins::TRIAGE;
use corral_tests::providers::{ModelServer, Provider};
use reqwest::Method;
use serde_json::{Value, json};

crate::on_both_backends!(model_calls_are_granted_recorded_priced_and_budgeted);

const KEY: &str = "sk-serve-test-key-777";

/// A catalogue file for `server`: alias `fast` at $0.15 / $0.60 per million tokens.
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

async fn set_policy(app: &TestApp, policy: Value) -> corral_tests::app::Reply {
    app.send(
        Method::PUT,
        "/v1/agents/triage/policy",
        Some(ADMIN_KEY),
        Some(policy),
    )
    .await
}

fn summarize() -> Value {
    json!({ "action": "summarize", "input": { "text": "alpha beta" } })
}

async fn model_calls_are_granted_recorded_priced_and_budgeted(backend: Backend) {
    let server = ModelServer::start(Provider::OpenAi, KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let path = catalogue(dir.path(), &server);
    let app = spawn_app_with(backend, |config| config.llm_config = Some(path.clone())).await;
    app.agent_with("triage", TRIAGE).await;

    // Only configured aliases can be granted.
    set_policy(
        &app,
        json!({ "grants": { "llm": { "models": ["smart"] } } }),
    )
    .await
    .assert_error(400, "invalid_policy");
    // Not granted yet: the call is denied, recorded and audited, and nothing was sent.
    let denied = app.invoke("triage", ADMIN_KEY, summarize()).await.ok(200);
    assert_eq!(denied["error"]["code"], "llm_denied", "{denied:#}");
    assert!(server.requests().is_empty());
    let audit = app
        .get("/v1/audit?action=capability.llm", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(audit["items"][0]["result"], "denied", "{audit:#}");

    set_policy(&app, json!({ "grants": { "llm": { "models": ["fast"] } } }))
        .await
        .ok(200);
    let run = app.invoke("triage", ADMIN_KEY, summarize()).await.ok(200);
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(run["output"]["summary"], "echo: alpha beta");
    // The fake counts 9 + 5 input tokens (system and user, 3 a message) and 3 output.
    let id = run["execution_id"].as_str().unwrap();
    let record = app
        .get(&format!("/v1/executions/{id}"), ADMIN_KEY)
        .await
        .ok(200);
    let call = &record["llm_calls"][0];
    assert_eq!(
        (
            call["input_tokens"].as_i64(),
            call["output_tokens"].as_i64()
        ),
        (Some(14), Some(3))
    );
    // 14 × 0.15 + 3 × 0.60 = 3.9 micro-dollars, exactly.
    assert_eq!(call["cost"], "0.000003900000");
    assert_eq!(call["model"], "fast");
    assert_eq!(call["provider"], "local");
    assert_eq!(record["capabilities"]["llm"]["cost_picodollars"], 3_900_000);
    // The execution's cost is its own plus the call's.
    let cost: f64 = record["cost"].as_str().unwrap().parse().unwrap();
    assert!(cost > 0.0000039 && cost < 0.0000045, "{record:#}");

    // Token budgets: 17 used today; a budget of 17 refuses the next invocation…
    let budget = |tokens: u64| {
        json!({ "grants": { "llm": { "models": ["fast"] } },
                "quotas": { "budgets": { "tokens_per_day": tokens } } })
    };
    set_policy(&app, budget(17)).await.ok(200);
    app.invoke("triage", ADMIN_KEY, summarize())
        .await
        .assert_error(429, "budget_exhausted");
    let usage = app.get("/v1/agents/triage/usage", ADMIN_KEY).await.ok(200);
    assert_eq!(usage["usage"]["used"]["day"]["tokens"], 17, "{usage:#}");
    // …and one of 40 leaves 23: the prompt is estimated at 20 (about 4 characters a
    // token, 4 a message), so the call may ask for 3 answer tokens.
    set_policy(&app, budget(40)).await.ok(200);
    app.invoke("triage", ADMIN_KEY, summarize()).await.ok(200);
    assert_eq!(server.requests().last().unwrap().body["max_tokens"], 3);

    // A token rate of 30 a minute: the first call takes 30 (its prompt's estimate of 20
    // and 10 answer tokens), uses 17 and gives 13 back; the next needs at least 21.
    set_policy(
        &app,
        json!({ "grants": { "llm": { "models": ["fast"] } },
                "quotas": { "tokens_per_minute": 30 } }),
    )
    .await
    .ok(200);
    let sent = server.requests().len();
    let first = app.invoke("triage", ADMIN_KEY, summarize()).await.ok(200);
    assert_eq!(first["outcome"], "succeeded", "{first:#}");
    assert_eq!(server.requests().last().unwrap().body["max_tokens"], 10);
    let limited = app.invoke("triage", ADMIN_KEY, summarize()).await.ok(200);
    assert_eq!(limited["error"]["code"], "llm_rate_limited", "{limited:#}");
    assert_eq!(limited["error"]["retryable"], true);
    assert!(
        limited["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate quota has room for this call in"),
        "{limited:#}"
    );
    assert_eq!(
        server.requests().len(),
        sent + 1,
        "the limited call was not sent"
    );

    // No key anywhere: responses, stored rows.
    let shown = [
        app.get(&format!("/v1/executions/{id}"), ADMIN_KEY)
            .await
            .body,
        app.get("/v1/executions", ADMIN_KEY).await.body,
        app.get("/v1/audit?limit=200", ADMIN_KEY).await.body,
        app.get("/v1/agents/triage", ADMIN_KEY).await.body,
    ];
    for body in shown {
        assert!(!body.to_string().contains(KEY), "{body:#}");
    }
    for table in ["executions", "llm_calls", "audit_events"] {
        let sql = format!("SELECT * FROM {table}");
        let rows = corral_host::on_pool!(&app.db, pool => {
            use sqlx::Row;
            sqlx::query(&sql).fetch_all(pool).await.map(|rows| {
                rows.iter().map(|row| (0..row.len()).map(|i| {
                    row.try_get::<String, _>(i).unwrap_or_default()
                }).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n")
            })
        })
        .unwrap();
        assert!(!rows.contains(KEY), "{table} holds the key");
    }
    assert_eq!(app.count("llm_calls").await, 3);
    // Costs by model: the three calls, 14 + 3 tokens each.
    let costs = app.get("/v1/costs?period=month", ADMIN_KEY).await.ok(200);
    assert_eq!(
        costs["models"],
        json!([{ "model": "fast", "calls": 3, "input_tokens": 42, "output_tokens": 9,
                 "cost": "0.000011700000" }])
    );
    app.stop().await;

    // The same agent and catalogue under `corral run`.
    let out = Command::new(corral_bin())
        .args([
            "run",
            TRIAGE,
            "--action",
            "summarize",
            "--input",
            r#"{"text":"alpha beta"}"#,
        ])
        .args([
            "--llm-config",
            path.to_str().unwrap(),
            "--allow-model",
            "fast",
            "--json",
        ])
        .env("CORRAL_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let execution: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(execution["usage"]["llm"]["cost_picodollars"], 3_900_000);
    assert!(!stdout.contains(KEY));
    let unknown = Command::new(corral_bin())
        .args(["run", TRIAGE, "--action", "summarize", "--input", "{}"])
        .args([
            "--llm-config",
            path.to_str().unwrap(),
            "--allow-model",
            "smart",
        ])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("has no such model"));
}
