//! Traces: a W3C `traceparent` sent with a request is stored on its execution's record
//! and carried into calls between agents, tasks, outbound HTTP and model calls; with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, a real `corral serve` exports the request and
//! execution spans to an OTLP receiver on 127.0.0.1, linked into the call tree; and
//! `CORRAL_LOG_FORMAT=json` makes its log JSON lines.

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app_with};
use corral_tests::harness::corral_bin;
use corral_tests::otlp::{ReceivedSpan, Receiver};
use corral_tests::plugins::{FETCH, RELAY, TRIAGE};
use corral_tests::process::{self, Server};
use corral_tests::providers::{ModelServer, Provider};
use corral_tests::upstream::Upstream;
use reqwest::Method;
use serde_json::{Value, json};

crate::on_both_backends!(
    a_traceparent_is_stored_and_carried_on,
    spans_are_exported_by_otlp_as_one_call_tree,
);

const KEY: &str = "sk-traces-test-key";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE}-{CLIENT_SPAN}-01")
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

/// Relay may call fetch and triage; fetch may reach `upstream`; triage may use `fast`.
fn policies(upstream: &Upstream) -> [(&'static str, Value); 3] {
    [
        (
            "relay",
            json!({ "grants": { "agents": { "allow": ["fetch", "triage"] } } }),
        ),
        (
            "fetch",
            json!({ "grants": { "http": { "allow": [upstream.rule()] } } }),
        ),
        (
            "triage",
            json!({ "grants": { "llm": { "models": ["fast"] } } }),
        ),
    ]
}

fn fetch_through_relay(upstream: &Upstream) -> Value {
    json!({ "action": "call", "input": { "agent": "fetch", "action": "get",
                                          "input": { "url": upstream.url("/hello") } } })
}

fn summarize_through_relay() -> Value {
    json!({ "action": "call", "input": { "agent": "triage", "action": "summarize",
                                          "input": { "text": "alpha beta" } } })
}

/// Invokes `agent` with `body` and the given `traceparent`; returns the receipt.
async fn invoke_traced(app: &TestApp, agent: &str, body: Value, traceparent: &str) -> Value {
    let request = app
        .request(
            Method::POST,
            &format!("/v1/agents/{agent}/invoke"),
            Some(ADMIN_KEY),
        )
        .header("traceparent", traceparent)
        .json(&body);
    app.send_request(request).await.ok(200)
}

async fn record(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/executions/{id}"), ADMIN_KEY)
        .await
        .ok(200)
}

/// The execution `root` called (it calls exactly one).
async fn callee(app: &TestApp, root: &str) -> Value {
    let tree = app
        .get(&format!("/v1/executions?root={root}"), ADMIN_KEY)
        .await
        .ok(200);
    let child = tree["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] != root)
        .cloned()
        .expect("the callee's record");
    record(app, child["id"].as_str().unwrap()).await
}

fn is_hex(text: &Value, len: usize) -> bool {
    text.as_str()
        .is_some_and(|t| t.len() == len && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn a_traceparent_is_stored_and_carried_on(backend: Backend) {
    let server = ModelServer::start(Provider::OpenAi, KEY).await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let models = catalogue(dir.path(), &server);
    let app = spawn_app_with(backend, |config| config.llm_config = Some(models)).await;
    for (name, plugin) in [("relay", RELAY), ("fetch", FETCH), ("triage", TRIAGE)] {
        app.agent_with(name, plugin).await;
    }
    for (agent, policy) in policies(&upstream) {
        app.set_policy(agent, policy).await;
    }

    // The root is a child of the client's span; its callee a child of the root's.
    let ran = invoke_traced(
        &app,
        "relay",
        fetch_through_relay(&upstream),
        &traceparent(),
    )
    .await;
    assert_eq!(ran["outcome"], "succeeded", "{ran:#}");
    let root = record(&app, ran["execution_id"].as_str().unwrap()).await;
    assert_eq!(root["trace_id"], TRACE, "{root:#}");
    assert_eq!(root["parent_span_id"], CLIENT_SPAN, "{root:#}");
    assert!(is_hex(&root["span_id"], 16) && root["span_id"] != CLIENT_SPAN);
    let fetch = callee(&app, ran["execution_id"].as_str().unwrap()).await;
    assert_eq!(fetch["agent"], "fetch");
    assert_eq!(fetch["trace_id"], TRACE, "{fetch:#}");
    assert_eq!(fetch["parent_span_id"], root["span_id"], "{fetch:#}");
    assert!(is_hex(&fetch["span_id"], 16) && fetch["span_id"] != root["span_id"]);
    // The upstream saw the callee's span.
    let sent = format!("00-{TRACE}-{}-01", fetch["span_id"].as_str().unwrap());
    assert_eq!(upstream.traceparents(), vec![sent]);

    // The provider saw the span of the execution that called the model.
    let ran = invoke_traced(&app, "relay", summarize_through_relay(), &traceparent()).await;
    assert_eq!(ran["outcome"], "succeeded", "{ran:#}");
    let triage = callee(&app, ran["execution_id"].as_str().unwrap()).await;
    assert_eq!(triage["trace_id"], TRACE, "{triage:#}");
    let asked = server.requests();
    assert_eq!(asked.len(), 1);
    let sent = format!("00-{TRACE}-{}-01", triage["span_id"].as_str().unwrap());
    assert_eq!(asked[0].headers["traceparent"], sent.as_str());

    // A task keeps the trace it was submitted in.
    let task = app
        .send_request(
            app.request(Method::POST, "/v1/agents/triage/tasks", Some(ADMIN_KEY))
                .header("traceparent", traceparent())
                .json(&json!({ "action": "summarize", "input": { "text": "gamma" } })),
        )
        .await
        .ok(202);
    let id = task["id"].as_str().unwrap();
    let done = app
        .get(&format!("/v1/tasks/{id}?wait=10s"), ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let attempt = app
        .get("/v1/executions?agent=triage&limit=1", ADMIN_KEY)
        .await
        .ok(200);
    let attempt = record(&app, attempt["items"][0]["id"].as_str().unwrap()).await;
    assert_eq!(attempt["task_id"], id, "{attempt:#}");
    assert_eq!(attempt["trace_id"], TRACE, "{attempt:#}");
    assert_eq!(attempt["parent_span_id"], CLIENT_SPAN, "{attempt:#}");

    // Without a (valid) traceparent, each root starts a trace of its own.
    let mut traces = Vec::new();
    for header in [None, Some("00-not-a-trace-01")] {
        let mut request = app
            .request(Method::POST, "/v1/agents/relay/invoke", Some(ADMIN_KEY))
            .json(&fetch_through_relay(&upstream));
        if let Some(header) = header {
            request = request.header("traceparent", header);
        }
        let ran = app.send_request(request).await.ok(200);
        let root = record(&app, ran["execution_id"].as_str().unwrap()).await;
        assert!(is_hex(&root["trace_id"], 32), "{root:#}");
        assert!(root.get("parent_span_id").is_none(), "{root:#}");
        let fetch = callee(&app, ran["execution_id"].as_str().unwrap()).await;
        assert_eq!(fetch["trace_id"], root["trace_id"]);
        traces.push(root["trace_id"].clone());
    }
    assert_ne!(traces[0], traces[1]);
    assert!(traces.iter().all(|t| t != TRACE));
    app.stop().await;
}

/// The spans of `trace` the receiver has, once `ready` says they are all there.
async fn spans_of(
    receiver: &Receiver,
    trace: &str,
    ready: impl Fn(&[ReceivedSpan]) -> bool,
) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace)
            .collect();
        if ready(&spans) {
            return spans;
        }
        assert!(Instant::now() < deadline, "spans never arrived: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn spans_are_exported_by_otlp_as_one_call_tree(backend: Backend) {
    let backend = match backend {
        Backend::Sqlite => process::Backend::Sqlite,
        Backend::Postgres => process::Backend::postgres().await,
    };
    let receiver = Receiver::start().await;
    let model = ModelServer::start(Provider::OpenAi, KEY).await;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let models = catalogue(dir.path(), &model);
    let endpoint = receiver.endpoint();
    let server = Server::start_with(
        &backend,
        &dir.path().join("data"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "corral-under-test"),
            ("CORRAL_LLM_CONFIG", models.to_str().unwrap()),
        ],
    )
    .await;
    let url = server.url.clone();
    let http = process::client();
    for (name, plugin) in [("relay", RELAY), ("fetch", FETCH), ("triage", TRIAGE)] {
        process::setup_agent(&url, name, plugin).await;
    }
    for (agent, policy) in policies(&upstream) {
        let set = http
            .put(format!("{url}/v1/agents/{agent}/policy"))
            .bearer_auth(process::KEY)
            .json(&policy)
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 200, "{agent}");
    }
    let mut roots = Vec::new();
    for body in [fetch_through_relay(&upstream), summarize_through_relay()] {
        let ran: Value = http
            .post(format!("{url}/v1/agents/relay/invoke"))
            .bearer_auth(process::KEY)
            .header("traceparent", traceparent())
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ran["outcome"], "succeeded", "{ran:#}");
        roots.push(ran);
    }

    // Two requests, each with a relay execution that called one other.
    let spans = spans_of(&receiver, TRACE, |spans| {
        spans
            .iter()
            .filter(|s| s.name.starts_with("execute "))
            .count()
            == 4
            && spans.iter().filter(|s| s.name.starts_with("POST ")).count() == 2
    })
    .await;
    let by_id: HashMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    assert!(
        spans.iter().all(|s| s.service == "corral-under-test"),
        "{spans:#?}"
    );
    for request in spans.iter().filter(|s| s.name.starts_with("POST ")) {
        assert_eq!(
            request.name, "POST /v1/agents/{name}/invoke",
            "{request:#?}"
        );
        assert_eq!(request.parent_span_id, CLIENT_SPAN, "{request:#?}");
        assert_eq!(request.attributes["http.response.status_code"], "200");
    }
    for (root, callee) in roots.iter().zip(["fetch", "triage"]) {
        let id = root["execution_id"].as_str().unwrap();
        let relay = spans
            .iter()
            .find(|s| s.attributes.get("execution.id").map(String::as_str) == Some(id))
            .unwrap_or_else(|| panic!("no span for {id}: {spans:#?}"));
        assert_eq!(relay.name, "execute relay");
        let attributes = &relay.attributes;
        assert_eq!(attributes["agent"], "relay");
        assert_eq!(
            attributes["agent.version"],
            root["version"].as_str().unwrap()
        );
        assert_eq!(attributes["outcome"], "succeeded");
        assert_eq!(attributes["usage.fuel"], root["usage"]["fuel"].to_string());
        assert!(
            attributes.contains_key("usage.peak_memory_bytes"),
            "{attributes:#?}"
        );
        assert!(
            attributes.contains_key("cost.picodollars"),
            "{attributes:#?}"
        );
        // Under its request's span.
        let request = by_id[relay.parent_span_id.as_str()];
        assert!(request.name.starts_with("POST "), "{request:#?}");
        // Its callee under it, as its record says.
        let child = spans
            .iter()
            .find(|s| s.parent_span_id == relay.span_id)
            .unwrap_or_else(|| panic!("no child of {relay:#?}"));
        assert_eq!(child.name, format!("execute {callee}"));
        assert_eq!(child.attributes["outcome"], "succeeded");
        let stored: Value = http
            .get(format!("{url}/v1/executions/{id}"))
            .bearer_auth(process::KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stored["trace_id"], TRACE, "{stored:#}");
        assert_eq!(stored["span_id"], relay.span_id.as_str(), "{stored:#}");
        // What the callee sent on names the callee's exported span.
        let sent = format!("00-{TRACE}-{}-01", child.span_id);
        match callee {
            "fetch" => assert_eq!(upstream.traceparents(), vec![sent]),
            _ => assert_eq!(model.requests()[0].headers["traceparent"], sent.as_str()),
        }
    }
    drop(server);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(corral_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("CORRAL_DATA_DIR", dir.path())
        .env("CORRAL_BOOTSTRAP_KEY", process::KEY)
        .env("CORRAL_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corral serve starts");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "corral serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines: Vec<String> = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    child.wait().unwrap();
    // The CLI's own messages to a person stay text; everything logged is JSON.
    let logged: Vec<&String> = lines.iter().filter(|l| !l.starts_with("corral")).collect();
    let mut serving = false;
    for line in logged.iter().filter(|l| !l.trim().is_empty()) {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            assert!(
                line.starts_with("shutting down"),
                "a log line that is not JSON: {line}"
            );
            continue;
        };
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
        serving |= entry["fields"]["message"] == "serving";
    }
    assert!(serving, "the `serving` event as JSON: {lines:#?}");
}
