//! Agents: create, list with cursors, get, policy, pause and resume, delete.

use corral_tests::app::{ADMIN_KEY, Backend, spawn_app};
use corral_tests::plugins::{ECHO, FETCH, TEXT_STATS};
use corral_tests::upstream::{HELLO, Upstream};
use reqwest::Method;
use serde_json::json;

crate::on_both_backends!(
    agents_are_created_listed_and_found_by_name,
    pagination_walks_every_agent_once,
    policies_are_validated_and_only_tighten,
    an_http_grant_in_the_policy_reaches_every_invocation,
    a_paused_agent_refuses_invocations_until_resumed,
    a_deleted_agent_is_gone_but_its_history_stays,
    concurrent_changes_to_one_agent_all_stick,
);

/// A pause and an activation racing each other each change only their own field:
/// neither undoes the other with a stale copy of the agent.
async fn concurrent_changes_to_one_agent_all_stick(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("racer", ECHO).await;
    let stats = app
        .upload("racer", ADMIN_KEY, std::fs::read(TEXT_STATS).unwrap())
        .await
        .ok(201);
    for round in 0..5 {
        let (target, status) = if round % 2 == 0 {
            ("1.0.0", "paused")
        } else {
            ("0.1.0", "active")
        };
        let verb = if status == "paused" {
            "pause"
        } else {
            "resume"
        };
        let activate_path = format!("/v1/agents/racer/versions/{target}/activate");
        let change_path = format!("/v1/agents/racer/{verb}");
        let activate = app.post(&activate_path, ADMIN_KEY, json!({}));
        let change = app.post(&change_path, ADMIN_KEY, json!({}));
        let (activated, changed) = tokio::join!(activate, change);
        activated.ok(200);
        changed.ok(200);
        let agent = app.get("/v1/agents/racer", ADMIN_KEY).await.ok(200);
        assert_eq!(agent["status"], status, "round {round}: {agent:#}");
        if target == "1.0.0" {
            assert_eq!(agent["active_version_id"], stats["id"], "round {round}");
        }
        let versions = app
            .get("/v1/agents/racer/versions", ADMIN_KEY)
            .await
            .ok(200);
        let active: Vec<_> = versions["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["active"] == true)
            .map(|v| v["version"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(active, [target], "round {round}: {versions:#}");
    }
    app.stop().await;
}

async fn agents_are_created_listed_and_found_by_name(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .post(
            "/v1/agents",
            ADMIN_KEY,
            json!({ "name": "stats", "description": "text" }),
        )
        .await
        .ok(201);
    assert_eq!(created["status"], "active");
    assert_eq!(created["active_version_id"], serde_json::Value::Null);
    let before = app.snapshot().await;
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "stats" }))
        .await
        .assert_error(409, "agent_exists");
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "Bad Name" }))
        .await
        .assert_error(400, "invalid_name");
    app.post(
        "/v1/agents",
        ADMIN_KEY,
        json!({ "name": "x", "surprise": 1 }),
    )
    .await
    .assert_error(400, "invalid_json");
    app.send_request(
        app.request(Method::POST, "/v1/agents", Some(ADMIN_KEY))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await
    .assert_error(400, "invalid_json");
    app.send_request(
        app.request(Method::POST, "/v1/agents", Some(ADMIN_KEY))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=x"),
    )
    .await
    .assert_error(415, "unsupported_media_type");
    for bad in ["", "9lives", "-x", "a b", "ünïcode", &"a".repeat(65)] {
        app.post("/v1/agents", ADMIN_KEY, json!({ "name": bad }))
            .await
            .assert_error(400, "invalid_name");
    }
    assert_eq!(app.snapshot().await, before, "nothing half-written");

    assert_eq!(
        app.get("/v1/agents/stats", ADMIN_KEY).await.ok(200)["description"],
        "text"
    );
    app.get("/v1/agents/missing", ADMIN_KEY)
        .await
        .assert_error(404, "not_found");
    let audit = app
        .get("/v1/audit?action=agent.create", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(audit["items"][0]["after"]["name"], "stats");
    app.stop().await;
}

async fn pagination_walks_every_agent_once(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..5 {
        app.post("/v1/agents", ADMIN_KEY, json!({ "name": format!("a{i}") }))
            .await
            .ok(201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/agents?limit=2&cursor={c}"),
            None => "/v1/agents?limit=2".to_string(),
        };
        let page = app.get(&path, ADMIN_KEY).await.ok(200);
        let items = page["items"].as_array().unwrap();
        pages.push(items.len());
        seen.extend(
            items
                .iter()
                .map(|a| a["name"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, [2, 2, 1]);
    assert_eq!(seen, ["a0", "a1", "a2", "a3", "a4"]);
    let all = app.get("/v1/agents?limit=5", ADMIN_KEY).await.ok(200);
    assert!(
        all.get("next_cursor").is_none(),
        "an exact last page has no cursor: {all:#}"
    );
    app.get("/v1/agents?limit=0", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/agents?limit=201", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/agents?limit=ten", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.stop().await;
}

async fn policies_are_validated_and_only_tighten(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let put = |body| {
        app.send(
            Method::PUT,
            "/v1/agents/echo/policy",
            Some(ADMIN_KEY),
            Some(body),
        )
    };
    let before = app.snapshot().await;
    put(json!({ "limits": { "fuel": 0 } }))
        .await
        .assert_error(400, "invalid_policy");
    put(json!({ "limits": { "memory_bytes": 1u64 << 40 } }))
        .await
        .assert_error(400, "invalid_policy");
    put(json!({ "limits": { "fuel": -1 } }))
        .await
        .assert_error(400, "invalid_json");
    put(json!({ "limits": { "memory": "64MiB" } }))
        .await
        .assert_error(400, "invalid_json");
    assert_eq!(app.snapshot().await, before);

    let updated = put(json!({ "limits": { "fuel": 2000000, "timeout_ms": 1000 } }))
        .await
        .ok(200);
    assert_eq!(updated["policy"]["limits"]["fuel"], 2_000_000);
    // The agent's fuel limit applies, and a call may tighten it but not loosen it.
    let spin = app
        .invoke(
            "echo",
            ADMIN_KEY,
            json!({ "action": "echo", "input": {}, "limits": { "fuel": 10 } }),
        )
        .await
        .ok(200);
    assert_eq!(spin["outcome"], "fuel_exhausted");
    assert_eq!(spin["usage"]["fuel"], 10);
    app.invoke(
        "echo",
        ADMIN_KEY,
        json!({ "action": "echo", "input": {}, "limits": { "fuel": 3000000 } }),
    )
    .await
    .assert_error(400, "invalid_limits");
    let audit = app
        .get("/v1/audit?action=agent.update_policy", ADMIN_KEY)
        .await
        .ok(200);
    let event = &audit["items"][0];
    assert_eq!(event["before"]["policy"]["limits"], json!({}));
    assert_eq!(event["after"]["policy"]["limits"]["timeout_ms"], 1000);
    app.stop().await;
}

async fn an_http_grant_in_the_policy_reaches_every_invocation(backend: Backend) {
    let upstream = Upstream::start().await;
    let app = spawn_app(backend).await;
    app.agent_with("fetch", FETCH).await;
    let put = |body| {
        app.send(
            Method::PUT,
            "/v1/agents/fetch/policy",
            Some(ADMIN_KEY),
            Some(body),
        )
    };
    let get = json!({ "action": "get", "input": { "url": upstream.url("/hello") } });

    put(json!({ "grants": { "http": { "allow": ["https://example.com/v1"] } } }))
        .await
        .assert_error(400, "invalid_json");
    put(json!({ "grants": { "http": { "allow": [] } } }))
        .await
        .assert_error(400, "invalid_policy");
    put(json!({ "grants": { "http": { "allow": [upstream.rule()], "max_requests": 0 } } }))
        .await
        .assert_error(400, "invalid_policy");

    let denied = app.invoke("fetch", ADMIN_KEY, get.clone()).await.ok(200);
    assert_eq!(denied["outcome"], "agent_error");
    assert_eq!(denied["error"]["code"], "http_request_denied");
    assert_eq!(denied["usage"]["http"]["requests_denied"], 1);
    assert_eq!(denied["denials"][0]["reason"], "not_granted");
    assert_eq!(denied["denials"][0]["target"], upstream.rule());

    let updated = put(json!({ "grants": { "http": { "allow": [upstream.rule()] } } }))
        .await
        .ok(200);
    assert_eq!(
        updated["policy"]["grants"]["http"]["allow"],
        json!([upstream.rule()])
    );
    assert_eq!(updated["policy"]["grants"]["http"]["max_requests"], 10);
    let fetched = app.invoke("fetch", ADMIN_KEY, get).await.ok(200);
    assert_eq!(fetched["outcome"], "succeeded", "{fetched}");
    assert_eq!(fetched["output"]["body"], HELLO);
    assert_eq!(fetched["usage"]["http"]["requests"], 1);
    assert_eq!(fetched["usage"]["http"]["bytes_received"], HELLO.len());
    assert!(fetched.get("denials").is_none(), "{fetched}");
    assert_eq!(upstream.hits(), ["GET /hello"]);
    app.stop().await;
}

async fn a_paused_agent_refuses_invocations_until_resumed(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let call = json!({ "action": "echo", "input": { "n": 1 } });
    assert_eq!(
        app.post("/v1/agents/echo/pause", ADMIN_KEY, json!({}))
            .await
            .ok(200)["status"],
        "paused"
    );
    let before = app.count("executions").await;
    app.invoke("echo", ADMIN_KEY, call.clone())
        .await
        .assert_error(409, "agent_paused");
    assert_eq!(app.count("executions").await, before);
    let denied = app
        .get("/v1/audit?action=agent.invoke", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(denied["items"][0]["result"], "denied");
    app.post("/v1/agents/echo/resume", ADMIN_KEY, json!({}))
        .await
        .ok(200);
    assert_eq!(
        app.invoke("echo", ADMIN_KEY, call).await.ok(200)["outcome"],
        "succeeded"
    );
    app.stop().await;
}

async fn a_deleted_agent_is_gone_but_its_history_stays(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let run = app
        .invoke("echo", ADMIN_KEY, json!({ "action": "echo", "input": {} }))
        .await
        .ok(200);
    assert_eq!(
        app.send(Method::DELETE, "/v1/agents/echo", Some(ADMIN_KEY), None)
            .await
            .status,
        204
    );
    app.get("/v1/agents/echo", ADMIN_KEY)
        .await
        .assert_error(404, "not_found");
    app.invoke("echo", ADMIN_KEY, json!({ "action": "echo" }))
        .await
        .assert_error(404, "not_found");
    let id = run["execution_id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/executions/{id}"), ADMIN_KEY)
            .await
            .ok(200)["agent"],
        "echo"
    );
    // The name is free again.
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "echo" }))
        .await
        .ok(201);
    app.stop().await;
}
