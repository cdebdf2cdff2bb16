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
    the_authorization_scheme_is_case_insensitive_and_anything_else_is_refused,
    a_tenant_admin_cannot_manage_another_tenants_keys,
    two_tenants_may_each_have_an_agent_of_the_same_name,
    a_role_denial_names_the_agent_by_id,
    malformed_paths_and_queries_get_json_errors,
);

async fn a_role_denial_names_the_agent_by_id(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let agent = app.get("/v1/agents/echo", ADMIN_KEY).await.ok(200);
    let agent_id = agent["id"].as_str().unwrap().to_string();
    let viewer = app.key("viewer").await;
    app.invoke("echo", &viewer, json!({ "action": "echo", "input": {} }))
        .await
        .assert_error(403, "forbidden");
    app.invoke("ghost", &viewer, json!({ "action": "echo", "input": {} }))
        .await
        .assert_error(403, "forbidden");
    let audit = app
        .get("/v1/audit?action=agent.invoke", ADMIN_KEY)
        .await
        .ok(200);
    let events = audit["items"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{audit:#}");
    let by_name = |name: &str| {
        events
            .iter()
            .find(|e| e["after"]["name"] == name)
            .unwrap_or_else(|| panic!("no denial for {name}: {audit:#}"))
    };
    let real = by_name("echo");
    assert_eq!(real["result"], "denied");
    assert_eq!(real["resource_id"], agent_id.as_str());
    // No such agent: nothing to name by id, but the attempt is still on record.
    let ghost = by_name("ghost");
    assert_eq!(ghost["result"], "denied");
    assert!(ghost["resource_id"].is_null());
    app.stop().await;
}

async fn malformed_paths_and_queries_get_json_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    // %FF is not UTF-8.
    app.get("/v1/agents/%FF", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_path");
    app.get("/v1/agents?limit=5&colour=blue", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/agents?limit=lots", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.stop().await;
}

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
    app.send_request(
        app.request(Method::GET, "/v1/agents", None)
            .header("authorization", "Basic abc"),
    )
    .await
    .assert_error(401, "unauthenticated");

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
    // The path is the one the client asked for, prefix and all.
    assert!(
        denied.iter().all(|e| e["after"]["path"] == "/v1/agents"),
        "{audit:#}"
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

async fn the_authorization_scheme_is_case_insensitive_and_anything_else_is_refused(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let with_header = |value: String| {
        app.send_request(
            app.request(Method::GET, "/v1/agents", None)
                .header("authorization", value),
        )
    };
    // RFC 9110 §11.1: the scheme is a case-insensitive token.
    with_header(format!("bearer {ADMIN_KEY}")).await.ok(200);
    with_header(format!("BEARER {ADMIN_KEY}")).await.ok(200);
    let before = app.count("audit_events").await;
    for refused in [
        "Bearer".to_string(),
        "Bearer ".to_string(),
        format!("Basic {ADMIN_KEY}"),
        format!("Bearer{ADMIN_KEY}"),
        format!("Token {ADMIN_KEY}"),
        format!("Bearer {ADMIN_KEY}x"),
    ] {
        with_header(refused.clone())
            .await
            .assert_error(401, "unauthenticated");
    }
    assert_eq!(
        app.count("audit_events").await,
        before + 6,
        "each refusal is recorded"
    );
    app.stop().await;
}

async fn a_tenant_admin_cannot_manage_another_tenants_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant_id, tenant_admin) = app.tenant("acme").await;
    let operator_keys = app.get("/v1/keys", ADMIN_KEY).await.ok(200);
    let operator_key = operator_keys["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let operator_tenant = operator_keys["items"][0]["tenant_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = app.snapshot().await;

    app.post(
        "/v1/keys",
        &tenant_admin,
        json!({ "name": "sneaky", "role": "admin", "tenant_id": operator_tenant }),
    )
    .await
    .assert_error(403, "forbidden");
    app.send(
        Method::DELETE,
        &format!("/v1/keys/{operator_key}?tenant_id={operator_tenant}"),
        Some(&tenant_admin),
        None,
    )
    .await
    .assert_error(403, "forbidden");
    // Without naming the tenant, the key is looked up in the caller's own tenant only.
    app.send(
        Method::DELETE,
        &format!("/v1/keys/{operator_key}"),
        Some(&tenant_admin),
        None,
    )
    .await
    .assert_error(404, "not_found");
    app.post(
        "/v1/keys",
        &tenant_admin,
        json!({ "name": " ", "role": "viewer" }),
    )
    .await
    .assert_error(400, "invalid_name");
    app.post(
        "/v1/keys",
        ADMIN_KEY,
        json!({ "name": "x", "role": "viewer", "tenant_id": "no-such-tenant" }),
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(
        app.snapshot().await,
        before,
        "refused requests wrote nothing"
    );

    let denials = app.get("/v1/audit?limit=200", &tenant_admin).await.ok(200);
    let denials: Vec<_> = denials["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["result"] == "denied")
        .collect();
    assert_eq!(denials.len(), 2, "both cross-tenant attempts: {denials:#?}");
    assert!(
        denials
            .iter()
            .all(|e| e["resource_id"] == operator_tenant.as_str())
    );

    // The operator manages the tenant's keys by naming it; revoking twice keeps the time.
    let made = app
        .post(
            "/v1/keys",
            ADMIN_KEY,
            json!({ "name": "ci", "role": "developer", "tenant_id": tenant_id }),
        )
        .await
        .ok(201);
    let (key_id, secret) = (
        made["key"]["id"].as_str().unwrap(),
        made["secret"].as_str().unwrap(),
    );
    assert_eq!(made["key"]["tenant_id"], tenant_id.as_str());
    app.get("/v1/agents", secret).await.ok(200);
    let revoke = format!("/v1/keys/{key_id}?tenant_id={tenant_id}");
    let first = app
        .send(Method::DELETE, &revoke, Some(ADMIN_KEY), None)
        .await
        .ok(200);
    let second = app
        .send(Method::DELETE, &revoke, Some(ADMIN_KEY), None)
        .await
        .ok(200);
    assert_eq!(first["revoked_at"], second["revoked_at"]);
    app.get("/v1/agents", secret)
        .await
        .assert_error(401, "unauthenticated");
    app.send(
        Method::DELETE,
        "/v1/keys/no-such-key",
        Some(ADMIN_KEY),
        None,
    )
    .await
    .assert_error(404, "not_found");
    let revocations = app
        .get("/v1/audit?action=key.revoke", ADMIN_KEY)
        .await
        .ok(200);
    let event = &revocations["items"][1];
    assert!(event["before"]["revoked_at"].is_null(), "{event:#}");
    assert!(event["after"]["revoked_at"].is_string(), "{event:#}");
    app.stop().await;
}

async fn two_tenants_may_each_have_an_agent_of_the_same_name(backend: Backend) {
    let app = spawn_app(backend).await;
    app.agent_with("echo", ECHO).await;
    let (_, other) = app.tenant("other").await;
    app.post("/v1/agents", &other, json!({ "name": "echo" }))
        .await
        .ok(201);
    // Their agent has no version yet; ours is unaffected.
    app.invoke("echo", &other, json!({ "action": "echo" }))
        .await
        .assert_error(409, "no_active_version");
    assert_eq!(
        app.get("/v1/agents/echo/versions", &other).await.ok(200)["items"],
        json!([])
    );
    let ours = app.get("/v1/agents/echo/versions", ADMIN_KEY).await.ok(200);
    let version_id = ours["items"][0]["id"].as_str().unwrap();
    app.post(
        &format!("/v1/agents/echo/versions/{version_id}/activate"),
        &other,
        json!({}),
    )
    .await
    .assert_error(404, "not_found");
    app.invoke(
        "echo",
        &other,
        json!({ "action": "echo", "version": version_id }),
    )
    .await
    .assert_error(404, "not_found");

    // Same bytes, other tenant: a version of their own, not a link to ours.
    let theirs = app
        .upload("echo", &other, std::fs::read(ECHO).unwrap())
        .await
        .ok(201);
    assert_ne!(theirs["id"], version_id);
    app.invoke(
        "echo",
        &other,
        json!({ "action": "echo", "input": { "t": "b" } }),
    )
    .await
    .ok(200);
    app.invoke(
        "echo",
        ADMIN_KEY,
        json!({ "action": "echo", "input": { "t": "a" } }),
    )
    .await
    .ok(200);
    for (key, input) in [
        (ADMIN_KEY, r#"{"t":"a"}"#),
        (other.as_str(), r#"{"t":"b"}"#),
    ] {
        let executions = app.get("/v1/executions?agent=echo", key).await.ok(200);
        let items = executions["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{executions:#}");
        assert_eq!(items[0]["input_excerpt"], input);
        assert_eq!(
            app.get("/v1/costs", key).await.ok(200)["total_executions"],
            1
        );
    }
    app.stop().await;
}
