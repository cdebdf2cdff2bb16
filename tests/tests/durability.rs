//! Nothing acknowledged is lost: real `corral serve` processes, killed mid-load or
//! asked to stop, on both backends.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_tests::harness::corral_bin;
use corral_tests::plugins::{ECHO, HOSTILE};
use serde_json::{Value, json};
use sqlx::Connection;

const KEY: &str = "crl_durability_test_bootstrap_key_0123456789abcdef";

enum Backend {
    Sqlite,
    Postgres { admin_url: String, name: String },
}

impl Backend {
    async fn postgres() -> Backend {
        let admin_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL is not set; run ./scripts/test, which finds Postgres");
        let name = format!("corral_durability_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        Backend::Postgres { admin_url, name }
    }

    async fn cleanup(&self) {
        if let Backend::Postgres { admin_url, name } = self {
            let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
            let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    async fn start(backend: &Backend, data_dir: &Path) -> Server {
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
            .env("CORRAL_SHUTDOWN_GRACE", "10s")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Backend::Postgres { admin_url, name } = backend {
            let base = admin_url.rsplit_once('/').unwrap().0;
            command.env("DATABASE_URL", format!("{base}/{name}"));
        }
        let child = command.spawn().expect("corral serve starts");
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

    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL: no chance to flush anything
        self.child.wait().unwrap();
    }

    fn terminate(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn setup_agent(url: &str, name: &str, wasm: &str) {
    let http = client();
    let created = http
        .post(format!("{url}/v1/agents"))
        .bearer_auth(KEY)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let uploaded = http
        .post(format!("{url}/v1/agents/{name}/versions"))
        .bearer_auth(KEY)
        .header("content-type", "application/wasm")
        .body(std::fs::read(wasm).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
}

async fn invoke(http: &reqwest::Client, url: &str, agent: &str, body: Value) -> Option<Value> {
    let response = http
        .post(format!("{url}/v1/agents/{agent}/invoke"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

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
