//! Workflow benchmark: the overhead per step of running steps as a workflow against the
//! same steps submitted as plain tasks (a batch whose tasks depend on each other with
//! `depends_on`), in the same run, on one `corral serve` on SQLite and one on Postgres.
//!
//! Two shapes, each with echo steps:
//! - **backlog**: `CHAINS` chains of `STEPS` steps submitted at once; time until every
//!   step succeeded, per step;
//! - **one chain**: one chain of `STEPS` steps at a time, `ROUNDS` times; time from
//!   submission to its last step's end, per step (what a step waits for its parent).
//!
//! Each phase runs on a fresh database and server; plain and workflow phases alternate
//! `PAIRS` times, and each figure is the median of its phases. One chain at a time is
//! also measured **interleaved**: on one more fresh server, a plain chain and a workflow
//! chain back to back, `ROUNDS` times, so both meet the same server at the same moment
//! (server to server and minute to minute, this machine varies more than the overhead
//! measured); its paired ratio is the median of the rounds' own ratios. Each ratio is printed
//! twice: of those medians, and as the median (and range) of the pairs' own ratios —
//! a pair runs back to back, so its ratio is not moved by the machine's drift.
//! Run with `./scripts/bench-workflows` (it builds the release binary first).
//! Environment: `CHAINS` (default 200), `STEPS` (default 4), `ROUNDS` (default 100),
//! `PAIRS` (default 5), `BACKENDS` (default `sqlite,postgres`), `SERVER_RUST_LOG`
//! (the servers' `RUST_LOG`, default `error`; `sqlx::query=debug` logs every statement),
//! `DATABASE_URL` (Postgres admin URL; required for Postgres).
//!
//! Beside each backlog figure it prints the server's group-commit time over the
//! backlog (from `/metrics`), the part of the wall time the one writer was busy.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_host::db::Db;
use corral_tests::harness::corral_bin;
use corral_tests::plugins::ECHO;
use serde_json::{Value, json};
use sqlx::Connection;

const KEY: &str = "crl_workflow_benchmark_bootstrap_key_0123456789abcd";

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

async fn start_server(database_url: Option<&str>, data_dir: &Path) -> Server {
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
        .env(
            "RUST_LOG",
            std::env::var("SERVER_RUST_LOG").unwrap_or_else(|_| "error".into()),
        )
        .env_remove("DATABASE_URL")
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

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = http
        .post(url)
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// A fresh database: Postgres (dropped after) or SQLite in the server's directory.
enum Database {
    Sqlite,
    Postgres { admin: String, name: String },
}

impl Database {
    async fn create(postgres: bool) -> Database {
        if !postgres {
            return Database::Sqlite;
        }
        let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL (a Postgres admin URL)");
        let name = format!("corral_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        Database::Postgres { admin, name }
    }

    fn url(&self) -> Option<String> {
        match self {
            Database::Sqlite => None,
            Database::Postgres { admin, name } => {
                Some(format!("{}/{name}", admin.rsplit_once('/').unwrap().0))
            }
        }
    }

    async fn drop_it(self) {
        if let Database::Postgres { admin, name } = self {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Tasks,
    Workflow,
}

/// One chain of `steps` echo steps, as a workflow body or a task batch.
fn chain(mode: Mode, steps: usize, n: usize) -> (String, Value) {
    match mode {
        Mode::Workflow => {
            let steps: Vec<Value> = (0..steps)
                .map(|i| {
                    let mut step = json!({ "name": format!("s{i}"), "agent": "echo", "action": "echo",
                                           "input": { "chain": n, "step": i } });
                    if i > 0 {
                        step["depends_on"] = json!([format!("s{}", i - 1)]);
                    }
                    step
                })
                .collect();
            ("/v1/workflows".into(), json!({ "steps": steps }))
        }
        Mode::Tasks => {
            let tasks: Vec<Value> = (0..steps)
                .map(|i| {
                    let mut task = json!({ "agent": "echo", "key": format!("s{i}"), "action": "echo",
                                           "input": { "chain": n, "step": i } });
                    if i > 0 {
                        task["depends_on"] = json!([format!("s{}", i - 1)]);
                    }
                    task
                })
                .collect();
            ("/v1/tasks".into(), json!({ "tasks": tasks }))
        }
    }
}

async fn count(db: &Db, sql: &str) -> i64 {
    let row: (i64,) =
        corral_host::on_pool!(db, pool => sqlx::query_as(sql).fetch_one(pool).await).unwrap();
    row.0
}

/// What one phase measured, in milliseconds.
struct Phase {
    /// Per step, with a backlog of chains.
    backlog: f64,
    /// Per step, one chain at a time (from submission to the last step's end).
    chain: f64,
    /// Per chain, the submission's response time (part of `chain`).
    submit: f64,
    /// Over the backlog: group commits, and the seconds they took.
    commits: (f64, f64),
}

/// The server's group commits so far: how many, and their seconds in all.
async fn group_commits(http: &reqwest::Client, url: &str) -> (f64, f64) {
    let text = http
        .get(format!("{url}/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let read = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    (
        read("corral_group_commit_seconds_count "),
        read("corral_group_commit_seconds_sum "),
    )
}

/// A fresh database and server with the echo agent, and a pool to read its database.
struct Bench {
    database: Database,
    /// The server's data directory, kept until the bench ends.
    _dir: tempfile::TempDir,
    server: Server,
    http: reqwest::Client,
    db: Db,
}

impl Bench {
    async fn start(postgres: bool) -> Bench {
        let database = Database::create(postgres).await;
        let dir = tempfile::tempdir().unwrap();
        let server = start_server(database.url().as_deref(), dir.path()).await;
        let http = http();
        post(
            &http,
            &format!("{}/v1/agents", server.url),
            &json!({ "name": "echo" }),
        )
        .await;
        let uploaded = http
            .post(format!("{}/v1/agents/echo/versions", server.url))
            .bearer_auth(KEY)
            .header("content-type", "application/wasm")
            .body(std::fs::read(ECHO).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(uploaded.status(), 201);
        let db_url = database
            .url()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("corral.db").display()));
        let db = corral_tests::app::inspector(&db_url).await;
        Bench {
            database,
            _dir: dir,
            server,
            http,
            db,
        }
    }
}

impl Bench {
    /// Stops the server and drops its database.
    async fn stop(self) {
        self.db.close().await;
        drop(self.server);
        self.database.drop_it().await;
    }
}

/// Runs one phase on a fresh server and database.
async fn phase(postgres: bool, mode: Mode, chains: usize, steps: usize, rounds: usize) -> Phase {
    let bench = Bench::start(postgres).await;
    let (server, http, db) = (&bench.server, &bench.http, &bench.db);
    let done_sql = match mode {
        Mode::Tasks => "SELECT COUNT(*) FROM tasks WHERE state = 'succeeded'",
        Mode::Workflow => "SELECT COUNT(*) FROM workflows WHERE state = 'succeeded'",
    };
    let per_done = match mode {
        Mode::Tasks => steps as i64,
        Mode::Workflow => 1,
    };

    // One chain at a time: what each step waits for its parent.
    let mut chain_ms = 0.0;
    let mut submit_ms = 0.0;
    for round in 0..rounds {
        let (path, body) = chain(mode, steps, round);
        let before = count(&db, done_sql).await;
        let started = Instant::now();
        post(&http, &format!("{}{path}", server.url), &body).await;
        submit_ms += started.elapsed().as_secs_f64() * 1000.0;
        while count(&db, done_sql).await < before + per_done {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        chain_ms += started.elapsed().as_secs_f64() * 1000.0;
    }
    let chain_ms = chain_ms / (rounds * steps) as f64;
    let submit_ms = submit_ms / rounds as f64;

    // A backlog of chains.
    let commits_before = group_commits(&http, &server.url).await;
    let before = count(&db, done_sql).await;
    let started = Instant::now();
    let submissions: Vec<_> = (0..chains)
        .map(|n| {
            let (path, body) = chain(mode, steps, n);
            let (http, url) = (http.clone(), format!("{}{path}", server.url));
            tokio::spawn(async move { post(&http, &url, &body).await })
        })
        .collect();
    for submission in submissions {
        submission.await.unwrap();
    }
    let target = before + per_done * chains as i64;
    while count(&db, done_sql).await < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let backlog_ms = started.elapsed().as_secs_f64() * 1000.0 / (chains * steps) as f64;
    let commits_after = group_commits(&http, &server.url).await;
    let commits = (
        commits_after.0 - commits_before.0,
        commits_after.1 - commits_before.1,
    );
    bench.stop().await;
    Phase {
        backlog: backlog_ms,
        chain: chain_ms,
        submit: submit_ms,
        commits,
    }
}

/// One chain at a time on one fresh server: a plain-task chain and a workflow chain
/// back to back, `rounds` times (which goes first alternates), each timed from its
/// submission until its own last step succeeded. Both kinds meet the same server, the
/// same database and the same moment, so the machine's drift and the difference
/// between one server's start and another's fall on both. Returns the ms per step of
/// each kind, round by round: (tasks, workflows).
async fn interleaved(postgres: bool, steps: usize, rounds: usize) -> (Vec<f64>, Vec<f64>) {
    let bench = Bench::start(postgres).await;
    let (server, http, db) = (&bench.server, &bench.http, &bench.db);
    let (mut tasks, mut workflows) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Mode::Tasks, Mode::Workflow]
        } else {
            [Mode::Workflow, Mode::Tasks]
        };
        for mode in order {
            let (path, body) = chain(mode, steps, round);
            let started = Instant::now();
            let answer = post(&http, &format!("{}{path}", server.url), &body).await;
            let (sql, id) = match mode {
                Mode::Tasks => (
                    "SELECT state FROM tasks WHERE id = $1",
                    answer["tasks"][steps - 1]["id"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                ),
                Mode::Workflow => (
                    "SELECT state FROM workflows WHERE id = $1",
                    answer["id"].as_str().unwrap().to_string(),
                ),
            };
            loop {
                let state: (String,) = corral_host::on_pool!(&db, pool => sqlx::query_as(sql)
                    .bind(&id)
                    .fetch_one(pool)
                    .await)
                .unwrap();
                if state.0 == "succeeded" {
                    break;
                }
                // Finer than tokio's millisecond timer: a step takes about two.
                std::thread::sleep(Duration::from_micros(200));
            }
            let per_step = started.elapsed().as_secs_f64() * 1000.0 / steps as f64;
            match mode {
                Mode::Tasks => tasks.push(per_step),
                Mode::Workflow => workflows.push(per_step),
            }
        }
    }
    bench.stop().await;
    (tasks, workflows)
}

/// The median of `values`.
fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let chains = env_usize("CHAINS", 200);
    let steps = env_usize("STEPS", 4);
    let rounds = env_usize("ROUNDS", 100);
    let pairs = env_usize("PAIRS", 5);
    println!(
        "workflows: chains of {steps} echo steps as a workflow vs as plain tasks with depends_on \
         (backlog: {chains} chains at once; one chain: {rounds} chains one after another; \
         median of {pairs} alternating phases each)"
    );
    let backends = std::env::var("BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    for (name, postgres) in [("SQLite", false), ("Postgres", true)] {
        if !backends.to_lowercase().contains(&name.to_lowercase()) {
            continue;
        }
        let mut tasks = Vec::new();
        let mut workflows = Vec::new();
        // Alternate, so drift in the machine's load falls on both; medians, so one
        // disturbed phase does not decide the figure.
        for _ in 0..pairs {
            tasks.push(phase(postgres, Mode::Tasks, chains, steps, rounds).await);
            workflows.push(phase(postgres, Mode::Workflow, chains, steps, rounds).await);
        }
        let median = |runs: &[Phase], pick: fn(&Phase) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            let mid = values.len() / 2;
            if values.len() % 2 == 0 {
                (values[mid - 1] + values[mid]) / 2.0
            } else {
                values[mid]
            }
        };
        let (tb, wb) = (
            median(&tasks, |r| r.backlog),
            median(&workflows, |r| r.backlog),
        );
        let (tc, wc) = (median(&tasks, |r| r.chain), median(&workflows, |r| r.chain));
        let (ts, ws) = (
            median(&tasks, |r| r.submit),
            median(&workflows, |r| r.submit),
        );
        // Each pair ran back to back, so its ratio cancels the machine's drift between
        // pairs: their median, and their range.
        let paired = |pick: fn(&Phase) -> f64| {
            let mut ratios: Vec<f64> = tasks
                .iter()
                .zip(&workflows)
                .map(|(t, w)| pick(w) / pick(t))
                .collect();
            ratios.sort_by(f64::total_cmp);
            let mid = ratios.len() / 2;
            let median = if ratios.len() % 2 == 0 {
                (ratios[mid - 1] + ratios[mid]) / 2.0
            } else {
                ratios[mid]
            };
            format!(
                "paired {median:.2} ({:.2}–{:.2})",
                ratios[0],
                ratios[ratios.len() - 1]
            )
        };
        println!(
            "  {name:8} backlog:   tasks {tb:6.2} ms/step   workflow {wb:6.2} ms/step   ratio {:.2}   {}",
            wb / tb,
            paired(|r| r.backlog)
        );
        println!(
            "  {name:8} one chain: tasks {tc:6.2} ms/step   workflow {wc:6.2} ms/step   ratio {:.2}   {}",
            wc / tc,
            paired(|r| r.chain)
        );
        println!(
            "  {name:8} of which submitting a chain: tasks {ts:6.2} ms   workflow {ws:6.2} ms"
        );
        // Group commits over the backlog: per step, how many and how long the writer
        // was busy, so a ratio can be traced to the one writer or elsewhere.
        let per_step = (chains * steps) as f64;
        let commits = |runs: &[Phase]| {
            (
                median(runs, |r| r.commits.0) / per_step,
                median(runs, |r| r.commits.1 * 1000.0) / per_step,
            )
        };
        let ((tn, tt), (wn, wt)) = (commits(&tasks), commits(&workflows));
        println!(
            "  {name:8} backlog group commits per step: tasks {tn:4.2} taking {tt:5.2} ms   \
             workflow {wn:4.2} taking {wt:5.2} ms"
        );
        let (tasks, workflows) = interleaved(postgres, steps, rounds).await;
        let ratios: Vec<f64> = tasks.iter().zip(&workflows).map(|(t, w)| w / t).collect();
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let quartile = |q: usize| sorted[(sorted.len() - 1) * q / 4];
        let (ti, wi) = (median_of(tasks), median_of(workflows));
        println!(
            "  {name:8} one chain, interleaved on one server: tasks {ti:6.2} ms/step   \
             workflow {wi:6.2} ms/step   ratio {:.2}   paired {:.2} (quartiles {:.2}–{:.2})",
            wi / ti,
            median_of(ratios),
            quartile(1),
            quartile(3)
        );
    }
}
