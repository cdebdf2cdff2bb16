//! `corral workflow …` and `corral schedule …` against a real server with workers: the
//! worked example of docs/WORKFLOWS.md (`docs/examples/review.yaml`) submitted from YAML
//! and waited for, stored and started by name, listed (one page, from a cursor, or
//! every page with `--all`), and a schedule created, shown, paused and deleted; exit
//! statuses 0, 1 and 2.

use std::process::Command;
use std::time::Duration;

use corral_tests::app::{ADMIN_KEY, Backend, TestApp, spawn_app_with};
use corral_tests::plugins::{ECHO, HOSTILE, NOTES, TEXT_STATS};
use serde_json::{Value, json};

crate::on_both_backends!(
    the_worked_example_runs_from_yaml_and_workflows_are_listed_and_started_by_name,
    workflow_list_shows_one_page_or_follows_every_page_with_all,
    schedules_are_created_shown_paused_and_deleted_from_the_command_line,
);

async fn app(backend: Backend) -> TestApp {
    let app = spawn_app_with(backend, |config| {
        config.workers = Some(4);
        config.task_poll = Duration::from_millis(50);
    })
    .await;
    app.agent_with("notes", NOTES).await;
    app.set_policy("notes", json!({ "grants": { "kv": {} } }))
        .await;
    app.agent_with("text-stats", TEXT_STATS).await;
    app.agent_with("echo", ECHO).await;
    app.agent_with("hostile", HOSTILE).await;
    app
}

struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.out, self.err))
    }
}

fn corral(app: &TestApp, args: &[&str]) -> Run {
    tokio::task::block_in_place(|| {
        let out = Command::new(corral_tests::harness::corral_bin())
            .args(args)
            .env("CORRAL_URL", &app.url)
            .env("CORRAL_KEY", ADMIN_KEY)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        Run {
            code: out.status.code(),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
}

const EXAMPLE: &str = "../docs/examples/review.yaml";

async fn the_worked_example_runs_from_yaml_and_workflows_are_listed_and_started_by_name(
    backend: Backend,
) {
    let app = app(backend).await;
    let run = corral(&app, &["workflow", "submit", EXAMPLE, "--wait", "--json"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.out, run.err);
    let done = run.json();
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let report = &done["output"]["report"];
    assert_eq!(report["note"], "review-42");
    assert_eq!(report["words"], 17);
    assert_eq!(report["mood"], "positive");
    assert_eq!(report["currency"], "$.USD");
    assert_eq!(done["output"]["top"].as_array().unwrap().len(), 3);
    let states: Vec<(&str, &str)> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert!(states.contains(&("flag", "skipped")), "{states:?}");
    assert!(states.contains(&("top", "succeeded")), "{states:?}");

    // Summary for people.
    let id = done["id"].as_str().unwrap();
    let shown = corral(&app, &["workflow", "get", id]);
    assert_eq!(shown.code, Some(0), "{}", shown.err);
    assert!(shown.out.contains("state:   succeeded"), "{}", shown.out);
    assert!(shown.out.contains("step flag: skipped"), "{}", shown.out);

    // Stored by name and started with another input; a failing run exits 1.
    let defined = corral(&app, &["workflow", "define", "review", EXAMPLE, "--json"]);
    assert_eq!(defined.code, Some(0), "{}", defined.err);
    assert_eq!(defined.json()["version"], 1);
    let started = corral(
        &app,
        &[
            "workflow",
            "start",
            "review",
            "--input",
            r#"{"id": "review-43", "text": "Short and bad."}"#,
            "--wait",
            "--json",
        ],
    );
    assert_eq!(started.code, Some(0), "{}\n{}", started.out, started.err);
    let started = started.json();
    assert_eq!(started["version"], 1);
    assert_eq!(started["state"], "succeeded");
    assert_eq!(started["output"]["report"]["mood"], "negative");
    assert!(
        started["output"]["top"].is_null(),
        "too short for top words: skipped"
    );

    let failing =
        "steps:\n  - name: boom\n    agent: hostile\n    action: fail\n    max_attempts: 1\n";
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), failing).unwrap();
    let failed = corral(
        &app,
        &[
            "workflow",
            "submit",
            file.path().to_str().unwrap(),
            "--wait",
        ],
    );
    assert_eq!(failed.code, Some(1), "{}\n{}", failed.out, failed.err);
    assert!(failed.out.contains("state:   failed"), "{}", failed.out);

    let listed = corral(
        &app,
        &["workflow", "list", "--state", "succeeded", "--json"],
    );
    assert_eq!(listed.code, Some(0));
    assert!(listed.json()["items"].as_array().unwrap().len() >= 1);
    let refused = corral(&app, &["workflow", "submit", "/no/such/file.yaml"]);
    assert_eq!(refused.code, Some(2));
    let refused = corral(&app, &["workflow", "cancel", id]);
    assert_eq!(refused.code, Some(2));
    assert!(
        refused.err.contains("409 workflow_finished"),
        "{}",
        refused.err
    );
    app.stop().await;
}

fn ids(run: &Run) -> Vec<String> {
    run.json()["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {}", run.out))
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect()
}

async fn workflow_list_shows_one_page_or_follows_every_page_with_all(backend: Backend) {
    let app = app(backend).await;
    let mut submitted = Vec::new();
    for n in 0..5 {
        let body = json!({ "steps": [
            { "name": "only", "agent": "echo", "action": "echo", "input": { "n": n } },
        ]});
        let workflow = app.post("/v1/workflows", ADMIN_KEY, body).await.ok(202);
        submitted.push(workflow["id"].as_str().unwrap().to_string());
    }
    // Newest first.
    submitted.reverse();

    let page = corral(&app, &["workflow", "list", "--limit", "2", "--json"]);
    assert_eq!(page.code, Some(0), "{}", page.err);
    assert_eq!(ids(&page), submitted[..2]);
    let cursor = page.json()["next_cursor"].as_str().unwrap().to_string();
    let people = corral(&app, &["workflow", "list", "--limit", "2"]);
    assert_eq!(people.code, Some(0), "{}", people.err);
    assert!(people.err.contains("pass --all"), "{}", people.err);
    assert!(people.out.contains(&submitted[1]), "{}", people.out);
    assert!(!people.out.contains(&submitted[2]), "{}", people.out);

    let all = corral(
        &app,
        &["workflow", "list", "--limit", "2", "--all", "--json"],
    );
    assert_eq!(all.code, Some(0), "{}", all.err);
    assert_eq!(ids(&all), submitted, "three pages of 2, 2 and 1, in order");
    assert!(all.json()["next_cursor"].is_null());
    let rest = corral(
        &app,
        &[
            "workflow", "list", "--limit", "2", "--cursor", &cursor, "--all", "--json",
        ],
    );
    assert_eq!(rest.code, Some(0), "{}", rest.err);
    assert_eq!(ids(&rest), submitted[2..], "every page after the cursor");
    let people = corral(&app, &["workflow", "list", "--limit", "2", "--all"]);
    assert_eq!(people.code, Some(0), "{}", people.err);
    assert!(!people.err.contains("pass --all"), "{}", people.err);
    for id in &submitted {
        assert!(people.out.contains(id), "{id}: {}", people.out);
    }
    app.stop().await;
}

async fn schedules_are_created_shown_paused_and_deleted_from_the_command_line(backend: Backend) {
    let app = app(backend).await;
    let created = corral(
        &app,
        &[
            "schedule",
            "create",
            "--cron",
            "0 9 * * 1-5",
            "--timezone",
            "Europe/Paris",
            "--agent",
            "echo",
            "--action",
            "echo",
            "--input",
            r#"{"daily": true}"#,
            "--missed",
            "skip",
            "--json",
        ],
    );
    assert_eq!(created.code, Some(0), "{}", created.err);
    let schedule = created.json();
    let id = schedule["id"].as_str().unwrap();
    assert_eq!(schedule["missed"], "skip");
    assert_eq!(schedule["next_occurrences"].as_array().unwrap().len(), 5);
    let shown = corral(&app, &["schedule", "get", id]);
    assert_eq!(shown.code, Some(0));
    assert!(
        shown.out.contains("0 9 * * 1-5 (Europe/Paris)"),
        "{}",
        shown.out
    );
    let paused = corral(&app, &["schedule", "pause", id, "--json"]);
    assert_eq!(paused.json()["paused"], true);
    let listed = corral(&app, &["schedule", "list", "--json"]);
    assert_eq!(listed.json()["items"].as_array().unwrap().len(), 1);
    let deleted = corral(&app, &["schedule", "delete", id]);
    assert_eq!(deleted.code, Some(0), "{}", deleted.err);
    let bad = corral(
        &app,
        &[
            "schedule", "create", "--cron", "nope", "--agent", "echo", "--action", "echo",
        ],
    );
    assert_eq!(bad.code, Some(2));
    assert!(bad.err.contains("400 invalid_schedule"), "{}", bad.err);
    app.stop().await;
}
