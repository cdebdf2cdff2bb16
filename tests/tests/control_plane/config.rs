//! Agents' config values and secrets over the API: roles, limits, write-only secrets
//! sealed at rest (and bound to their agent and name), audit events without values,
//! invocations that read them, tenant isolation, and a server without a key.

use corral_host::on_pool;
use corral_host::secrets::{Sealed, SecretsKey};
use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app, spawn_app_with};
use corral_tests::plugins::{GREETER, HOSTILE};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

crate::on_both_backends!(
    config_values_are_replaced_read_and_deleted_by_role,
    secrets_are_write_only_and_sealed_for_their_agent_and_name,
    an_invocation_reads_its_config_and_only_granted_secrets,
    a_secret_the_agent_leaks_is_redacted_from_the_response_and_the_record,
    config_and_secrets_stay_in_their_tenant,
    bad_names_values_and_too_many_entries_are_refused,
);

/// The server key of these tests (base64 of 32 bytes).
const SERVER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const SIGNING_KEY: &str = "greeter-signing-key-value-42";
const TOKEN: &str = "tok_live_5f4e3d2c1b0a";

fn server_key() -> SecretsKey {
    SecretsKey::from_base64(SERVER_KEY).unwrap()
}

/// An app whose secrets key is [`SERVER_KEY`] (on both backends).
async fn keyed_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |config| config.secrets_key = Some(server_key())).await
}

async fn put(app: &TestApp, path: &str, key: &str, body: Value) -> corral_tests::app::Reply {
    app.send(Method::PUT, path, Some(key), Some(body)).await
}

async fn delete(app: &TestApp, path: &str, key: &str) -> corral_tests::app::Reply {
    app.send(Method::DELETE, path, Some(key), None).await
}

async fn agent_id(app: &TestApp, name: &str, key: &str) -> String {
    app.get(&format!("/v1/agents/{name}"), key).await.ok(200)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn hmac_hex(key: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The audit events of `action`, oldest first.
async fn events(app: &TestApp, action: &str) -> Vec<Value> {
    let mut items = app
        .get(&format!("/v1/audit?action={action}"), ADMIN_KEY)
        .await
        .ok(200)["items"]
        .as_array()
        .unwrap()
        .clone();
    items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    items
}

/// Every stored secret row: (agent id, name, ciphertext, nonce, key id).
async fn secret_rows(app: &TestApp) -> Vec<(String, String, Vec<u8>, Vec<u8>, String)> {
    on_pool!(&app.db, pool => sqlx::query_as(
        "SELECT agent_id, name, ciphertext, nonce, key_id FROM agent_secrets ORDER BY agent_id, name")
        .fetch_all(pool)
        .await)
    .unwrap()
}

async fn config_values_are_replaced_read_and_deleted_by_role(backend: Backend) {
    let app = keyed_app(backend).await;
    app.agent_with("greeter", GREETER).await;
    let viewer = app.key("viewer").await;
    let developer = app.key("developer").await;

    assert_eq!(
        app.get("/v1/agents/greeter/config", &viewer).await.ok(200),
        json!({ "values": {} })
    );
    let first = json!({ "values": { "greeting": "Hey {name}", "color": "blue" } });
    put(&app, "/v1/agents/greeter/config", &developer, first.clone())
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        put(&app, "/v1/agents/greeter/config", ADMIN_KEY, first.clone())
            .await
            .ok(200),
        first
    );
    assert_eq!(
        app.get("/v1/agents/greeter/config", &viewer).await.ok(200),
        first
    );

    // PUT replaces: a value left out is removed.
    let second = json!({ "values": { "greeting": "Yo {name}" } });
    put(&app, "/v1/agents/greeter/config", ADMIN_KEY, second.clone())
        .await
        .ok(200);
    assert_eq!(
        app.get("/v1/agents/greeter/config", &viewer).await.ok(200),
        second
    );

    delete(&app, "/v1/agents/greeter/config/greeting", &developer)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        delete(&app, "/v1/agents/greeter/config/greeting", ADMIN_KEY)
            .await
            .status,
        204
    );
    delete(&app, "/v1/agents/greeter/config/greeting", ADMIN_KEY)
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        app.get("/v1/agents/greeter/config", &viewer).await.ok(200),
        json!({ "values": {} })
    );
    app.get("/v1/agents/nobody/config", ADMIN_KEY)
        .await
        .assert_error(404, "not_found");

    // Audited with the values before and after (config values are not secret).
    let id = agent_id(&app, "greeter", ADMIN_KEY).await;
    let updates = events(&app, "agent.config.update").await;
    let updates: Vec<(&Value, &Value, &Value, &Value)> = updates
        .iter()
        .filter(|e| e["result"] == "ok")
        .map(|e| (&e["resource_id"], &e["before"], &e["after"], &e["result"]))
        .collect();
    assert_eq!(
        updates,
        [
            (&json!(id), &json!({ "values": {} }), &first, &json!("ok")),
            (&json!(id), &first, &second, &json!("ok")),
        ]
    );
    let denied = events(&app, "agent.config.update").await;
    assert_eq!(denied.iter().filter(|e| e["result"] == "denied").count(), 1);
    let deletes = events(&app, "agent.config.delete").await;
    let ok: Vec<&Value> = deletes.iter().filter(|e| e["result"] == "ok").collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(
        ok[0]["before"],
        json!({ "name": "greeting", "value": "Yo {name}" })
    );
    app.stop().await;
}

async fn secrets_are_write_only_and_sealed_for_their_agent_and_name(backend: Backend) {
    let app = keyed_app(backend).await;
    app.agent_with("greeter", GREETER).await;
    app.agent_with("other", GREETER).await;
    let viewer = app.key("viewer").await;
    let developer = app.key("developer").await;
    let path = "/v1/agents/greeter/secrets/SIGNING_KEY";

    put(&app, path, &developer, json!({ "value": SIGNING_KEY }))
        .await
        .assert_error(403, "forbidden");
    let created = put(&app, path, ADMIN_KEY, json!({ "value": SIGNING_KEY }))
        .await
        .ok(201);
    assert_eq!(created["name"], "SIGNING_KEY");
    assert_eq!(
        created.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["name", "updated_at"]
    );
    // Setting it again replaces it: 200.
    put(&app, path, ADMIN_KEY, json!({ "value": SIGNING_KEY }))
        .await
        .ok(200);

    let listed = app.get("/v1/agents/greeter/secrets", &viewer).await.ok(200);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], "SIGNING_KEY");
    assert_eq!(
        items[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["name", "updated_at"]
    );

    // No endpoint shows the value, and neither does the audit trail.
    for shown in [
        app.get("/v1/agents/greeter/secrets", ADMIN_KEY).await.body,
        app.get("/v1/agents/greeter/config", ADMIN_KEY).await.body,
        app.get("/v1/agents/greeter", ADMIN_KEY).await.body,
        app.get("/v1/audit?limit=200", ADMIN_KEY).await.body,
    ] {
        assert!(!shown.to_string().contains(SIGNING_KEY), "{shown}");
    }
    let sets = events(&app, "agent.secret.set").await;
    let sets: Vec<(&Value, &Value)> = sets.iter().map(|e| (&e["result"], &e["after"])).collect();
    let after = |replaced: bool| json!({ "name": "SIGNING_KEY", "value": "[redacted]", "replaced": replaced });
    assert_eq!(
        sets,
        [
            (&json!("denied"), &json!({ "name": "greeter" })),
            (&json!("ok"), &after(false)),
            (&json!("ok"), &after(true)),
        ]
    );

    // At rest: ciphertext under the server's key, bound to the agent and the name.
    let greeter = agent_id(&app, "greeter", ADMIN_KEY).await;
    let other = agent_id(&app, "other", ADMIN_KEY).await;
    let rows = secret_rows(&app).await;
    assert_eq!(rows.len(), 1);
    let (row_agent, row_name, ciphertext, nonce, key_id) = rows[0].clone();
    assert_eq!(
        (row_agent.as_str(), row_name.as_str()),
        (greeter.as_str(), "SIGNING_KEY")
    );
    assert_eq!(nonce.len(), 24);
    assert_eq!(
        ciphertext.len(),
        SIGNING_KEY.len() + 16,
        "plaintext plus the tag"
    );
    assert!(
        !ciphertext
            .windows(SIGNING_KEY.len())
            .any(|w| w == SIGNING_KEY.as_bytes())
    );
    let sealed = Sealed {
        ciphertext: ciphertext.clone(),
        nonce: nonce.clone(),
        key_id: key_id.clone(),
    };
    let key = server_key();
    assert_eq!(key_id, key.id());
    assert_eq!(
        key.open(&greeter, "SIGNING_KEY", &sealed).unwrap(),
        SIGNING_KEY
    );
    assert!(key.open(&other, "SIGNING_KEY", &sealed).is_err());
    assert!(key.open(&greeter, "OTHER_NAME", &sealed).is_err());

    // A ciphertext copied to another agent's row does not decrypt there: the agent
    // that reads it gets `unavailable`, not the value.
    let tenant: (String,) =
        on_pool!(&app.db, pool => sqlx::query_as("SELECT tenant_id FROM agents WHERE id = $1")
        .bind(&other).fetch_one(pool).await)
        .unwrap();
    on_pool!(&app.db, pool => sqlx::query(
        "INSERT INTO agent_secrets (tenant_id, agent_id, name, ciphertext, nonce, key_id, updated_at) VALUES ($1, $2, 'SIGNING_KEY', $3, $4, $5, $6)")
        .bind(&tenant.0).bind(&other).bind(&ciphertext).bind(&nonce).bind(&key_id).bind(corral_host::db::now())
        .execute(pool).await.map(|_| ()))
    .unwrap();
    put(
        &app,
        "/v1/agents/other/policy",
        ADMIN_KEY,
        json!({ "grants": { "secrets": ["SIGNING_KEY"] } }),
    )
    .await
    .ok(200);
    let moved = app
        .invoke(
            "other",
            ADMIN_KEY,
            json!({ "action": "sign", "input": { "name": "Ada" } }),
        )
        .await
        .ok(200);
    assert_eq!(moved["outcome"], "agent_error");
    assert_eq!(moved["error"]["code"], "config_unavailable");
    assert_eq!(
        moved["error"]["message"],
        "the secret \"SIGNING_KEY\" could not be decrypted by this server"
    );

    delete(&app, path, &developer)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(delete(&app, path, ADMIN_KEY).await.status, 204);
    delete(&app, path, ADMIN_KEY)
        .await
        .assert_error(404, "not_found");
    let deletes = events(&app, "agent.secret.delete").await;
    let ok: Vec<&Value> = deletes.iter().filter(|e| e["result"] == "ok").collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["before"], json!({ "name": "SIGNING_KEY" }));
    assert_eq!(ok[0]["after"], Value::Null);
    assert_eq!(
        app.get("/v1/agents/greeter/secrets", &viewer).await.ok(200),
        json!({ "items": [] })
    );
    app.stop().await;
}

async fn an_invocation_reads_its_config_and_only_granted_secrets(backend: Backend) {
    let app = keyed_app(backend).await;
    app.agent_with("greeter", GREETER).await;
    put(
        &app,
        "/v1/agents/greeter/config",
        ADMIN_KEY,
        json!({ "values": { "greeting": "Good day, {name}." } }),
    )
    .await
    .ok(200);
    put(
        &app,
        "/v1/agents/greeter/secrets/SIGNING_KEY",
        ADMIN_KEY,
        json!({ "value": SIGNING_KEY }),
    )
    .await
    .ok(201);
    let input = json!({ "name": "Ada" });

    let greeted = app
        .invoke(
            "greeter",
            ADMIN_KEY,
            json!({ "action": "greet", "input": input }),
        )
        .await
        .ok(200);
    assert_eq!(greeted["output"], json!({ "message": "Good day, Ada." }));
    assert_eq!(
        greeted["usage"]["config"],
        json!({ "values_read": 1, "secrets_read": 0, "secrets_denied": 0 })
    );

    // Not granted: denied, and the denial names the secret only.
    let denied = app
        .invoke(
            "greeter",
            ADMIN_KEY,
            json!({ "action": "sign", "input": input }),
        )
        .await
        .ok(200);
    assert_eq!(denied["outcome"], "agent_error");
    assert_eq!(denied["error"]["code"], "config_denied");
    assert_eq!(
        denied["denials"],
        json!([{
            "capability": "secrets",
            "target": "SIGNING_KEY",
            "reason": "not_granted",
            "detail": "the secret \"SIGNING_KEY\" is not granted to this agent",
        }])
    );
    assert_eq!(
        denied["usage"]["config"],
        json!({ "values_read": 1, "secrets_read": 0, "secrets_denied": 1 })
    );

    // Granted by the policy: readable, used, never shown.
    put(
        &app,
        "/v1/agents/greeter/policy",
        ADMIN_KEY,
        json!({ "grants": { "secrets": ["SIGNING_KEY"] } }),
    )
    .await
    .ok(200);
    let signed = app
        .invoke(
            "greeter",
            ADMIN_KEY,
            json!({ "action": "sign", "input": input }),
        )
        .await
        .ok(200);
    assert_eq!(
        signed["output"],
        json!({
            "message": "Good day, Ada.",
            "signature": hmac_hex(SIGNING_KEY, "Good day, Ada."),
        })
    );
    assert!(signed.get("denials").is_none(), "{signed}");
    assert_eq!(
        signed["usage"]["config"],
        json!({ "values_read": 1, "secrets_read": 1, "secrets_denied": 0 })
    );
    let id = signed["execution_id"].as_str().unwrap();
    let record = app
        .get(&format!("/v1/executions/{id}"), ADMIN_KEY)
        .await
        .ok(200);
    assert!(!record.to_string().contains(SIGNING_KEY), "{record}");
    app.stop().await;
}

async fn a_secret_the_agent_leaks_is_redacted_from_the_response_and_the_record(backend: Backend) {
    let app = keyed_app(backend).await;
    app.agent_with("leaky", HOSTILE).await;
    put(
        &app,
        "/v1/agents/leaky/secrets/API_TOKEN",
        ADMIN_KEY,
        json!({ "value": TOKEN }),
    )
    .await
    .ok(201);
    put(
        &app,
        "/v1/agents/leaky/policy",
        ADMIN_KEY,
        json!({ "grants": { "secrets": ["API_TOKEN"] } }),
    )
    .await
    .ok(200);

    let leaked = app
        .invoke(
            "leaky",
            ADMIN_KEY,
            json!({ "action": "leak_secret", "input": { "name": "API_TOKEN" } }),
        )
        .await
        .ok(200);
    assert_eq!(leaked["outcome"], "succeeded");
    assert_eq!(
        leaked["output"],
        json!({ "leaked": "[redacted]", "nested": { "again": "<[redacted]>" } })
    );
    let id = leaked["execution_id"].as_str().unwrap();
    let record = app
        .get(&format!("/v1/executions/{id}"), ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(record["logs"][0]["message"], "the secret is [redacted]");
    assert_eq!(
        record["output_excerpt"],
        r#"{"leaked":"[redacted]","nested":{"again":"<[redacted]>"}}"#
    );
    assert!(!record.to_string().contains(TOKEN), "{record}");

    let failed = app
        .invoke(
            "leaky",
            ADMIN_KEY,
            json!({ "action": "leak_secret", "input": { "name": "API_TOKEN", "fail": true } }),
        )
        .await
        .ok(200);
    assert_eq!(failed["error"]["message"], "failed with [redacted] inside");
    let id = failed["execution_id"].as_str().unwrap();
    let record = app
        .get(&format!("/v1/executions/{id}"), ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(record["error_message"], "failed with [redacted] inside");
    assert!(!record.to_string().contains(TOKEN), "{record}");

    // Nothing anywhere in the executions table holds the token.
    let rows: Vec<(String, String)> = on_pool!(&app.db, pool => sqlx::query_as(
        "SELECT COALESCE(output_excerpt, '') || COALESCE(error_message, ''), CAST(logs AS TEXT) FROM executions")
        .fetch_all(pool)
        .await)
    .unwrap();
    assert_eq!(rows.len(), 2);
    for (text, logs) in rows {
        assert!(
            !text.contains(TOKEN) && !logs.contains(TOKEN),
            "{text} {logs}"
        );
    }
    app.stop().await;
}

async fn config_and_secrets_stay_in_their_tenant(backend: Backend) {
    let app = keyed_app(backend).await;
    let (_, other_admin) = app.tenant("acme").await;
    // The same agent name in both tenants.
    app.agent_with("greeter", GREETER).await;
    app.post("/v1/agents", &other_admin, json!({ "name": "greeter" }))
        .await
        .ok(201);
    app.upload("greeter", &other_admin, std::fs::read(GREETER).unwrap())
        .await
        .ok(201);
    put(
        &app,
        "/v1/agents/greeter/config",
        ADMIN_KEY,
        json!({ "values": { "greeting": "Operator says hi, {name}" } }),
    )
    .await
    .ok(200);
    put(
        &app,
        "/v1/agents/greeter/secrets/SIGNING_KEY",
        ADMIN_KEY,
        json!({ "value": SIGNING_KEY }),
    )
    .await
    .ok(201);
    app.agent_with("only-here", GREETER).await;

    assert_eq!(
        app.get("/v1/agents/greeter/config", &other_admin)
            .await
            .ok(200),
        json!({ "values": {} })
    );
    assert_eq!(
        app.get("/v1/agents/greeter/secrets", &other_admin)
            .await
            .ok(200),
        json!({ "items": [] })
    );
    delete(&app, "/v1/agents/greeter/secrets/SIGNING_KEY", &other_admin)
        .await
        .assert_error(404, "not_found");
    app.get("/v1/agents/only-here/config", &other_admin)
        .await
        .assert_error(404, "not_found");
    put(
        &app,
        "/v1/agents/only-here/secrets/X",
        &other_admin,
        json!({ "value": "v" }),
    )
    .await
    .assert_error(404, "not_found");

    // The other tenant's agent, even granted the name, reads only its own (unset) ones.
    put(
        &app,
        "/v1/agents/greeter/policy",
        &other_admin,
        json!({ "grants": { "secrets": ["SIGNING_KEY"] } }),
    )
    .await
    .ok(200);
    let greeted = app
        .invoke(
            "greeter",
            &other_admin,
            json!({ "action": "greet", "input": { "name": "Bo" } }),
        )
        .await
        .ok(200);
    assert_eq!(greeted["output"], json!({ "message": "Hello, Bo!" }));
    let signed = app
        .invoke(
            "greeter",
            &other_admin,
            json!({ "action": "sign", "input": { "name": "Bo" } }),
        )
        .await
        .ok(200);
    assert_eq!(signed["error"]["code"], "missing_secret");

    // The operator's own values are untouched.
    assert_eq!(
        app.get("/v1/agents/greeter/secrets", ADMIN_KEY)
            .await
            .ok(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}

async fn bad_names_values_and_too_many_entries_are_refused(backend: Backend) {
    let app = keyed_app(backend).await;
    app.agent_with("greeter", GREETER).await;
    let config = "/v1/agents/greeter/config";
    let refused = [
        json!({ "values": { "9lives": "x" } }),
        json!({ "values": { "has-dash": "x" } }),
        json!({ "values": { "big": "x".repeat(64 * 1024 + 1) } }),
        json!({
            "values": (0..257).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()
        }),
    ];
    for body in refused {
        put(&app, config, ADMIN_KEY, body)
            .await
            .assert_error(400, "invalid_config");
    }
    put(&app, config, ADMIN_KEY, json!({ "values": { "a": 1 } }))
        .await
        .assert_error(400, "invalid_json");
    // Exactly at the limits is fine.
    put(
        &app,
        config,
        ADMIN_KEY,
        json!({ "values": { "big": "x".repeat(64 * 1024), ("N".repeat(64)): "" } }),
    )
    .await
    .ok(200);

    put(
        &app,
        "/v1/agents/greeter/secrets/bad-name",
        ADMIN_KEY,
        json!({ "value": "v" }),
    )
    .await
    .assert_error(400, "invalid_secret");
    put(
        &app,
        "/v1/agents/greeter/secrets/EMPTY",
        ADMIN_KEY,
        json!({ "value": "" }),
    )
    .await
    .assert_error(400, "invalid_secret");
    put(
        &app,
        "/v1/agents/greeter/secrets/OK",
        ADMIN_KEY,
        json!({ "value": "v", "note": "x" }),
    )
    .await
    .assert_error(400, "invalid_json");
    for i in 0..256 {
        put(
            &app,
            &format!("/v1/agents/greeter/secrets/S{i}"),
            ADMIN_KEY,
            json!({ "value": "v" }),
        )
        .await
        .ok(201);
    }
    put(
        &app,
        "/v1/agents/greeter/secrets/ONE_MORE",
        ADMIN_KEY,
        json!({ "value": "v" }),
    )
    .await
    .assert_error(409, "too_many_secrets");
    // Replacing one of them is still allowed.
    put(
        &app,
        "/v1/agents/greeter/secrets/S0",
        ADMIN_KEY,
        json!({ "value": "w" }),
    )
    .await
    .ok(200);
    // An invalid policy grant is refused when the policy is set.
    put(
        &app,
        "/v1/agents/greeter/policy",
        ADMIN_KEY,
        json!({ "grants": { "secrets": ["no spaces"] } }),
    )
    .await
    .assert_error(400, "invalid_policy");
    app.stop().await;
}

/// Postgres has no generated key (its hosts would each invent one): without
/// `CORRAL_SECRETS_KEY`, secret writes are refused and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_server_without_a_key_refuses_secret_writes() {
    let app = spawn_app(Backend::Postgres).await;
    app.agent_with("greeter", GREETER).await;
    put(
        &app,
        "/v1/agents/greeter/secrets/SIGNING_KEY",
        ADMIN_KEY,
        json!({ "value": SIGNING_KEY }),
    )
    .await
    .assert_error(409, "secrets_disabled");
    assert_eq!(app.count("agent_secrets").await, 0);
    // Config values need no key.
    put(
        &app,
        "/v1/agents/greeter/config",
        ADMIN_KEY,
        json!({ "values": { "greeting": "Hi {name}" } }),
    )
    .await
    .ok(200);
    assert_eq!(
        app.get("/v1/agents/greeter/secrets", ADMIN_KEY)
            .await
            .ok(200),
        json!({ "items": [] })
    );
    app.stop().await;
}

/// A zero-setup server on SQLite keeps a generated key in its data directory, mode
/// 0600, and reads it again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_setup_sqlite_server_generates_its_key_into_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let start = || {
        let data_dir = data_dir.clone();
        spawn_app_with(Backend::Sqlite, move |config| {
            config.data_dir = data_dir;
            config.secrets_key = None;
        })
    };
    let app = start().await;
    app.agent_with("greeter", GREETER).await;
    put(
        &app,
        "/v1/agents/greeter/secrets/SIGNING_KEY",
        ADMIN_KEY,
        json!({ "value": SIGNING_KEY }),
    )
    .await
    .ok(201);
    put(
        &app,
        "/v1/agents/greeter/policy",
        ADMIN_KEY,
        json!({ "grants": { "secrets": ["SIGNING_KEY"] } }),
    )
    .await
    .ok(200);
    let key_file = dir.path().join("secrets.key");
    let text = std::fs::read_to_string(&key_file).unwrap();
    let key = SecretsKey::from_base64(&text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let rows = secret_rows(&app).await;
    assert_eq!(rows[0].4, key.id());
    app.stop().await;

    // After a restart the same key opens the stored secret.
    let app = start().await;
    let signed = app
        .invoke(
            "greeter",
            ADMIN_KEY,
            json!({ "action": "sign", "input": { "name": "Ada" } }),
        )
        .await
        .ok(200);
    assert_eq!(
        signed["output"]["signature"],
        hmac_hex(SIGNING_KEY, "Hello, Ada!")
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), text);
    app.stop().await;
}
