//! Authentication, roles, tenants, keys and isolation between tenants.

use corral_tests::app::{ADMIN_KEY, Backend, spawn_app};
use corral_tests::plugins::ECHO;
use reqwest::Method;
use serde_json::json;

crate::on_both_backends!(
    health_and_readiness_need_no_key,
    requests_without_a_valid_key_are_refused_and_audited,
    each_role_may_do_exactly_its_part,
    tenants_and_keys_are_managed_by_admins,
    a_tenant_never_sees_or_touches_another_tenants_things,
);

async fn health_and_readiness_need_no_key(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(
        app.send(Method::GET, "/healthz", None, None).await.ok(200)["status"],
        "ok"
    );
    let ready = app.send(Method::GET, "/readyz", None, None).await.ok(200);
    assert_eq!(
        ready["database"],
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    app.send(Method::GET, "/v1/nowhere", Some(ADMIN_KEY), None)
        .await
        .assert_error(404, "not_found");
    app.send(Method::PATCH, "/v1/agents", Some(ADMIN_KEY), None)
        .await
        .assert_error(405, "method_not_allowed");
    app.stop().await;
}

async fn requests_without_a_valid_key_are_refused_and_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = app.count("audit_events").await;
    app.send(Method::GET, "/v1/agents", None, None)
        .await
        .assert_error(401, "unauthenticated");
    app.send(
        Method::GET,
        "/v1/agents",
        Some("crl_not_a_real_key_at_all"),
        None,
    )
    .await
    .assert_error(401, "unauthenticated");
    let malformed = app
        .http
        .get(format!("{}/v1/agents", app.url))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 401);

    // A revoked key stops working at once.
    let created = app
        .post(
            "/v1/keys",
            ADMIN_KEY,
            json!({ "name": "temp", "role": "viewer" }),
        )
        .await
        .ok(201);
    let secret = created["secret"].as_str().unwrap();
    app.get("/v1/agents", secret).await.ok(200);
    let id = created["key"]["id"].as_str().unwrap();
    let revoked = app
        .send(
            Method::DELETE,
            &format!("/v1/keys/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await
        .ok(200);
    assert!(revoked["revoked_at"].is_string());
    app.get("/v1/agents", secret)
        .await
        .assert_error(401, "unauthenticated");

    let audit = app
        .get("/v1/audit?action=auth.authenticate", ADMIN_KEY)
        .await
        .ok(200);
    let denied = audit["items"].as_array().unwrap();
    assert_eq!(denied.len(), 4, "{audit:#}");
    assert!(
        denied
            .iter()
            .all(|e| e["result"] == "denied" && e["actor_key_id"].is_null())
    );
    assert!(app.count("audit_events").await >= before + 4);
    app.stop().await;
}

async fn each_role_may_do_exactly_its_part(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let viewer = app.key("viewer").await;
    let developer = app.key("developer").await;
    let echo = json!({ "action": "echo", "input": { "a": 1 } });

    // Viewers read.
    app.get("/v1/agents", &viewer).await.ok(200);
    app.get("/v1/agents/echo", &viewer).await.ok(200);
    app.get("/v1/executions", &viewer).await.ok(200);
    app.get("/v1/costs", &viewer).await.ok(200);
    app.get("/v1/audit", &viewer).await.ok(200);
    let before = app.snapshot().await;
    app.post("/v1/agents", &viewer, json!({ "name": "nope" }))
        .await
        .assert_error(403, "forbidden");
    app.invoke("echo", &viewer, echo.clone())
        .await
        .assert_error(403, "forbidden");
    app.upload("echo", &viewer, std::fs::read(ECHO).unwrap())
        .await
        .assert_error(403, "forbidden");
    app.post("/v1/agents/echo/pause", &viewer, json!({}))
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        app.snapshot().await,
        before,
        "refused requests wrote nothing"
    );

    // Developers build and run, but do not govern.
    app.post("/v1/agents", &developer, json!({ "name": "dev-agent" }))
        .await
        .ok(201);
    app.invoke("echo", &developer, echo.clone()).await.ok(200);
    app.post("/v1/agents/echo/pause", &developer, json!({}))
        .await
        .ok(200);
    app.post("/v1/agents/echo/resume", &developer, json!({}))
        .await
        .ok(200);
    let policy = json!({ "limits": { "fuel": 1000000 } });
    app.send(
        Method::PUT,
        "/v1/agents/echo/policy",
        Some(&developer),
        Some(policy.clone()),
    )
    .await
    .assert_error(403, "forbidden");
    app.send(
        Method::DELETE,
        "/v1/agents/dev-agent",
        Some(&developer),
        None,
    )
    .await
    .assert_error(403, "forbidden");
    app.post(
        "/v1/keys",
        &developer,
        json!({ "name": "x", "role": "admin" }),
    )
    .await
    .assert_error(403, "forbidden");
    app.post(
        "/v1/agents",
        &developer,
        json!({ "name": "with-policy", "policy": policy }),
    )
    .await
    .assert_error(403, "forbidden");

    // Admins govern.
    app.send(
        Method::PUT,
        "/v1/agents/echo/policy",
        Some(ADMIN_KEY),
        Some(json!({ "limits": { "fuel": 1000000 } })),
    )
    .await
    .ok(200);
    assert_eq!(
        app.send(
            Method::DELETE,
            "/v1/agents/dev-agent",
            Some(ADMIN_KEY),
            None
        )
        .await
        .status,
        204
    );

    // Every refusal is in the audit trail.
    let denied = app.get("/v1/audit?limit=200", ADMIN_KEY).await.ok(200);
    let denied: Vec<_> = denied["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["result"] == "denied")
        .collect();
    assert_eq!(denied.len(), 8, "one denial per refused request");
    app.stop().await;
}

async fn tenants_and_keys_are_managed_by_admins(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant_id, tenant_admin) = app.tenant("acme").await;
    app.post("/v1/tenants", ADMIN_KEY, json!({ "name": "acme" }))
        .await
        .assert_error(409, "tenant_exists");
    app.post("/v1/tenants", ADMIN_KEY, json!({ "name": "" }))
        .await
        .assert_error(400, "invalid_name");
    let tenants = app.get("/v1/tenants", ADMIN_KEY).await.ok(200);
    assert_eq!(
        tenants["items"].as_array().unwrap().len(),
        2,
        "operator and acme"
    );

    // A tenant's own admin manages its keys, but not tenants, nor other tenants' keys.
    app.get("/v1/tenants", &tenant_admin)
        .await
        .assert_error(403, "forbidden");
    app.post("/v1/tenants", &tenant_admin, json!({ "name": "evil" }))
        .await
        .assert_error(403, "forbidden");
    let operator_tenant =
        app.get("/v1/keys", ADMIN_KEY).await.ok(200)["items"][0]["tenant_id"].clone();
    let foreign = format!("/v1/keys?tenant_id={}", operator_tenant.as_str().unwrap());
    app.get(&foreign, &tenant_admin)
        .await
        .assert_error(403, "forbidden");
    let made = app
        .post(
            "/v1/keys",
            &tenant_admin,
            json!({ "name": "ci", "role": "developer" }),
        )
        .await
        .ok(201);
    assert!(made["secret"].as_str().unwrap().starts_with("crl_"));
    assert_eq!(made["key"]["tenant_id"], tenant_id.as_str());

    // The operator may manage the tenant's keys; listings never show secrets or hashes.
    let listed = app
        .get(&format!("/v1/keys?tenant_id={tenant_id}"), ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let text = listed.to_string();
    assert!(!text.contains("secret") && !text.contains("hash"), "{text}");
    app.post(
        "/v1/keys",
        ADMIN_KEY,
        json!({ "name": "x", "role": "owner" }),
    )
    .await
    .assert_error(400, "invalid_json");
    app.stop().await;
}

async fn a_tenant_never_sees_or_touches_another_tenants_things(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let run = app
        .invoke("echo", ADMIN_KEY, json!({ "action": "echo", "input": {} }))
        .await
        .ok(200);
    let execution = run["execution_id"].as_str().unwrap();
    let (_, other) = app.tenant("other").await;
    let before = app.snapshot().await;

    app.get("/v1/agents/echo", &other)
        .await
        .assert_error(404, "not_found");
    app.invoke("echo", &other, json!({ "action": "echo" }))
        .await
        .assert_error(404, "not_found");
    app.upload("echo", &other, std::fs::read(ECHO).unwrap())
        .await
        .assert_error(404, "not_found");
    app.post("/v1/agents/echo/pause", &other, json!({}))
        .await
        .assert_error(404, "not_found");
    app.send(Method::DELETE, "/v1/agents/echo", Some(&other), None)
        .await
        .assert_error(404, "not_found");
    app.send(
        Method::PUT,
        "/v1/agents/echo/policy",
        Some(&other),
        Some(json!({})),
    )
    .await
    .assert_error(404, "not_found");
    app.get(&format!("/v1/executions/{execution}"), &other)
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        app.get("/v1/agents", &other).await.ok(200)["items"],
        json!([])
    );
    assert_eq!(
        app.get("/v1/executions", &other).await.ok(200)["items"],
        json!([])
    );
    assert_eq!(
        app.get("/v1/costs", &other).await.ok(200)["total_executions"],
        0
    );
    let audit = app.get("/v1/audit?limit=200", &other).await.ok(200);
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] != "agent.create"),
        "{audit:#}"
    );
    assert_eq!(app.snapshot().await, before);

    // The owner still sees everything as it was.
    assert_eq!(
        app.get("/v1/agents/echo", ADMIN_KEY).await.ok(200)["status"],
        "active"
    );
    app.stop().await;
}
