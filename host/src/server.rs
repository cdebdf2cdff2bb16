//! `corral serve`: builds the application (database, migrations, bootstrap, sandbox,
//! group-commit writer, router), serves it, and shuts down gracefully.
//!
//! Every server also runs task workers ([`crate::tasks::worker`]).
//!
//! Shutdown: stop accepting and stop claiming tasks, let in-flight requests and task
//! attempts finish (bounded by the grace period; attempts still running are handed
//! back), then let the writer drain and commit every queued execution record, then
//! close the database. A response that said an invocation ran was only ever sent after
//! its record committed, so nothing acknowledged is lost.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::auth_failures::AuthFailureSettings;
use crate::api::{self, ApiSettings, AppState};
use crate::config::ServeConfig;
use crate::console::{self, ConsoleSettings};
use crate::db::keys::{self, Role};
use crate::db::tenants::{self, Tenant};
use crate::db::writer::ExecutionWriter;
use crate::db::{self, Db, audit};
use crate::housekeeping;
use crate::invocations::RetentionSettings;
use crate::listener::{self, ListenerLimits};
use crate::quota::Enforcer;
use crate::quota::clock::SystemClock;
use crate::runtime::{CompileSettings, Runtime, RuntimeConfig};
use crate::secrets::{self, SecretsKey};
use crate::tasks::worker::{WorkerSettings, Workers};

/// A built, bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    /// The metrics listener (`CORRAL_METRICS_LISTEN`), if one is configured.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    writer_task: tokio::task::JoinHandle<()>,
    config: ServeConfig,
    bootstrap_secret: Option<String>,
}

impl Application {
    /// Connects and migrates the database, bootstraps the first admin key if there is
    /// none, builds the sandbox and binds the listener.
    pub async fn build(config: ServeConfig) -> anyhow::Result<Application> {
        config.check()?;
        let url = config.database_url();
        if config.database_url.is_none() {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("creating the data directory {}", config.data_dir.display())
            })?;
        }
        let db = Db::connect(&url, config.db_connections)
            .await
            .with_context(|| {
                format!(
                    "connecting to the {} database",
                    if url.starts_with("postgres") {
                        "Postgres"
                    } else {
                        "SQLite"
                    }
                )
            })?;
        let bootstrap_secret = bootstrap(&db, config.bootstrap_key.as_deref()).await?;

        let mut runtime = RuntimeConfig::in_memory();
        runtime.engine.max_instances = config.max_instances;
        runtime.engine.memory_reservation = config.memory_reservation;
        runtime.cache_bytes = config.component_cache;
        runtime.cache_dir = Some(config.data_dir.join("artifacts"));
        let worker = match &config.compile_worker {
            Some(path) => path.clone(),
            None => {
                std::env::current_exe().context("locating the corral binary for compile workers")?
            }
        };
        runtime.compile = CompileSettings {
            timeout: config.compile_timeout,
            memory_bytes: config.compile_memory,
            ..CompileSettings::worker(worker)
        };
        let runtime = Runtime::new(runtime).context("building the sandbox")?;

        let secrets_key = secrets_key(&config)?;
        let llm = match &config.llm_config {
            Some(path) => Some(Arc::new(crate::llm::Catalogue::load(path)?)),
            None => None,
        };
        let (writer, writer_task) = ExecutionWriter::start(db.clone(), config.commit_batch);
        let settings = ApiSettings {
            limits: config.limits(),
            prices: config.prices(),
            max_upload_bytes: config.max_upload as usize,
            max_body_bytes: config.max_body as usize,
            request_timeout: config.request_timeout,
            max_call_depth: config.max_call_depth,
            task_timeout: config.task_timeout,
            idempotency_lease: config.idempotency_lease,
            idempotency_ttl: config.idempotency_ttl,
            body_timeout: config.body_timeout,
            retention: RetentionSettings {
                executions: config.retain_executions,
                logs: config.retain_logs,
                audit: config.retain_audit,
                audit_floor: config.audit_floor,
                interval: config.retention_interval,
                artifact_bytes: config.artifact_cache,
                artifact_min_age: config.artifact_min_age,
            },
            auth_failures: AuthFailureSettings {
                burst: config.auth_failure_burst,
                per_minute: config.auth_failures_per_minute,
                window: config.auth_audit_window,
            },
            secrets_key,
            llm,
            metrics_agent_labels: config.metrics_agent_labels,
        };
        let clock = config
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(SystemClock));
        let quotas = Enforcer::new(db.clone(), clock, config.lease_grace)
            .with_min_cost(crate::costs::picodollars(config.price_per_invocation));
        let state = AppState::new(db, Arc::new(runtime), writer, settings, quotas);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let metrics_listener = match config.metrics_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("listening for metrics on {address}"))?,
            ),
            None => None,
        };
        Ok(Application {
            listener,
            metrics_listener,
            state,
            writer_task,
            config,
            bootstrap_secret,
        })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The port the metrics listener bound, if there is one.
    pub fn metrics_port(&self) -> Option<u16> {
        let listener = self.metrics_listener.as_ref()?;
        listener.local_addr().ok().map(|a| a.port())
    }

    /// The admin key generated at bootstrap, if this start generated one.
    pub fn bootstrap_secret(&self) -> Option<&str> {
        self.bootstrap_secret.as_deref()
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            metrics_listener,
            state,
            writer_task,
            config,
            ..
        } = self;
        let db = state.db.clone();
        let workers = (config.workers() > 0).then(|| {
            let settings = WorkerSettings {
                workers: config.workers(),
                lease: config.task_lease,
                poll: config.task_poll,
            };
            Workers::start(state.invocations.clone(), settings, state.task_wake.clone())
        });
        let housekeeping = tokio::spawn(housekeeping::run(state.invocations.clone()));
        // Every node moves workflows on and handles schedules' occurrences; each is
        // transactional, so stopping one mid-way leaves nothing half-done.
        let advancer = tokio::spawn(crate::workflows::advancer::run(
            state.invocations.clone(),
            state.invocations.workflow_wake.clone(),
            config.task_poll,
        ));
        let ticker = tokio::spawn(crate::schedules::run(
            state.invocations.clone(),
            config.task_poll,
        ));
        let retention = tokio::spawn(housekeeping::retain(state.invocations.clone()));
        // Failed authentications are audited per source and window, as windows close.
        let operator = tenants::operator(&db)
            .await?
            .map(|t| t.id)
            .unwrap_or_default();
        let failures = state.auth_failures.clone();
        let failures_writer = state.writer.clone();
        let flusher = {
            let (failures, writer, operator) =
                (failures.clone(), failures_writer.clone(), operator.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
                loop {
                    tick.tick().await;
                    let events = failures.take_closed(&operator, db::now(), false);
                    if !events.is_empty()
                        && let Err(e) = writer.audit(events).await
                    {
                        tracing::error!(error = %e, "could not record failed authentications");
                    }
                }
            })
        };
        let (metrics_stop_tx, metrics_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let metrics = metrics_listener.map(|metrics_listener| {
            let app = api::metrics_router(state.clone());
            let limits = ListenerLimits {
                header_timeout: config.header_timeout,
                max_header_bytes: config.max_header_bytes as usize,
                shutdown_grace: config.shutdown_grace,
            };
            tokio::spawn(listener::serve(metrics_listener, app, limits, async {
                let _ = metrics_stop_rx.await;
            }))
        });
        // Both branches take `state`: a copy left here would keep the writer open, and
        // shutdown waits for the writer to drain.
        let app = if config.console {
            let settings = ConsoleSettings {
                secure_cookie: config.console_secure_cookie,
                max_upload_bytes: config.max_upload as usize,
                request_timeout: config.request_timeout,
            };
            console::mount(api::router(state.clone()), state, settings)
        } else {
            api::router(state)
        };
        let (workers_stop_tx, workers_stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Workers stop claiming at the same signal, finish within the grace period, and
        // hand back what is still running.
        let grace = config.shutdown_grace;
        let workers = tokio::spawn(async move {
            if let Some(workers) = workers {
                let _ = workers_stop_rx.await;
                workers.shutdown(grace).await;
            }
        });
        let limits = ListenerLimits {
            header_timeout: config.header_timeout,
            max_header_bytes: config.max_header_bytes as usize,
            shutdown_grace: config.shutdown_grace,
        };
        listener::serve(listener, app, limits, async move {
            shutdown.await;
            let _ = workers_stop_tx.send(());
            let _ = metrics_stop_tx.send(());
        })
        .await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        // Every connection (and so every AppState clone and writer handle it held) is
        // gone: the writer drains its queue, commits, and stops.
        let _ = workers.await;
        housekeeping.abort();
        advancer.abort();
        ticker.abort();
        retention.abort();
        flusher.abort();
        let rest = failures.take_closed(&operator, db::now(), true);
        if !rest.is_empty()
            && let Err(e) = failures_writer.audit(rest).await
        {
            tracing::error!(error = %e, "could not record failed authentications");
        }
        drop(failures_writer);
        let _ = writer_task.await;
        db.close().await;
        // The last executions' spans are sent before the process goes.
        crate::telemetry::flush().await;
        Ok(())
    }
}

/// The key that seals agents' secrets: `CORRAL_SECRETS_KEY`; else, on SQLite (one
/// host, zero setup), the key file in the data directory, created on first start; else
/// none, and secret writes are refused. Postgres gets no generated key: the hosts that
/// share its database would each invent a different one.
fn secrets_key(config: &ServeConfig) -> anyhow::Result<Option<SecretsKey>> {
    if let Some(key) = &config.secrets_key {
        return Ok(Some(key.clone()));
    }
    if config.database_url.is_some() {
        tracing::warn!(
            "CORRAL_SECRETS_KEY is not set: agents' secrets cannot be written, and stored ones cannot be read"
        );
        return Ok(None);
    }
    let path = config.data_dir.join(secrets::KEY_FILE);
    let (key, created) = SecretsKey::load_or_create(&path)?;
    let verb = if created { "generated" } else { "using" };
    tracing::warn!(
        key_id = key.id(),
        "CORRAL_SECRETS_KEY is not set: {verb} the secrets key in {}; in production set CORRAL_SECRETS_KEY and keep it safe",
        path.display()
    );
    if created {
        eprintln!(
            "corral: generated a secrets key in {} (mode 0600). In production, set CORRAL_SECRETS_KEY \
             (base64 of 32 random bytes) instead, and keep a copy: secrets cannot be read without it.",
            path.display()
        );
    }
    Ok(Some(key))
}

/// Creates the operator tenant and its first admin key when the database has no
/// keys. Returns the secret if it was generated here (to be printed once).
async fn bootstrap(db: &Db, given: Option<&str>) -> anyhow::Result<Option<String>> {
    if keys::any_exist(db).await? {
        return Ok(None);
    }
    let generated = given.is_none();
    let secret = given
        .map(str::to_string)
        .unwrap_or_else(keys::generate_secret);
    if secret.len() < 32 {
        anyhow::bail!("CORRAL_BOOTSTRAP_KEY must be at least 32 characters");
    }
    let tenant = Tenant {
        id: db::new_id(),
        name: "operator".into(),
        is_operator: true,
        created_at: db::now(),
        policy: Default::default(),
    };
    let key = keys::new_key(&tenant.id, "bootstrap admin", Role::Admin, &secret, None);
    let event = audit::AuditEvent {
        id: db::new_id(),
        tenant_id: tenant.id.clone(),
        occurred_at: db::now(),
        actor_key_id: None,
        action: "tenant.bootstrap".into(),
        resource_type: "tenant".into(),
        resource_id: Some(tenant.id.clone()),
        before: None,
        after: Some(sqlx::types::Json(
            serde_json::json!({ "name": tenant.name, "admin_key_id": key.id }),
        )),
        result: "ok".into(),
        request_id: None,
        client_addr: None,
        user_agent: None,
    };
    let mut tx = db.begin(crate::db::Wide::Bootstrap).await?;
    tenants::insert(&mut tx, &tenant).await?;
    keys::insert(&mut tx, &key, &secret).await?;
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(generated.then_some(secret))
}
