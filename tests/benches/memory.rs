//! Memory benchmark: a server's resident memory while it takes 1,000 distinct
//! components, against the bound on its component cache; and its latency while a
//! hostile component compiles.
//!
//! **rss**: for each bound in `MEMORY_BOUNDS`, a fresh `corral serve` on SQLite with
//! `CORRAL_COMPONENT_CACHE` set to it. `MEMORY_COMPONENTS` agents are created and each
//! gets its own component — the echo agent with a custom section naming it, so every
//! content hash differs and every upload compiles — and is invoked once. The server's
//! `VmRSS` is sampled every `MEMORY_SAMPLE` uploads. Then the first agents, long
//! evicted, are invoked again (reloaded from the disk artifacts).
//!
//! **hostile**: one server with the echo agent. For `HOSTILE_SECONDS`, one client
//! alternates `GET /healthz` and an echo invocation, one request at a time; then the
//! same while a component that passes every shape check but takes seconds to compile
//! (`HOSTILE_FUNCTIONS` functions with many live values) is uploaded. p50 and p99 of
//! each, without and with the compile, from the same run.
//!
//! Run with `./scripts/bench-memory [rss|hostile]` (it builds the release binary).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use corral_tests::plugins::ECHO;
use corral_tests::process::{Backend, KEY, Server, client};
use serde_json::json;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `bytes` with a custom section appended: a distinct component that runs the same.
fn with_custom_section(bytes: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// The server's resident set, in MiB.
fn rss_mib(server: &Server) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("the server is alive");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib / 1024.0
}

async fn create_agent(http: &reqwest::Client, url: &str, name: &str) {
    let response = http
        .post(format!("{url}/v1/agents"))
        .bearer_auth(KEY)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

async fn upload(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    http.post(format!("{url}/v1/agents/{name}/versions"))
        .bearer_auth(KEY)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .unwrap()
}

async fn invoke_echo(http: &reqwest::Client, url: &str, name: &str) {
    let response = http
        .post(format!("{url}/v1/agents/{name}/invoke"))
        .bearer_auth(KEY)
        .json(&json!({"action": "echo", "input": {"hello": name}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

struct RssRun {
    bound: String,
    /// (uploads done, RSS MiB)
    samples: Vec<(u64, f64)>,
    /// RSS after invoking the first agents again.
    after_reload: f64,
    /// Wall time of the uploads.
    seconds: f64,
}

async fn rss_run(bound: &str, components: u64, every: u64) -> RssRun {
    let echo = std::fs::read(ECHO).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &Backend::Sqlite,
        dir.path(),
        &[("CORRAL_COMPONENT_CACHE", bound)],
    )
    .await;
    let http = client();
    let mut samples = vec![(0, rss_mib(&server))];
    let started = Instant::now();
    for i in 0..components {
        let name = format!("c{i:05}");
        create_agent(&http, &server.url, &name).await;
        let bytes = with_custom_section(&echo, "corral-bench", name.as_bytes());
        let response = upload(&http, &server.url, &name, bytes).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        invoke_echo(&http, &server.url, &name).await;
        if (i + 1) % every == 0 {
            let rss = rss_mib(&server);
            eprintln!("  {bound}: {} uploads, {rss:.1} MiB", i + 1);
            samples.push((i + 1, rss));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    for i in 0..every.min(components) {
        invoke_echo(&http, &server.url, &format!("c{i:05}")).await;
    }
    let after_reload = rss_mib(&server);
    RssRun {
        bound: bound.into(),
        samples,
        after_reload,
        seconds,
    }
}

fn report_rss(runs: &[RssRun], echo_bytes: usize) {
    println!(
        "\nRSS of `corral serve` (SQLite) while {} distinct components (echo, {} KiB each) are uploaded and invoked:\n",
        runs[0].samples.last().map_or(0, |s| s.0),
        echo_bytes / 1024
    );
    let mut header = String::from("| uploads |");
    let mut rule = String::from("|---:|");
    for run in runs {
        let _ = write!(header, " RSS, cache {} |", run.bound);
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    for (row, (uploads, _)) in runs[0].samples.iter().enumerate() {
        let mut line = format!("| {uploads} |");
        for run in runs {
            let _ = write!(line, " {:.0} MiB |", run.samples[row].1);
        }
        println!("{line}");
    }
    let mut line = String::from("| first agents invoked again |");
    for run in runs {
        let _ = write!(line, " {:.0} MiB |", run.after_reload);
    }
    println!("{line}\n");
    for run in runs {
        let samples = &run.samples;
        let bound_mib = corral_bound_mib(&run.bound);
        // The uploads after which the components' bytes fill the bound.
        let fill = (bound_mib * 1024.0 / (echo_bytes as f64 / 1024.0)) as u64;
        let slope = |from: (u64, f64), to: (u64, f64)| {
            (to.1 - from.1) * 1024.0 / (to.0 - from.0).max(1) as f64
        };
        // While filling: the memory one loaded agent costs. Over the last quarter of the
        // run: what churn costs once the cache is full.
        let filled = samples
            .iter()
            .rposition(|s| s.0 <= fill)
            .unwrap_or(0)
            .max(1);
        let filling = slope(samples[0], samples[filled]);
        let last = samples.len() - 1;
        let quarter = last - (last / 4).max(1);
        let tail = slope(samples[quarter], samples[last]);
        let levels = samples[quarter].0 > fill && tail < filling / 4.0;
        println!(
            "cache {}: the components fill it after ~{fill} uploads; {:.0} KiB per upload until then, \
             {tail:.0} KiB per upload over the last quarter (uploads {}-{}); {:.0} MiB at the end, \
             {:.1}x the bound ({:.1} uploads/s). {}",
            run.bound,
            filling,
            samples[quarter].0,
            samples[last].0,
            samples[last].1,
            samples[last].1 / bound_mib,
            samples[last].0 as f64 / run.seconds,
            if levels {
                "LEVELS OFF: the last quarter grows at under a quarter of the filling rate."
            } else {
                "DOES NOT LEVEL OFF (or the run is too short for this bound): the last quarter \
                 grows at more than a quarter of the filling rate."
            }
        );
    }
}

fn corral_bound_mib(bound: &str) -> f64 {
    let digits: String = bound.chars().take_while(char::is_ascii_digit).collect();
    let n: f64 = digits.parse().unwrap_or(0.0);
    match &bound[digits.len()..] {
        "GiB" => n * 1024.0,
        "KiB" => n / 1024.0,
        _ => n,
    }
}

/// A component that passes the shape checks (functions, body sizes, locals, bytes) but
/// keeps Cranelift busy: each function juggles `LIVE` values that all stay live to the
/// end, so register allocation spills and shuffles throughout.
fn hostile_component(functions: u64) -> Vec<u8> {
    const LIVE: usize = 48;
    const ROUNDS: usize = 60;
    let mut body = String::new();
    for i in 1..=LIVE {
        let _ = write!(
            body,
            "(local.set {i} (i64.mul (local.get 0) (i64.const {})))",
            i * 7919 + 1
        );
    }
    for r in 0..ROUNDS {
        for i in 1..=LIVE {
            let a = (i + r) % LIVE + 1;
            let b = (i * 3 + r) % LIVE + 1;
            let _ = write!(
                body,
                "(local.set {i} (i64.xor (i64.mul (local.get {a}) (local.get {b})) (i64.rotl (local.get {i}) (i64.const {}))))",
                (i + r) % 63 + 1
            );
        }
    }
    let mut sum = String::from("(local.get 1)");
    for i in 2..=LIVE {
        sum = format!("(i64.add {sum} (local.get {i}))");
    }
    let mut wat = String::from("(component (core module\n");
    for f in 0..functions {
        let _ = writeln!(
            wat,
            "(func (export \"f{f}\") (param i64) (result i64) (local {}) {body} {sum})",
            "i64 ".repeat(LIVE)
        );
    }
    wat.push_str("))");
    wat::parse_str(&wat).unwrap()
}

#[derive(Default)]
struct Latencies {
    health: Vec<f64>,
    invoke: Vec<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

impl Latencies {
    fn line(&mut self, label: &str) -> String {
        self.health.sort_by(f64::total_cmp);
        self.invoke.sort_by(f64::total_cmp);
        format!(
            "| {label} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            self.health.len(),
            percentile(&self.health, 0.5),
            percentile(&self.health, 0.99),
            self.health.last().copied().unwrap_or(f64::NAN),
            self.invoke.len(),
            percentile(&self.invoke, 0.5),
            percentile(&self.invoke, 0.99),
            self.invoke.last().copied().unwrap_or(f64::NAN),
        )
    }
}

/// One request at a time, alternating health and echo, a few ms apart, until `stop`.
async fn probe(http: &reqwest::Client, url: &str, stop: impl Fn() -> bool) -> Latencies {
    let mut latencies = Latencies::default();
    while !stop() {
        let t = Instant::now();
        let response = http.get(format!("{url}/healthz")).send().await.unwrap();
        assert!(response.status().is_success());
        latencies.health.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        invoke_echo(http, url, "echo").await;
        latencies.invoke.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies
}

async fn hostile(seconds: u64, functions: u64) {
    let generated = Instant::now();
    let component = hostile_component(functions);
    eprintln!(
        "hostile component: {functions} functions, {:.1} MiB, generated in {:.1} s",
        component.len() as f64 / (1 << 20) as f64,
        generated.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&Backend::Sqlite, dir.path(), &[]).await;
    let http = client();
    create_agent(&http, &server.url, "echo").await;
    let response = upload(&http, &server.url, "echo", std::fs::read(ECHO).unwrap()).await;
    assert_eq!(response.status(), 201);
    create_agent(&http, &server.url, "hostile").await;

    // Warm up, then the baseline.
    let warm = Instant::now() + Duration::from_secs(1);
    probe(&http, &server.url, || Instant::now() >= warm).await;
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut baseline = probe(&http, &server.url, || Instant::now() >= until).await;

    // The same while the hostile upload compiles.
    let (url, uploader) = (server.url.clone(), http.clone());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = done.clone();
    let started = Instant::now();
    let upload_task = tokio::spawn(async move {
        let response = upload(&uploader, &url, "hostile", component).await;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        (status, body, started.elapsed())
    });
    let mut during = probe(&http, &server.url, || {
        done.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let (status, body, took) = upload_task.await.unwrap();
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(String::from))
        .unwrap_or_default();

    println!(
        "\nThe hostile upload: {} after {:.1} s ({code}); compiled in a worker, the server answering meanwhile:\n",
        status,
        took.as_secs_f64()
    );
    println!("| | health requests | p50 | p99 | max | echo invocations | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!("{}", baseline.line("no compile running"));
    println!("{}", during.line("hostile compile running"));
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `cargo bench -- --list` probe bench binaries
    }
    let wanted = |part: &str| {
        let named: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        named.is_empty() || named.iter().any(|a| *a == part)
    };
    if wanted("rss") {
        let components = env_u64("MEMORY_COMPONENTS", 1000);
        let every = env_u64("MEMORY_SAMPLE", 50);
        let bounds = std::env::var("MEMORY_BOUNDS").unwrap_or_else(|_| "32MiB,64MiB".into());
        let mut runs = Vec::new();
        for bound in bounds.split(',') {
            runs.push(rss_run(bound.trim(), components, every).await);
        }
        report_rss(&runs, std::fs::metadata(ECHO).unwrap().len() as usize);
    }
    if wanted("hostile") {
        hostile(
            env_u64("HOSTILE_SECONDS", 10),
            env_u64("HOSTILE_FUNCTIONS", 600),
        )
        .await;
    }
}
