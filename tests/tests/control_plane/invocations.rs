//! Invoking: results, outcomes, refusals, idempotency and durability.

use corral_tests::app::{ADMIN_KEY, Backend, spawn_app, spawn_app_with};
use corral_tests::plugins::{ECHO, HOSTILE};
use reqwest::Method;
use serde_json::json;

crate::on_both_backends!(
    an_invocation_returns_its_result_after_it_is_recorded,
    failed_outcomes_are_answered_and_recorded_too,
    bad_invocations_are_refused_before_running,
    an_idempotency_key_runs_and_bills_once,
    a_json_body_over_the_body_limit_is_refused_but_uploads_are_not_held_to_it,
    a_run_whose_client_hangs_up_is_still_recorded_and_charged_once,
    input_reaches_the_guest_exactly_and_bad_input_is_refused_before_running,
    a_record_keeps_the_whole_output_and_the_input_when_asked,
);

async fn an_invocation_returns_its_result_after_it_is_recorded(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let reply = app
        .invoke(
            "echo",
            ADMIN_KEY,
            json!({ "action": "echo", "input": { "hello": "world" }, "correlation_id": "order-7" }),
        )
        .await
        .ok(200);
    assert_eq!(reply["outcome"], "succeeded");
    assert_eq!(reply["output"], json!({ "hello": "world" }));
    assert_eq!(reply["correlation_id"], "order-7");
    assert!(reply["usage"]["fuel"].as_u64().unwrap() > 0);
    let cost = reply["cost"].as_str().unwrap();
    assert_eq!(
        cost.split('.').nth(1).map(str::len),
        Some(12),
        "dollars with 12 decimals: {cost}"
    );

    // The record is already committed when the answer arrives.
    let id = reply["execution_id"].as_str().unwrap();
    let record = app
        .get(&format!("/v1/executions/{id}"), ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(record["outcome"], "succeeded");
    assert_eq!(record["cost"], cost);
    assert_eq!(record["correlation_id"], "order-7");
    assert_eq!(record["logs"][0]["message"], "echo: 17 bytes");
    assert_eq!(record["input_excerpt"], r#"{"hello":"world"}"#);
    app.stop().await;
}

async fn failed_outcomes_are_answered_and_recorded_too(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("hostile", HOSTILE).await;
    let failed = app
        .invoke("hostile", ADMIN_KEY, json!({ "action": "fail" }))
        .await
        .ok(200);
    assert_eq!(failed["outcome"], "agent_error");
    assert_eq!(failed["error"]["code"], "upstream_unavailable");
    assert_eq!(failed["error"]["retryable"], true);
    let spun = app
        .invoke(
            "hostile",
            ADMIN_KEY,
            json!({ "action": "spin", "limits": { "fuel": 100000 } }),
        )
        .await
        .ok(200);
    assert_eq!(spun["outcome"], "fuel_exhausted");
    let crashed = app
        .invoke("hostile", ADMIN_KEY, json!({ "action": "panic" }))
        .await
        .ok(200);
    assert_eq!(
        (
            crashed["outcome"].as_str(),
            crashed["error"]["code"].as_str()
        ),
        (Some("trapped"), Some("unreachable"))
    );
    let listed = app
        .get("/v1/executions?agent=hostile", ADMIN_KEY)
        .await
        .ok(200);
    let outcomes: Vec<_> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["trapped", "fuel_exhausted", "agent_error"],
        "newest first"
    );
    app.stop().await;
}

async fn bad_invocations_are_refused_before_running(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "empty" }))
        .await
        .ok(201);
    let before = app.snapshot().await;
    app.invoke("missing", ADMIN_KEY, json!({ "action": "echo" }))
        .await
        .assert_error(404, "not_found");
    app.invoke("empty", ADMIN_KEY, json!({ "action": "echo" }))
        .await
        .assert_error(409, "no_active_version");
    app.invoke("echo", ADMIN_KEY, json!({ "input": {} }))
        .await
        .assert_error(400, "invalid_json");
    app.invoke(
        "echo",
        ADMIN_KEY,
        json!({ "action": "echo", "limits": { "fuel": 0 } }),
    )
    .await
    .assert_error(400, "invalid_limits");
    app.invoke(
        "echo",
        ADMIN_KEY,
        json!({ "action": "echo", "limits": { "timeout_ms": 999999999 } }),
    )
    .await
    .assert_error(400, "invalid_limits");
    let invoke = || app.request(Method::POST, "/v1/agents/echo/invoke", Some(ADMIN_KEY));
    app.send_request(
        invoke()
            .header("content-type", "application/json")
            .body(r#"{"action": "echo", "input": {"#),
    )
    .await
    .assert_error(400, "invalid_json");
    app.send_request(
        invoke()
            .header("content-type", "text/plain")
            .body(r#"{"action": "echo"}"#),
    )
    .await
    .assert_error(415, "unsupported_media_type");
    app.send_request(invoke().body(r#"{"action": "echo"}"#))
        .await
        .assert_error(415, "unsupported_media_type");
    app.send_request(
        invoke()
            .header("idempotency-key", "k".repeat(256))
            .json(&json!({ "action": "echo" })),
    )
    .await
    .assert_error(400, "invalid_idempotency_key");
    assert_eq!(
        app.snapshot().await,
        before,
        "nothing ran, nothing was written"
    );
    app.stop().await;
}

async fn an_idempotency_key_runs_and_bills_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let call = |body: serde_json::Value, key: &'static str| {
        app.http
            .post(format!("{}/v1/agents/echo/invoke", app.url))
            .bearer_auth(ADMIN_KEY)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let body = json!({ "action": "echo", "input": { "pay": 10 } });
    let first: serde_json::Value = call(body.clone(), "k-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let executions = app.count("executions").await;
    let retry: serde_json::Value = call(body.clone(), "k-1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(retry, first, "the retry gets the original answer");
    assert_eq!(
        app.count("executions").await,
        executions,
        "and nothing ran again"
    );

    let reused = call(json!({ "action": "echo", "input": { "pay": 99 } }), "k-1")
        .await
        .unwrap();
    assert_eq!(reused.status(), 422);
    let error: serde_json::Value = reused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "idempotency_key_reused");
    let other: serde_json::Value = call(body.clone(), "k-2")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(other["execution_id"], first["execution_id"]);

    // Keys belong to a tenant: another tenant's "k-1" is a request of its own.
    let (_, tenant) = app.tenant("other").await;
    app.post("/v1/agents", &tenant, json!({ "name": "echo" }))
        .await
        .ok(201);
    app.upload("echo", &tenant, std::fs::read(ECHO).unwrap())
        .await
        .ok(201);
    let theirs = app
        .send_request(
            app.request(Method::POST, "/v1/agents/echo/invoke", Some(&tenant))
                .header("idempotency-key", "k-1")
                .json(&body),
        )
        .await
        .ok(200);
    assert_ne!(theirs["execution_id"], first["execution_id"]);
    assert_eq!(app.count("executions").await, executions + 2);
    app.stop().await;
}

async fn a_json_body_over_the_body_limit_is_refused_but_uploads_are_not_held_to_it(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |config| config.max_body = 16 * 1024).await;
    // The component is several times the JSON limit; uploads have a limit of their own.
    assert!(std::fs::read(ECHO).unwrap().len() > 4 * 16 * 1024);
    app.agent_with("echo", ECHO).await;
    let before = app.snapshot().await;
    app.invoke(
        "echo",
        ADMIN_KEY,
        json!({ "action": "echo", "input": { "text": "x".repeat(32 * 1024) } }),
    )
    .await
    .assert_error(413, "payload_too_large");
    app.post(
        "/v1/agents",
        ADMIN_KEY,
        json!({ "name": "big", "description": "x".repeat(32 * 1024) }),
    )
    .await
    .assert_error(413, "payload_too_large");
    assert_eq!(
        app.snapshot().await,
        before,
        "nothing ran, nothing was written"
    );
    app.invoke(
        "echo",
        ADMIN_KEY,
        json!({ "action": "echo", "input": { "text": "x".repeat(8 * 1024) } }),
    )
    .await
    .ok(200);
    app.stop().await;
}

/// Waits (up to 20 s) until `agent` has `n` execution records, and returns them.
async fn executions_of(
    app: &corral_tests::app::TestApp,
    agent: &str,
    n: usize,
) -> Vec<serde_json::Value> {
    for _ in 0..200 {
        let listed = app
            .get(&format!("/v1/executions?agent={agent}"), ADMIN_KEY)
            .await
            .ok(200);
        let items = listed["items"].as_array().unwrap().clone();
        if items.len() >= n {
            return items;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{agent} never had {n} execution records");
}

async fn a_run_whose_client_hangs_up_is_still_recorded_and_charged_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("hostile", HOSTILE).await;
    // The guest waits in a host call (a WASI sleep) while its client gives up.
    let impatient = app
        .request(Method::POST, "/v1/agents/hostile/invoke", Some(ADMIN_KEY))
        .header("idempotency-key", "hang-up-1")
        .timeout(std::time::Duration::from_millis(300))
        .json(&json!({ "action": "sleep", "input": { "ms": 1500 } }))
        .send()
        .await;
    assert!(
        impatient.as_ref().is_err_and(|e| e.is_timeout()),
        "the client hung up before the answer: {impatient:?}"
    );

    // The run went on without its client, ended on its own, and was recorded.
    let records = executions_of(&app, "hostile", 1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["outcome"], "succeeded", "{:#}", records[0]);
    assert_eq!(records[0]["output_excerpt"], r#"{"slept_ms":1500}"#);
    assert!(
        records[0]["wall_time_us"].as_u64().unwrap() >= 1_500_000,
        "it ran to its end: {:#}",
        records[0]
    );

    // Charged once: the usage report counts it.
    let usage = app.get("/v1/agents/hostile/usage", ADMIN_KEY).await.ok(200);
    assert_eq!(usage["usage"]["used"]["day"]["invocations"], 1, "{usage:#}");

    // A retry with the same key gets the recorded answer; nothing runs again.
    let retry = app
        .send_request(
            app.request(Method::POST, "/v1/agents/hostile/invoke", Some(ADMIN_KEY))
                .header("idempotency-key", "hang-up-1")
                .json(&json!({ "action": "sleep", "input": { "ms": 1500 } })),
        )
        .await
        .ok(200);
    assert_eq!(retry["execution_id"], records[0]["id"]);
    assert_eq!(retry["output"], json!({ "slept_ms": 1500 }));
    assert_eq!(app.count("executions").await, 1);
    app.stop().await;
}

async fn input_reaches_the_guest_exactly_and_bad_input_is_refused_before_running(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    // Numbers an f64 cannot hold are passed on as written.
    let exact =
        r#"{"big":18446744073709551617,"tiny":1e-400,"pi":3.14159265358979323846264338327950288}"#;
    let body = format!(r#"{{"action": "echo", "input": {exact}}}"#);
    let ran = app
        .send_request(
            app.request(Method::POST, "/v1/agents/echo/invoke", Some(ADMIN_KEY))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
        .ok(200);
    let record = app
        .get(
            &format!("/v1/executions/{}", ran["execution_id"].as_str().unwrap()),
            ADMIN_KEY,
        )
        .await
        .ok(200);
    assert_eq!(
        record["input_excerpt"], exact,
        "the guest got the input as sent"
    );

    // An action the agent does not have, and input its schema refuses, never run.
    let before = app.snapshot().await;
    let unknown = app
        .invoke("echo", ADMIN_KEY, json!({ "action": "nope" }))
        .await;
    unknown.assert_error(400, "unknown_action");
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("transform")
    );
    let invalid = app
        .invoke(
            "echo",
            ADMIN_KEY,
            json!({ "action": "transform", "input": { "data": { "a": 1 }, "pick": [1] } }),
        )
        .await;
    invalid.assert_error(400, "invalid_input");
    assert!(
        invalid.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/pick/0"),
        "{:#}",
        invalid.body
    );
    assert_eq!(
        app.snapshot().await,
        before,
        "nothing ran, nothing was billed"
    );
    let usage = app.get("/v1/agents/echo/usage", ADMIN_KEY).await.ok(200);
    assert_eq!(usage["usage"]["used"]["day"]["invocations"], 1, "{usage:#}");
    app.stop().await;
}

async fn a_record_keeps_the_whole_output_and_the_input_when_asked(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let big = json!({ "text": "x".repeat(5000) });
    let show = |id: serde_json::Value| {
        let app = &app;
        async move {
            app.get(
                &format!("/v1/executions/{}", id.as_str().unwrap()),
                ADMIN_KEY,
            )
            .await
            .ok(200)
        }
    };
    let ran = app
        .invoke("echo", ADMIN_KEY, json!({ "action": "echo", "input": big }))
        .await
        .ok(200);
    let record = show(ran["execution_id"].clone()).await;
    assert_eq!(record["output"], big, "the whole output, not the excerpt");
    assert_eq!(record["output_excerpt"].as_str().unwrap().len(), 1024);
    assert!(
        record.get("input").is_none(),
        "inputs are kept only on request"
    );
    let listed = app
        .get("/v1/executions?agent=echo", ADMIN_KEY)
        .await
        .ok(200);
    assert!(
        listed["items"][0].get("output").is_none(),
        "lists stay light"
    );

    app.set_policy("echo", json!({ "record_input": true }))
        .await;
    let ran = app
        .invoke("echo", ADMIN_KEY, json!({ "action": "echo", "input": big }))
        .await
        .ok(200);
    let record = show(ran["execution_id"].clone()).await;
    assert_eq!(record["input"], big);
    app.stop().await;
}
