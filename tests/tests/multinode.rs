//! Quotas hold across hosts: several real `corral serve` processes sharing one
//! Postgres database enforce one set of concurrency, rate and budget quotas, and a
//! host that dies holding concurrency slots gives them up when its leases expire, and a
//! token budget over model calls is passed by no more than its documented bound; a
//! workflow whose node is killed mid-step finishes on another node as it would have.

use std::time::{Duration, Instant};

use corral_tests::plugins::{ECHO, HOSTILE, TEXT_STATS, TRIAGE};
use corral_tests::process::{Backend, KEY, Server, client, setup_agent, submit_task, task_until};
use serde_json::{Value, json};
use sqlx::Connection;

/// `count` servers on one fresh Postgres database, each with `env`.
async fn servers(
    count: usize,
    env: &[(&str, &str)],
) -> (Backend, Vec<Server>, Vec<tempfile::TempDir>) {
    let backend = Backend::postgres().await;
    let dirs: Vec<_> = (0..count).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut started = Vec::new();
    for dir in &dirs {
        started.push(Server::start_with(&backend, dir.path(), env).await);
    }
    (backend, started, dirs)
}

async fn set_policy(url: &str, agent: &str, policy: Value) {
    let response = client()
        .put(format!("{url}/v1/agents/{agent}/policy"))
        .bearer_auth(KEY)
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Invokes once: the status, and the body.
async fn call(http: &reqwest::Client, url: &str, agent: &str, body: &Value) -> (u16, Value) {
    let response = http
        .post(format!("{url}/v1/agents/{agent}/invoke"))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `per_server` clients on every server call `agent` until `stop` says so (given the
/// reply) or `deadline` passes. Returns every (status, body, server index).
async fn hammer(
    servers: &[Server],
    per_server: usize,
    agent: &str,
    body: Value,
    deadline: Duration,
    stop: fn(u16, &Value) -> bool,
) -> Vec<(u16, Value, usize)> {
    let end = Instant::now() + deadline;
    let tasks: Vec<_> = servers
        .iter()
        .enumerate()
        .flat_map(|(index, server)| (0..per_server).map(move |_| (index, server.url.clone())))
        .map(|(index, url)| {
            let (agent, body) = (agent.to_string(), body.clone());
            tokio::spawn(async move {
                let http = client();
                let mut replies = Vec::new();
                while Instant::now() < end {
                    let (status, reply) = call(&http, &url, &agent, &body).await;
                    let done = stop(status, &reply);
                    replies.push((status, reply, index));
                    if done {
                        break;
                    }
                }
                replies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

async fn database(backend: &Backend) -> sqlx::PgConnection {
    let Backend::Postgres { admin_url, name } = backend else {
        unreachable!("these tests run on Postgres")
    };
    let base = admin_url.rsplit_once('/').unwrap().0;
    sqlx::PgConnection::connect(&format!("{base}/{name}"))
        .await
        .unwrap()
}

fn codes(replies: &[(u16, Value, usize)]) -> Vec<String> {
    replies
        .iter()
        .map(|(status, body, _)| match status {
            200 => "ok".to_string(),
            _ => body["error"]["code"].as_str().unwrap_or("?").to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_never_exceeds_the_quota_across_three_servers() {
    let (backend, servers, _dirs) = servers(3, &[]).await;
    setup_agent(&servers[0].url, "slow", HOSTILE).await;
    set_policy(
        &servers[0].url,
        "slow",
        json!({ "quotas": { "max_concurrency": 2 } }),
    )
    .await;
    // Let every server's agent cache see the policy.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let replies = hammer(
        &servers,
        4,
        "slow",
        json!({ "action": "sleep", "input": { "ms": 50 } }),
        Duration::from_secs(3),
        |_, _| false,
    )
    .await;
    let codes = codes(&replies);
    let ok = codes.iter().filter(|c| *c == "ok").count();
    let limited = codes.iter().filter(|c| *c == "concurrency_limited").count();
    assert_eq!(
        ok + limited,
        codes.len(),
        "only admissions and refusals: {codes:?}"
    );
    assert!(ok >= 10 && limited >= 10, "{ok} ran, {limited} refused");
    for index in 0..3 {
        assert!(
            replies.iter().any(|(s, _, i)| *s == 200 && *i == index),
            "server {index} admitted nothing"
        );
    }

    // The records' own start and finish times, from all three servers: never more
    // than two overlap.
    let mut db = database(&backend).await;
    let spans: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT started_at, finished_at FROM executions WHERE agent_name = 'slow'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(spans.len(), ok);
    let mut events: Vec<(chrono::DateTime<chrono::Utc>, i32)> = spans
        .iter()
        .flat_map(|(start, end)| [(*start, 1), (*end, -1)])
        .collect();
    // At equal times, an end comes before a start.
    events.sort();
    let (mut running, mut most) = (0, 0);
    for (_, step) in events {
        running += step;
        most = most.max(running);
    }
    assert_eq!(most, 2, "at most two at once, and the quota was reached");
    eprintln!("concurrency 2 on 3 servers: {ok} ran, {limited} refused, at most {most} at once");
    db.close().await.unwrap();
    drop(servers);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_quota_is_one_bucket_for_all_servers() {
    let (backend, servers, _dirs) = servers(3, &[]).await;
    setup_agent(&servers[0].url, "echo", ECHO).await;
    set_policy(
        &servers[0].url,
        "echo",
        json!({ "quotas": { "rate": { "requests": 10, "per": "hour" } } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let replies = hammer(
        &servers,
        3,
        "echo",
        json!({ "action": "echo", "input": {} }),
        Duration::from_secs(2),
        |status, _| status == 429,
    )
    .await;
    let codes = codes(&replies);
    assert_eq!(codes.iter().filter(|c| *c == "ok").count(), 10, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| *c == "rate_limited").count(), 9);
    drop(servers);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budgets_are_overspent_by_no_more_than_the_documented_bound() {
    // An invocation costs exactly $1.
    let prices = [
        ("CORRAL_PRICE_PER_INVOCATION", "1"),
        ("CORRAL_PRICE_PER_MILLION_FUEL", "0"),
        ("CORRAL_PRICE_PER_GIB_SECOND", "0"),
    ];
    let (backend, servers, _dirs) = servers(3, &prices).await;
    let url = servers[0].url.clone();
    setup_agent(&url, "echo", ECHO).await;
    setup_agent(&url, "stats", TEXT_STATS).await;
    let stats_call = json!({ "action": "stats", "input": { "text": "one two three" } });
    let (_, first) = call(&client(), &url, "stats", &stats_call).await;
    let fuel_per_call = first["usage"]["fuel"].as_u64().unwrap();

    const C: u64 = 3;
    set_policy(
        &url,
        "echo",
        json!({ "quotas": { "max_concurrency": C, "budgets": { "dollars_per_day": "20" } } }),
    )
    .await;
    // Each call may use exactly what it needs; the day allows ten and a half.
    let fuel_budget = fuel_per_call * 21 / 2;
    set_policy(
        &url,
        "stats",
        json!({ "limits": { "fuel": fuel_per_call },
                "quotas": { "max_concurrency": C, "budgets": { "fuel_per_day": fuel_budget } } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let exhausted =
        |status: u16, body: &Value| status == 429 && body["error"]["code"] == "budget_exhausted";
    let echo = hammer(
        &servers,
        4,
        "echo",
        json!({ "action": "echo" }),
        Duration::from_secs(20),
        exhausted,
    )
    .await;
    let stats = hammer(
        &servers,
        4,
        "stats",
        stats_call,
        Duration::from_secs(20),
        exhausted,
    )
    .await;
    for (name, replies) in [("echo", &echo), ("stats", &stats)] {
        let codes = codes(replies);
        assert!(
            codes
                .iter()
                .all(|c| ["ok", "budget_exhausted", "concurrency_limited"].contains(&c.as_str())),
            "{name}: {codes:?}"
        );
        assert!(
            codes.iter().any(|c| c == "budget_exhausted"),
            "{name} ran out: {codes:?}"
        );
    }

    let mut db = database(&backend).await;
    let (runs, dollars): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(SUM(cost_picodollars) / 1000000000000 AS BIGINT) \
         FROM executions WHERE agent_name = 'echo'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(runs, dollars);
    // Admitted only while under $20, each costing $1, at most C at once: at most
    // $20 + C − 1 (the documented bound is C × the largest cost: $23).
    eprintln!("a $20 budget, {C} at once, 3 servers: spent ${dollars}");
    assert!(
        (20..=20 + C as i64 - 1).contains(&dollars),
        "spent ${dollars} of a $20 budget with {C} at once"
    );
    let (fuel,): (i64,) = sqlx::query_as(
        "SELECT CAST(SUM(fuel) AS BIGINT) FROM executions WHERE agent_name = 'stats'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    let fuel = fuel as u64;
    eprintln!(
        "a {fuel_budget}-fuel budget ({fuel_per_call} a call, {C} at once, 3 servers): used {fuel}"
    );
    // Every admitted call's fuel is capped by what was left: (C − 1) × the per-call
    // limit is the most a fuel budget can be passed by.
    assert!(
        fuel >= fuel_budget && fuel <= fuel_budget + (C - 1) * fuel_per_call,
        "used {fuel} fuel of a {fuel_budget} budget (per call {fuel_per_call}, {C} at once)"
    );
    db.close().await.unwrap();
    drop(servers);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_budget_is_passed_by_no_more_than_the_documented_bound() {
    use corral_tests::providers::{ModelServer, Provider};
    // A provider that takes a moment, so calls on the three servers overlap.
    let provider = ModelServer::start(Provider::OpenAi, "sk-multinode").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("models.json");
    let catalogue = json!({
        "providers": { "p": { "kind": "openai", "base_url": provider.url(), "api_key": "sk-multinode" } },
        "models": { "fast": { "provider": "p", "model": "slow-150",
                              "input_per_million": "1", "output_per_million": "2" } },
    });
    std::fs::write(&config, catalogue.to_string()).unwrap();
    let config = config.to_str().unwrap().to_string();
    let (backend, servers, _dirs) = servers(3, &[("CORRAL_LLM_CONFIG", &config)]).await;
    let url = servers[0].url.clone();
    setup_agent(&url, "triage", TRIAGE).await;
    const C: u64 = 3;
    const BUDGET: u64 = 240;
    // Each call: the prompt is estimated at 20 tokens (62 characters, one message), and
    // may ask for at most 20 answer tokens: an invocation reserves at most 40.
    const RESERVATION: u64 = 40;
    set_policy(
        &url,
        "triage",
        json!({ "grants": { "llm": { "models": ["fast"], "max_tokens_per_call": 20 } },
                "quotas": { "max_concurrency": C, "budgets": { "tokens_per_day": BUDGET } } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ask = json!({ "action": "ask", "input": { "model": "fast", "max_tokens": 20, "messages": [
        { "role": "user", "content": "alpha bravo charlie delta echo foxtrot golf hotel india juliet" }] } });
    let spent = |status: u16, body: &Value| {
        (status == 429 && body["error"]["code"] == "budget_exhausted")
            || body["error"]["code"] == "llm_budget_exhausted"
    };
    let replies = hammer(&servers, 4, "triage", ask, Duration::from_secs(30), spent).await;
    assert!(
        replies.iter().any(|(s, b, _)| spent(*s, b)),
        "{:?}",
        codes(&replies)
    );

    let mut db = database(&backend).await;
    let (calls, tokens): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(input_tokens + output_tokens), 0) AS BIGINT) FROM llm_calls",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    let (counted,): (i64,) = sqlx::query_as(
        "SELECT CAST(SUM(tokens) AS BIGINT) FROM usage_counters WHERE scope LIKE 'agent:%'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(counted, tokens, "the counters hold what the calls used");
    eprintln!(
        "a {BUDGET}-token budget, {C} at once, 3 servers: {calls} calls used {tokens} tokens"
    );
    let tokens = tokens as u64;
    assert!(
        tokens >= BUDGET - RESERVATION && tokens <= BUDGET + (C - 1) * RESERVATION,
        "used {tokens} tokens of a {BUDGET} budget ({C} at once, {RESERVATION} a call at most)"
    );
    db.close().await.unwrap();
    drop(servers);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_servers_slots_come_back_when_its_leases_expire() {
    let (backend, mut servers, _dirs) = servers(2, &[("CORRAL_LEASE_GRACE", "1s")]).await;
    let (a, b) = (servers[0].url.clone(), servers[1].url.clone());
    setup_agent(&a, "slow", HOSTILE).await;
    set_policy(
        &a,
        "slow",
        json!({ "limits": { "timeout_ms": 2000 }, "quotas": { "max_concurrency": 1 } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Server A takes the only slot with a call that runs for seconds, then dies.
    let holder = {
        let a = a.clone();
        tokio::spawn(async move {
            // Its server dies under it: no answer is expected.
            let _ = client()
                .post(format!("{a}/v1/agents/slow/invoke"))
                .bearer_auth(KEY)
                .json(&json!({ "action": "sleep", "input": { "ms": 1900 } }))
                .send()
                .await;
        })
    };
    let usage = |url: String| async move {
        client()
            .get(format!("{url}/v1/agents/slow/usage"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let mut held = false;
    for _ in 0..100 {
        if usage(b.clone()).await["usage"]["concurrency"]["in_flight"] == 1 {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(held, "server A never took the slot");
    servers[0].kill();
    let killed = Instant::now();
    let _ = holder.await;

    let quick = json!({ "action": "sleep", "input": { "ms": 1 } });
    let (status, body) = call(&client(), &b, "slow", &quick).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("concurrency_limited"))
    );
    // The lease lasts the timeout (2 s) plus the grace (1 s) from when it was taken.
    loop {
        let (status, body) = call(&client(), &b, "slow", &quick).await;
        if status == 200 {
            break;
        }
        assert_eq!(body["error"]["code"], "concurrency_limited");
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the dead server's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "a dead server's slot came back {:?} after the kill",
        killed.elapsed()
    );
    drop(servers);
    backend.cleanup().await;
}

/// Task attempts recorded in the database: (task, attempt, outcome), and how many
/// execution records each attempt has.
async fn attempts(db: &mut sqlx::PgConnection) -> Vec<(String, i32, Option<String>, i64)> {
    sqlx::query_as(
        "SELECT a.task_id, a.attempt, a.outcome, \
         (SELECT COUNT(*) FROM executions e WHERE e.task_id = a.task_id AND e.attempt = a.attempt) \
         FROM task_attempts a ORDER BY a.task_id, a.attempt",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_whose_node_is_killed_finishes_on_another_node_once() {
    let env = [
        ("CORRAL_TASK_LEASE", "2s"),
        ("CORRAL_TASK_POLL", "200ms"),
        ("CORRAL_WORKERS", "4"),
    ];
    let (backend, mut servers, mut dirs) = servers(1, &env).await;
    let a = servers[0].url.clone();
    setup_agent(&a, "hostile", HOSTILE).await;
    // Six tasks; node A's four workers take four of them and are killed mid-attempt.
    let mut ids = Vec::new();
    for _ in 0..6 {
        let task = submit_task(
            &a,
            "hostile",
            json!({ "action": "sleep", "input": { "ms": 2500 }, "max_attempts": 3 }),
        )
        .await;
        ids.push(task["id"].as_str().unwrap().to_string());
    }
    let mut db = database(&backend).await;
    for _ in 0..100 {
        let (running,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM tasks WHERE state = 'running'")
                .fetch_one(&mut db)
                .await
                .unwrap();
        if running == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two more nodes join, then A dies with four attempts under way.
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        servers.push(Server::start_with(&backend, dir.path(), &env).await);
        dirs.push(dir);
    }
    servers[0].kill();
    let b = servers[1].url.clone();
    for id in &ids {
        let task = task_until(&b, id, Duration::from_secs(30), |t| {
            ["succeeded", "failed", "cancelled"].contains(&t["state"].as_str().unwrap_or(""))
        })
        .await;
        assert_eq!(task["state"], "succeeded", "{task:#}");
    }
    let attempts = attempts(&mut db).await;
    let lost: Vec<_> = attempts
        .iter()
        .filter(|a| a.2.as_deref() == Some("node_lost"))
        .collect();
    assert_eq!(
        lost.len(),
        4,
        "the four attempts of the dead node: {attempts:#?}"
    );
    for (task, attempt, outcome, records) in &attempts {
        let expected = match outcome.as_deref() {
            Some("node_lost") => 0,
            Some("succeeded") => 1,
            other => panic!("{task} attempt {attempt}: unexpected outcome {other:?}"),
        };
        assert_eq!(
            *records, expected,
            "{task} attempt {attempt}: one record per attempt that ran"
        );
    }
    let succeeded = attempts
        .iter()
        .filter(|a| a.2.as_deref() == Some("succeeded"))
        .count();
    assert_eq!(succeeded, 6, "each task succeeded exactly once");
    db.close().await.unwrap();
    drop(servers);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_cancelled_through_one_node_is_stopped_on_the_node_running_it() {
    let backend = Backend::postgres().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A only serves the API; B only runs tasks.
    let a = Server::start_with(&backend, dir_a.path(), &[("CORRAL_WORKERS", "0")]).await;
    let b = Server::start_with(&backend, dir_b.path(), &[("CORRAL_WORKERS", "2")]).await;
    setup_agent(&a.url, "hostile", HOSTILE).await;
    let task = submit_task(
        &a.url,
        "hostile",
        json!({ "action": "sleep", "input": { "ms": 60000 } }),
    )
    .await;
    let id = task["id"].as_str().unwrap();
    task_until(&a.url, id, Duration::from_secs(10), |t| {
        t["state"] == "running"
    })
    .await;
    let asked = Instant::now();
    let response = client()
        .post(format!("{}/v1/tasks/{id}/cancel", a.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let task = task_until(&a.url, id, Duration::from_secs(10), |t| {
        t["state"] == "cancelled"
    })
    .await;
    eprintln!(
        "a running task was stopped on another node {:?} after the cancel",
        asked.elapsed()
    );
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert_eq!(task["attempts"][0]["outcome"], "cancelled");
    let execution: Value = client()
        .get(format!(
            "{}/v1/executions/{}",
            a.url,
            task["attempts"][0]["execution_id"].as_str().unwrap()
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(execution["outcome"], "cancelled", "{execution:#}");
    drop((a, b));
    backend.cleanup().await;
}

/// Invokes with an `Idempotency-Key`: (status, body).
async fn call_with_key(url: &str, agent: &str, key: &str, body: &Value) -> (u16, Value) {
    let response = client()
        .post(format!("{url}/v1/agents/{agent}/invoke"))
        .bearer_auth(KEY)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn executions_with_key(db: &mut sqlx::PgConnection, key: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM executions WHERE idempotency_key = $1")
        .bind(key)
        .fetch_one(db)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_runs_once_across_nodes_even_when_one_starts_or_dies() {
    let env = [("CORRAL_IDEMPOTENCY_LEASE", "2s")];
    let (backend, mut servers, mut dirs) = servers(2, &env).await;
    let (a, b) = (servers[0].url.clone(), servers[1].url.clone());
    setup_agent(&a, "hostile", HOSTILE).await;
    let mut db = database(&backend).await;
    let slow = json!({ "action": "sleep", "input": { "ms": 2500 } });

    // A runs it; a retry on B while it runs is refused, even after a third node
    // starts (which once released every pending key it found).
    let first = {
        let (a, slow) = (a.clone(), slow.clone());
        tokio::spawn(async move { call_with_key(&a, "hostile", "key-1", &slow).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = call_with_key(&b, "hostile", "key-1", &slow).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("idempotency_in_progress"))
    );
    let dir = tempfile::tempdir().unwrap();
    servers.push(Server::start_with(&backend, dir.path(), &env).await);
    dirs.push(dir);
    let (status, _) = call_with_key(&servers[2].url, "hostile", "key-1", &slow).await;
    assert_eq!(status, 409, "a node that starts leaves others' keys alone");
    let (status, first) = first.await.unwrap();
    assert_eq!(status, 200);
    let (status, again) = call_with_key(&b, "hostile", "key-1", &slow).await;
    assert_eq!(status, 200);
    assert_eq!(again["execution_id"], first["execution_id"]);
    assert_eq!(executions_with_key(&mut db, "key-1").await, 1);

    // A dies mid-run: its key is taken over once the lease lapses, and billed once.
    let doomed = {
        let (a, slow) = (a.clone(), slow.clone());
        tokio::spawn(async move {
            let _ = client()
                .post(format!("{a}/v1/agents/hostile/invoke"))
                .bearer_auth(KEY)
                .header("idempotency-key", "key-2")
                .json(&slow)
                .send()
                .await;
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    servers[0].kill();
    let _ = doomed.await;
    let killed = Instant::now();
    let (status, _) = call_with_key(&b, "hostile", "key-2", &slow).await;
    assert_eq!(status, 409, "the lease still holds right after the kill");
    let retried = loop {
        let (status, body) = call_with_key(&b, "hostile", "key-2", &slow).await;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 409, "{body:#}");
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "the key was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(retried["outcome"], "succeeded");
    eprintln!(
        "a dead node's idempotency key was taken over {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(
        executions_with_key(&mut db, "key-2").await,
        1,
        "billed once"
    );
    db.close().await.unwrap();
    drop(servers);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_expire_and_are_purged() {
    let (backend, servers, _dirs) = servers(1, &[("CORRAL_IDEMPOTENCY_TTL", "2s")]).await;
    let url = servers[0].url.clone();
    setup_agent(&url, "echo", ECHO).await;
    let mut db = database(&backend).await;
    let (status, _) = call_with_key(
        &url,
        "echo",
        "old",
        &json!({ "action": "echo", "input": { "n": 1 } }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call_with_key(
        &url,
        "echo",
        "old",
        &json!({ "action": "echo", "input": { "n": 2 } }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Expired: the key is free for a new request.
    let (status, body) = call_with_key(
        &url,
        "echo",
        "old",
        &json!({ "action": "echo", "input": { "n": 2 } }),
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["output"], json!({ "n": 2 }));
    // And purged in the background once it expires again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(&mut db)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "expired keys were never purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.close().await.unwrap();
    drop(servers);
    backend.cleanup().await;
}

/// A workflow as the server at `url` shows it (`Null` if it does not answer).
async fn workflow(url: &str, id: &str) -> Value {
    let Ok(response) = client()
        .get(format!("{url}/v1/workflows/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
    else {
        return Value::Null;
    };
    response.json().await.unwrap_or(Value::Null)
}

fn step<'a>(workflow: &'a Value, name: &str) -> &'a Value {
    workflow["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_whose_node_is_killed_finishes_on_another_node_as_it_would_have() {
    let env = [
        ("CORRAL_TASK_LEASE", "2s"),
        ("CORRAL_TASK_POLL", "200ms"),
        ("CORRAL_WORKERS", "4"),
    ];
    let (backend, mut servers, mut dirs) = servers(1, &env).await;
    let a = servers[0].url.clone();
    setup_agent(&a, "hostile", HOSTILE).await;
    setup_agent(&a, "echo", ECHO).await;
    setup_agent(&a, "text-stats", TEXT_STATS).await;
    // first → (slow_a, slow_b in parallel) → last, with data passed along.
    let body = json!({
        "input": { "text": "one two three" },
        "steps": [
            { "name": "first", "agent": "echo", "action": "echo", "input": { "text": "$.input.text" } },
            { "name": "slow_a", "agent": "hostile", "action": "sleep", "depends_on": ["first"],
              "input": { "ms": 2500 } },
            { "name": "slow_b", "agent": "hostile", "action": "sleep", "depends_on": ["first"],
              "input": { "ms": 2500 } },
            { "name": "last", "agent": "text-stats", "action": "stats", "depends_on": ["slow_a", "slow_b"],
              "input": { "text": "$.steps.first.output.text" } },
        ],
        "output": { "words": "$.steps.last.output.words", "slept": "$.steps.slow_a.output.slept_ms" },
    });
    let response = client()
        .post(format!("{a}/v1/workflows"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Node A runs both slow steps, then dies with them under way.
    let mut db = database(&backend).await;
    for _ in 0..200 {
        let (running,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM tasks WHERE state = 'running'")
                .fetch_one(&mut db)
                .await
                .unwrap();
        if running == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    servers.push(Server::start_with(&backend, dir.path(), &env).await);
    dirs.push(dir);
    servers[0].kill();
    let b = servers[1].url.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let w = workflow(&b, &id).await;
        if w["state"] != "running" && !w.is_null() {
            break w;
        }
        assert!(Instant::now() < deadline, "the workflow never ended: {w:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["output"], json!({ "words": 3, "slept": 2500 }));
    for name in ["slow_a", "slow_b"] {
        let attempts = step(&done, name)["attempts"].as_array().unwrap().clone();
        assert_eq!(attempts.len(), 2, "{name}: {attempts:#?}");
        assert_eq!(attempts[0]["outcome"], "node_lost");
        assert_eq!(attempts[1]["outcome"], "succeeded");
    }
    for name in ["first", "last"] {
        assert_eq!(step(&done, name)["attempts"].as_array().unwrap().len(), 1);
    }
    // Each step enqueued once: four tasks, one per step.
    let (tasks,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tasks")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(tasks, 4);
    db.close().await.unwrap();
    drop(servers);
    backend.cleanup().await;
}
