//! Nothing acknowledged is lost: real `corral serve` processes, killed mid-load or
//! asked to stop, on both backends.

use std::time::Duration;

use corral_tests::plugins::{ECHO, HOSTILE};
use corral_tests::process::{
    Backend, KEY, Server, client, invoke, setup_agent, submit_task, task_until,
};
use serde_json::{Value, json};

async fn acknowledged_invocations_survive_a_crash(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&backend, dir.path()).await;
    setup_agent(&server.url, "echo", ECHO).await;

    // Eight clients invoke as fast as they can; the server is killed under them.
    let url = server.url.clone();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let url = url.clone();
            tokio::spawn(async move {
                let http = client();
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    match invoke(
                        &http,
                        &url,
                        "echo",
                        json!({ "action": "echo", "input": { "c": c, "i": i } }),
                    )
                    .await
                    {
                        Some(response) => acknowledged
                            .push(response["execution_id"].as_str().unwrap().to_string()),
                        None => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap());
    }
    assert!(
        acknowledged.len() > 20,
        "the load ran: {} acknowledged",
        acknowledged.len()
    );

    let restarted = Server::start(&backend, dir.path()).await;
    let http = client();
    for id in &acknowledged {
        let response = http
            .get(format!("{}/v1/executions/{id}", restarted.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "acknowledged execution {id} is missing after the crash"
        );
        let record: Value = response.json().await.unwrap();
        assert_eq!(record["outcome"], "succeeded");
    }
    drop(restarted);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_invocations_survive_a_crash_on_sqlite() {
    acknowledged_invocations_survive_a_crash(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_invocations_survive_a_crash_on_postgres() {
    acknowledged_invocations_survive_a_crash(Backend::postgres().await).await;
}

async fn shutdown_lets_in_flight_invocations_finish(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&backend, dir.path()).await;
    setup_agent(&server.url, "hostile", HOSTILE).await;

    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let url = server.url.clone();
            tokio::spawn(async move {
                invoke(
                    &client(),
                    &url,
                    "hostile",
                    json!({ "action": "sleep", "input": { "ms": 800 } }),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.terminate();

    let mut ids = Vec::new();
    for request in in_flight {
        let response = request
            .await
            .unwrap()
            .expect("an in-flight invocation was cut off by shutdown");
        assert_eq!(response["outcome"], "succeeded");
        ids.push(response["execution_id"].as_str().unwrap().to_string());
    }
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "corral serve exits cleanly after SIGTERM: {status}"
    );

    let restarted = Server::start(&backend, dir.path()).await;
    for id in ids {
        let response = client()
            .get(format!("{}/v1/executions/{id}", restarted.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    drop(restarted);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_invocations_finish_on_sqlite() {
    shutdown_lets_in_flight_invocations_finish(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_invocations_finish_on_postgres() {
    shutdown_lets_in_flight_invocations_finish(Backend::postgres().await).await;
}

/// A task attempt survives its node: killed, the attempt is taken over after its
/// lease once the node is back (SQLite: one node, leases across restarts); stopped
/// gracefully, a short attempt finishes and a long one is handed back at once.
async fn task_attempts_survive_a_crash_and_a_shutdown(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CORRAL_TASK_LEASE", "2s"),
        ("CORRAL_TASK_POLL", "200ms"),
        ("CORRAL_SHUTDOWN_GRACE", "2s"),
    ];
    let mut server = Server::start_with(&backend, dir.path(), &env).await;
    setup_agent(&server.url, "hostile", HOSTILE).await;
    let sleep = |ms: u64| json!({ "action": "sleep", "input": { "ms": ms }, "max_attempts": 3 });
    let crashed = submit_task(&server.url, "hostile", sleep(3000)).await;
    let crashed = crashed["id"].as_str().unwrap().to_string();
    task_until(&server.url, &crashed, Duration::from_secs(10), |t| {
        t["state"] == "running"
    })
    .await;
    server.kill();

    let server = Server::start_with(&backend, dir.path(), &env).await;
    let task = task_until(&server.url, &crashed, Duration::from_secs(30), |t| {
        t["state"] == "succeeded"
    })
    .await;
    let outcomes: Vec<_> = task["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, ["node_lost", "succeeded"], "{task:#}");

    // SIGTERM: the short attempt ends within the grace period; the long one is handed
    // back and finishes after the restart.
    let short = submit_task(&server.url, "hostile", sleep(500)).await;
    let long = submit_task(&server.url, "hostile", sleep(6000)).await;
    let (short, long) = (short["id"].as_str().unwrap(), long["id"].as_str().unwrap());
    task_until(&server.url, long, Duration::from_secs(10), |t| {
        t["state"] == "running"
    })
    .await;
    task_until(&server.url, short, Duration::from_secs(10), |t| {
        t["state"] == "running" || t["state"] == "succeeded"
    })
    .await;
    server.terminate();
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "corral serve exits cleanly after SIGTERM: {status}"
    );
    let restarted = Server::start_with(&backend, dir.path(), &env).await;
    let short = task_until(&restarted.url, short, Duration::from_secs(5), |t| {
        !t.is_null()
    })
    .await;
    assert_eq!(
        short["state"], "succeeded",
        "it finished within the grace: {short:#}"
    );
    assert_eq!(short["attempt_count"], 1);
    let long = task_until(&restarted.url, long, Duration::from_secs(30), |t| {
        t["state"] == "succeeded"
    })
    .await;
    let outcomes: Vec<_> = long["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        outcomes,
        ["node_lost", "succeeded"],
        "handed back, then retried: {long:#}"
    );
    // The handed-back attempt's guest was stopped at shutdown, not run to its end.
    let first = client()
        .get(format!(
            "{}/v1/executions/{}",
            restarted.url,
            long["attempts"][0]["execution_id"].as_str().unwrap()
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["outcome"], "cancelled", "{first:#}");
    drop(restarted);
    backend.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_attempts_survive_a_crash_and_a_shutdown_on_sqlite() {
    task_attempts_survive_a_crash_and_a_shutdown(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_attempts_survive_a_crash_and_a_shutdown_on_postgres() {
    task_attempts_survive_a_crash_and_a_shutdown(Backend::postgres().await).await;
}
