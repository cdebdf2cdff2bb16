//! Tenant isolation, tried as an attacker would: a tenant names another tenant's things
//! on every route — by name, by id, in filters, with its cursors and its kv keys — and
//! gets `404` (or an empty list) and none of its data. On Postgres the database is the
//! second wall: a connection that names no tenant sees no tenant's rows.

use corral_host::db::{self, Db};
use corral_host::secrets::SecretsKey;
use corral_tests::app::{Backend, TestApp, spawn_app_with};
use corral_tests::plugins::{ECHO, NOTES};
use reqwest::Method;
use serde_json::{Value, json};

crate::on_both_backends!(another_tenants_things_are_not_found_on_any_route);

/// Everything the victim tenant has, by the names and ids an attacker might try.
struct Victim {
    tenant_id: String,
    key_id: String,
    agent_id: String,
    version_id: String,
    execution_id: String,
    task_id: String,
    cursor: String,
}

const SERVER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const SECRET_VALUE: &str = "victim-secret-value-0042";

async fn send(app: &TestApp, method: Method, path: &str, key: &str, body: Option<Value>) -> u16 {
    let reply = app.send(method, path, Some(key), body).await;
    let text = reply.body.to_string();
    assert!(!text.contains(SECRET_VALUE), "{path}: {text}");
    reply.status.as_u16()
}

/// Sets up a tenant with one of everything: an agent with a version, an execution,
/// a task, kv entries, config, a secret, an idempotency key, quotas in use.
async fn victim(app: &TestApp, key: &str) -> Victim {
    app.post("/v1/agents", key, json!({ "name": "private" }))
        .await
        .ok(201);
    let version = app
        .upload("private", key, std::fs::read(NOTES).unwrap())
        .await
        .ok(201);
    let policy = json!({
        "grants": { "kv": {} },
        "quotas": {
            "max_concurrency": 4,
            "rate": { "requests": 1000, "per": "minute" },
            "budgets": { "fuel_per_day": 1_000_000_000_000u64 },
        },
    });
    app.set_policy_as(key, "private", policy).await;
    app.send(
        Method::PUT,
        "/v1/agents/private/config",
        Some(key),
        Some(json!({ "values": { "colour": "teal" } })),
    )
    .await
    .ok(200);
    app.send(
        Method::PUT,
        "/v1/agents/private/secrets/TOKEN",
        Some(key),
        Some(json!({ "value": SECRET_VALUE })),
    )
    .await
    .ok(201);
    let add = |id: &str| json!({ "action": "add", "input": { "id": id, "text": "mine" } });
    let run = app
        .send_request(
            app.request(Method::POST, "/v1/agents/private/invoke", Some(key))
                .header("idempotency-key", "shared-key")
                .json(
                    &json!({ "action": "add", "input": { "id": "a", "text": "mine" },
                               "correlation_id": "victim-corr" }),
                ),
        )
        .await
        .ok(200);
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    app.invoke("private", key, add("b")).await.ok(200);
    let task = app
        .post("/v1/agents/private/tasks", key, add("c"))
        .await
        .ok(202);
    let done = app
        .get(
            &format!("/v1/tasks/{}?wait=20s", task["id"].as_str().unwrap()),
            key,
        )
        .await
        .ok(200);
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let keys = app.get("/v1/keys", key).await.ok(200);
    let page = app.get("/v1/executions?limit=1", key).await.ok(200);
    let agent = app.get("/v1/agents/private", key).await.ok(200);
    Victim {
        tenant_id: keys["items"][0]["tenant_id"].as_str().unwrap().into(),
        key_id: keys["items"][0]["id"].as_str().unwrap().into(),
        agent_id: agent["id"].as_str().unwrap().into(),
        version_id: version["id"].as_str().unwrap().into(),
        execution_id: run["execution_id"].as_str().unwrap().into(),
        task_id: task["id"].as_str().unwrap().into(),
        cursor: page["next_cursor"].as_str().expect("a second page").into(),
    }
}

async fn another_tenants_things_are_not_found_on_any_route(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.secrets_key = Some(SecretsKey::from_base64(SERVER_KEY).unwrap());
    })
    .await;
    let (_, victim_key) = app.tenant("victim").await;
    let (_, attacker) = app.tenant("attacker").await;
    let v = victim(&app, &victim_key).await;
    // The attacker has an agent of its own, with a name the victim also uses.
    app.post("/v1/agents", &attacker, json!({ "name": "echo" }))
        .await
        .ok(201);
    app.upload("echo", &attacker, std::fs::read(ECHO).unwrap())
        .await
        .ok(201);
    app.post("/v1/agents", &victim_key, json!({ "name": "echo" }))
        .await
        .ok(201);
    let before = app.snapshot().await;
    let victim_data = victim_rows(&app, &v.tenant_id).await;

    // By name: every route under the victim's agent.
    let get = Method::GET;
    let (post, put, delete) = (Method::POST, Method::PUT, Method::DELETE);
    let invoke = json!({ "action": "get", "input": { "id": "a" } });
    let by_name: Vec<(Method, String, Option<Value>)> = vec![
        (get.clone(), "/v1/agents/private".into(), None),
        (delete.clone(), "/v1/agents/private".into(), None),
        (
            put.clone(),
            "/v1/agents/private/policy".into(),
            Some(json!({})),
        ),
        (
            post.clone(),
            "/v1/agents/private/pause".into(),
            Some(json!({})),
        ),
        (
            post.clone(),
            "/v1/agents/private/resume".into(),
            Some(json!({})),
        ),
        (
            post.clone(),
            "/v1/agents/private/invoke".into(),
            Some(invoke.clone()),
        ),
        (
            post.clone(),
            "/v1/agents/private/tasks".into(),
            Some(invoke.clone()),
        ),
        (get.clone(), "/v1/agents/private/versions".into(), None),
        (
            post.clone(),
            format!("/v1/agents/private/versions/{}/activate", v.version_id),
            Some(json!({})),
        ),
        (get.clone(), "/v1/agents/private/config".into(), None),
        (
            put.clone(),
            "/v1/agents/private/config".into(),
            Some(json!({ "values": {} })),
        ),
        (
            delete.clone(),
            "/v1/agents/private/config/colour".into(),
            None,
        ),
        (get.clone(), "/v1/agents/private/secrets".into(), None),
        (
            put.clone(),
            "/v1/agents/private/secrets/TOKEN".into(),
            Some(json!({ "value": "overwritten" })),
        ),
        (
            delete.clone(),
            "/v1/agents/private/secrets/TOKEN".into(),
            None,
        ),
        (
            get.clone(),
            "/v1/agents/private/kv?values=true".into(),
            None,
        ),
        (delete.clone(), "/v1/agents/private/kv".into(), None),
        (
            delete.clone(),
            "/v1/agents/private/kv/note%2Fa".into(),
            None,
        ),
        (get.clone(), "/v1/agents/private/usage".into(), None),
    ];
    // By id: the victim's execution, task, key, version and tenant.
    let by_id: Vec<(Method, String, Option<Value>)> = vec![
        (
            get.clone(),
            format!("/v1/executions/{}", v.execution_id),
            None,
        ),
        (get.clone(), format!("/v1/tasks/{}", v.task_id), None),
        (
            get.clone(),
            format!("/v1/tasks/{}?wait=1s", v.task_id),
            None,
        ),
        (
            post.clone(),
            format!("/v1/tasks/{}/cancel", v.task_id),
            Some(json!({})),
        ),
        (delete.clone(), format!("/v1/keys/{}", v.key_id), None),
        (
            get.clone(),
            format!("/v1/tenants/{}/usage", v.tenant_id),
            None,
        ),
        (
            get.clone(),
            format!("/v1/tenants/{}/policy", v.tenant_id),
            None,
        ),
        // The attacker's own agent, pointed at the victim's version.
        (
            post.clone(),
            format!("/v1/agents/echo/versions/{}/activate", v.version_id),
            Some(json!({})),
        ),
        (
            post.clone(),
            "/v1/agents/echo/invoke".into(),
            Some(json!({ "action": "echo", "input": {}, "version": v.version_id })),
        ),
        // The attacker's own agent's kv, with the victim's key.
        (delete.clone(), "/v1/agents/echo/kv/note%2Fa".into(), None),
    ];
    for (method, path, body) in by_name.into_iter().chain(by_id) {
        let status = send(&app, method.clone(), &path, &attacker, body).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    // What only the operator tenant's admins may do is refused whatever the id names,
    // existing or not: the answer says nothing about the victim.
    let operator_only: Vec<(Method, String, Option<Value>)> = vec![
        (
            post.clone(),
            "/v1/keys".into(),
            Some(json!({ "name": "mine", "role": "admin", "tenant_id": v.tenant_id })),
        ),
        (
            get.clone(),
            format!("/v1/keys?tenant_id={}", v.tenant_id),
            None,
        ),
        (
            delete.clone(),
            format!("/v1/keys/{}?tenant_id={}", v.key_id, v.tenant_id),
            None,
        ),
        (
            put.clone(),
            format!("/v1/tenants/{}/policy", v.tenant_id),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in operator_only {
        let real = send(&app, method.clone(), &path, &attacker, body.clone()).await;
        let made_up = path.replace(&v.tenant_id, "0190a5d2-0000-7000-8000-000000000000");
        let body = body.map(|b| {
            serde_json::from_str(
                &b.to_string()
                    .replace(&v.tenant_id, "0190a5d2-0000-7000-8000-000000000000"),
            )
            .unwrap()
        });
        let none = send(&app, method.clone(), &made_up, &attacker, body).await;
        assert_eq!((real, none), (403, 403), "{method} {path}");
    }

    // Filters and cursors: lists answer, with only the attacker's own rows.
    let lists = [
        "/v1/agents".to_string(),
        format!("/v1/agents?cursor={}", v.agent_id),
        "/v1/executions?agent=private".into(),
        format!("/v1/executions?root={}", v.execution_id),
        "/v1/executions?correlation_id=victim-corr".into(),
        format!("/v1/executions?cursor={}", v.cursor),
        "/v1/tasks?agent=private".into(),
        format!("/v1/tasks?cursor={}", v.task_id),
        format!("/v1/audit?resource_id={}", v.agent_id),
        "/v1/audit?action=agent.create&limit=200".into(),
        format!("/v1/audit?actor={}", v.key_id),
        "/v1/costs?period=month".into(),
        "/v1/agents/echo/versions".into(),
        "/v1/agents/echo/kv?prefix=note".into(),
    ];
    for path in &lists {
        let reply = app.get(path, &attacker).await.ok(200);
        let text = reply.to_string();
        for secret in [
            &v.tenant_id,
            &v.agent_id,
            &v.version_id,
            &v.execution_id,
            &v.task_id,
            &v.key_id,
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "{path} leaked {secret}: {reply:#}"
            );
        }
        assert!(!text.contains("\"private\""), "{path}: {reply:#}");
    }
    let costs = app.get("/v1/costs?period=month", &attacker).await.ok(200);
    assert_eq!(costs["total_executions"], 0, "{costs:#}");

    // The same idempotency key in another tenant is another request.
    let theirs = app
        .send_request(
            app.request(Method::POST, "/v1/agents/echo/invoke", Some(&attacker))
                .header("idempotency-key", "shared-key")
                .json(&json!({ "action": "echo", "input": { "mine": true } })),
        )
        .await
        .ok(200);
    assert_ne!(theirs["execution_id"], v.execution_id.as_str());
    assert_eq!(theirs["output"], json!({ "mine": true }));

    // Nothing of the victim's changed (the attacker's refused attempts and its one run
    // are its own rows).
    let after = app.snapshot().await;
    assert_eq!(after[..4], before[..4], "tenants, keys, agents, versions");
    assert_eq!(victim_rows(&app, &v.tenant_id).await, victim_data);
    app.stop().await;
}

/// The victim's rows in every tenant-scoped table, counted directly.
async fn victim_rows(app: &TestApp, tenant_id: &str) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    // SQLite keeps rate and concurrency state in memory (one process).
    let shared_only = ["concurrency_scopes", "concurrency_leases", "rate_buckets"];
    for table in TENANT_TABLES {
        if matches!(app.db, Db::Sqlite(_)) && shared_only.contains(&table) {
            continue;
        }
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE tenant_id = $1");
        let row: (i64,) = corral_host::on_pool!(&app.db, pool => sqlx::query_as(&sql)
            .bind(tenant_id)
            .fetch_one(pool)
            .await)
        .unwrap();
        counts.push((table.to_string(), row.0));
    }
    counts
}

/// Every table whose rows belong to a tenant (row-level security on Postgres).
const TENANT_TABLES: [&str; 21] = [
    "api_keys",
    "agents",
    "agent_versions",
    "executions",
    "audit_events",
    "idempotency_keys",
    "usage_counters",
    "concurrency_scopes",
    "concurrency_leases",
    "rate_buckets",
    "kv_entries",
    "agent_config",
    "agent_secrets",
    "tasks",
    "task_dependencies",
    "task_attempts",
    "workflow_definitions",
    "workflows",
    "workflow_steps",
    "schedules",
    "schedule_occurrences",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tenant_the_application_role_sees_no_rows_on_postgres() {
    let app = spawn_app_with(Backend::Postgres, |config| {
        config.secrets_key = Some(SecretsKey::from_base64(SERVER_KEY).unwrap());
    })
    .await;
    let (_, key) = app.tenant("victim").await;
    let v = victim(&app, &key).await;
    // A task that waits on another, so task_dependencies has a row; and an admission
    // that holds a concurrency lease while these counts are taken.
    let parent = app
        .post(
            "/v1/agents/private/tasks",
            &key,
            json!({ "action": "list", "input": {}, "run_at": "2100-01-01T00:00:00Z" }),
        )
        .await
        .ok(202);
    app.post(
        "/v1/agents/private/tasks",
        &key,
        json!({ "action": "list", "input": {}, "depends_on": [parent["id"]] }),
    )
    .await
    .ok(202);
    // A stored workflow, a run of it, and a schedule with one occurrence.
    let flow = json!({ "steps": [{ "name": "a", "agent": "private", "action": "list" }] });
    app.send(
        Method::PUT,
        "/v1/workflow-definitions/flow",
        Some(&key),
        Some(flow),
    )
    .await
    .ok(201);
    let run = app
        .post("/v1/workflows", &key, json!({ "definition": "flow" }))
        .await
        .ok(202);
    // Its step runs in the background and writes executions and attempts: let it end,
    // so every table holds still while it is counted three ways below.
    let run = format!("/v1/workflows/{}?wait=5s", run["id"].as_str().unwrap());
    for _ in 0..20 {
        if app.get(&run, &key).await.ok(200)["state"] != "running" {
            break;
        }
    }
    let schedule = app
        .post(
            "/v1/schedules",
            &key,
            json!({ "cron": "0 0 1 1 *", "target": { "workflow": "flow" } }),
        )
        .await
        .ok(201);
    let Db::Postgres(login) = &app.db else {
        unreachable!()
    };
    sqlx::query(
        "INSERT INTO schedule_occurrences (schedule_id, occurrence_at, tenant_id, outcome, node, \
         created_at) VALUES ($1, now(), $2, 'missed', 'test', now())",
    )
    .bind(schedule["id"].as_str().unwrap())
    .bind(&v.tenant_id)
    .execute(login)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO concurrency_leases (id, scope, tenant_id, holder, expires_at) \
         VALUES ('held', 'agent:x', $1, 'test', now() + interval '1 hour')",
    )
    .bind(&v.tenant_id)
    .execute(login)
    .await
    .unwrap();

    // The host's own way in: connections that act as corral_app.
    let url = app.database_url.clone();
    let host = Db::connect(&url, 2).await.unwrap();
    let Db::Postgres(pool) = &host else {
        unreachable!()
    };
    for table in TENANT_TABLES {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let (stored,): (i64,) = sqlx::query_as(&sql).fetch_one(login).await.unwrap();
        assert!(stored > 0, "the fixture left {table} empty");
        let (unscoped,): (i64,) = sqlx::query_as(&sql).fetch_one(pool).await.unwrap();
        assert_eq!(
            unscoped, 0,
            "{table}: a connection naming no tenant saw rows"
        );
        let (of_victim,): (i64,) = sqlx::query_as(&format!("{sql} WHERE tenant_id = $1"))
            .bind(&v.tenant_id)
            .fetch_one(login)
            .await
            .unwrap();
        let own = db::Scope::Tenant(&v.tenant_id);
        assert_eq!(count_in(pool, own, &sql).await, of_victim, "{table}");
        let other = db::Scope::Tenant("someone-else");
        assert_eq!(count_in(pool, other, &sql).await, 0, "{table}");
        let wide = db::Wide::Housekeeping.into();
        assert_eq!(count_in(pool, wide, &sql).await, stored, "{table}");
    }
    host.close().await;
    app.stop().await;
}

async fn count_in(pool: &sqlx::PgPool, scope: db::Scope<'_>, sql: &str) -> i64 {
    let mut tx = db::begin_scoped(pool, scope).await.unwrap();
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&mut *tx).await.unwrap();
    n
}
