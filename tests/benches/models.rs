//! Model-call benchmark, against the fake OpenAI-compatible provider on 127.0.0.1
//! (`tests/src/providers.rs`), every figure compared in the same run:
//!
//! 1. **Overhead per call**: a direct HTTP call to the provider (reqwest, keep-alive)
//!    vs the same call made by an agent through the host (`corral:agent/llm`, a fresh
//!    instance each time, in process), and the same invocation without the call. The
//!    host's added latency is the difference.
//! 2. **Waiting agents**: `WAITING` (default 2000) invocations at once against one
//!    `corral serve` (release, SQLite), each waiting on a provider that answers after
//!    `WAIT_MS` (default 2000): how many wait at once (counted at the provider) and the
//!    server's peak RSS.
//!
//! Run with `./scripts/bench-models` (it builds the release binary first).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_host::limits::Limits;
use corral_host::llm::Catalogue;
use corral_host::policy::{Grants, LlmGrant};
use corral_host::runtime::{InvokeRequest, Outcome, Providers};
use corral_tests::harness::{corral_bin, load, runtime};
use corral_tests::plugins::TRIAGE;
use corral_tests::providers::{ModelServer, Provider};
use serde_json::json;

const KEY: &str = "sk-bench-key";
const ADMIN: &str = "crl_model_benchmark_bootstrap_key_0123456789abcdef";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn show(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!("  {name:<44} p50 {p50:>10.3?}   p99 {p99:>10.3?}");
    p50
}

fn catalogue_json(server: &ModelServer, model: &str) -> serde_json::Value {
    json!({
        "providers": { "local": { "kind": "openai", "base_url": server.url(), "api_key": KEY,
                                  "timeout_ms": 60000 } },
        "models": { "fast": { "provider": "local", "model": model,
                              "input_per_million": "0.15", "output_per_million": "0.60" } },
    })
}

async fn overhead(calls: usize) {
    println!("overhead per model call ({calls} calls each, sequential)");
    let server = ModelServer::start(Provider::OpenAi, KEY).await;
    let catalogue =
        Arc::new(Catalogue::parse(&catalogue_json(&server, "fast").to_string(), |_| None).unwrap());
    let body = json!({ "model": "fast", "max_tokens": 100,
                       "messages": [{ "role": "user", "content": "hello there" }] });
    let client = reqwest::Client::new();
    let mut direct = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let answer = client
            .post(server.endpoint())
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
        answer.bytes().await.unwrap();
        direct.push(started.elapsed());
    }
    let runtime = runtime();
    let agent = load(&runtime, TRIAGE).await;
    let mut through_host = Vec::with_capacity(calls);
    let mut without_call = Vec::with_capacity(calls);
    let input = json!({ "model": "fast", "max_tokens": 100,
                        "messages": [{ "role": "user", "content": "hello there" }] })
    .to_string();
    for granted in [true, false] {
        for _ in 0..calls {
            let mut request = InvokeRequest::new("ask", input.clone(), Limits::default())
                .with_grants(Grants {
                    llm: granted.then(|| LlmGrant::new(vec!["fast".into()])),
                    ..Grants::default()
                });
            request.providers = Providers {
                llm: Some(catalogue.clone()),
                ..Providers::default()
            };
            let started = Instant::now();
            let execution = runtime.invoke(&agent, request).await.unwrap();
            let elapsed = started.elapsed();
            if granted {
                assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:?}");
                through_host.push(elapsed);
            } else {
                // Denied at once: the same invocation, minus the call.
                without_call.push(elapsed);
            }
        }
    }
    let direct = show("direct HTTP call (reqwest, keep-alive)", direct);
    let host = show("agent invocation making the call", through_host);
    let bare = show("agent invocation, call denied (no HTTP)", without_call);
    println!(
        "  host's added latency per call: {:.3?} (invocation with call − without − direct)",
        host.saturating_sub(bare).saturating_sub(direct)
    );
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn waiting(count: usize, wait_ms: u64) {
    println!("{count} invocations at once, each waiting {wait_ms} ms on the provider");
    let server = ModelServer::start(Provider::OpenAi, KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("models.json");
    let model = format!("slow-{wait_ms}");
    std::fs::write(&config, catalogue_json(&server, &model).to_string()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let instances = std::env::var("CORRAL_MAX_INSTANCES").unwrap_or_else(|_| count.to_string());
    let child = Command::new(corral_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("CORRAL_DATA_DIR", dir.path())
        .env("CORRAL_BOOTSTRAP_KEY", ADMIN)
        .env("CORRAL_LLM_CONFIG", &config)
        .env("CORRAL_MAX_INSTANCES", &instances)
        .env("CORRAL_TIMEOUT", "60s")
        .env("CORRAL_REQUEST_TIMEOUT", "90s")
        .env("RUST_LOG", "error")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("corral serve starts");
    let pid = child.id();
    let _server = Server(child);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(count)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "corral serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(ADMIN);
    admin(http.post(format!("{url}/v1/agents")))
        .json(&json!({ "name": "triage" }))
        .send()
        .await
        .unwrap();
    let uploaded = admin(http.post(format!("{url}/v1/agents/triage/versions")))
        .header("content-type", "application/wasm")
        .body(std::fs::read(TRIAGE).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let granted = admin(http.put(format!("{url}/v1/agents/triage/policy")))
        .json(&json!({ "grants": { "llm": { "models": ["fast"] } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);
    let idle_rss = rss_kib(pid, "VmRSS:");

    let started = Instant::now();
    let calls: Vec<_> = (0..count)
        .map(|i| {
            let request = admin(http.post(format!("{url}/v1/agents/triage/invoke"))).json(&json!({
                "action": "summarize", "input": { "text": format!("message {i}") }
            }));
            tokio::spawn(async move {
                let answer = request.send().await.map_err(|e| e.to_string())?;
                let status = answer.status();
                let body: serde_json::Value = answer.json().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((
                    status.as_u16(),
                    body["outcome"].as_str().map(str::to_string),
                ))
            })
        })
        .collect();
    // Sample the server's memory while they wait.
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..((wait_ms as usize / 100) * 3 + 100) {
            peak = peak.max(rss_kib(pid, "VmRSS:"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    });
    let mut succeeded = 0;
    let mut other = std::collections::BTreeMap::<String, usize>::new();
    for call in calls {
        match call.await.unwrap() {
            Ok((200, Some(outcome))) if outcome == "succeeded" => succeeded += 1,
            Ok((status, outcome)) => {
                *other.entry(format!("{status} {outcome:?}")).or_default() += 1
            }
            Err(e) => *other.entry(e).or_default() += 1,
        }
    }
    let elapsed = started.elapsed();
    let peak_rss = sampler
        .await
        .unwrap()
        .max(rss_kib(pid, "VmHWM:").min(u64::MAX));
    let hwm = rss_kib(pid, "VmHWM:");
    // The most requests the provider held at once.
    let mut times: Vec<Instant> = server.requests().iter().map(|r| r.at).collect();
    times.sort();
    let wait = Duration::from_millis(wait_ms);
    let most = times
        .iter()
        .enumerate()
        .map(|(i, t)| times[i..].iter().take_while(|u| **u < *t + wait).count())
        .max()
        .unwrap_or(0);
    println!("  succeeded {succeeded} of {count} in {elapsed:.2?}; others: {other:?}");
    println!("  waiting on the provider at once: at most {most}");
    println!(
        "  server RSS: idle {:.0} MiB, peak sampled {:.0} MiB, high-water mark {:.0} MiB (pool of {instances} instances)",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}

#[tokio::main]
async fn main() {
    overhead(env_usize("CALLS", 2000)).await;
    waiting(
        env_usize("WAITING", 2000),
        env_usize("WAIT_MS", 2000) as u64,
    )
    .await;
}
