//! Key-value state under `corral serve`: granted by the agent's policy, kept in the
//! database across invocations, isolated per agent and per tenant (also by row-level
//! security on Postgres), limits held under concurrency, and the operator routes.

use corral_host::db::{Db, Tx};
use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app};
use corral_tests::plugins::NOTES;
use reqwest::Method;
use serde_json::{Value, json};

crate::on_both_backends!(
    a_kv_grant_keeps_state_across_invocations_within_its_limits,
    agents_and_tenants_never_see_each_others_keys,
    concurrent_sets_cannot_pass_max_keys_together,
    operators_list_clear_and_delete_keys_by_role_and_are_audited,
);

async fn notes(app: &TestApp, agent: &str, key: &str, action: &str, input: Value) -> Value {
    app.invoke(agent, key, json!({ "action": action, "input": input }))
        .await
        .ok(200)
}

fn usage(fields: Value) -> Value {
    let mut usage = json!({
        "reads": 0, "writes": 0, "deletes": 0, "lists": 0,
        "bytes_read": 0, "bytes_written": 0, "denied": 0, "refused": 0,
    });
    for (k, v) in fields.as_object().unwrap() {
        usage[k] = v.clone();
    }
    usage
}

async fn a_kv_grant_keeps_state_across_invocations_within_its_limits(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("notes", NOTES).await;

    let denied = notes(
        &app,
        "notes",
        ADMIN_KEY,
        "add",
        json!({ "id": "a", "text": "hello" }),
    )
    .await;
    assert_eq!(denied["outcome"], "agent_error");
    assert_eq!(denied["error"]["code"], "kv_denied");
    assert_eq!(denied["usage"]["kv"], usage(json!({ "denied": 1 })));
    assert_eq!(
        denied["denials"],
        json!([{ "capability": "kv", "target": "set", "reason": "not_granted",
                 "detail": "this agent has no kv grant" }])
    );
    assert_eq!(app.count("kv_entries").await, 0);

    app.send(
        Method::PUT,
        "/v1/agents/notes/policy",
        Some(ADMIN_KEY),
        Some(json!({ "grants": { "kv": { "max_keys": 0 } } })),
    )
    .await
    .assert_error(400, "invalid_policy");
    let agent = app
        .set_policy_as(ADMIN_KEY, "notes", json!({ "grants": { "kv": {} } }))
        .await;
    assert_eq!(
        agent["policy"]["grants"]["kv"],
        json!({ "max_value_bytes": 65536, "max_keys": 1000, "max_total_bytes": 10485760 })
    );

    let added = notes(
        &app,
        "notes",
        ADMIN_KEY,
        "add",
        json!({ "id": "a", "text": "hello" }),
    )
    .await;
    assert_eq!(added["outcome"], "succeeded", "{added:#}");
    assert_eq!(
        added["usage"]["kv"],
        usage(json!({ "writes": 1, "bytes_written": 25 }))
    );
    assert!(added.get("denials").is_none());
    // A later invocation (a fresh instance) reads what an earlier one wrote.
    let got = notes(&app, "notes", ADMIN_KEY, "get", json!({ "id": "a" })).await;
    assert_eq!(got["output"], json!({ "id": "a", "text": "hello" }));
    assert_eq!(
        got["usage"]["kv"],
        usage(json!({ "reads": 1, "bytes_read": 25 }))
    );
    notes(
        &app,
        "notes",
        ADMIN_KEY,
        "add",
        json!({ "id": "b", "text": "world" }),
    )
    .await;
    let listed = notes(&app, "notes", ADMIN_KEY, "list", json!({})).await;
    assert_eq!(
        listed["output"],
        json!({ "notes": [{ "id": "a", "text": "hello" }, { "id": "b", "text": "world" }] })
    );
    let deleted = notes(&app, "notes", ADMIN_KEY, "delete", json!({ "id": "a" })).await;
    assert_eq!(deleted["output"], json!({ "deleted": true }));
    assert_eq!(deleted["usage"]["kv"], usage(json!({ "deletes": 1 })));

    // Tightened limits hold for what is already stored.
    app.set_policy_as(
        ADMIN_KEY,
        "notes",
        json!({ "grants": { "kv": { "max_keys": 1, "max_value_bytes": 30 } } }),
    )
    .await;
    let second = notes(
        &app,
        "notes",
        ADMIN_KEY,
        "add",
        json!({ "id": "c", "text": "x" }),
    )
    .await;
    assert_eq!(second["error"]["code"], "kv_limit_exceeded");
    assert_eq!(
        second["error"]["message"],
        "the agent already holds 1 keys; the grant allows at most 1 (max_keys)"
    );
    assert_eq!(second["usage"]["kv"], usage(json!({ "refused": 1 })));
    let big = notes(
        &app,
        "notes",
        ADMIN_KEY,
        "add",
        json!({ "id": "b", "text": "x".repeat(20) }),
    )
    .await;
    assert_eq!(big["error"]["code"], "kv_limit_exceeded");
    let replaced = notes(
        &app,
        "notes",
        ADMIN_KEY,
        "add",
        json!({ "id": "b", "text": "again" }),
    )
    .await;
    assert_eq!(replaced["outcome"], "succeeded", "{replaced:#}");
    assert_eq!(app.count("kv_entries").await, 1);
    app.stop().await;
}

async fn agents_and_tenants_never_see_each_others_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let granted = json!({ "grants": { "kv": {} } });
    for name in ["left", "right"] {
        app.agent_with(name, NOTES).await;
        app.set_policy_as(ADMIN_KEY, name, granted.clone()).await;
    }
    notes(
        &app,
        "left",
        ADMIN_KEY,
        "add",
        json!({ "id": "l", "text": "left's" }),
    )
    .await;
    notes(
        &app,
        "right",
        ADMIN_KEY,
        "add",
        json!({ "id": "r", "text": "right's" }),
    )
    .await;

    // Another tenant, with an agent of the same name as one of ours.
    let (other_id, other_key) = app.tenant("other").await;
    app.post("/v1/agents", &other_key, json!({ "name": "left" }))
        .await
        .ok(201);
    app.upload("left", &other_key, std::fs::read(NOTES).unwrap())
        .await
        .ok(201);
    app.set_policy_as(&other_key, "left", granted.clone()).await;
    notes(
        &app,
        "left",
        &other_key,
        "add",
        json!({ "id": "o", "text": "other's" }),
    )
    .await;

    let ids = |reply: Value| -> Vec<String> {
        reply["output"]["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(notes(&app, "left", ADMIN_KEY, "list", json!({})).await),
        ["l"]
    );
    assert_eq!(
        ids(notes(&app, "right", ADMIN_KEY, "list", json!({})).await),
        ["r"]
    );
    assert_eq!(
        ids(notes(&app, "left", &other_key, "list", json!({})).await),
        ["o"]
    );
    let missing = notes(&app, "right", ADMIN_KEY, "get", json!({ "id": "l" })).await;
    assert_eq!(missing["error"]["code"], "not_found");

    // The operator routes are scoped the same way.
    let listed = app.get("/v1/agents/left/kv", &other_key).await.ok(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["key"], "note/o");
    app.send(
        Method::DELETE,
        "/v1/agents/right/kv",
        Some(&other_key),
        None,
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(app.count("kv_entries").await, 3);

    if let Db::Postgres(_) = &app.db {
        // Below the application: a transaction scoped to the other tenant sees only its
        // rows, and cannot write a row of ours.
        // As the host connects (corral_app); the test's own connection sees every row.
        let host = Db::connect(&app.database_url, 2).await.unwrap();
        let mut tx = host.begin(other_id.as_str()).await.unwrap();
        let Tx::Postgres(inner) = &mut tx else {
            unreachable!()
        };
        let visible: Vec<(String, String)> =
            sqlx::query_as("SELECT tenant_id, key FROM kv_entries ORDER BY key")
                .fetch_all(&mut **inner)
                .await
                .unwrap();
        assert_eq!(visible, vec![(other_id.clone(), "note/o".to_string())]);
        drop(tx);
        let Db::Postgres(pool) = &app.db else {
            unreachable!()
        };
        let (admin_tenant, left_agent): (String, String) =
            sqlx::query_as("SELECT tenant_id, agent_id FROM kv_entries WHERE key = 'note/l'")
                .fetch_one(pool)
                .await
                .unwrap();
        let mut tx = host.begin(other_id.as_str()).await.unwrap();
        let Tx::Postgres(inner) = &mut tx else {
            unreachable!()
        };
        let foreign = sqlx::query(
            "INSERT INTO kv_entries (tenant_id, agent_id, key, value, size_bytes, updated_at) \
             VALUES ($1, $2, 'note/x', '\\x00', 7, now())",
        )
        .bind(&admin_tenant)
        .bind(&left_agent)
        .execute(&mut **inner)
        .await;
        assert!(
            foreign.is_err(),
            "a scoped transaction wrote another tenant's row"
        );
        drop(tx);
        host.close().await;
    }
    app.stop().await;
}

async fn concurrent_sets_cannot_pass_max_keys_together(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("notes", NOTES).await;
    app.set_policy_as(
        ADMIN_KEY,
        "notes",
        json!({ "grants": { "kv": { "max_keys": 3 } } }),
    )
    .await;
    let adds = (0..8).map(|i| {
        let app = &app;
        async move {
            notes(
                app,
                "notes",
                ADMIN_KEY,
                "add",
                json!({ "id": format!("n{i}"), "text": "t" }),
            )
            .await
        }
    });
    let replies = futures::future::join_all(adds).await;
    let mut outcomes: Vec<String> = replies
        .iter()
        .map(|r| match r["outcome"].as_str().unwrap() {
            "succeeded" => "succeeded".to_string(),
            _ => r["error"]["code"].as_str().unwrap().to_string(),
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            "kv_limit_exceeded",
            "kv_limit_exceeded",
            "kv_limit_exceeded",
            "kv_limit_exceeded",
            "kv_limit_exceeded",
            "succeeded",
            "succeeded",
            "succeeded",
        ]
    );
    assert_eq!(app.count("kv_entries").await, 3);
    app.stop().await;
}

async fn operators_list_clear_and_delete_keys_by_role_and_are_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("notes", NOTES).await;
    app.set_policy_as(ADMIN_KEY, "notes", json!({ "grants": { "kv": {} } }))
        .await;
    for id in ["a", "b1", "b2", "b3"] {
        notes(
            &app,
            "notes",
            ADMIN_KEY,
            "add",
            json!({ "id": id, "text": "hello" }),
        )
        .await;
    }
    notes(
        &app,
        "notes",
        ADMIN_KEY,
        "add",
        json!({ "id": "t", "text": "brief", "ttl_ms": 3_600_000 }),
    )
    .await;
    let viewer = app.key("viewer").await;
    let developer = app.key("developer").await;

    // Viewers see keys, sizes and times, never values.
    let page = app
        .get("/v1/agents/notes/kv?limit=2", &viewer)
        .await
        .ok(200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["key"], "note/a");
    assert_eq!(items[0]["size_bytes"], 31);
    assert!(items[0]["updated_at"].is_string());
    assert!(items[0].get("expires_at").is_none());
    assert!(items[0].get("value_base64").is_none());
    assert_eq!(page["next_cursor"], "note/b1");
    let rest = app
        .get("/v1/agents/notes/kv?limit=10&cursor=note/b1", &viewer)
        .await
        .ok(200);
    let keys: Vec<_> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["note/b2", "note/b3", "note/t"]);
    assert!(rest["items"][2]["expires_at"].is_string());
    assert!(rest.get("next_cursor").is_none());
    app.get("/v1/agents/notes/kv?values=true", &viewer)
        .await
        .assert_error(403, "forbidden");
    let valued = app
        .get("/v1/agents/notes/kv?prefix=note/a&values=true", &developer)
        .await
        .ok(200);
    assert_eq!(
        valued["items"],
        json!([{ "key": "note/a", "size_bytes": 31, "updated_at": valued["items"][0]["updated_at"],
                 "value_base64": "eyJpZCI6ImEiLCJ0ZXh0IjoiaGVsbG8ifQ==" }])
    );
    app.get("/v1/agents/notes/kv?limit=0", &viewer)
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/agents/notes/kv?sort=key", &viewer)
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/agents/missing/kv", &viewer)
        .await
        .assert_error(404, "not_found");

    // Only admins remove state; refusals are audited.
    for key in [&viewer, &developer] {
        app.send(Method::DELETE, "/v1/agents/notes/kv", Some(key), None)
            .await
            .assert_error(403, "forbidden");
        app.send(
            Method::DELETE,
            "/v1/agents/notes/kv/note%2Fa",
            Some(key),
            None,
        )
        .await
        .assert_error(403, "forbidden");
    }
    let deleted = app
        .send(
            Method::DELETE,
            "/v1/agents/notes/kv/note%2Fa",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(deleted.status.as_u16(), 204, "{:#}", deleted.body);
    app.send(
        Method::DELETE,
        "/v1/agents/notes/kv/note%2Fa",
        Some(ADMIN_KEY),
        None,
    )
    .await
    .assert_error(404, "not_found");
    let cleared = app
        .send(
            Method::DELETE,
            "/v1/agents/notes/kv?prefix=note/b",
            Some(ADMIN_KEY),
            None,
        )
        .await
        .ok(200);
    assert_eq!(cleared, json!({ "deleted": 3 }));
    let left = notes(&app, "notes", ADMIN_KEY, "list", json!({})).await;
    assert_eq!(
        left["output"],
        json!({ "notes": [{ "id": "t", "text": "brief" }] })
    );
    let all = app
        .send(Method::DELETE, "/v1/agents/notes/kv", Some(ADMIN_KEY), None)
        .await
        .ok(200);
    assert_eq!(all, json!({ "deleted": 1 }));
    assert_eq!(app.count("kv_entries").await, 0);

    let events = |action: &'static str| {
        let app = &app;
        async move {
            app.get(&format!("/v1/audit?action={action}"), ADMIN_KEY)
                .await
                .ok(200)["items"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let deletes = events("agent.kv.delete").await;
    let results: Vec<_> = deletes
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["ok", "denied", "denied"], "newest first");
    assert_eq!(deletes[0]["after"], json!({ "key": "note/a" }));
    assert_eq!(deletes[0]["resource_type"], "agent");
    let clears = events("agent.kv.clear").await;
    let results: Vec<_> = clears
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["ok", "ok", "denied", "denied"]);
    assert_eq!(clears[0]["after"], json!({ "prefix": "", "deleted": 1 }));
    assert_eq!(
        clears[1]["after"],
        json!({ "prefix": "note/b", "deleted": 3 })
    );
    let lists = events("agent.kv.list").await;
    assert_eq!(
        lists.len(),
        1,
        "only the refused listing is audited: {lists:#?}"
    );
    assert_eq!(lists[0]["result"], "denied");
    app.stop().await;
}
