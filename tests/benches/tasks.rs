//! Task benchmark: end-to-end tasks per second (submit → succeeded, echo agent, every
//! attempt recorded with its execution) with 1, 2 and 4 `corral serve` processes on one
//! Postgres and one on SQLite; in the same run, a bare claim-and-complete loop on the
//! same tables with no guest (the database's ceiling for this schema); then the
//! idle-to-start latency (submitted → attempt started, by the server's clock).
//!
//! Run with `./scripts/bench-tasks` (it builds the release binary first).
//! Environment: `TASKS` (default 2000), `DATABASE_URL` (Postgres admin URL; required).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use corral_host::db::tasks::{self, TaskRow};
use corral_host::db::{self, Db};
use corral_host::tasks::{Backoff, Next, TaskCompletion, TaskState};
use corral_tests::harness::corral_bin;
use corral_tests::plugins::ECHO;
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::types::Json;

const KEY: &str = "crl_task_benchmark_bootstrap_key_0123456789abcdef";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(database_url: Option<&str>, data_dir: &Path, env: &[(&str, &str)]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(corral_bin());
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("CORRAL_DATA_DIR", data_dir)
        .env("CORRAL_BOOTSTRAP_KEY", KEY)
        .env("RUST_LOG", "error")
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    let child = command
        .spawn()
        .expect("corral serve starts (build it with cargo build --release -p corral-host)");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{}/healthz", server.url))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "corral serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

async fn setup_echo(url: &str) {
    let http = http();
    let created = http
        .post(format!("{url}/v1/agents"))
        .bearer_auth(KEY)
        .json(&json!({ "name": "echo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let uploaded = http
        .post(format!("{url}/v1/agents/echo/versions"))
        .bearer_auth(KEY)
        .header("content-type", "application/wasm")
        .body(std::fs::read(ECHO).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
}

/// A fresh Postgres database: (its URL, a guard that drops it).
struct PgDatabase {
    admin: String,
    name: String,
}

impl PgDatabase {
    async fn create() -> PgDatabase {
        let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL (a Postgres admin URL)");
        let name = format!("corral_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        PgDatabase { admin, name }
    }

    fn url(&self) -> String {
        format!("{}/{}", self.admin.rsplit_once('/').unwrap().0, self.name)
    }

    async fn drop_it(self) {
        let mut conn = sqlx::PgConnection::connect(&self.admin).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut conn)
            .await;
    }
}

async fn succeeded(db: &Db) -> i64 {
    let sql = "SELECT COUNT(*) FROM tasks WHERE state = 'succeeded'";
    let row: (i64,) =
        corral_host::on_pool!(db, pool => sqlx::query_as(sql).fetch_one(pool).await).unwrap();
    row.0
}

/// Where the time of an end-to-end run went, per task, from the records.
#[derive(Default)]
struct Breakdown {
    /// Submitted → attempt claimed.
    queued_ms: f64,
    /// The guest's wall time.
    run_ms: f64,
    /// Claimed → task recorded as succeeded (load, admit, run, commit).
    attempt_ms: f64,
}

impl std::fmt::Display for Breakdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "per task: queued {:.1} ms, attempt {:.2} ms (guest {:.2} ms)",
            self.queued_ms, self.attempt_ms, self.run_ms
        )
    }
}

async fn breakdown(db: &Db) -> Breakdown {
    let sql = "SELECT t.created_at, a.started_at, t.finished_at, e.wall_time_us FROM tasks t \
               JOIN task_attempts a ON a.task_id = t.id JOIN executions e ON e.id = a.execution_id";
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>, Option<DateTime<Utc>>, i64)> =
        corral_host::on_pool!(db, pool => sqlx::query_as(sql).fetch_all(pool).await).unwrap();
    let n = rows.len().max(1) as f64;
    let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    Breakdown {
        queued_ms: rows.iter().map(|r| ms(r.1 - r.0)).sum::<f64>() / n,
        run_ms: rows.iter().map(|r| r.3 as f64 / 1000.0).sum::<f64>() / n,
        attempt_ms: rows
            .iter()
            .map(|r| ms(r.2.unwrap_or(r.1) - r.1))
            .sum::<f64>()
            / n,
    }
}

/// End to end on `nodes` servers: submit `count` echo tasks in batches of 100,
/// spread over the servers, and time until every one succeeded.
async fn end_to_end(database_url: Option<String>, nodes: usize, count: usize) -> (f64, Breakdown) {
    let dirs: Vec<_> = (0..nodes).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = Vec::new();
    for dir in &dirs {
        servers.push(start_server(database_url.as_deref(), dir.path(), &[]).await);
    }
    setup_echo(&servers[0].url).await;
    let db_url = database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dirs[0].path().join("corral.db").display()));
    let db = corral_tests::app::inspector(&db_url).await;
    let started = Instant::now();
    let batches: Vec<_> = (0..count.div_ceil(100))
        .map(|b| {
            let url = servers[b % nodes].url.clone();
            let n = 100.min(count - b * 100);
            tokio::spawn(async move {
                let tasks: Vec<Value> = (0..n)
                    .map(|i| json!({ "agent": "echo", "action": "echo", "input": { "b": b, "i": i } }))
                    .collect();
                let response = http()
                    .post(format!("{url}/v1/tasks"))
                    .bearer_auth(KEY)
                    .json(&json!({ "tasks": tasks }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
            })
        })
        .collect();
    for batch in batches {
        batch.await.unwrap();
    }
    let submitted = started.elapsed();
    while succeeded(&db).await < count as i64 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the tasks did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let breakdown = breakdown(&db).await;
    eprintln!("    submitted in {submitted:.2?}, all succeeded after {elapsed:.2?}");
    db.close().await;
    drop(servers);
    (count as f64 / elapsed.as_secs_f64(), breakdown)
}

/// The database's ceiling: `count` tasks inserted, then claimed and completed by
/// `workers` loops through the same queries the workers use, with no guest and no
/// execution record.
async fn bare_loop(db: &Db, tenant_id: &str, agent_id: &str, count: usize, workers: usize) -> f64 {
    let now = db::now();
    let mut tx = db.begin(tenant_id).await.unwrap();
    for i in 0..count {
        let row = TaskRow {
            id: db::new_id(),
            tenant_id: tenant_id.into(),
            agent_id: agent_id.into(),
            agent_name: "echo".into(),
            action: "echo".into(),
            input: json!({ "i": i }).to_string(),
            priority: 0,
            state: TaskState::Queued.as_str().into(),
            run_at: now,
            limits: Json(Default::default()),
            max_attempts: 3,
            backoff: Json(Backoff::default()),
            retry_timeouts: true,
            wait_for_budget: false,
            attempts: 0,
            deps_pending: 0,
            dependants: 0,
            correlation_id: None,
            idempotency_key: None,
            request_hash: None,
            actor_key_id: None,
            parent_execution_id: None,
            root_execution_id: None,
            lease_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            outcome: None,
            result: None,
            error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            workflow_id: None,
            traceparent: None,
        };
        tasks::insert(&mut tx, &row, &[]).await.unwrap();
    }
    tx.commit().await.unwrap();
    let started = Instant::now();
    let loops: Vec<_> = (0..workers)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                let node = format!("bench-{w}");
                loop {
                    let now = db::now();
                    let lease = now + chrono::Duration::seconds(30);
                    let claimed = tasks::claim(&db, &node, now, lease, 16).await.unwrap();
                    if claimed.is_empty() {
                        break;
                    }
                    for claimed in claimed {
                        let completion = TaskCompletion {
                            task_id: claimed.task.id.clone(),
                            attempt: claimed.task.attempts as u32,
                            attempt_outcome: "succeeded".into(),
                            next: Next::Succeeded {
                                result: "{}".into(),
                            },
                            at: db::now(),
                            workflow_id: None,
                        };
                        assert!(tasks::complete_alone(&db, &completion).await.unwrap());
                    }
                }
            })
        })
        .collect();
    for l in loops {
        l.await.unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// The bare loop on a database a server set up (so the tenant and agent exist).
async fn ceiling(database_url: Option<String>, count: usize, workers: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        database_url.as_deref(),
        dir.path(),
        &[("CORRAL_WORKERS", "0")],
    )
    .await;
    setup_echo(&server.url).await;
    drop(server);
    let db_url = database_url
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("corral.db").display()));
    let sql = "SELECT tenant_id, id FROM agents WHERE name = 'echo'";
    let inspector = corral_tests::app::inspector(&db_url).await;
    let (tenant_id, agent_id): (String, String) =
        corral_host::on_pool!(&inspector, pool => sqlx::query_as(sql).fetch_one(pool).await)
            .unwrap();
    inspector.close().await;
    // The loop itself connects as the host does (as corral_app, under row-level security).
    let db = Db::connect(&db_url, workers as u32 + 1).await.unwrap();
    let rate = bare_loop(&db, &tenant_id, &agent_id, count, workers).await;
    db.close().await;
    rate
}

/// Idle-to-start latency: one task at a time into an idle system, submitted to a node
/// without workers when `nodes` is 2 (so the wake-up crosses nodes by NOTIFY).
async fn idle_to_start(database_url: Option<String>, nodes: usize, samples: usize) -> (f64, f64) {
    let dirs: Vec<_> = (0..nodes).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let workers = if nodes > 1 && i == 0 { "0" } else { "4" };
        servers.push(
            start_server(
                database_url.as_deref(),
                dir.path(),
                &[("CORRAL_WORKERS", workers)],
            )
            .await,
        );
    }
    let url = servers[0].url.clone();
    setup_echo(&url).await;
    let http = http();
    let mut latencies = Vec::new();
    for i in 0..samples + 3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let task: Value = http
            .post(format!("{url}/v1/agents/echo/tasks"))
            .bearer_auth(KEY)
            .json(&json!({ "action": "echo", "input": { "i": i } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = task["id"].as_str().unwrap();
        let done: Value = http
            .get(format!("{url}/v1/tasks/{id}?wait=10s"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(done["state"], "succeeded", "{done:#}");
        let time = |v: &Value| DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
        let latency = time(&done["attempts"][0]["started_at"]) - time(&done["created_at"]);
        if i >= 3 {
            // The first few warm the caches (component load).
            latencies.push(latency.num_microseconds().unwrap() as f64 / 1000.0);
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.9))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let count = env_usize("TASKS", 2000);
    let workers = 16;
    println!(
        "tasks: {count} echo tasks, end to end (submit → succeeded) vs the bare claim-and-complete loop"
    );

    let sqlite_ceiling = ceiling(None, count, 1).await;
    let (sqlite_rate, sqlite_breakdown) = end_to_end(None, 1, count).await;
    println!(
        "  SQLite, 1 node:    {sqlite_rate:8.0} tasks/s   ceiling {sqlite_ceiling:8.0}/s   ratio {:.2}   {sqlite_breakdown}",
        sqlite_rate / sqlite_ceiling
    );

    let pg = PgDatabase::create().await;
    let pg_ceiling = ceiling(Some(pg.url()), count, workers).await;
    pg.drop_it().await;
    for nodes in [1, 2, 4] {
        let pg = PgDatabase::create().await;
        let (rate, breakdown) = end_to_end(Some(pg.url()), nodes, count).await;
        println!(
            "  Postgres, {nodes} node(s): {rate:8.0} tasks/s   ceiling {pg_ceiling:8.0}/s   ratio {:.2}   {breakdown}",
            rate / pg_ceiling
        );
        pg.drop_it().await;
    }

    let samples = env_usize("LATENCY_SAMPLES", 40);
    let (p50, p90) = idle_to_start(None, 1, samples).await;
    println!("  idle-to-start, SQLite, 1 node:               p50 {p50:.1} ms   p90 {p90:.1} ms");
    let pg = PgDatabase::create().await;
    let (p50, p90) = idle_to_start(Some(pg.url()), 1, samples).await;
    println!("  idle-to-start, Postgres, 1 node:             p50 {p50:.1} ms   p90 {p90:.1} ms");
    pg.drop_it().await;
    let pg = PgDatabase::create().await;
    let (p50, p90) = idle_to_start(Some(pg.url()), 2, samples).await;
    println!(
        "  idle-to-start, Postgres, submit on A, run on B (NOTIFY): p50 {p50:.1} ms   p90 {p90:.1} ms"
    );
    pg.drop_it().await;
}
