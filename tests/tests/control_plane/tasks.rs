//! Tasks through the API, run by the app's own workers: results, priority, `run_at`,
//! retries on an injected clock, dependencies, cancellation, queue caps, quota
//! deferrals, pausing and idempotent submission.

use std::sync::Arc;
use std::time::Duration;

use corral_host::quota::clock::{Clock, ManualClock};
use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app_with};
use corral_tests::plugins::{ECHO, HOSTILE, RELAY};
use reqwest::Method;
use serde_json::{Value, json};

crate::on_both_backends!(
    a_task_runs_and_its_full_result_is_kept,
    higher_priority_runs_first_and_run_at_is_honoured,
    retryable_failures_are_retried_with_backoff_and_fatal_ones_are_not,
    dependants_wait_for_their_parents_and_are_cancelled_when_one_fails,
    bad_dependencies_are_refused_naming_them,
    a_waiting_task_is_cancelled_at_once_and_a_running_one_is_stopped,
    a_paused_agent_holds_its_tasks_and_the_queue_cap_refuses_more,
    a_rate_quota_defers_an_attempt_without_counting_it,
    a_spent_budget_fails_a_task_unless_it_waits_for_the_next_period,
    a_retried_submission_returns_the_same_task,
    an_agent_fans_tasks_out_to_another_and_gathers_them,
);

/// An app with one worker that polls often, on `clock` if given.
async fn app(backend: Backend, workers: usize, clock: Option<Arc<ManualClock>>) -> TestApp {
    spawn_app_with(backend, move |config| {
        config.workers = Some(workers);
        config.task_poll = Duration::from_millis(50);
        if let Some(clock) = clock {
            config.clock = Some(clock);
        }
    })
    .await
}

async fn submit(app: &TestApp, agent: &str, body: Value) -> Value {
    app.post(&format!("/v1/agents/{agent}/tasks"), ADMIN_KEY, body)
        .await
        .ok(202)
}

/// Waits (long-polling) until the task has ended.
async fn finished(app: &TestApp, id: &str) -> Value {
    for _ in 0..10 {
        let task = app
            .get(&format!("/v1/tasks/{id}?wait=5s"), ADMIN_KEY)
            .await
            .ok(200);
        if ["succeeded", "failed", "cancelled"].contains(&task["state"].as_str().unwrap()) {
            return task;
        }
    }
    panic!("task {id} did not end");
}

async fn state_of(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/tasks/{id}"), ADMIN_KEY).await.ok(200)
}

/// Waits until `check` holds of the task.
async fn until(app: &TestApp, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..400 {
        let task = state_of(app, id).await;
        if check(&task) {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("task {id} never got there: {:#}", state_of(app, id).await);
}

async fn execution(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/executions/{id}"), ADMIN_KEY)
        .await
        .ok(200)
}

async fn a_task_runs_and_its_full_result_is_kept(backend: Backend) {
    let app = app(backend, 2, None).await;
    app.agent_with("echo", ECHO).await;
    let big = "x".repeat(4000);
    let response = app
        .send_request(
            app.request(Method::POST, "/v1/agents/echo/tasks", Some(ADMIN_KEY))
                .json(
                    &json!({ "action": "echo", "input": { "text": big }, "correlation_id": "c-1" }),
                ),
        )
        .await;
    let id = response.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        response.headers["location"].to_str().unwrap(),
        format!("/v1/tasks/{id}")
    );
    let task = finished(&app, &id).await;
    assert_eq!(task["state"], "succeeded", "{task:#}");
    assert_eq!(
        task["result"],
        json!({ "text": big }),
        "the whole output, not an excerpt"
    );
    assert_eq!(task["attempt_count"], 1);
    let attempts = task["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], "succeeded");
    let record = execution(&app, attempts[0]["execution_id"].as_str().unwrap()).await;
    assert_eq!(record["task_id"], id.as_str());
    assert_eq!(record["attempt"], 1);
    assert_eq!(record["correlation_id"], "c-1");
    let listed = app
        .get(
            "/v1/tasks?agent=echo&state=succeeded&correlation_id=c-1",
            ADMIN_KEY,
        )
        .await
        .ok(200);
    assert_eq!(listed["items"][0]["id"], id.as_str());
    app.get("/v1/tasks?state=bogus", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.get(&format!("/v1/tasks/{id}?wait=2h"), ADMIN_KEY)
        .await
        .assert_error(400, "invalid_query");
    app.get("/v1/tasks/nope", ADMIN_KEY)
        .await
        .assert_error(400, "invalid_id");
    app.stop().await;
}

async fn higher_priority_runs_first_and_run_at_is_honoured(backend: Backend) {
    let app = app(backend, 1, None).await;
    app.agent_with("echo", ECHO).await;
    // Hold the queue while submitting, so order is the queue's choice.
    app.post("/v1/agents/echo/pause", ADMIN_KEY, json!({}))
        .await
        .ok(200);
    let low = submit(
        &app,
        "echo",
        json!({ "action": "echo", "input": { "p": "low" } }),
    )
    .await;
    let high = submit(
        &app,
        "echo",
        json!({ "action": "echo", "input": { "p": "high" }, "priority": 10 }),
    )
    .await;
    let later = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let scheduled = submit(
        &app,
        "echo",
        json!({ "action": "echo", "priority": 100, "run_at": later.to_rfc3339() }),
    )
    .await;
    assert_eq!(scheduled["state"], "scheduled");
    assert_eq!(low["state"], "queued");
    // The state filter means what the tasks show.
    let ids = |query: &str| {
        let app = &app;
        let query = query.to_string();
        async move {
            let listed = app
                .get(&format!("/v1/tasks?{query}"), ADMIN_KEY)
                .await
                .ok(200);
            listed["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let queued = ids("state=queued").await;
    assert!(queued.contains(&low["id"].as_str().unwrap().to_string()));
    assert!(!queued.contains(&scheduled["id"].as_str().unwrap().to_string()));
    assert_eq!(
        ids("state=scheduled").await,
        [scheduled["id"].as_str().unwrap()]
    );
    app.post("/v1/agents/echo/resume", ADMIN_KEY, json!({}))
        .await
        .ok(200);
    let low = finished(&app, low["id"].as_str().unwrap()).await;
    let high = finished(&app, high["id"].as_str().unwrap()).await;
    let started = |t: &Value| t["attempts"][0]["started_at"].as_str().unwrap().to_string();
    assert!(
        started(&high) <= started(&low),
        "high {high:#} before low {low:#}"
    );
    let scheduled = finished(&app, scheduled["id"].as_str().unwrap()).await;
    let began = chrono::DateTime::parse_from_rfc3339(&started(&scheduled)).unwrap();
    assert!(began >= later, "not before run_at: {began} < {later}");
    app.stop().await;
}

async fn retryable_failures_are_retried_with_backoff_and_fatal_ones_are_not(backend: Backend) {
    let clock = Arc::new(ManualClock::new(corral_host::db::now()));
    let app = app(backend, 2, Some(clock.clone())).await;
    app.agent_with("hostile", HOSTILE).await;
    let flaky = submit(
        &app,
        "hostile",
        json!({ "action": "fail", "max_attempts": 3, "backoff": { "base_ms": 60000, "cap_ms": 600000 } }),
    )
    .await;
    let id = flaky["id"].as_str().unwrap();
    let first = until(&app, id, |t| t["state"] == "retrying").await;
    assert_eq!(first["attempt_count"], 1);
    assert_eq!(first["error"]["code"], "upstream_unavailable");
    // The backoff: between half and all of 60 s, on the injected clock.
    let run_at = chrono::DateTime::parse_from_rfc3339(first["run_at"].as_str().unwrap()).unwrap();
    let wait = run_at.with_timezone(&chrono::Utc) - clock.now();
    assert!(
        (29..=60).contains(&wait.num_seconds()),
        "first retry in {wait}"
    );
    // Nothing happens until the clock passes it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&app, id).await["attempt_count"], 1);
    clock.advance(chrono::Duration::seconds(61));
    let second = until(&app, id, |t| {
        t["attempt_count"] == 2 && t["state"] == "retrying"
    })
    .await;
    let run_at = chrono::DateTime::parse_from_rfc3339(second["run_at"].as_str().unwrap()).unwrap();
    let wait = run_at.with_timezone(&chrono::Utc) - clock.now();
    assert!(
        (59..=120).contains(&wait.num_seconds()),
        "second retry in {wait}"
    );
    clock.advance(chrono::Duration::seconds(121));
    let last = finished(&app, id).await;
    assert_eq!(last["state"], "failed", "{last:#}");
    let outcomes: Vec<_> = last["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, "agent_error".into()),
            (2, "agent_error".into()),
            (3, "agent_error".into())
        ]
    );
    for attempt in last["attempts"].as_array().unwrap() {
        let record = execution(&app, attempt["execution_id"].as_str().unwrap()).await;
        assert_eq!(record["attempt"], attempt["attempt"]);
    }

    // Traps, invalid input and fuel exhaustion are never retried.
    for body in [
        json!({ "action": "panic", "max_attempts": 5 }),
        json!({ "action": "sleep", "input": { "ms": "not a number" }, "max_attempts": 5 }),
        json!({ "action": "spin", "limits": { "fuel": 100000 }, "max_attempts": 5 }),
    ] {
        let task = submit(&app, "hostile", body.clone()).await;
        let task = finished(&app, task["id"].as_str().unwrap()).await;
        assert_eq!(task["state"], "failed", "{body} {task:#}");
        assert_eq!(task["attempt_count"], 1, "{body}");
    }
    app.stop().await;
}

async fn dependants_wait_for_their_parents_and_are_cancelled_when_one_fails(backend: Backend) {
    let app = app(backend, 4, None).await;
    app.agent_with("echo", ECHO).await;
    app.agent_with("hostile", HOSTILE).await;
    // Fan out and in: a → (b, c) → d.
    let batch = app
        .post(
            "/v1/tasks",
            ADMIN_KEY,
            json!({ "tasks": [
                { "agent": "echo", "key": "a", "action": "echo", "input": { "step": "a" } },
                { "agent": "echo", "key": "b", "action": "echo", "depends_on": ["a"] },
                { "agent": "hostile", "key": "c", "action": "sleep", "input": { "ms": 200 }, "depends_on": ["a"] },
                { "agent": "echo", "key": "d", "action": "echo", "depends_on": ["b", "c"] },
            ] }),
        )
        .await
        .ok(202);
    let ids: Vec<String> = batch["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(batch["tasks"][0]["state"], "queued");
    assert_eq!(batch["tasks"][3]["state"], "blocked");
    let mut done = Vec::new();
    for id in &ids {
        done.push(finished(&app, id).await);
    }
    for task in &done {
        assert_eq!(task["state"], "succeeded", "{task:#}");
    }
    let started = |t: &Value| t["attempts"][0]["started_at"].as_str().unwrap().to_string();
    let ended = |t: &Value| {
        t["attempts"][0]["finished_at"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(started(&done[1]) >= ended(&done[0]));
    assert!(started(&done[3]) >= ended(&done[1]) && started(&done[3]) >= ended(&done[2]));
    assert_eq!(done[3]["depends_on"].as_array().unwrap().len(), 2);

    // A parent that fails cancels its dependants, all the way down; and a task that
    // depends on a failed one is cancelled from the start.
    let batch = app
        .post(
            "/v1/tasks",
            ADMIN_KEY,
            json!({ "tasks": [
                { "agent": "hostile", "key": "x", "action": "panic" },
                { "agent": "echo", "key": "y", "action": "echo", "depends_on": ["x"] },
                { "agent": "echo", "key": "z", "action": "echo", "depends_on": ["y"] },
            ] }),
        )
        .await
        .ok(202);
    let x = finished(&app, batch["tasks"][0]["id"].as_str().unwrap()).await;
    assert_eq!(x["state"], "failed");
    for i in [1, 2] {
        let task = finished(&app, batch["tasks"][i]["id"].as_str().unwrap()).await;
        assert_eq!(task["state"], "cancelled", "{task:#}");
        assert_eq!(task["error"]["code"], "dependency_failed");
        assert_eq!(task["attempt_count"], 0);
    }
    let late = submit(
        &app,
        "echo",
        json!({ "action": "echo", "depends_on": [x["id"]] }),
    )
    .await;
    assert_eq!(late["state"], "cancelled");
    assert_eq!(late["error"]["code"], "dependency_failed");
    app.stop().await;
}

async fn bad_dependencies_are_refused_naming_them(backend: Backend) {
    let app = app(backend, 1, None).await;
    app.agent_with("echo", ECHO).await;
    let before = app.count("tasks").await;
    let refused = app
        .post(
            "/v1/agents/echo/tasks",
            ADMIN_KEY,
            json!({ "action": "echo", "depends_on": ["0190d9a0-0000-7000-8000-000000000000"] }),
        )
        .await;
    refused.assert_error(400, "invalid_dependency");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("0190d9a0")
    );
    let cycle = app
        .post(
            "/v1/tasks",
            ADMIN_KEY,
            json!({ "tasks": [
                { "agent": "echo", "key": "p", "action": "echo" },
                { "agent": "echo", "key": "q", "action": "echo", "depends_on": ["p", "r"] },
                { "agent": "echo", "key": "r", "action": "echo", "depends_on": ["q"] },
            ] }),
        )
        .await;
    cycle.assert_error(400, "dependency_cycle");
    let message = cycle.body["error"]["message"].as_str().unwrap();
    assert!(message.contains('q') && message.contains('r'), "{message}");
    // Another tenant's task is as good as missing.
    let (_, other) = app.tenant("other").await;
    app.post("/v1/agents", &other, json!({ "name": "echo" }))
        .await
        .ok(201);
    app.upload("echo", &other, std::fs::read(ECHO).unwrap())
        .await
        .ok(201);
    let theirs = app
        .post("/v1/agents/echo/tasks", &other, json!({ "action": "echo" }))
        .await
        .ok(202);
    app.post(
        "/v1/agents/echo/tasks",
        ADMIN_KEY,
        json!({ "action": "echo", "depends_on": [theirs["id"]] }),
    )
    .await
    .assert_error(400, "invalid_dependency");
    app.get(
        &format!("/v1/tasks/{}", theirs["id"].as_str().unwrap()),
        ADMIN_KEY,
    )
    .await
    .assert_error(404, "not_found");
    app.post(
        &format!("/v1/tasks/{}/cancel", theirs["id"].as_str().unwrap()),
        ADMIN_KEY,
        json!({}),
    )
    .await
    .assert_error(404, "not_found");
    // A task may name a later task of its batch; they are stored parents first.
    let forward = app
        .post(
            "/v1/tasks",
            ADMIN_KEY,
            json!({ "tasks": [
                { "agent": "echo", "key": "late", "action": "echo", "depends_on": ["early"] },
                { "agent": "echo", "key": "early", "action": "echo" },
            ] }),
        )
        .await
        .ok(202);
    assert_eq!(forward["tasks"][0]["state"], "blocked");
    assert_eq!(forward["tasks"][1]["state"], "queued");
    for task in forward["tasks"].as_array().unwrap() {
        assert_eq!(
            finished(&app, task["id"].as_str().unwrap()).await["state"],
            "succeeded"
        );
    }
    // A batch is all or nothing.
    app.post(
        "/v1/tasks",
        ADMIN_KEY,
        json!({ "tasks": [
            { "agent": "echo", "action": "echo" },
            { "agent": "missing", "action": "echo" },
        ] }),
    )
    .await
    .assert_error(404, "not_found");
    app.post(
        "/v1/agents/echo/tasks",
        ADMIN_KEY,
        json!({ "action": "echo", "limits": { "timeout_ms": 999999999999u64 } }),
    )
    .await
    .assert_error(400, "invalid_limits");
    app.post(
        "/v1/agents/echo/tasks",
        ADMIN_KEY,
        json!({ "action": "echo", "max_attempts": 0 }),
    )
    .await
    .assert_error(400, "invalid_tasks");
    assert_eq!(
        app.count("tasks").await,
        before + 3,
        "only the other tenant's task and the forward pair"
    );
    app.stop().await;
}

async fn a_waiting_task_is_cancelled_at_once_and_a_running_one_is_stopped(backend: Backend) {
    let app = app(backend, 2, None).await;
    app.agent_with("hostile", HOSTILE).await;
    let far = chrono::Utc::now() + chrono::Duration::hours(1);
    let waiting = submit(
        &app,
        "hostile",
        json!({ "action": "sleep", "input": { "ms": 1 }, "run_at": far.to_rfc3339() }),
    )
    .await;
    let cancelled = app
        .post(
            &format!("/v1/tasks/{}/cancel", waiting["id"].as_str().unwrap()),
            ADMIN_KEY,
            json!({}),
        )
        .await
        .ok(200);
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["attempt_count"], 0);

    // A guest that would sleep for a minute, stopped within about a second.
    let running = submit(
        &app,
        "hostile",
        json!({ "action": "sleep", "input": { "ms": 60000 } }),
    )
    .await;
    let id = running["id"].as_str().unwrap();
    until(&app, id, |t| t["state"] == "running").await;
    let asked = std::time::Instant::now();
    let reply = app
        .post(&format!("/v1/tasks/{id}/cancel"), ADMIN_KEY, json!({}))
        .await
        .ok(200);
    assert_eq!(reply["cancel_requested"], true);
    let task = finished(&app, id).await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    assert_eq!(task["state"], "cancelled", "{task:#}");
    assert_eq!(task["attempts"][0]["outcome"], "cancelled");
    let record = execution(&app, task["attempts"][0]["execution_id"].as_str().unwrap()).await;
    assert_eq!(record["outcome"], "cancelled");
    assert_ne!(record["cost"], "0.000000000000", "charged for what it used");
    app.post(&format!("/v1/tasks/{id}/cancel"), ADMIN_KEY, json!({}))
        .await
        .assert_error(409, "task_finished");
    let audit = app
        .get("/v1/audit?action=task.cancel", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit:#}");
    app.stop().await;
}

async fn a_paused_agent_holds_its_tasks_and_the_queue_cap_refuses_more(backend: Backend) {
    let app = app(backend, 2, None).await;
    let (tenant, key) = app.tenant("capped").await;
    app.post("/v1/agents", &key, json!({ "name": "echo" }))
        .await
        .ok(201);
    app.upload("echo", &key, std::fs::read(ECHO).unwrap())
        .await
        .ok(201);
    app.send(
        Method::PUT,
        &format!("/v1/tenants/{tenant}/policy"),
        Some(ADMIN_KEY),
        Some(json!({ "caps": { "max_queued_tasks": 2 } })),
    )
    .await
    .ok(200);
    app.post("/v1/agents/echo/pause", &key, json!({}))
        .await
        .ok(200);
    let submit = || app.post("/v1/agents/echo/tasks", &key, json!({ "action": "echo" }));
    let first = submit().await.ok(202);
    submit().await.ok(202);
    let full = submit().await;
    full.assert_error(429, "queue_full");
    assert_eq!(full.retry_after(), Some(1));
    let id = first["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = app.get(&format!("/v1/tasks/{id}"), &key).await.ok(200);
    assert_eq!(
        held["state"], "queued",
        "a paused agent's tasks wait: {held:#}"
    );
    app.post("/v1/agents/echo/resume", &key, json!({}))
        .await
        .ok(200);
    let mut done = Value::Null;
    for _ in 0..10 {
        done = app
            .get(&format!("/v1/tasks/{id}?wait=5s"), &key)
            .await
            .ok(200);
        if done["state"] == "succeeded" {
            break;
        }
    }
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let audit = app.get("/v1/audit?action=task.submit", &key).await.ok(200);
    assert_eq!(
        audit["items"][0]["after"]["code"], "queue_full",
        "{audit:#}"
    );
    app.stop().await;
}

async fn a_rate_quota_defers_an_attempt_without_counting_it(backend: Backend) {
    let clock = Arc::new(ManualClock::new(corral_host::db::now()));
    let app = app(backend, 2, Some(clock.clone())).await;
    app.agent_with("echo", ECHO).await;
    app.set_policy(
        "echo",
        json!({ "quotas": { "rate": { "requests": 1, "per": "minute", "burst": 1 } } }),
    )
    .await;
    let a = submit(&app, "echo", json!({ "action": "echo", "max_attempts": 1 })).await;
    let b = submit(&app, "echo", json!({ "action": "echo", "max_attempts": 1 })).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    // One of them runs; the other is deferred until the bucket refills.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sa, sb) = (state_of(&app, a).await, state_of(&app, b).await);
    let states = [sa["state"].as_str().unwrap(), sb["state"].as_str().unwrap()];
    assert!(states.contains(&"succeeded"), "{states:?}");
    let waiting = if sa["state"] == "succeeded" { &sb } else { &sa };
    assert_eq!(
        waiting["attempt_count"], 0,
        "a deferral is not an attempt: {waiting:#}"
    );
    assert_eq!(waiting["state"], "scheduled", "{waiting:#}");
    clock.advance(chrono::Duration::seconds(61));
    let waiting_id = waiting["id"].as_str().unwrap().to_string();
    let done = finished(&app, &waiting_id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["attempt_count"], 1);
    app.stop().await;
}

async fn a_spent_budget_fails_a_task_unless_it_waits_for_the_next_period(backend: Backend) {
    let clock = Arc::new(ManualClock::new("2026-03-31T23:00:00Z".parse().unwrap()));
    let app = {
        let clock = clock.clone();
        spawn_app_with(backend, move |config| {
            config.workers = Some(1);
            config.task_poll = Duration::from_millis(50);
            config.clock = Some(clock);
            // An invocation costs exactly one dollar.
            config.price_per_invocation = "1".parse().unwrap();
            config.price_per_million_fuel = "0".parse().unwrap();
            config.price_per_gib_second = "0".parse().unwrap();
        })
        .await
    };
    app.agent_with("echo", ECHO).await;
    app.set_policy(
        "echo",
        json!({ "quotas": { "budgets": { "dollars_per_day": "1" } } }),
    )
    .await;
    let spends = submit(&app, "echo", json!({ "action": "echo" })).await;
    assert_eq!(
        finished(&app, spends["id"].as_str().unwrap()).await["state"],
        "succeeded"
    );
    // The day's dollar is spent: a task that does not wait fails, without an execution.
    let fails = submit(&app, "echo", json!({ "action": "echo" })).await;
    let fails = finished(&app, fails["id"].as_str().unwrap()).await;
    assert_eq!(fails["state"], "failed", "{fails:#}");
    assert_eq!(fails["error"]["code"], "budget_exhausted");
    assert_eq!(fails["attempts"][0]["outcome"], "budget_exhausted");
    // One that waits is put off until the day rolls over, not counting an attempt.
    let waits = submit(
        &app,
        "echo",
        json!({ "action": "echo", "wait_for_budget": true }),
    )
    .await;
    let id = waits["id"].as_str().unwrap();
    let deferred = until(&app, id, |t| t["state"] == "scheduled").await;
    assert_eq!(deferred["attempt_count"], 0, "{deferred:#}");
    clock.advance(chrono::Duration::hours(2));
    assert_eq!(finished(&app, id).await["state"], "succeeded");
    app.stop().await;
}

async fn a_retried_submission_returns_the_same_task(backend: Backend) {
    let app = app(backend, 1, None).await;
    app.agent_with("echo", ECHO).await;
    let send = |body: Value| {
        app.send_request(
            app.request(Method::POST, "/v1/agents/echo/tasks", Some(ADMIN_KEY))
                .header("idempotency-key", "submit-1")
                .json(&body),
        )
    };
    let first = send(json!({ "action": "echo", "input": { "n": 1 } }))
        .await
        .ok(202);
    let again = send(json!({ "action": "echo", "input": { "n": 1 } }))
        .await
        .ok(202);
    assert_eq!(first["id"], again["id"]);
    send(json!({ "action": "echo", "input": { "n": 2 } }))
        .await
        .assert_error(422, "idempotency_key_reused");
    assert_eq!(app.count("tasks").await, 1);
    app.stop().await;
}

async fn an_agent_fans_tasks_out_to_another_and_gathers_them(backend: Backend) {
    let app = app(backend, 4, None).await;
    app.agent_with("echo", ECHO).await;
    app.agent_with("hostile", HOSTILE).await;
    app.agent_with("relay", RELAY).await;
    let fan_out = |agent: &str, inputs: Value| json!({ "action": "fan_out", "input": { "agent": agent, "action": "echo", "inputs": inputs, "wait_ms": 4000 } });
    // Not granted: refused at call time, listed and audited like any call.
    let denied = app
        .invoke("relay", ADMIN_KEY, fan_out("echo", json!([{ "n": 1 }])))
        .await
        .ok(200);
    assert_eq!(denied["error"]["code"], "call_denied", "{denied:#}");
    assert_eq!(denied["denials"][0]["capability"], "agents");

    app.set_policy(
        "relay",
        json!({ "grants": { "agents": { "allow": ["echo"], "max_calls": 10 } } }),
    )
    .await;
    let gathered = app
        .invoke(
            "relay",
            ADMIN_KEY,
            fan_out("echo", json!([{ "n": 1 }, { "n": 2 }, { "n": 3 }])),
        )
        .await
        .ok(200);
    assert_eq!(gathered["outcome"], "succeeded", "{gathered:#}");
    assert_eq!(
        gathered["output"]["outputs"],
        json!([{ "n": 1 }, { "n": 2 }, { "n": 3 }])
    );
    assert_eq!(gathered["usage"]["agents"]["tasks_submitted"], 3);
    assert_eq!(gathered["usage"]["agents"]["calls"], 3);
    // Each child task is linked to the execution that submitted it.
    for id in gathered["output"]["tasks"].as_array().unwrap() {
        let task = state_of(&app, id.as_str().unwrap()).await;
        assert_eq!(
            task["parent_execution_id"], gathered["execution_id"],
            "{task:#}"
        );
        assert_eq!(task["state"], "succeeded");
    }
    // A task of an agent it may not call cannot be read, whether or not it exists.
    let theirs = submit(
        &app,
        "hostile",
        json!({ "action": "fail", "max_attempts": 1 }),
    )
    .await;
    let id = theirs["id"].as_str().unwrap().to_string();
    finished(&app, &id).await;
    for task in [id.as_str(), "0190d9a0-0000-7000-8000-000000000000"] {
        let read = app
            .invoke(
                "relay",
                ADMIN_KEY,
                json!({ "action": "wait", "input": { "task": task } }),
            )
            .await
            .ok(200);
        assert_eq!(read["error"]["code"], "call_denied", "{read:#}");
        assert!(
            read["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no task"),
            "{read:#}"
        );
    }
    // An echo task it may read: its output.
    let mine = gathered["output"]["tasks"][0].as_str().unwrap();
    let read = app
        .invoke(
            "relay",
            ADMIN_KEY,
            json!({ "action": "wait", "input": { "task": mine } }),
        )
        .await
        .ok(200);
    assert_eq!(read["output"]["output"], json!({ "n": 1 }), "{read:#}");
    app.set_policy(
        "relay",
        json!({ "grants": { "agents": { "allow": ["echo", "hostile"], "max_calls": 2 } } }),
    )
    .await;
    // Past max_calls, a submission is refused like a call.
    let capped = app
        .invoke(
            "relay",
            ADMIN_KEY,
            fan_out("echo", json!([{ "n": 1 }, { "n": 2 }, { "n": 3 }])),
        )
        .await
        .ok(200);
    assert_eq!(capped["error"]["code"], "call_denied", "{capped:#}");
    assert_eq!(capped["usage"]["agents"]["tasks_submitted"], 2);
    app.stop().await;
}
