//! Calls between agents through the API: grants, records linked to parent and root,
//! costs rolled up, cycles and depth, quotas on the callee, tenants kept apart, and
//! every refusal on the audit trail.

use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app, spawn_app_with};
use corral_tests::plugins::{ECHO, HOSTILE, RELAY};
use reqwest::Method;
use serde_json::{Value, json};

crate::on_both_backends!(
    a_granted_call_is_an_execution_of_its_own_linked_to_its_root,
    ungranted_and_unknown_callees_are_refused_and_audited,
    cycles_and_depth_are_stopped,
    the_callee_keeps_its_own_quotas_and_pause,
    a_tenant_cannot_call_another_tenants_agent,
    a_host_failure_is_recorded_as_the_hosts_and_not_billed,
);

async fn grant(app: &TestApp, agent: &str, allow: &[&str]) {
    app.set_policy(agent, json!({ "grants": { "agents": { "allow": allow } } }))
        .await;
}

fn call(agent: &str, action: &str, input: Value) -> Value {
    json!({ "action": "call", "input": { "agent": agent, "action": action, "input": input } })
}

async fn a_granted_call_is_an_execution_of_its_own_linked_to_its_root(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("relay", RELAY).await;
    app.agent_with("echo", ECHO).await;
    grant(&app, "relay", &["echo"]).await;
    let ran = app
        .invoke("relay", ADMIN_KEY, call("echo", "echo", json!({ "x": 1 })))
        .await
        .ok(200);
    assert_eq!(ran["outcome"], "succeeded", "{ran:#}");
    assert_eq!(ran["output"], json!({ "output": { "x": 1 } }));
    let root = ran["execution_id"].as_str().unwrap();
    assert_eq!(ran["root_execution_id"], root);
    assert_eq!(ran["usage"]["agents"]["calls"], 1);

    // Both executions are recorded, the callee linked to its parent and root.
    let tree = app
        .get(&format!("/v1/executions?root={root}"), ADMIN_KEY)
        .await
        .ok(200);
    let items = tree["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{tree:#}");
    let child = items.iter().find(|e| e["agent"] == "echo").unwrap();
    assert_eq!(child["parent_execution_id"], root);
    assert_eq!(child["root_execution_id"], root);
    assert_eq!(child["call_depth"], 1);
    assert_eq!(child["outcome"], "succeeded");
    let parent = items.iter().find(|e| e["agent"] == "relay").unwrap();
    assert_eq!(parent["call_depth"], 0);
    assert_eq!(parent["capabilities"]["agents"]["calls"], 1);

    // The root's total is its own cost plus its callee's, exactly.
    let dollars = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
    let total = dollars(&ran["total_cost"]);
    let sum = dollars(&parent["cost"]) + dollars(&child["cost"]);
    assert!((total - sum).abs() < 1e-12, "{total} vs {sum}");
    assert_eq!(
        ran["usage"]["agents"]["subtree"]["fuel"].as_i64().unwrap(),
        child["fuel"].as_i64().unwrap()
    );
    app.stop().await;
}

async fn ungranted_and_unknown_callees_are_refused_and_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("relay", RELAY).await;
    app.agent_with("echo", ECHO).await;
    // No grant at all.
    let refused = app
        .invoke("relay", ADMIN_KEY, call("echo", "echo", json!({})))
        .await
        .ok(200);
    assert_eq!(refused["error"]["code"], "call_denied");
    assert_eq!(refused["denials"][0]["reason"], "not_granted");
    // Granted another agent; and a granted name that does not exist.
    grant(&app, "relay", &["ghost"]).await;
    let refused = app
        .invoke("relay", ADMIN_KEY, call("echo", "echo", json!({})))
        .await
        .ok(200);
    assert_eq!(refused["denials"][0]["reason"], "not_allowed");
    let ghost = app
        .invoke("relay", ADMIN_KEY, call("ghost", "echo", json!({})))
        .await
        .ok(200);
    assert_eq!(ghost["error"]["code"], "call_denied");
    // Nothing ran but the relays.
    assert_eq!(app.count("executions").await, 3);
    let audit = app
        .get("/v1/audit?action=capability.agents", ADMIN_KEY)
        .await
        .ok(200);
    let events = audit["items"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{audit:#}");
    assert!(events.iter().all(|e| e["result"] == "denied"
        && e["resource_type"] == "execution"
        && e["after"]["agent"] == "relay"));
    // Bad grants are refused.
    app.send(
        Method::PUT,
        "/v1/agents/relay/policy",
        Some(ADMIN_KEY),
        Some(json!({ "grants": { "agents": { "allow": [] } } })),
    )
    .await
    .assert_error(400, "invalid_policy");
    app.send(
        Method::PUT,
        "/v1/agents/relay/policy",
        Some(ADMIN_KEY),
        Some(json!({ "grants": { "agents": { "allow": ["Not A Name"] } } })),
    )
    .await
    .assert_error(400, "invalid_policy");
    app.stop().await;
}

async fn cycles_and_depth_are_stopped(backend: Backend) {
    let app = spawn_app_with(backend, |config| config.max_call_depth = 2).await;
    for name in ["r1", "r2", "r3"] {
        app.agent_with(name, RELAY).await;
        grant(&app, name, &["*"]).await;
    }
    app.agent_with("echo", ECHO).await;
    // r1 → r2 → r1: a cycle, refused in r2 and passed back up.
    let cycle = app
        .invoke(
            "r1",
            ADMIN_KEY,
            call(
                "r2",
                "call",
                json!({ "agent": "r1", "action": "call", "input": {} }),
            ),
        )
        .await
        .ok(200);
    let message = cycle["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("call_cycle") && message.contains("r1 → r2"),
        "{cycle:#}"
    );
    // Two deep is allowed: r1 → r2 → echo.
    let deep = app
        .invoke(
            "r1",
            ADMIN_KEY,
            call(
                "r2",
                "call",
                json!({ "agent": "echo", "action": "echo", "input": { "ok": true } }),
            ),
        )
        .await
        .ok(200);
    assert_eq!(deep["outcome"], "succeeded", "{deep:#}");
    assert_eq!(deep["usage"]["agents"]["subtree"]["executions"], 2);
    // Three deep is not: r1 → r2 → r3 → echo.
    let inner = json!({ "agent": "echo", "action": "echo", "input": {} });
    let too_deep = app
        .invoke(
            "r1",
            ADMIN_KEY,
            call(
                "r2",
                "call",
                json!({ "agent": "r3", "action": "call", "input": inner }),
            ),
        )
        .await
        .ok(200);
    assert!(
        too_deep["error"]["message"]
            .as_str()
            .unwrap()
            .contains("call_depth_exceeded"),
        "{too_deep:#}"
    );
    let root = too_deep["execution_id"].as_str().unwrap();
    let tree = app
        .get(&format!("/v1/executions?root={root}"), ADMIN_KEY)
        .await
        .ok(200);
    let depths: Vec<i64> = tree["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["call_depth"].as_i64().unwrap())
        .collect();
    assert_eq!(depths.len(), 3, "{tree:#}");
    assert!(depths.contains(&0) && depths.contains(&1) && depths.contains(&2));
    app.stop().await;
}

async fn the_callee_keeps_its_own_quotas_and_pause(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("relay", RELAY).await;
    app.agent_with("slow", HOSTILE).await;
    grant(&app, "relay", &["slow"]).await;
    // The callee's own rate quota: one call, then refused before it runs.
    app.send(
        Method::PUT,
        "/v1/agents/slow/policy",
        Some(ADMIN_KEY),
        Some(json!({ "quotas": { "rate": { "requests": 1, "per": "hour" } } })),
    )
    .await
    .ok(200);
    let first = app
        .invoke(
            "relay",
            ADMIN_KEY,
            call("slow", "sleep", json!({ "ms": 1 })),
        )
        .await
        .ok(200);
    assert_eq!(first["outcome"], "succeeded", "{first:#}");
    let second = app
        .invoke(
            "relay",
            ADMIN_KEY,
            call("slow", "sleep", json!({ "ms": 1 })),
        )
        .await
        .ok(200);
    assert_eq!(second["error"]["code"], "rate_limited", "{second:#}");
    assert_eq!(second["error"]["retryable"], true);
    assert_eq!(second["denials"][0]["reason"], "refused");

    // Paused, it is refused too.
    app.send(
        Method::PUT,
        "/v1/agents/slow/policy",
        Some(ADMIN_KEY),
        Some(json!({ "limits": { "timeout_ms": 5000 } })),
    )
    .await
    .ok(200);
    app.post("/v1/agents/slow/pause", ADMIN_KEY, json!({}))
        .await
        .ok(200);
    let paused = app
        .invoke(
            "relay",
            ADMIN_KEY,
            call("slow", "sleep", json!({ "ms": 1 })),
        )
        .await
        .ok(200);
    assert_eq!(paused["error"]["code"], "agent_paused", "{paused:#}");
    app.post("/v1/agents/slow/resume", ADMIN_KEY, json!({}))
        .await
        .ok(200);

    // The callee gets only the time its caller has left: stopped, and recorded.
    let timed = app
        .invoke(
            "relay",
            ADMIN_KEY,
            json!({ "action": "call", "limits": { "timeout_ms": 400 },
                    "input": { "agent": "slow", "action": "sleep", "input": { "ms": 5000 } } }),
        )
        .await
        .ok(200);
    let root = timed["execution_id"].as_str().unwrap();
    // If the caller's deadline passed first, the callee (in a task of its own) is
    // stopped by its own timeout a moment later and records itself then.
    let mut tree = Value::Null;
    for _ in 0..50 {
        tree = app
            .get(&format!("/v1/executions?root={root}&agent=slow"), ADMIN_KEY)
            .await
            .ok(200);
        if !tree["items"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let child = &tree["items"][0];
    assert_eq!(child["outcome"], "timed_out", "{tree:#}");
    assert!(
        child["wall_time_us"].as_i64().unwrap() < 1_000_000,
        "{child:#}"
    );
    app.stop().await;
}

async fn a_tenant_cannot_call_another_tenants_agent(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("secret-keeper", ECHO).await;
    let (_, other) = app.tenant("other").await;
    app.post("/v1/agents", &other, json!({ "name": "relay" }))
        .await
        .ok(201);
    app.upload("relay", &other, std::fs::read(RELAY).unwrap())
        .await
        .ok(201);
    app.send(
        Method::PUT,
        "/v1/agents/relay/policy",
        Some(&other),
        Some(json!({ "grants": { "agents": { "allow": ["*"] } } })),
    )
    .await
    .ok(200);
    let refused = app
        .invoke("relay", &other, call("secret-keeper", "echo", json!({})))
        .await
        .ok(200);
    assert_eq!(refused["error"]["code"], "call_denied", "{refused:#}");
    // Only the relay ran.
    assert_eq!(app.count("executions").await, 1);
    app.stop().await;
}

async fn a_host_failure_is_recorded_as_the_hosts_and_not_billed(backend: Backend) {
    // One instance slot: the relay holds it, so its callee finds none.
    let app = spawn_app_with(backend, |config| config.max_instances = 1).await;
    app.agent_with("echo", ECHO).await;
    app.agent_with("relay", RELAY).await;
    grant(&app, "relay", &["echo"]).await;
    let ran = app
        .invoke(
            "relay",
            ADMIN_KEY,
            json!({ "action": "call", "input": { "agent": "echo", "action": "echo" } }),
        )
        .await
        .ok(200);
    assert_eq!(ran["error"]["code"], "host_failure", "{ran:#}");
    let calls = app
        .get(
            &format!(
                "/v1/executions?root={}",
                ran["execution_id"].as_str().unwrap()
            ),
            ADMIN_KEY,
        )
        .await
        .ok(200);
    let callee = calls["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["agent"] == "echo")
        .cloned()
        .expect("the callee's execution is recorded");
    assert_eq!(callee["outcome"], "host_failure", "{callee:#}");
    assert_eq!(callee["cost"], "0.000000000000", "not billed");
    let usage = app.get("/v1/agents/echo/usage", ADMIN_KEY).await.ok(200);
    assert_eq!(usage["usage"]["used"]["day"]["invocations"], 0, "{usage:#}");
    let audit = app
        .get("/v1/audit?action=execution.host_failure", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(audit["items"][0]["resource_id"], callee["id"], "{audit:#}");
    app.get("/v1/executions?outcome=host_failure", ADMIN_KEY)
        .await
        .ok(200);
    // Visible in the metrics, apart from the guests' outcomes; for operator keys only.
    let metrics = app
        .send_request(app.request(reqwest::Method::GET, "/metrics", Some(ADMIN_KEY)))
        .await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().expect("text").to_string();
    assert!(
        text.contains("corral_executions_total{outcome=\"host_failure\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("corral_executions_total{outcome=\"agent_error\"} 1\n"),
        "{text}"
    );
    let (_, other) = app.tenant("other").await;
    let refused = app
        .send_request(app.request(reqwest::Method::GET, "/metrics", Some(&other)))
        .await;
    refused.assert_error(403, "forbidden");
    app.stop().await;
}
