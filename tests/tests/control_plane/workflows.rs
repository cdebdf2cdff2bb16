//! Workflows through the API, run by the app's own workers on real agents: data passed
//! between steps, fan-out and fan-in, conditions, retries per step, compensation in
//! reverse completion order, cancellation, validation, stored definitions.

use std::time::Duration;

use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app_with};
use corral_tests::plugins::{ECHO, HOSTILE, TEXT_STATS};
use reqwest::Method;
use serde_json::{Value, json};

crate::on_both_backends!(
    steps_pass_data_fan_out_and_fan_in,
    conditions_skip_steps_and_a_skip_propagates,
    a_failed_step_is_retried_then_completed_steps_are_compensated_last_first,
    a_cancelled_workflow_stops_its_steps_and_compensates_if_it_asks,
    a_workflow_cancelled_as_its_running_steps_end_together_ends_once_without_a_deadlock,
    bad_workflows_are_refused_naming_the_step_and_store_nothing,
    stored_definitions_are_versioned_and_each_run_keeps_its_version,
    a_task_that_ended_without_its_workflow_advancing_is_found_by_the_sweep,
    a_step_that_cannot_start_cancels_the_sibling_started_beside_it,
    a_step_whose_workflow_cannot_move_on_is_still_recorded_in_full,
    another_tenants_workflows_definitions_and_schedules_are_not_found,
);

async fn app(backend: Backend) -> TestApp {
    let app = spawn_app_with(backend, |config| {
        config.workers = Some(4);
        config.task_poll = Duration::from_millis(50);
    })
    .await;
    app.agent_with("echo", ECHO).await;
    app.agent_with("text-stats", TEXT_STATS).await;
    app.agent_with("hostile", HOSTILE).await;
    app
}

async fn submit(app: &TestApp, body: Value) -> Value {
    app.post("/v1/workflows", ADMIN_KEY, body).await.ok(202)
}

/// Waits (long-polling) until the workflow has ended.
async fn finished(app: &TestApp, id: &str) -> Value {
    for _ in 0..20 {
        let workflow = app
            .get(&format!("/v1/workflows/{id}?wait=5s"), ADMIN_KEY)
            .await
            .ok(200);
        let state = workflow["state"].as_str().unwrap();
        if !["running", "compensating"].contains(&state) {
            return workflow;
        }
    }
    panic!("workflow {id} did not end");
}

/// Waits until `check` holds of the workflow.
async fn until(app: &TestApp, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..400 {
        let workflow = app
            .get(&format!("/v1/workflows/{id}"), ADMIN_KEY)
            .await
            .ok(200);
        if check(&workflow) {
            return workflow;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("workflow {id} never got there");
}

fn step<'a>(workflow: &'a Value, name: &str) -> &'a Value {
    workflow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {workflow:#}"))
}

async fn task(app: &TestApp, id: &Value) -> Value {
    app.get(&format!("/v1/tasks/{}", id.as_str().unwrap()), ADMIN_KEY)
        .await
        .ok(200)
}

async fn steps_pass_data_fan_out_and_fan_in(backend: Backend) {
    let app = app(backend).await;
    let body = json!({
        "input": { "text": "Corral runs agents. It runs them well." },
        "steps": [
            { "name": "fetch", "agent": "echo", "action": "echo",
              "input": { "body": "$.input.text", "parts": ["one two", "three four five"] } },
            { "name": "count_all", "agent": "text-stats", "action": "stats",
              "depends_on": ["fetch"], "input": { "text": "$.steps.fetch.output.body" } },
            { "name": "count_part", "agent": "text-stats", "action": "stats",
              "depends_on": ["fetch"], "input": { "text": "$.steps.fetch.output.parts[1]" } },
            { "name": "join", "agent": "echo", "action": "echo",
              "depends_on": ["count_all", "count_part"],
              "input": {
                  "all": "$.steps.count_all.output.words",
                  "part": "$.steps.count_part.output.words",
                  "price": "$$.50",
              } },
        ],
        "output": { "joined": "$.steps.join.output", "sentences": "$.steps.count_all.output.sentences" },
    });
    let submitted = app
        .send_request(
            app.request(Method::POST, "/v1/workflows", Some(ADMIN_KEY))
                .header("Idempotency-Key", "wf-1")
                .json(&body),
        )
        .await
        .ok(202);
    let id = submitted["id"].as_str().unwrap().to_string();
    assert_eq!(submitted["state"], "running");
    assert_eq!(
        step(&submitted, "fetch")["state"],
        "running",
        "a root starts at once"
    );
    assert_eq!(step(&submitted, "join")["state"], "pending");
    // A retry of the submission is the same workflow.
    let again = app
        .send_request(
            app.request(Method::POST, "/v1/workflows", Some(ADMIN_KEY))
                .header("Idempotency-Key", "wf-1")
                .json(&body),
        )
        .await
        .ok(202);
    assert_eq!(again["id"], submitted["id"]);

    let done = finished(&app, &id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(
        done["output"],
        json!({ "joined": { "all": 7, "part": 3, "price": "$.50" }, "sentences": 2 })
    );
    for name in ["fetch", "count_all", "count_part", "join"] {
        let s = step(&done, name);
        assert_eq!(s["state"], "succeeded", "{s:#}");
        assert_eq!(s["attempts"].as_array().unwrap().len(), 1, "{s:#}");
    }
    // Fan-in: join ran after both of its parents ended; they completed in some order.
    let seq = |name: &str| step(&done, name)["completed_seq"].as_i64().unwrap();
    assert_eq!(seq("fetch"), 1);
    assert!(seq("join") == 4 && seq("count_all") > 1 && seq("count_part") > 1);
    assert_eq!(step(&done, "count_part")["output"]["words"], 3);
    // The steps are tasks, carrying the workflow's id as their correlation id.
    let join_task = task(&app, &step(&done, "join")["task_id"]).await;
    assert_eq!(join_task["correlation_id"], id.as_str());
    assert_eq!(join_task["input"]["all"], 7);
    assert_eq!(done["usage"]["executions"], 4, "{:#}", done["usage"]);
    let listed = app
        .get("/v1/workflows?state=succeeded", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn conditions_skip_steps_and_a_skip_propagates(backend: Backend) {
    let app = app(backend).await;
    let body = json!({
        "input": { "threshold": 3 },
        "steps": [
            { "name": "score", "agent": "echo", "action": "echo", "input": { "score": 5, "tag": "x" } },
            { "name": "high", "agent": "echo", "action": "echo", "depends_on": ["score"],
              "when": "$.steps.score.output.score > $.input.threshold && exists($.steps.score.output.tag)",
              "input": { "level": "high" } },
            { "name": "low", "agent": "echo", "action": "echo", "depends_on": ["score"],
              "when": "!($.steps.score.output.score > $.input.threshold)",
              "input": { "level": "low" } },
            { "name": "after_low", "agent": "echo", "action": "echo", "depends_on": ["low"] },
        ],
    });
    let id = submit(&app, body).await["id"].as_str().unwrap().to_string();
    let done = finished(&app, &id).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(step(&done, "high")["state"], "succeeded");
    assert_eq!(step(&done, "high")["output"], json!({ "level": "high" }));
    assert_eq!(step(&done, "low")["state"], "skipped");
    assert_eq!(step(&done, "low")["error"]["code"], "condition_false");
    assert!(
        step(&done, "low")["task_id"].is_null(),
        "a skipped step runs nothing"
    );
    assert_eq!(step(&done, "after_low")["state"], "skipped");
    assert_eq!(
        step(&done, "after_low")["error"]["code"],
        "dependency_skipped"
    );
    // The default output: every succeeded step's output by name.
    assert_eq!(done["output"]["high"], json!({ "level": "high" }));
    assert!(done["output"].get("low").is_none());
    assert_eq!(done["usage"]["executions"], 2);
    app.stop().await;
}

async fn a_failed_step_is_retried_then_completed_steps_are_compensated_last_first(
    backend: Backend,
) {
    let app = app(backend).await;
    let body = json!({
        "input": { "order": 42 },
        "steps": [
            { "name": "reserve", "agent": "echo", "action": "echo", "input": { "reserved": "$.input.order" },
              "compensate": { "agent": "echo", "action": "echo",
                              "input": { "release": "$.steps.reserve.output.reserved" } } },
            { "name": "charge", "agent": "echo", "action": "echo", "depends_on": ["reserve"],
              "input": { "charged": 10 },
              "compensate": { "agent": "echo", "action": "echo", "input": { "refund": "$.steps.charge.output.charged" } } },
            { "name": "notify", "agent": "echo", "action": "echo", "depends_on": ["reserve"],
              "input": { "told": true } },
            { "name": "ship", "agent": "hostile", "action": "fail", "depends_on": ["charge", "notify"],
              "max_attempts": 2, "backoff": { "base_ms": 1, "cap_ms": 1 } },
            { "name": "confirm", "agent": "echo", "action": "echo", "depends_on": ["ship"] },
        ],
    });
    let id = submit(&app, body).await["id"].as_str().unwrap().to_string();
    let done = finished(&app, &id).await;
    assert_eq!(done["state"], "compensated", "{done:#}");
    assert_eq!(done["error"]["code"], "step_failed");
    assert!(done["error"]["message"].as_str().unwrap().contains("ship"));
    let ship = step(&done, "ship");
    assert_eq!(ship["state"], "failed");
    assert_eq!(ship["error"]["code"], "upstream_unavailable");
    assert_eq!(
        ship["attempts"].as_array().unwrap().len(),
        2,
        "retried once: {ship:#}"
    );
    assert_eq!(step(&done, "confirm")["state"], "cancelled");
    assert!(
        step(&done, "notify")["compensation"].is_null(),
        "it has none"
    );
    // Compensations ran one at a time, the last completed step's first.
    let charge = &step(&done, "charge")["compensation"];
    let reserve = &step(&done, "reserve")["compensation"];
    assert_eq!(charge["state"], "succeeded");
    assert_eq!(reserve["state"], "succeeded");
    let refund = task(&app, &charge["task_id"]).await;
    let release = task(&app, &reserve["task_id"]).await;
    assert_eq!(refund["input"], json!({ "refund": 10 }));
    assert_eq!(release["input"], json!({ "release": 42 }));
    assert!(
        refund["finished_at"].as_str().unwrap() <= release["created_at"].as_str().unwrap(),
        "the charge (completed later) is compensated before the reservation: {refund:#} {release:#}"
    );
    // 4 steps ran (ship twice) + 2 compensations.
    assert_eq!(done["usage"]["executions"], 7, "{:#}", done["usage"]);
    app.stop().await;
}

async fn a_cancelled_workflow_stops_its_steps_and_compensates_if_it_asks(backend: Backend) {
    let app = app(backend).await;
    let body = json!({
        "compensate_on_cancel": true,
        "steps": [
            { "name": "book", "agent": "echo", "action": "echo", "input": { "booked": 1 },
              "compensate": { "agent": "echo", "action": "echo", "input": { "unbook": 1 } } },
            { "name": "wait", "agent": "hostile", "action": "sleep", "depends_on": ["book"],
              "input": { "ms": 30000 } },
            { "name": "after", "agent": "echo", "action": "echo", "depends_on": ["wait"] },
        ],
    });
    let id = submit(&app, body).await["id"].as_str().unwrap().to_string();
    let running = until(&app, &id, |w| {
        step(w, "wait")["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(running["state"], "running");
    let cancelled = app
        .post(&format!("/v1/workflows/{id}/cancel"), ADMIN_KEY, json!({}))
        .await
        .ok(200);
    assert_eq!(cancelled["state"], "compensating", "{cancelled:#}");
    assert_eq!(cancelled["cancel_requested"], true);
    assert_eq!(step(&cancelled, "after")["state"], "cancelled");
    let done = finished(&app, &id).await;
    assert_eq!(done["state"], "compensated", "{done:#}");
    assert_eq!(done["error"]["code"], "cancelled");
    assert_eq!(
        step(&done, "wait")["state"],
        "cancelled",
        "the running step was stopped"
    );
    assert_eq!(step(&done, "book")["compensation"]["state"], "succeeded");
    app.post(&format!("/v1/workflows/{id}/cancel"), ADMIN_KEY, json!({}))
        .await
        .assert_error(409, "workflow_finished");

    // Without compensation, a cancelled workflow is `cancelled` at once.
    let plain = json!({ "steps": [
        { "name": "wait", "agent": "hostile", "action": "sleep", "input": { "ms": 30000 } },
    ]});
    let id = submit(&app, plain).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancelled = app
        .post(&format!("/v1/workflows/{id}/cancel"), ADMIN_KEY, json!({}))
        .await
        .ok(200);
    assert_eq!(cancelled["state"], "cancelled");
    until(&app, &id, |w| step(w, "wait")["state"] == "cancelled").await;
    app.stop().await;
}

/// Several running steps of a workflow end together — one group commit records their
/// ends and moves the workflow on — while a caller cancels it. Both transactions lock
/// the workflow before its tasks, so neither waits on the other in a cycle (Postgres
/// would break one with a deadlock error: a failed cancellation, or a batch written
/// again one by one). The cancellation comes at a different moment around the steps'
/// end in each round; whichever wins, the workflow ends once, its steps as their tasks.
async fn a_workflow_cancelled_as_its_running_steps_end_together_ends_once_without_a_deadlock(
    backend: Backend,
) {
    const SLEEP_MS: i64 = 300;
    const PARALLEL: usize = 4;
    let mut app = spawn_app_with(backend, |config| {
        config.workers = Some(8);
        config.task_poll = Duration::from_millis(50);
    })
    .await;
    app.agent_with("echo", ECHO).await;
    app.agent_with("hostile", HOSTILE).await;
    let mut steps: Vec<Value> = (0..PARALLEL)
        .map(|i| {
            json!({ "name": format!("p{i}"), "agent": "hostile", "action": "sleep",
                    "input": { "ms": SLEEP_MS } })
        })
        .collect();
    let parallel: Vec<String> = (0..PARALLEL).map(|i| format!("p{i}")).collect();
    steps.push(json!({ "name": "after", "agent": "echo", "action": "echo",
                       "depends_on": parallel }));
    let mut ids = Vec::new();
    for round in 0..8i64 {
        let id = submit(&app, json!({ "steps": steps })).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        until(&app, &id, |w| {
            (0..PARALLEL).all(|i| {
                step(w, &format!("p{i}"))["attempts"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            })
        })
        .await;
        // From 40 ms before the steps' end to 44 ms after, by round.
        let offset = -40 + 12 * round;
        tokio::time::sleep(Duration::from_millis((SLEEP_MS + offset) as u64)).await;
        let cancelled = app
            .post(&format!("/v1/workflows/{id}/cancel"), ADMIN_KEY, json!({}))
            .await;
        match cancelled.status.as_u16() {
            200 => assert_eq!(cancelled.body["state"], "cancelled", "{:#}", cancelled.body),
            _ => cancelled.assert_error(409, "workflow_finished"),
        }
        ids.push(id);
    }
    for id in &ids {
        let done = finished(&app, id).await;
        let state = done["state"].as_str().unwrap();
        assert!(["cancelled", "succeeded"].contains(&state), "{done:#}");
        for s in done["steps"].as_array().unwrap() {
            let step_state = s["state"].as_str().unwrap();
            let expected: &[&str] = if state == "succeeded" {
                &["succeeded"]
            } else {
                &["succeeded", "cancelled"]
            };
            assert!(expected.contains(&step_state), "{done:#}");
            // A step is recorded as its task ended.
            if !s["task_id"].is_null() {
                let task = task(&app, &s["task_id"]).await;
                assert_eq!(task["state"], step_state, "{task:#}\n{done:#}");
            }
        }
        let attempts: usize = done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["attempts"].as_array().unwrap().len())
            .sum();
        assert!(attempts <= PARALLEL + 1, "each step ran once: {done:#}");
    }
    app.stop_server().await;
    if backend == Backend::Postgres {
        assert_eq!(postgres_deadlocks(&app).await, 0);
    }
    app.stop().await;
}

/// The deadlocks Postgres broke in the app's database, once its server has stopped
/// (a backend reports its counts when it exits).
async fn postgres_deadlocks(app: &TestApp) -> i64 {
    use sqlx::Connection;
    app.db.close().await;
    let mut conn = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    for _ in 0..200 {
        let (others,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if others == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (deadlocks,): (i64,) =
        sqlx::query_as("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    deadlocks
}

async fn bad_workflows_are_refused_naming_the_step_and_store_nothing(backend: Backend) {
    let app = app(backend).await;
    let refused = |body: Value| {
        let app = &app;
        async move { app.post("/v1/workflows", ADMIN_KEY, body).await }
    };
    let echo = |name: &str, extra: Value| {
        let mut step = json!({ "name": name, "agent": "echo", "action": "echo" });
        step.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        step
    };
    let cases = [
        (
            json!({ "steps": [echo("a", json!({ "depends_on": ["ghost"] }))] }),
            "unknown_step",
            "\"a\"",
        ),
        (
            json!({ "steps": [
                echo("a", json!({ "depends_on": ["b"] })),
                echo("b", json!({ "depends_on": ["a"] })),
            ]}),
            "workflow_cycle",
            "\"a\"",
        ),
        (
            json!({ "steps": [
                echo("a", json!({})),
                echo("b", json!({ "input": { "x": "$.steps.a.output.y" } })),
            ]}),
            "invalid_reference",
            "\"b\"",
        ),
        (
            json!({ "steps": [
                echo("a", json!({})),
                echo("b", json!({ "depends_on": ["a"], "when": "$.steps.a.output.y = 1" })),
            ]}),
            "invalid_condition",
            "\"b\"",
        ),
        (
            json!({ "steps": [
                echo("a", json!({ "input": { "x": "$.inputs.y" } })),
            ]}),
            "invalid_reference",
            "\"a\"",
        ),
        (
            json!({ "steps": [
                echo("a", json!({})),
                { "name": "b", "agent": "nobody", "action": "x" },
            ]}),
            "unknown_agent",
            "\"b\"",
        ),
        (
            json!({ "steps": [echo("a", json!({ "max_attempts": 0 }))] }),
            "invalid_tasks",
            "\"a\"",
        ),
        (
            json!({ "steps": [echo("a", json!({ "compensate": { "agent": "nobody", "action": "x" } }))] }),
            "unknown_agent",
            "\"a\"",
        ),
        (json!({ "steps": [] }), "invalid_workflow", "steps"),
        (
            json!({ "steps": [echo("a", json!({})), echo("a", json!({}))] }),
            "invalid_workflow",
            "\"a\"",
        ),
    ];
    for (body, code, names) in cases {
        let reply = refused(body.clone()).await;
        reply.assert_error(400, code);
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{code}: {message} names {names}");
    }
    // A viewer may not submit.
    let viewer = app.key("viewer").await;
    app.post(
        "/v1/workflows",
        &viewer,
        json!({ "steps": [echo("a", json!({}))] }),
    )
    .await
    .assert_error(403, "forbidden");
    assert_eq!(app.count("workflows").await, 0);
    assert_eq!(app.count("workflow_steps").await, 0);
    assert_eq!(app.count("tasks").await, 0);
    app.get(
        "/v1/workflows/00000000-0000-7000-8000-000000000000",
        ADMIN_KEY,
    )
    .await
    .assert_error(404, "not_found");
    app.stop().await;
}

async fn stored_definitions_are_versioned_and_each_run_keeps_its_version(backend: Backend) {
    let app = app(backend).await;
    let v1 = json!({ "steps": [
        { "name": "greet", "agent": "echo", "action": "echo", "input": { "hello": "$.input.who", "v": 1 } },
    ]});
    let v2 = json!({ "steps": [
        { "name": "greet", "agent": "echo", "action": "echo", "input": { "hello": "$.input.who", "v": 2 } },
    ], "output": "$.steps.greet.output.v" });
    let put = |body: Value| {
        let app = &app;
        async move {
            app.send(
                Method::PUT,
                "/v1/workflow-definitions/greeting",
                Some(ADMIN_KEY),
                Some(body),
            )
            .await
        }
    };
    assert_eq!(put(v1).await.ok(201)["version"], 1);
    assert_eq!(put(v2).await.ok(201)["version"], 2);
    // A definition is validated when stored.
    put(json!({ "steps": [{ "name": "x", "agent": "nobody", "action": "y" }] }))
        .await
        .assert_error(400, "unknown_agent");
    let latest = submit(
        &app,
        json!({ "definition": "greeting", "input": { "who": "you" } }),
    )
    .await;
    assert_eq!(latest["definition"], "greeting");
    assert_eq!(latest["version"], 2);
    let first = submit(
        &app,
        json!({ "definition": "greeting", "version": 1, "input": { "who": "me" } }),
    )
    .await;
    assert_eq!(first["version"], 1);
    let latest = finished(&app, latest["id"].as_str().unwrap()).await;
    assert_eq!(latest["output"], 2);
    let first = finished(&app, first["id"].as_str().unwrap()).await;
    assert_eq!(
        first["output"],
        json!({ "greet": { "hello": "me", "v": 1 } })
    );
    let shown = app
        .get("/v1/workflow-definitions/greeting?version=1", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(shown["definition"]["steps"][0]["input"]["v"], 1);
    let listed = app.get("/v1/workflow-definitions", ADMIN_KEY).await.ok(200);
    assert_eq!(listed["items"][0]["version"], 2);
    app.post(
        "/v1/workflows",
        ADMIN_KEY,
        json!({ "definition": "nothing" }),
    )
    .await
    .assert_error(404, "not_found");
    let page = app
        .get("/v1/workflows?definition=greeting&limit=1", ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/v1/workflows?definition=greeting&limit=1&cursor={cursor}"),
            ADMIN_KEY,
        )
        .await
        .ok(200);
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_ne!(rest["items"][0]["id"], page["items"][0]["id"]);
    app.stop().await;
}

/// A node that recorded a step's task as ended and died before advancing its workflow
/// (here: the end written straight into the database, on a server without workers): the
/// advancer's periodic sweep finds the step and moves the workflow on, once.
async fn a_task_that_ended_without_its_workflow_advancing_is_found_by_the_sweep(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.workers = Some(0);
        config.task_poll = Duration::from_millis(50);
    })
    .await;
    app.agent_with("echo", ECHO).await;
    let body = json!({ "steps": [
        { "name": "a", "agent": "echo", "action": "echo", "input": { "n": 1 } },
        { "name": "b", "agent": "echo", "action": "echo", "depends_on": ["a"],
          "input": { "from_a": "$.steps.a.output.n" } },
    ]});
    let id = submit(&app, body).await["id"].as_str().unwrap().to_string();
    let submitted = app
        .get(&format!("/v1/workflows/{id}"), ADMIN_KEY)
        .await
        .ok(200);
    let task_a = step(&submitted, "a")["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(step(&submitted, "b")["state"], "pending");
    let sql = "UPDATE tasks SET state = 'succeeded', result = '{\"n\":1}', outcome = 'succeeded' WHERE id = $1";
    corral_host::on_pool!(&app.db, pool => sqlx::query(sql).bind(&task_a).execute(pool).await.map(|r| r.rows_affected()))
        .unwrap();
    let moved = until(&app, &id, |w| step(w, "b")["state"] == "running").await;
    assert_eq!(step(&moved, "a")["state"], "succeeded");
    assert_eq!(step(&moved, "a")["output"], json!({ "n": 1 }));
    let task_b = task(&app, &step(&moved, "b")["task_id"]).await;
    assert_eq!(task_b["input"], json!({ "from_a": 1 }));
    // Later sweeps change nothing: b was enqueued once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.count("tasks").await, 2);
    app.stop().await;
}

/// Two steps become ready together; the first is started, the second cannot be (its
/// agent was deleted while their parent ran), which fails the workflow in the same
/// advance: the first's task, enqueued a moment before, is cancelled with it — not left
/// queued to run for a workflow that has failed.
async fn a_step_that_cannot_start_cancels_the_sibling_started_beside_it(backend: Backend) {
    let app = app(backend).await;
    app.agent_with("echo-2", ECHO).await;
    let body = json!({ "steps": [
        { "name": "parent", "agent": "hostile", "action": "sleep", "input": { "ms": 1500 } },
        { "name": "started", "agent": "echo", "action": "echo", "depends_on": ["parent"],
          "input": { "n": 1 } },
        { "name": "orphaned", "agent": "echo-2", "action": "echo", "depends_on": ["parent"],
          "input": { "n": 2 } },
    ]});
    let id = submit(&app, body).await["id"].as_str().unwrap().to_string();
    // Deleted while the parent sleeps (longer than the agent cache keeps an entry).
    app.send(Method::DELETE, "/v1/agents/echo-2", Some(ADMIN_KEY), None)
        .await
        .ok(204);
    let done = finished(&app, &id).await;
    assert_eq!(done["state"], "failed", "{done:#}");
    assert_eq!(step(&done, "parent")["state"], "succeeded");
    assert_eq!(step(&done, "orphaned")["state"], "failed");
    assert_eq!(step(&done, "orphaned")["error"]["code"], "agent_not_found");
    let started = step(&done, "started");
    assert_eq!(started["state"], "cancelled", "{done:#}");
    let its_task = task(&app, &started["task_id"]).await;
    assert_eq!(its_task["state"], "cancelled", "{its_task:#}");
    assert_eq!(its_task["attempt_count"], 0);
    // The parent's task and the cancelled one: nothing else was enqueued.
    assert_eq!(app.count("tasks").await, 2);
    app.stop().await;
}

/// The group commit that records a step's end cannot move its workflow on (here: the
/// stored definition was damaged while the step ran). The end is written all the same,
/// with the whole execution record (not the degraded form kept when a record itself
/// cannot be written), and the workflow is left to the advancers' sweep.
async fn a_step_whose_workflow_cannot_move_on_is_still_recorded_in_full(backend: Backend) {
    let app = app(backend).await;
    let body = json!({ "steps": [
        { "name": "slow", "agent": "hostile", "action": "sleep", "input": { "ms": 800 } },
        { "name": "next", "agent": "echo", "action": "echo", "depends_on": ["slow"],
          "input": { "n": 1 } },
    ]});
    let id = submit(&app, body).await["id"].as_str().unwrap().to_string();
    let submitted = app
        .get(&format!("/v1/workflows/{id}"), ADMIN_KEY)
        .await
        .ok(200);
    let sql = "UPDATE workflows SET definition = '{\"steps\": 7}' WHERE id = $1";
    corral_host::on_pool!(&app.db, pool => sqlx::query(sql).bind(&id).execute(pool).await.map(|r| r.rows_affected()))
        .unwrap();
    let task_id = step(&submitted, "slow")["task_id"].clone();
    let mut ended = task(&app, &task_id).await;
    for _ in 0..200 {
        if ended["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        ended = task(&app, &task_id).await;
    }
    assert_eq!(ended["state"], "succeeded", "{ended:#}");
    let execution = ended["attempts"][0]["execution_id"].as_str().unwrap();
    let record = app
        .get(&format!("/v1/executions/{execution}"), ADMIN_KEY)
        .await
        .ok(200);
    assert_eq!(record["outcome"], "succeeded", "{record:#}");
    assert_eq!(record["record_degraded"], false, "{record:#}");
    assert_eq!(record["output"], json!({ "slept_ms": 800 }), "{record:#}");
    // The workflow did not move: no next step, and it is still running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.count("tasks").await, 1);
    let state: (String,) = corral_host::on_pool!(&app.db, pool => sqlx::query_as(
        "SELECT state FROM workflows WHERE id = $1").bind(&id).fetch_one(pool).await)
    .unwrap();
    assert_eq!(state.0, "running");
    app.stop().await;
}

/// A tenant names another tenant's workflows, definitions, schedules and agents: `404`
/// (or `400 unknown_agent`, or an empty list), and nothing of the other's changes.
async fn another_tenants_workflows_definitions_and_schedules_are_not_found(backend: Backend) {
    let app = app(backend).await;
    let (_, victim) = app.tenant("victim").await;
    let (_, attacker) = app.tenant("attacker").await;
    for key in [&victim, &attacker] {
        app.post("/v1/agents", key, json!({ "name": "echo" }))
            .await
            .ok(201);
        app.upload("echo", key, std::fs::read(ECHO).unwrap())
            .await
            .ok(201);
    }
    app.post("/v1/agents", &victim, json!({ "name": "secret-agent" }))
        .await
        .ok(201);
    let flow = json!({ "steps": [
        { "name": "a", "agent": "echo", "action": "echo", "input": { "private": true } },
    ]});
    app.send(
        Method::PUT,
        "/v1/workflow-definitions/private-flow",
        Some(&victim),
        Some(flow),
    )
    .await
    .ok(201);
    let workflow = app
        .post(
            "/v1/workflows",
            &victim,
            json!({ "definition": "private-flow" }),
        )
        .await
        .ok(202);
    let id = workflow["id"].as_str().unwrap();
    let schedule = app
        .post(
            "/v1/schedules",
            &victim,
            json!({ "cron": "0 0 1 1 *", "target": { "workflow": "private-flow" } }),
        )
        .await
        .ok(201);
    let sid = schedule["id"].as_str().unwrap();

    for (method, path) in [
        (Method::GET, format!("/v1/workflows/{id}")),
        (Method::POST, format!("/v1/workflows/{id}/cancel")),
        (
            Method::GET,
            "/v1/workflow-definitions/private-flow".to_string(),
        ),
        (Method::GET, format!("/v1/schedules/{sid}")),
        (Method::POST, format!("/v1/schedules/{sid}/pause")),
        (Method::POST, format!("/v1/schedules/{sid}/resume")),
        (Method::DELETE, format!("/v1/schedules/{sid}")),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        app.send(method.clone(), &path, Some(&attacker), body)
            .await
            .assert_error(404, "not_found");
    }
    for path in ["/v1/workflows", "/v1/workflow-definitions", "/v1/schedules"] {
        let listed = app.get(path, &attacker).await.ok(200);
        assert!(
            listed["items"].as_array().unwrap().is_empty(),
            "{path}: {listed:#}"
        );
    }
    app.post(
        "/v1/workflows",
        &attacker,
        json!({ "definition": "private-flow" }),
    )
    .await
    .assert_error(404, "not_found");
    app.post(
        "/v1/workflows",
        &attacker,
        json!({ "steps": [{ "name": "x", "agent": "secret-agent", "action": "y" }] }),
    )
    .await
    .assert_error(400, "unknown_agent");
    app.post(
        "/v1/schedules",
        &attacker,
        json!({ "cron": "* * * * *", "target": { "workflow": "private-flow" } }),
    )
    .await
    .assert_error(400, "unknown_workflow");
    // The victim's things are as they were.
    let mine = app
        .get(&format!("/v1/schedules/{sid}"), &victim)
        .await
        .ok(200);
    assert_eq!(mine["paused"], false);
    let mut run = Value::Null;
    for _ in 0..20 {
        run = app
            .get(&format!("/v1/workflows/{id}?wait=5s"), &victim)
            .await
            .ok(200);
        if run["state"] != "running" {
            break;
        }
    }
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(run["output"]["a"], json!({ "private": true }));
    app.stop().await;
}
