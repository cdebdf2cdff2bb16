//! Real `corral serve` processes for tests that crash, stop or multiply servers: on a
//! fresh SQLite data directory or a fresh Postgres database, with the bootstrap key
//! [`KEY`].

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

use crate::harness::corral_bin;

/// The bootstrap admin key of every server started here.
pub const KEY: &str = "crl_durability_test_bootstrap_key_0123456789abcdef";

pub enum Backend {
    Sqlite,
    Postgres {
        /// The server's URL.
        admin_url: String,
        /// The database for this test.
        name: String,
    },
}

impl Backend {
    pub async fn postgres() -> Backend {
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

    pub async fn cleanup(&self) {
        if let Backend::Postgres { admin_url, name } = self {
            let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
            let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Server {
    pub async fn start(backend: &Backend, data_dir: &Path) -> Server {
        Server::start_with(backend, data_dir, &[]).await
    }

    /// [`Server::start`] with extra environment variables.
    pub async fn start_with(backend: &Backend, data_dir: &Path, env: &[(&str, &str)]) -> Server {
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
            .stderr(Stdio::null())
            .envs(env.iter().copied());
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

    pub fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL: no chance to flush anything
        self.child.wait().unwrap();
    }

    pub fn terminate(&self) {
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

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn setup_agent(url: &str, name: &str, wasm: &str) {
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

pub async fn invoke(http: &reqwest::Client, url: &str, agent: &str, body: Value) -> Option<Value> {
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

/// Submits a task to `agent` through the server at `url`; returns the task.
pub async fn submit_task(url: &str, agent: &str, body: Value) -> Value {
    let response = client()
        .post(format!("{url}/v1/agents/{agent}/tasks"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

/// A task as the server at `url` shows it (`Null` if the server does not answer).
pub async fn task(url: &str, id: &str) -> Value {
    let Ok(response) = client()
        .get(format!("{url}/v1/tasks/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
    else {
        return Value::Null;
    };
    response.json().await.unwrap_or(Value::Null)
}

/// Waits up to `within` until `check` holds of task `id` as `url` shows it.
pub async fn task_until(
    url: &str,
    id: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let task = task(url, id).await;
        if check(&task) {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never got there: {task:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
