//! Authentication, roles, tenants, keys and isolation between tenants.

use corral_tests::app::{ADMIN_KEY, Backend, spawn_app, spawn_app_with};
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
    abusive_requests_get_clear_refusals,
    a_flood_of_bad_keys_is_limited_per_address_and_audited_in_aggregate,
    slow_and_oversized_clients_are_cut_off,
    tenant_and_key_names_have_one_spelling,
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

/// The failed authentications of the audit trail, once their windows closed: (events,
/// the failures they count).
async fn failed_authentications(
    app: &corral_tests::app::TestApp,
    at_least: u64,
) -> (Vec<serde_json::Value>, u64) {
    for _ in 0..100 {
        let audit = app
            .get("/v1/audit?action=auth.authenticate&limit=200", ADMIN_KEY)
            .await
            .ok(200);
        let events = audit["items"].as_array().unwrap().clone();
        let counted: u64 = events
            .iter()
            .map(|e| e["after"]["count"].as_u64().unwrap())
            .sum();
        if counted >= at_least {
            return (events, counted);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the failed authentications were never audited");
}

async fn requests_without_a_valid_key_are_refused_and_audited(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.auth_audit_window = std::time::Duration::from_secs(1);
    })
    .await;
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

    // Aggregated: one event per source and window, with the count.
    let (denied, counted) = failed_authentications(&app, 4).await;
    assert_eq!(counted, 4, "{denied:#?}");
    assert!(denied.len() <= 2, "one event per window: {denied:#?}");
    assert!(denied.iter().all(|e| e["result"] == "denied"
        && e["actor_key_id"].is_null()
        && e["client_addr"] == "127.0.0.1"));
    // The path is the one the client asked for, prefix and all.
    assert!(
        denied.iter().all(|e| e["after"]["path"] == "/v1/agents"),
        "{denied:#?}"
    );
    assert!(app.count("audit_events").await > before);
    app.stop().await;
}

async fn a_flood_of_bad_keys_is_limited_per_address_and_audited_in_aggregate(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.auth_audit_window = std::time::Duration::from_secs(1);
        config.auth_failure_burst = 20;
        config.auth_failures_per_minute = 60;
    })
    .await;
    // A key this node knows keeps working through the flood.
    app.get("/v1/agents", ADMIN_KEY).await.ok(200);
    let mut statuses = Vec::new();
    for i in 0..100 {
        let reply = app.get("/v1/agents", &format!("crl_flood_{i}")).await;
        if reply.status == 429 {
            reply.assert_error(429, "too_many_auth_failures");
            assert!(reply.retry_after().is_some());
        } else {
            reply.assert_error(401, "unauthenticated");
        }
        statuses.push(reply.status.as_u16());
    }
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert!(statuses[..20].iter().all(|&s| s == 401), "{statuses:?}");
    assert!(refused >= 75, "the bucket emptied: {statuses:?}");
    app.get("/v1/agents", ADMIN_KEY).await.ok(200);
    let (events, counted) = failed_authentications(&app, 100).await;
    assert_eq!(counted, 100);
    assert!(
        events.len() <= 4,
        "a handful of rows, not a hundred: {}",
        events.len()
    );
    let limited: u64 = events
        .iter()
        .map(|e| e["after"]["rate_limited"].as_u64().unwrap())
        .sum();
    assert_eq!(limited as usize, refused);
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
    let app = spawn_app_with(backend, |config| {
        config.auth_audit_window = std::time::Duration::from_secs(1);
    })
    .await;
    let with_header = |value: String| {
        app.send_request(
            app.request(Method::GET, "/v1/agents", None)
                .header("authorization", value),
        )
    };
    // RFC 9110 §11.1: the scheme is a case-insensitive token.
    with_header(format!("bearer {ADMIN_KEY}")).await.ok(200);
    with_header(format!("BEARER {ADMIN_KEY}")).await.ok(200);
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
    let (_, counted) = failed_authentications(&app, 6).await;
    assert_eq!(counted, 6, "each refusal is counted");
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
    .assert_error(400, "invalid_id");
    app.send(
        Method::DELETE,
        "/v1/keys/0190d9a0-0000-7000-8000-000000000000",
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

async fn abusive_requests_get_clear_refusals(backend: Backend) {
    let app = spawn_app_with(backend, |config| config.max_upload = 64 * 1024).await;
    app.post("/v1/agents", ADMIN_KEY, json!({ "name": "echo" }))
        .await
        .ok(201);
    // Every 401 says how to authenticate; two Authorization headers are refused.
    let missing = app.send(Method::GET, "/v1/agents", None, None).await;
    missing.assert_error(401, "unauthenticated");
    assert_eq!(missing.headers["www-authenticate"], "Bearer");
    let doubled = app
        .send_request(
            app.request(Method::GET, "/v1/agents", Some(ADMIN_KEY))
                .header("authorization", "Bearer crl_someone_else"),
        )
        .await;
    doubled.assert_error(401, "unauthenticated");
    assert_eq!(doubled.headers["www-authenticate"], "Bearer");
    // What is copied into the audit trail is bounded.
    let long_agent = "x".repeat(10_000);
    app.send_request(
        app.request(
            Method::GET,
            &format!("/v1/agents/{}", "p".repeat(2000)),
            None,
        )
        .header("user-agent", long_agent),
    )
    .await
    .assert_error(401, "unauthenticated");
    let audit = app
        .get("/v1/audit?action=auth.authenticate", ADMIN_KEY)
        .await
        .ok(200);
    for event in audit["items"].as_array().unwrap() {
        assert!(
            event["user_agent"].as_str().unwrap_or("").len() <= 256,
            "{event:#}"
        );
        let path = event["after"]["path"].as_str().unwrap_or("");
        assert!(path.len() <= 256, "{event:#}");
    }
    // An upload that declares more than the limit is refused before its body is read;
    // an empty one is 400.
    let before = app.snapshot().await;
    let declared = app
        .send_request(
            app.request(Method::POST, "/v1/agents/echo/versions", Some(ADMIN_KEY))
                .header("content-type", "application/wasm")
                .body(vec![0u8; 65 * 1024]),
        )
        .await;
    declared.assert_error(413, "payload_too_large");
    app.send_request(
        app.request(Method::POST, "/v1/agents/echo/versions", Some(ADMIN_KEY))
            .header("content-type", "application/wasm")
            .body(Vec::<u8>::new()),
    )
    .await
    .assert_error(400, "empty_body");
    assert_eq!(app.snapshot().await, before, "nothing was written");
    app.stop().await;
}

async fn tenant_and_key_names_have_one_spelling(backend: Backend) {
    let app = spawn_app(backend).await;
    // A composed and a decomposed é are one name.
    let created = app
        .post("/v1/tenants", ADMIN_KEY, json!({ "name": "Caf\u{e9}" }))
        .await
        .ok(201);
    assert_eq!(created["tenant"]["name"], "Caf\u{e9}");
    app.post("/v1/tenants", ADMIN_KEY, json!({ "name": "Cafe\u{301}" }))
        .await
        .assert_error(409, "tenant_exists");
    for bad in ["admin\u{202e}nimda", "a\u{7}b", "  ", &"x".repeat(129)] {
        app.post("/v1/tenants", ADMIN_KEY, json!({ "name": bad }))
            .await
            .assert_error(400, "invalid_name");
        app.post(
            "/v1/keys",
            ADMIN_KEY,
            json!({ "name": bad, "role": "viewer" }),
        )
        .await
        .assert_error(400, "invalid_name");
    }
    let key = app
        .post(
            "/v1/keys",
            ADMIN_KEY,
            json!({ "name": "  \u{fb01}le reader ", "role": "viewer" }),
        )
        .await
        .ok(201);
    assert_eq!(key["key"]["name"], "file reader", "{key:#}");
    app.stop().await;
}

async fn slow_and_oversized_clients_are_cut_off(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(backend, |config| {
        config.header_timeout = std::time::Duration::from_millis(800);
        config.body_timeout = std::time::Duration::from_millis(800);
    })
    .await;
    let address = app.url.trim_start_matches("http://").to_string();
    // Reads until the server closes the connection (or 5 s pass): what it sent.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> Option<String> {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut answer),
        )
        .await;
        read.ok()
            .map(|_| String::from_utf8_lossy(&answer).into_owned())
    }
    // A header that trickles in, and a connection that says nothing, are closed.
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert!(
        until_closed(&mut slow).await.is_some(),
        "a stalled header is cut off"
    );
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    assert!(
        until_closed(&mut idle).await.is_some(),
        "an idle connection is closed"
    );
    // A header over the cap is refused.
    let mut huge = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = huge.write_all(request.as_bytes()).await;
    let answer = until_closed(&mut huge).await.unwrap_or_default();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    // A body that stalls gets 408 once the client pauses past the body timeout.
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\""
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let answer = until_closed(&mut stalled).await.unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    // The server is still serving everyone else.
    app.get("/v1/agents", ADMIN_KEY).await.ok(200);
    app.stop().await;
}
