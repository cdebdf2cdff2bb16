//! Schedules through the API on an injected clock: occurrences enqueued exactly once
//! (also across two nodes sharing one Postgres database), the missed-occurrence
//! policies after downtime, overlap, pause, resume, delete, stored-workflow targets and
//! refusals.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use corral_host::quota::clock::ManualClock;
use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app_with, spawn_node_with};
use corral_tests::plugins::{ECHO, HOSTILE};
use reqwest::Method;
use serde_json::{Value, json};

crate::on_both_backends!(
    each_occurrence_is_enqueued_once_and_late_ones_follow_the_policy,
    overlap_can_be_forbidden_and_a_schedule_paused_resumed_and_deleted,
    a_schedule_starts_a_stored_workflow_and_bad_schedules_are_refused,
);

fn start_time() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 30).unwrap()
}

async fn app(backend: Backend, clock: Arc<ManualClock>) -> TestApp {
    let app = spawn_app_with(backend, move |config| {
        config.workers = Some(2);
        config.task_poll = Duration::from_millis(50);
        config.clock = Some(clock);
    })
    .await;
    app.agent_with("echo", ECHO).await;
    app.agent_with("hostile", HOSTILE).await;
    app
}

async fn create(app: &TestApp, body: Value) -> String {
    let created = app.post("/v1/schedules", ADMIN_KEY, body).await.ok(201);
    created["id"].as_str().unwrap().to_string()
}

async fn show(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/schedules/{id}"), ADMIN_KEY)
        .await
        .ok(200)
}

/// Waits until the schedule has handled `n` occurrences; returns them, oldest first.
async fn occurrences(app: &TestApp, id: &str, n: usize) -> Vec<Value> {
    for _ in 0..400 {
        let schedule = show(app, id).await;
        let mut handled = schedule["occurrences"].as_array().unwrap().clone();
        if handled.len() >= n {
            handled.reverse();
            return handled;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "schedule {id} never handled {n} occurrences: {:#}",
        show(app, id).await
    );
}

async fn each_occurrence_is_enqueued_once_and_late_ones_follow_the_policy(backend: Backend) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let app = app(backend, clock.clone()).await;
    let target = json!({ "agent": "echo", "action": "echo", "input": { "hello": "cron" } });
    let run_once = create(&app, json!({ "cron": "0 * * * *", "target": target })).await;
    let skip = create(
        &app,
        json!({ "cron": "0 0 * * * *", "target": target, "missed": "skip" }),
    )
    .await;
    let schedule = show(&app, &run_once).await;
    assert_eq!(schedule["missed"], "run_once");
    assert_eq!(
        schedule["next_occurrences"],
        json!([
            "2030-01-01T01:00:00Z",
            "2030-01-01T02:00:00Z",
            "2030-01-01T03:00:00Z",
            "2030-01-01T04:00:00Z",
            "2030-01-01T05:00:00Z"
        ]),
        "{schedule:#}"
    );

    // On time: both run.
    clock.set(Utc.with_ymd_and_hms(2030, 1, 1, 1, 0, 10).unwrap());
    for id in [&run_once, &skip] {
        let handled = occurrences(&app, id, 1).await;
        assert_eq!(handled[0]["outcome"], "enqueued", "{handled:#?}");
        assert_eq!(handled[0]["at"], "2030-01-01T01:00:00Z");
    }
    // The nodes were "down" past 02:00 and 03:00: the latest (03:00) is 30 minutes
    // late. run_once runs it, once; skip records it missed; 02:00 is never run.
    clock.set(Utc.with_ymd_and_hms(2030, 1, 1, 3, 30, 0).unwrap());
    let handled = occurrences(&app, &run_once, 2).await;
    assert_eq!(
        handled.len(),
        2,
        "one occurrence for the downtime: {handled:#?}"
    );
    assert_eq!(handled[1]["at"], "2030-01-01T03:00:00Z");
    assert_eq!(handled[1]["outcome"], "enqueued");
    let skipped = occurrences(&app, &skip, 2).await;
    assert_eq!(skipped.len(), 2, "{skipped:#?}");
    assert_eq!(skipped[1]["at"], "2030-01-01T03:00:00Z");
    assert_eq!(skipped[1]["outcome"], "missed");
    assert!(skipped[1]["task_id"].is_null());
    for id in [&run_once, &skip] {
        assert_eq!(
            show(&app, id).await["next_occurrences"][0],
            "2030-01-01T04:00:00Z"
        );
    }
    // Three tasks in all, each run once, each named by exactly one occurrence.
    let mut task_ids: Vec<String> = handled
        .iter()
        .chain(&skipped)
        .filter_map(|o| o["task_id"].as_str().map(str::to_string))
        .collect();
    task_ids.sort();
    task_ids.dedup();
    assert_eq!(task_ids.len(), 3);
    assert_eq!(app.count("tasks").await, 3);
    for id in &task_ids {
        let task = app
            .get(&format!("/v1/tasks/{id}?wait=10s"), ADMIN_KEY)
            .await
            .ok(200);
        assert_eq!(task["state"], "succeeded", "{task:#}");
        assert_eq!(task["result"], json!({ "hello": "cron" }));
    }
    app.stop().await;
}

async fn overlap_can_be_forbidden_and_a_schedule_paused_resumed_and_deleted(backend: Backend) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let app = app(backend, clock.clone()).await;
    let id = create(
        &app,
        json!({
            "cron": "* * * * *", "overlap": "forbid",
            "target": { "agent": "hostile", "action": "sleep", "input": { "ms": 30000 } },
        }),
    )
    .await;
    clock.advance(chrono::Duration::minutes(1));
    let first = occurrences(&app, &id, 1).await;
    assert_eq!(first[0]["outcome"], "enqueued");
    clock.advance(chrono::Duration::minutes(1));
    let second = occurrences(&app, &id, 2).await;
    assert_eq!(second[1]["outcome"], "skipped_overlap", "{second:#?}");
    let task = first[0]["task_id"].as_str().unwrap();
    app.post(&format!("/v1/tasks/{task}/cancel"), ADMIN_KEY, json!({}))
        .await
        .ok(200);

    let paused = app
        .post(&format!("/v1/schedules/{id}/pause"), ADMIN_KEY, json!({}))
        .await
        .ok(200);
    assert_eq!(paused["paused"], true);
    assert!(paused["next_occurrences"].as_array().unwrap().is_empty());
    clock.advance(chrono::Duration::minutes(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        show(&app, &id).await["occurrences"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let resumed = app
        .post(&format!("/v1/schedules/{id}/resume"), ADMIN_KEY, json!({}))
        .await
        .ok(200);
    assert_eq!(
        resumed["next_occurrences"][0], "2030-01-01T00:13:00Z",
        "resumed from the next occurrence, not the paused ones"
    );
    let listed = app.get("/v1/schedules", ADMIN_KEY).await.ok(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let deleted = app
        .send(
            Method::DELETE,
            &format!("/v1/schedules/{id}"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    app.get(&format!("/v1/schedules/{id}"), ADMIN_KEY)
        .await
        .assert_error(404, "not_found");
    app.stop().await;
}

async fn a_schedule_starts_a_stored_workflow_and_bad_schedules_are_refused(backend: Backend) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let app = app(backend, clock.clone()).await;
    app.send(
        Method::PUT,
        "/v1/workflow-definitions/nightly",
        Some(ADMIN_KEY),
        Some(json!({ "steps": [
            { "name": "one", "agent": "echo", "action": "echo", "input": { "day": "$.input.day" } },
        ]})),
    )
    .await
    .ok(201);
    let id = create(
        &app,
        json!({ "cron": "30 2 * * *", "timezone": "Europe/Paris",
                "target": { "workflow": "nightly", "input": { "day": "today" } } }),
    )
    .await;
    // 02:30 in Paris is 01:30 UTC in winter.
    assert_eq!(
        show(&app, &id).await["next_occurrences"][0],
        "2030-01-01T01:30:00Z"
    );
    clock.set(Utc.with_ymd_and_hms(2030, 1, 1, 1, 30, 5).unwrap());
    let handled = occurrences(&app, &id, 1).await;
    let workflow = handled[0]["workflow_id"].as_str().unwrap();
    let run = app
        .get(&format!("/v1/workflows/{workflow}?wait=10s"), ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["definition"], "nightly");
    assert_eq!(run["schedule_id"], id.as_str());
    assert_eq!(run["output"]["one"], json!({ "day": "today" }));

    let echo = json!({ "agent": "echo", "action": "echo" });
    for (body, code) in [
        (
            json!({ "cron": "* * *", "target": echo }),
            "invalid_schedule",
        ),
        (
            json!({ "cron": "61 * * * *", "target": echo }),
            "invalid_schedule",
        ),
        (
            json!({ "cron": "* * * * *", "timezone": "Mars/Olympus", "target": echo }),
            "invalid_schedule",
        ),
        (
            json!({ "cron": "* * * * *", "target": { "agent": "nobody", "action": "x" } }),
            "unknown_agent",
        ),
        (
            json!({ "cron": "* * * * *", "target": { "workflow": "nothing" } }),
            "unknown_workflow",
        ),
        (
            json!({ "cron": "* * * * *", "target": { "agent": "echo", "action": "x", "workflow": "nightly" } }),
            "invalid_schedule",
        ),
        (
            json!({ "cron": "* * * * *", "target": echo, "missed": "sometimes" }),
            "invalid_json",
        ),
    ] {
        app.post("/v1/schedules", ADMIN_KEY, body)
            .await
            .assert_error(400, code);
    }
    let viewer = app.key("viewer").await;
    app.post(
        "/v1/schedules",
        &viewer,
        json!({ "cron": "* * * * *", "target": echo }),
    )
    .await
    .assert_error(403, "forbidden");
    assert_eq!(app.count("schedules").await, 1);
    app.stop().await;
}

/// Two nodes share one Postgres database and one clock: every occurrence is enqueued by
/// exactly one of them, as one task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_enqueue_each_occurrence_exactly_once() {
    let clock = Arc::new(ManualClock::new(start_time()));
    let first = app(Backend::Postgres, clock.clone()).await;
    let tweak = {
        let clock = clock.clone();
        move |config: &mut corral_host::config::ServeConfig| {
            config.workers = Some(2);
            config.task_poll = Duration::from_millis(20);
            config.clock = Some(clock);
        }
    };
    let second = spawn_node_with(&first, tweak).await;
    let target = json!({ "agent": "echo", "action": "echo", "input": {} });
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            create(
                &first,
                json!({ "cron": "*/10 * * * * *", "target": target }),
            )
            .await,
        );
    }
    for step in 1..=6 {
        clock.advance(chrono::Duration::seconds(10));
        for id in &ids {
            occurrences(&second, id, step).await;
        }
    }
    let mut nodes = std::collections::BTreeSet::new();
    for id in &ids {
        let handled = occurrences(&first, id, 6).await;
        assert_eq!(handled.len(), 6, "{handled:#?}");
        for (i, o) in handled.iter().enumerate() {
            assert_eq!(o["outcome"], "enqueued");
            let at = start_time() + chrono::Duration::seconds(10 * (i as i64 + 1));
            assert_eq!(
                o["at"],
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            nodes.insert(o["node"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(first.count("schedule_occurrences").await, 18);
    assert_eq!(first.count("tasks").await, 18, "one task per occurrence");
    assert!(!nodes.is_empty());
    second.stop().await;
    first.stop().await;
}
