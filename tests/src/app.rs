//! A real `corral serve` application for API tests: a fresh database per test (an
//! SQLite file in a temporary directory, or a new Postgres database that is dropped
//! afterwards), bound to 127.0.0.1 on a free port, with typed request helpers.

use std::time::Duration;

use corral_host::config::ServeConfig;
use corral_host::db::Db;
use corral_host::server::Application;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

/// The bootstrap admin key of every test app.
pub const ADMIN_KEY: &str = "crl_test_bootstrap_admin_key_0123456789abcdef0123";

/// Which database a test app uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh Postgres database on `DATABASE_URL`'s server.
    Postgres,
}

/// A running app and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// `http://127.0.0.1:<port>` of the metrics listener, when one is configured
    /// (`metrics_listen`).
    pub metrics_url: Option<String>,
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The app's database.
    pub database_url: String,
    /// A second connection to the app's database that sees every tenant's rows, for
    /// checking what was written (see [`inspector`]).
    pub db: Db,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    postgres: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

/// A response: status and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Value,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// Asserts the status and the error code of an error reply.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{:#}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{:#}", self.body);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{:#}",
            self.body
        );
    }

    /// The `Retry-After` header, in seconds.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// Asserts a success status and returns the body.
    #[track_caller]
    pub fn ok(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{:#}", self.body);
        self.body
    }
}

/// Starts an app on `backend` with `tweak` applied to its configuration.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        ServeConfig::for_data_dir(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.bootstrap_key = Some(ADMIN_KEY.into());
    config.compile_worker = Some(crate::harness::corral_bin());
    config.shutdown_grace = Duration::from_secs(5);
    // Clap reads DATABASE_URL into the config: always set it explicitly.
    let postgres = match backend {
        Backend::Sqlite => {
            config.database_url = None;
            None
        }
        Backend::Postgres => {
            let admin = std::env::var("DATABASE_URL")
                .expect("DATABASE_URL is not set; run ./scripts/test, which finds Postgres");
            let name = format!("corral_api_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("connect to Postgres");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b.to_string())
                .unwrap_or(admin.clone());
            config.database_url = Some(format!("{base}/{name}"));
            Some((admin, name))
        }
    };
    tweak(&mut config);
    start(config, dir, postgres).await
}

/// Starts another node of `first`'s application: a server of its own (its own data
/// directory, workers and tickers) on the same database, with `tweak` applied. Stopping
/// it leaves the database to `first`.
pub async fn spawn_node_with(first: &TestApp, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        ServeConfig::for_data_dir(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.bootstrap_key = Some(ADMIN_KEY.into());
    config.compile_worker = Some(crate::harness::corral_bin());
    config.shutdown_grace = Duration::from_secs(5);
    config.database_url = Some(first.database_url.clone());
    tweak(&mut config);
    start(config, dir, None).await
}

async fn start(
    config: ServeConfig,
    dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
) -> TestApp {
    let database_url = config.database_url();
    let app = Application::build(config).await.expect("the app builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let metrics_url = app
        .metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = rx.await;
        })
        .await
        .expect("the server runs");
    });
    let db = inspector(&database_url).await;
    TestApp {
        url,
        metrics_url,
        // A connection per request. The server answers some refusals (415, 413, 401)
        // before reading the body and then closes the connection; a pooled client
        // could send its next request on that closing connection and fail for a
        // reason that has nothing to do with the test.
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        db,
        database_url,
        shutdown: Some(tx),
        server: Some(server),
        postgres,
        _dir: dir,
    }
}

/// A connection that sees every row, for checking what the host wrote: on Postgres the
/// login user itself (the host's connections act as `corral_app`, under row-level
/// security), on SQLite the file. The host has migrated the database already.
pub async fn inspector(database_url: &str) -> Db {
    if database_url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(database_url)
            .await
            .expect("connect to Postgres");
        return Db::Postgres(pool);
    }
    Db::connect(database_url, 2).await.unwrap()
}

/// Starts an app on `backend` with the default configuration.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

impl TestApp {
    /// Sends a request with `key` (if any) and an optional JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the request is answered");
        reply(response).await
    }

    /// GET with a key.
    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.send(Method::GET, path, Some(key), None).await
    }

    /// POST JSON with a key.
    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(key), Some(body)).await
    }

    /// Uploads component bytes to an agent.
    pub async fn upload(&self, agent: &str, key: &str, bytes: Vec<u8>) -> Reply {
        let response = self
            .http
            .post(format!("{}/v1/agents/{agent}/versions", self.url))
            .bearer_auth(key)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        reply(response).await
    }

    /// Creates an agent (as admin) and uploads a plugin as its active version.
    pub async fn agent_with(&self, name: &str, plugin: &str) -> Value {
        self.post("/v1/agents", ADMIN_KEY, json!({ "name": name }))
            .await
            .ok(201);
        self.upload(name, ADMIN_KEY, std::fs::read(plugin).unwrap())
            .await
            .ok(201)
    }

    /// Replaces an agent's policy (as `key`), asserting it was accepted; returns the agent.
    pub async fn set_policy_as(&self, key: &str, agent: &str, policy: Value) -> Value {
        self.send(
            Method::PUT,
            &format!("/v1/agents/{agent}/policy"),
            Some(key),
            Some(policy),
        )
        .await
        .ok(200)
    }

    /// Replaces an agent's policy as the bootstrap admin; returns the agent.
    pub async fn set_policy(&self, agent: &str, policy: Value) -> Value {
        self.set_policy_as(ADMIN_KEY, agent, policy).await
    }

    /// Invokes an agent.
    pub async fn invoke(&self, agent: &str, key: &str, body: Value) -> Reply {
        self.post(&format!("/v1/agents/{agent}/invoke"), key, body)
            .await
    }

    /// Creates a key with `role` in the admin's tenant and returns its secret.
    pub async fn key(&self, role: &str) -> String {
        let body = self
            .post("/v1/keys", ADMIN_KEY, json!({ "name": role, "role": role }))
            .await
            .ok(201);
        body["secret"].as_str().unwrap().to_string()
    }

    /// Creates a tenant and returns (its id, its admin key's secret).
    pub async fn tenant(&self, name: &str) -> (String, String) {
        let body = self
            .post("/v1/tenants", ADMIN_KEY, json!({ "name": name }))
            .await
            .ok(201);
        (
            body["tenant"]["id"].as_str().unwrap().into(),
            body["secret"].as_str().unwrap().into(),
        )
    }

    /// Rows in a table, counted directly in the database.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let row: (i64,) = match &self.db {
            Db::Postgres(pool) => sqlx::query_as(&sql).fetch_one(pool).await.unwrap(),
            Db::Sqlite(sqlite) => sqlx::query_as(&sql).fetch_one(&sqlite.pool).await.unwrap(),
        };
        row.0
    }

    /// Counts of every table that requests write to, for "nothing was half-written".
    pub async fn snapshot(&self) -> Vec<i64> {
        let mut counts = Vec::new();
        for table in [
            "tenants",
            "api_keys",
            "agents",
            "agent_versions",
            "executions",
            "idempotency_keys",
        ] {
            counts.push(self.count(table).await);
        }
        counts
    }

    /// A request with `key` (if any), for bodies and headers the helpers do not cover.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends a request built with [`TestApp::request`].
    pub async fn send_request(&self, request: reqwest::RequestBuilder) -> Reply {
        reply(request.send().await.expect("the request is answered")).await
    }

    /// The server's data directory (its SQLite file, artifact cache, secrets key).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Stops the server, keeping its database to inspect ([`TestApp::stop`] drops it).
    pub async fn stop_server(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Stops the server and drops its database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.db.close().await;
        if let Some((admin, name)) = self.postgres.take() {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

/// A test that panics never reaches [`TestApp::stop`]: drop its Postgres database
/// anyway, so failed runs do not leave databases behind.
impl Drop for TestApp {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Drop runs inside the test's runtime, which cannot be blocked on: use a
        // runtime of its own on a thread of its own. FORCE ends the server's sessions.
        let database = name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop the test database {name}");
        }
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply {
        status,
        body,
        headers,
    }
}
