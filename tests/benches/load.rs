//! Load benchmark: invocations per second and latency through HTTP with every
//! execution durably persisted, on SQLite and on Postgres, against the in-process
//! invocation rate measured in the same run.
//!
//! Then the cost of quota enforcement: the same agent with and without quotas that
//! never refuse (concurrency, rate and budgets all set, so every check runs), taking
//! turns on one server, as a ratio.
//!
//! Run with `./scripts/bench-load` (it builds the release binary and installs wrk).
//! Environment: `LOAD_SECONDS` (default 10), `LOAD_CONNECTIONS` (default 64),
//! `DATABASE_URL` (Postgres admin URL; the Postgres part is skipped, loudly, without it).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corral_host::limits::Limits;
use corral_host::runtime::{InvokeRequest, Runtime, RuntimeConfig};
use corral_tests::harness::corral_bin;
use corral_tests::plugins::ECHO;
use sqlx::Connection;

const KEY: &str = "crl_load_benchmark_bootstrap_key_0123456789abcdef";
const INPUT: &str = r#"{"message":"hello","n":[1,2,3]}"#;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Invocations per second through `Runtime::invoke`, `concurrency` at a time.
fn in_process_rate(seconds: u64, concurrency: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = Arc::new(Runtime::new(RuntimeConfig::in_memory()).unwrap());
        let agent = runtime.load(std::fs::read(ECHO).unwrap()).await.unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (runtime, agent, done) = (runtime.clone(), agent.clone(), done.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let e = runtime
                            .invoke(&agent, InvokeRequest::new("echo", INPUT, Limits::default()))
                            .await
                            .unwrap();
                        assert!(e.succeeded());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        for t in tasks {
            t.await.unwrap();
        }
        done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    })
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

fn start_server(database_url: Option<&str>, data_dir: &std::path::Path) -> Server {
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
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    let child = command
        .spawn()
        .expect("corral serve starts (build it with cargo build --release -p corral-host)");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "corral serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, url }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-H", &format!("Authorization: Bearer {KEY}")])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn setup(url: &str) {
    setup_agent(url, "echo", None);
}

/// Creates `name` (with `policy`, if any) running the echo agent.
fn setup_agent(url: &str, name: &str, policy: Option<&str>) {
    let create = match policy {
        Some(policy) => format!(r#"{{"name":"{name}","policy":{policy}}}"#),
        None => format!(r#"{{"name":"{name}"}}"#),
    };
    let out = curl(&[
        "-H",
        "content-type: application/json",
        "-d",
        &create,
        &format!("{url}/v1/agents"),
    ]);
    assert!(out.contains(&format!("\"name\":\"{name}\"")), "{out}");
    let body = format!("@{ECHO}");
    let out = curl(&[
        "-H",
        "content-type: application/wasm",
        "--data-binary",
        &body,
        &format!("{url}/v1/agents/{name}/versions"),
    ]);
    assert!(out.contains("\"active\":true"), "{out}");
}

#[derive(Debug, Default, Clone)]
struct WrkResult {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
}

fn parse_ms(text: &str) -> f64 {
    let (number, unit) =
        text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len()));
    let n: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn wrk(url: &str, seconds: u64, connections: u64, delay_ms: f64) -> WrkResult {
    wrk_agent(url, "echo", seconds, connections, delay_ms)
}

fn wrk_agent(url: &str, agent: &str, seconds: u64, connections: u64, delay_ms: f64) -> WrkResult {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/invoke.lua");
    let out = Command::new("wrk")
        .args([
            // wrk needs at least as many connections as threads.
            if connections < 2 { "-t1" } else { "-t2" },
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
            script,
        ])
        .arg(format!("{url}/v1/agents/{agent}/invoke"))
        .env("CORRAL_KEY", KEY)
        .env("WRK_DELAY_MS", format!("{delay_ms:.0}"))
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut result = WrkResult::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => result.rate = rate.parse().unwrap_or(0.0),
            ["50%", v] => result.p50_ms = parse_ms(v),
            ["99%", v] => result.p99_ms = parse_ms(v),
            [n, "requests", "in", ..] => result.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => result.errors = n.parse().unwrap_or(0),
            ["Socket", "errors:", ..] => eprintln!("  wrk: {line}"),
            _ => {}
        }
    }
    result
}

async fn count_executions(database: &str) -> i64 {
    let row: (i64,) = if database.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(database).await.unwrap();
        sqlx::query_as("SELECT COUNT(*) FROM executions")
            .fetch_one(&mut c)
            .await
            .unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(database).await.unwrap();
        sqlx::query_as("SELECT COUNT(*) FROM executions")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    row.0
}

fn run_backend(
    name: &str,
    database_url: Option<String>,
    seconds: u64,
    connections: u64,
) -> (WrkResult, WrkResult) {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(database_url.as_deref(), dir.path());
    setup(&server.url);
    let _warmup = wrk(&server.url, 2, connections, 0.0);
    let peak = wrk(&server.url, seconds, connections, 0.0);
    // Half of peak: each connection paces itself to peak / 2 / connections per second.
    let pause = connections as f64 * 1000.0 / (peak.rate / 2.0) - peak.p50_ms.min(5.0);
    let half = wrk(&server.url, seconds, connections, pause.max(1.0));
    drop(server);
    let database = database_url
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("corral.db").display()));
    let rows = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(count_executions(&database));
    let answered = peak.requests + half.requests;
    println!(
        "{name}: {rows} execution rows for at least {answered} answered requests ({} non-2xx)",
        peak.errors + half.errors
    );
    (peak, half)
}

/// Quotas that are all checked on every invocation and never refuse one.
const GENEROUS_QUOTAS: &str = r#"{"quotas":{"max_concurrency":100000,"rate":{"requests":1000000,"per":"second"},"budgets":{"fuel_per_day":9000000000000000000,"dollars_per_month":"1000000"}}}"#;

/// With and without quotas on one server, in turns: (rate without, rate with,
/// p50 without at one connection, p50 with at one connection).
fn quota_overhead(database_url: Option<&str>, seconds: u64, connections: u64) -> [f64; 4] {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(database_url, dir.path());
    setup_agent(&server.url, "free", None);
    setup_agent(&server.url, "limited", Some(GENEROUS_QUOTAS));
    for agent in ["free", "limited"] {
        wrk_agent(&server.url, agent, 2, connections, 0.0);
    }
    let (mut free, mut limited) = (0.0, 0.0);
    for _ in 0..2 {
        free += wrk_agent(&server.url, "free", seconds, connections, 0.0).rate / 2.0;
        limited += wrk_agent(&server.url, "limited", seconds, connections, 0.0).rate / 2.0;
    }
    let free_p50 = wrk_agent(&server.url, "free", seconds, 1, 0.0).p50_ms;
    let limited_p50 = wrk_agent(&server.url, "limited", seconds, 1, 0.0).p50_ms;
    [free, limited, free_p50, limited_p50]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `cargo bench -- --list` probe bench binaries
    }
    let seconds = env_u64("LOAD_SECONDS", 10);
    let connections = env_u64("LOAD_CONNECTIONS", 64);

    let in_process = in_process_rate(seconds, connections as usize);
    println!("in-process: {in_process:.0} invocations/s");

    let mut rows = vec![("SQLite", run_backend("sqlite", None, seconds, connections))];
    let mut quota_rows = vec![("SQLite", quota_overhead(None, seconds / 2, connections))];
    match std::env::var("DATABASE_URL") {
        Ok(admin) => {
            let name = format!("corral_load_{}", uuid::Uuid::new_v4().simple());
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
            });
            let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
            rows.push((
                "Postgres",
                run_backend("postgres", Some(url.clone()), seconds, connections),
            ));
            quota_rows.push((
                "Postgres",
                quota_overhead(Some(&url), seconds / 2, connections),
            ));
            rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
                let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await;
            });
        }
        Err(_) => eprintln!("DATABASE_URL is not set: the Postgres run is SKIPPED"),
    }

    println!();
    println!(
        "| backend | peak invocations/s | vs in-process | p50 at peak | p99 at peak | rate at half load | p50 at half | p99 at half |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, (peak, half)) in rows {
        println!(
            "| {name} | {:.0} | {:.0} % | {:.2} ms | {:.2} ms | {:.0}/s | {:.2} ms | {:.2} ms |",
            peak.rate,
            100.0 * peak.rate / in_process,
            peak.p50_ms,
            peak.p99_ms,
            half.rate,
            half.p50_ms,
            half.p99_ms
        );
    }
    println!(
        "\nin-process rate (same machine, same run): {in_process:.0} invocations/s; {connections} connections, {seconds} s per run"
    );

    println!();
    println!(
        "| backend | without quotas /s | with quotas /s | with / without | p50 at 1 connection without | with |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, [free, limited, free_p50, limited_p50]) in quota_rows {
        println!(
            "| {name} | {free:.0} | {limited:.0} | {:.2} | {free_p50:.2} ms | {limited_p50:.2} ms |",
            limited / free
        );
    }
}
