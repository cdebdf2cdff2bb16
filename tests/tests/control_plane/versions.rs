//! Uploading, listing and activating versions; every malformed upload is refused with
//! its own code and writes nothing.

use corral_tests::app::{ADMIN_KEY, Backend, spawn_app, spawn_app_with};
use corral_tests::plugins::{ECHO, HOSTILE, NOT_AN_AGENT, TEXT_STATS};
use reqwest::Method;
use serde_json::json;

crate::on_both_backends!(
    artifacts_no_live_version_needs_are_collected,
    an_upload_refused_by_a_plan_cap_is_not_compiled_or_cached,
    an_upload_is_validated_compiled_versioned_and_deduplicated,
    malformed_uploads_are_refused_by_kind_and_write_nothing,
    an_oversized_upload_is_cut_off,
    versions_are_activated_and_rolled_back,
    an_upload_may_ask_to_be_activated_or_not,
    viewers_list_versions_and_developers_activate_them,
);

async fn an_upload_is_validated_compiled_versioned_and_deduplicated(backend: Backend) {
    let app = spawn_app(backend).await;
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "echo" }))
        .await
        .ok(201);
    let first = app
        .upload("echo", ADMIN_KEY, std::fs::read(ECHO).unwrap())
        .await
        .ok(201);
    assert_eq!(first["metadata"]["name"], "echo");
    assert_eq!(first["version"], "0.1.0");
    assert_eq!(first["active"], true, "the first version becomes active");
    assert_eq!(first["size_bytes"], std::fs::read(ECHO).unwrap().len());

    // The same bytes again are the same version, not a new row.
    let rows = app.count("agent_versions").await;
    let again = app
        .upload("echo", ADMIN_KEY, std::fs::read(ECHO).unwrap())
        .await
        .ok(200);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(app.count("agent_versions").await, rows);

    // Different bytes claiming the same semver (hostile is 0.1.0 too) are refused.
    app.upload("echo", ADMIN_KEY, std::fs::read(HOSTILE).unwrap())
        .await
        .assert_error(409, "version_exists");
    assert_eq!(app.count("agent_versions").await, rows);
    app.upload("missing", ADMIN_KEY, std::fs::read(ECHO).unwrap())
        .await
        .assert_error(404, "not_found");
    let listed = app.get("/v1/agents/echo/versions", ADMIN_KEY).await.ok(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn malformed_uploads_are_refused_by_kind_and_write_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "target" }))
        .await
        .ok(201);
    let mut truncated = std::fs::read(ECHO).unwrap();
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not wasm",
            b"definitely not wasm".to_vec(),
            "not_a_component",
        ),
        ("text", b"(component)".to_vec(), "not_a_component"),
        (
            "core module",
            wat::parse_str("(module)").unwrap(),
            "not_a_component",
        ),
        ("truncated", truncated, "malformed_component"),
        (
            "wrong world",
            std::fs::read(NOT_AN_AGENT).unwrap(),
            "wrong_world",
        ),
    ];
    let before = app.snapshot().await;
    // Nothing to check at all: the request itself is wrong.
    app.upload("target", ADMIN_KEY, Vec::new())
        .await
        .assert_error(400, "empty_body");
    for (what, bytes, code) in cases {
        let reply = app.upload("target", ADMIN_KEY, bytes).await;
        assert_eq!(reply.status.as_u16(), 422, "{what}: {:#}", reply.body);
        assert_eq!(
            reply.body["error"]["code"], code,
            "{what}: {:#}",
            reply.body
        );
    }
    for content_type in ["application/octet-stream", "application/json"] {
        app.send_request(
            app.request(Method::POST, "/v1/agents/target/versions", Some(ADMIN_KEY))
                .header("content-type", content_type)
                .body(std::fs::read(ECHO).unwrap()),
        )
        .await
        .assert_error(415, "unsupported_media_type");
    }
    app.send_request(
        app.request(Method::POST, "/v1/agents/target/versions", Some(ADMIN_KEY))
            .body(std::fs::read(ECHO).unwrap()),
    )
    .await
    .assert_error(415, "unsupported_media_type");
    assert_eq!(app.snapshot().await, before, "no refused upload left a row");
    assert_eq!(
        app.get("/v1/agents/target", ADMIN_KEY).await.ok(200)["active_version_id"],
        serde_json::Value::Null
    );
    app.stop().await;
}

async fn an_oversized_upload_is_cut_off(backend: Backend) {
    let app = spawn_app_with(backend, |config| config.max_upload = 64 * 1024).await;
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "big" }))
        .await
        .ok(201);
    let before = app.snapshot().await;
    app.upload("big", ADMIN_KEY, std::fs::read(HOSTILE).unwrap())
        .await
        .assert_error(413, "payload_too_large");
    assert_eq!(app.snapshot().await, before);
    app.stop().await;
}

async fn versions_are_activated_and_rolled_back(backend: Backend) {
    let app = spawn_app(backend).await;
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "multi" }))
        .await
        .ok(201);
    let old = app
        .upload("multi", ADMIN_KEY, std::fs::read(ECHO).unwrap())
        .await
        .ok(201);
    // A later upload is stored but not activated unless asked.
    let new = app
        .upload("multi", ADMIN_KEY, std::fs::read(TEXT_STATS).unwrap())
        .await
        .ok(201);
    assert_eq!(
        (new["version"].as_str(), new["active"].as_bool()),
        (Some("1.0.0"), Some(false))
    );
    let echo = json!({ "action": "echo", "input": { "v": 1 } });
    let stats = json!({ "action": "stats", "input": { "text": "one two" } });
    assert_eq!(
        app.invoke("multi", ADMIN_KEY, echo.clone()).await.ok(200)["version"],
        "0.1.0"
    );

    // Activate the new version by semver, then roll back by id.
    app.post(
        "/v1/agents/multi/versions/1.0.0/activate",
        ADMIN_KEY,
        json!({}),
    )
    .await
    .ok(200);
    let ran = app.invoke("multi", ADMIN_KEY, stats.clone()).await.ok(200);
    assert_eq!(
        (ran["version"].as_str(), ran["output"]["words"].as_i64()),
        (Some("1.0.0"), Some(2))
    );
    let id = old["id"].as_str().unwrap();
    let back = app
        .post(
            &format!("/v1/agents/multi/versions/{id}/activate"),
            ADMIN_KEY,
            json!({}),
        )
        .await
        .ok(200);
    assert_eq!(back["active"], true);
    assert_eq!(
        app.invoke("multi", ADMIN_KEY, echo).await.ok(200)["output"],
        json!({ "v": 1 })
    );
    // The old version has no `stats`: refused before anything runs.
    app.invoke("multi", ADMIN_KEY, stats)
        .await
        .assert_error(400, "unknown_action");

    // An invocation may pin a version; unknown versions are 404.
    let pinned = app
        .invoke(
            "multi",
            ADMIN_KEY,
            json!({ "action": "stats", "input": { "text": "a" }, "version": "1.0.0" }),
        )
        .await
        .ok(200);
    assert_eq!(pinned["outcome"], "succeeded");
    app.post(
        "/v1/agents/multi/versions/9.9.9/activate",
        ADMIN_KEY,
        json!({}),
    )
    .await
    .assert_error(404, "not_found");
    app.invoke(
        "multi",
        ADMIN_KEY,
        json!({ "action": "echo", "version": "2.0.0" }),
    )
    .await
    .assert_error(404, "not_found");

    let listed = app
        .get("/v1/agents/multi/versions?limit=1", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(listed["items"][0]["version"], "1.0.0", "newest first");
    assert!(listed["next_cursor"].is_string());
    let audit = app
        .get("/v1/audit?action=version.activate", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(audit["items"].as_array().unwrap().len(), 2);
    app.stop().await;
}

async fn an_upload_may_ask_to_be_activated_or_not(backend: Backend) {
    let app = spawn_app(backend).await;
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "multi" }))
        .await
        .ok(201);
    let upload = |query: &'static str, plugin: &'static str| {
        let app = &app;
        async move {
            app.send_request(
                app.request(
                    Method::POST,
                    &format!("/v1/agents/multi/versions{query}"),
                    Some(ADMIN_KEY),
                )
                .header("content-type", "application/wasm")
                .body(std::fs::read(plugin).unwrap()),
            )
            .await
        }
    };
    let before = app.snapshot().await;
    upload("?activate=maybe", ECHO)
        .await
        .assert_error(400, "invalid_query");
    upload("?color=red", ECHO)
        .await
        .assert_error(400, "invalid_query");
    assert_eq!(app.snapshot().await, before);

    // The first version is not activated when told not to be.
    let first = upload("?activate=false", ECHO).await.ok(201);
    assert_eq!(first["active"], false);
    assert!(app.get("/v1/agents/multi", ADMIN_KEY).await.ok(200)["active_version_id"].is_null());
    app.invoke("multi", ADMIN_KEY, json!({ "action": "echo" }))
        .await
        .assert_error(409, "no_active_version");
    // A later one is, when told to be.
    let second = upload("?activate=true", TEXT_STATS).await.ok(201);
    assert_eq!(second["active"], true);
    assert_eq!(
        app.get("/v1/agents/multi", ADMIN_KEY).await.ok(200)["active_version_id"],
        second["id"]
    );
    let listed = app
        .get("/v1/agents/multi/versions", ADMIN_KEY)
        .await
        .ok(200);
    let active: Vec<_> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap(),
                v["active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(active, [("1.0.0", true), ("0.1.0", false)]);
    app.get("/v1/agents/multi/versions?limit=0", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/agents/missing/versions", ADMIN_KEY)
        .await
        .assert_error(404, "not_found");
    app.stop().await;
}

async fn viewers_list_versions_and_developers_activate_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app.agent_with("multi", ECHO).await;
    app.upload("multi", ADMIN_KEY, std::fs::read(TEXT_STATS).unwrap())
        .await
        .ok(201);
    let viewer = app.key("viewer").await;
    let developer = app.key("developer").await;
    assert_eq!(
        app.get("/v1/agents/multi/versions", &viewer).await.ok(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let denied_before = app.get("/v1/audit?limit=200", ADMIN_KEY).await.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["result"] == "denied")
        .count();
    app.post(
        "/v1/agents/multi/versions/1.0.0/activate",
        &viewer,
        json!({}),
    )
    .await
    .assert_error(403, "forbidden");
    assert_eq!(
        app.get("/v1/agents/multi", ADMIN_KEY).await.ok(200)["active_version_id"],
        first["id"]
    );
    let denied = app
        .get("/v1/audit?action=version.activate", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(denied["items"][0]["result"], "denied");
    assert_eq!(
        app.get("/v1/audit?limit=200", ADMIN_KEY).await.ok(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["result"] == "denied")
            .count(),
        denied_before + 1
    );
    let activated = app
        .post(
            "/v1/agents/multi/versions/1.0.0/activate",
            &developer,
            json!({}),
        )
        .await
        .ok(200);
    assert_eq!(activated["active"], true);
    assert_eq!(
        app.invoke(
            "multi",
            &developer,
            json!({ "action": "stats", "input": { "text": "a b c" } })
        )
        .await
        .ok(200)["output"]["words"],
        3
    );
    app.stop().await;
}

async fn an_upload_refused_by_a_plan_cap_is_not_compiled_or_cached(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant, key) = app.tenant("small").await;
    app.send(
        Method::PUT,
        &format!("/v1/tenants/{tenant}/policy"),
        Some(ADMIN_KEY),
        Some(json!({ "caps": { "max_versions": 1 } })),
    )
    .await
    .ok(200);
    app.post("/v1/agents", &key, json!({ "name": "one" }))
        .await
        .ok(201);
    app.upload("one", &key, std::fs::read(ECHO).unwrap())
        .await
        .ok(201);
    let artifacts = |app: &corral_tests::app::TestApp| {
        std::fs::read_dir(app.data_dir().join("artifacts"))
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    let before = artifacts(&app);
    app.upload(
        "one",
        &key,
        std::fs::read(corral_tests::plugins::TEXT_STATS).unwrap(),
    )
    .await
    .assert_error(409, "plan_limit_reached");
    assert_eq!(
        artifacts(&app),
        before,
        "nothing compiled, nothing left on disk"
    );
    app.stop().await;
}

async fn artifacts_no_live_version_needs_are_collected(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.retention_interval = std::time::Duration::from_millis(200);
        // Young enough that an upload being stored is never collected under it.
        config.artifact_min_age = std::time::Duration::from_secs(1);
    })
    .await;
    let artifacts = |app: &corral_tests::app::TestApp| -> Vec<String> {
        std::fs::read_dir(app.data_dir().join("artifacts"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".cwasm"))
                    .collect()
            })
            .unwrap_or_default()
    };
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "target" }))
        .await
        .ok(201);
    // A component of the wrong world compiles, is refused, and leaves nothing behind.
    app.upload("target", ADMIN_KEY, std::fs::read(NOT_AN_AGENT).unwrap())
        .await
        .assert_error(422, "wrong_world");
    assert!(artifacts(&app).is_empty(), "{:?}", artifacts(&app));
    // A live version's artifact stays; a deleted agent's goes.
    app.agent_with("kept", ECHO).await;
    app.agent_with("gone", TEXT_STATS).await;
    assert_eq!(artifacts(&app).len(), 2);
    app.send(Method::DELETE, "/v1/agents/gone", Some(ADMIN_KEY), None)
        .await
        .ok(204);
    let mut left = artifacts(&app);
    for _ in 0..100 {
        left = artifacts(&app);
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left.len(), 1, "{left:?}");
    app.invoke("kept", ADMIN_KEY, json!({ "action": "echo" }))
        .await
        .ok(200);
    app.stop().await;
}
