//! Persistence: Postgres in production, an embedded SQLite file by default.
//!
//! [`Db`] is one of two pools. Queries are written once where the SQL is portable
//! (both accept numbered `$1` placeholders) and run through [`on_pool!`]; backend-specific SQL stays in
//! one place per aggregate. One file per aggregate: [`tenants`], [`keys`], [`agents`]
//! (and their [`config`] values and secrets), [`executions`] (with the group-commit
//! [`writer`]), [`audit`], [`idempotency`], [`kv`].
//! Migrations live in `migrations/{postgres,sqlite}` and run at start.

pub mod agents;
pub mod audit;
pub mod config;
mod error;
pub mod executions;
pub mod idempotency;
pub mod keys;
pub mod kv;
pub mod llm_calls;
pub mod retention;
pub mod schedules;
pub mod tasks;
pub mod tenants;
pub mod text;
pub mod usage;
pub mod workflows;
pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use self::error::{DbError, ResultExt};

/// The database: one of two connection pools.
#[derive(Debug, Clone)]
pub enum Db {
    /// Postgres (`DATABASE_URL=postgres://…`).
    Postgres(PgPool),
    /// An embedded SQLite file.
    Sqlite(SqliteDb),
}

/// An embedded SQLite file: its pool, and the queue its write transactions wait in.
///
/// SQLite lets one transaction write at a time. Left to SQLite, a writer that finds
/// the file locked sleeps 1, 2, 5, 10… ms and tries again, so under load the file sits
/// unlocked while every writer sleeps (the group commit among them). Queued here, in
/// the order they asked, each writer starts the moment the one before it ends. (Another
/// process on the same file still meets SQLite's own wait.)
#[derive(Debug, Clone)]
pub struct SqliteDb {
    /// The connections.
    pub pool: SqlitePool,
    writers: Arc<tokio::sync::Mutex<()>>,
}

/// How long a writer waits for its turn, or a statement for a lock another process
/// holds, before it fails as busy.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl SqliteDb {
    /// Begins a write transaction when the writers before it have ended.
    async fn begin_write(&self) -> Result<SqliteTx, DbError> {
        let turn = tokio::time::timeout(SQLITE_BUSY_TIMEOUT, self.writers.clone().lock_owned())
            .await
            .map_err(|_| {
                DbError::Internal(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "waited too long for the SQLite file's write lock",
                )))
            })?;
        Ok(SqliteTx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _turn: Some(turn),
        })
    }
}

/// A transaction on an SQLite file; a write transaction holds the writers' turn
/// ([`SqliteDb`]) until it ends. It derefs to its connection.
pub struct SqliteTx {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    // Dropped after `tx`, whose rollback (if it did not commit) is queued first.
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl std::ops::Deref for SqliteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &sqlx::SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.tx
    }
}

/// Statements for an SQLite connection sent together: one text, their anonymous `?`
/// parameters bound in order across them, run in one round trip to the connection's
/// thread (each statement is a trip of its own otherwise). Built like a query:
/// `script.push(sql)`, then `script = script.bind(value)` for each of its parameters.
#[derive(Default)]
pub(crate) struct SqliteScript<'q> {
    sql: String,
    args: sqlx::sqlite::SqliteArguments<'q>,
    /// The first value that could not be bound.
    refused: Option<sqlx::error::BoxDynError>,
}

impl<'q> SqliteScript<'q> {
    /// Adds a statement.
    pub(crate) fn push(&mut self, statement: &str) {
        self.sql.push_str(statement);
        self.sql.push_str(";\n");
    }

    /// Binds the next `?`.
    pub(crate) fn bind<T>(mut self, value: T) -> Self
    where
        T: sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + 'q,
    {
        use sqlx::Arguments;
        if let Err(e) = self.args.add(value)
            && self.refused.is_none()
        {
            self.refused = Some(e);
        }
        self
    }

    /// `VALUES` rows of `columns` parameters for `rows` rows, padded to a power of two.
    /// The padding rows are bound to NULLs ([`SqliteScript::bind_padding`]), which
    /// match no row and insert none, so however many rows a batch writes, its
    /// statements take one of a few shapes, each prepared once and cached.
    pub(crate) fn padded_values(rows: usize, columns: usize) -> String {
        let row = format!("({})", vec!["?"; columns].join(", "));
        vec![row; rows.next_power_of_two()].join(", ")
    }

    /// Binds the NULLs of the rows that pad `rows` rows of `columns`.
    pub(crate) fn bind_padding(mut self, rows: usize, columns: usize) -> Self {
        for _ in 0..(rows.next_power_of_two() - rows) * columns {
            self = self.bind(None::<String>);
        }
        self
    }

    /// Runs every statement, in order (nothing if none was pushed).
    pub(crate) async fn run(self, conn: &mut sqlx::SqliteConnection) -> Result<(), DbError> {
        if let Some(e) = self.refused {
            return Err(DbError::Internal(sqlx::Error::Encode(e)));
        }
        if !self.sql.is_empty() {
            sqlx::query_with(&self.sql, self.args).execute(conn).await?;
        }
        Ok(())
    }
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds. The body is
/// compiled once per backend, so the same query text serves both.
#[macro_export]
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite(sqlite) => {
                let $pool = &sqlite.pool;
                $body
            }
        }
    };
}

/// A transaction on either backend. Every state change and its audit event are
/// written in one, so a failed request leaves nothing half-written.
pub enum Tx {
    /// On Postgres.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    /// On SQLite.
    Sqlite(SqliteTx),
}

/// Runs `$body` with `$conn` bound to the transaction's connection.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::db::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::db::Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

impl Tx {
    /// Commits.
    pub async fn commit(self) -> Result<(), DbError> {
        match self {
            Tx::Postgres(tx) => tx.commit().await?,
            Tx::Sqlite(tx) => tx.tx.commit().await?,
        }
        Ok(())
    }
}

/// How many rows the next multi-row statement takes, with `left` rows to write: the
/// largest power of two not above `left` or `max`, so only a few statement shapes are
/// ever prepared (and cached) whatever the batch sizes.
pub(crate) fn chunk_size(left: usize, max: usize) -> usize {
    let n = left.min(max).max(1);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// Whose rows a Postgres connection may see. Row-level security fails closed: a
/// connection that names no scope sees no tenant's rows at all, so every query runs
/// in one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One tenant's rows: everything done on a tenant's behalf.
    Tenant(&'a str),
    /// Every tenant's rows, for one of the few paths that must cross tenants.
    OperatorWide(Wide),
}

/// The paths allowed around tenant isolation, each named so a reader can find them
/// all (`Wide::`) and the database session says which one it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wide {
    /// Creating the operator tenant and its first key at start.
    Bootstrap,
    /// Finding the key a request presents, before its tenant is known.
    Authentication,
    /// The group-commit writer: one transaction holds many tenants' executions.
    GroupCommit,
    /// Task workers claim, recover and finish every tenant's tasks.
    TaskQueue,
    /// Lease renewal, expiry, key-value purges and cache and artifact collection,
    /// across tenants.
    Housekeeping,
    /// Operator-tenant admins acting on another tenant (its keys, its usage).
    OperatorAdmin,
    /// Workflow advancers and schedule tickers find the workflows and schedules to
    /// move on, across tenants (each is then moved on in its tenant's scope).
    Orchestration,
    /// `GET /metrics` counts every tenant's tasks by state.
    Metrics,
}

impl Wide {
    fn as_str(self) -> &'static str {
        match self {
            Wide::Bootstrap => "bootstrap",
            Wide::Authentication => "authentication",
            Wide::GroupCommit => "group-commit",
            Wide::TaskQueue => "task-queue",
            Wide::Metrics => "metrics",
            Wide::Housekeeping => "housekeeping",
            Wide::OperatorAdmin => "operator-admin",
            Wide::Orchestration => "orchestration",
        }
    }
}

impl<'a> From<&'a str> for Scope<'a> {
    fn from(tenant_id: &'a str) -> Scope<'a> {
        Scope::Tenant(tenant_id)
    }
}

impl From<Wide> for Scope<'_> {
    fn from(why: Wide) -> Scope<'static> {
        Scope::OperatorWide(why)
    }
}

/// Begins a Postgres transaction in `scope` (the setting lasts until it ends).
pub async fn begin_scoped(
    pool: &PgPool,
    scope: Scope<'_>,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (setting, value) = match scope {
        Scope::Tenant(tenant) => ("corral.tenant_id", tenant),
        Scope::OperatorWide(why) => ("corral.operator_wide", why.as_str()),
    };
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(setting)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Runs `$body` (a `Result<_, sqlx::Error>`) with `$conn` bound to a connection that
/// sees only what `$scope` allows: on Postgres, a transaction in that [`Scope`],
/// committed after the body; on SQLite (one tenant's file or many, no row-level
/// security) the pool.
#[macro_export]
macro_rules! in_scope {
    ($db:expr, $scope:expr, $conn:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Postgres(pool) => {
                match $crate::db::begin_scoped(pool, $crate::db::Scope::from($scope)).await {
                    Ok(mut tx) => {
                        let $conn = &mut *tx;
                        match $body {
                            Ok(value) => tx.commit().await.map(|()| value),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            $crate::db::Db::Sqlite(sqlite) => {
                let $conn = &sqlite.pool;
                $body
            }
        }
    };
}

impl Db {
    /// Begins a transaction that writes; on Postgres it sees only what `scope` allows (a
    /// tenant's rows, or every tenant's for a named operator-wide path). On SQLite it
    /// takes the write lock at once (`BEGIN IMMEDIATE`), waiting for it up to the busy
    /// timeout: a deferred transaction that read first could not upgrade to writing
    /// after another connection committed, and would fail with `SQLITE_BUSY` at once.
    pub async fn begin<'a>(&self, scope: impl Into<Scope<'a>>) -> Result<Tx, DbError> {
        Ok(match self {
            Db::Postgres(pool) => Tx::Postgres(begin_scoped(pool, scope.into()).await?),
            Db::Sqlite(sqlite) => Tx::Sqlite(sqlite.begin_write().await?),
        })
    }

    /// Begins a transaction that only reads: as [`Db::begin`] on Postgres, a plain
    /// (deferred) one on SQLite, which takes no write lock.
    pub async fn begin_read<'a>(&self, scope: impl Into<Scope<'a>>) -> Result<Tx, DbError> {
        Ok(match self {
            Db::Postgres(pool) => Tx::Postgres(begin_scoped(pool, scope.into()).await?),
            Db::Sqlite(sqlite) => Tx::Sqlite(SqliteTx {
                tx: sqlite.pool.begin().await?,
                _turn: None,
            }),
        })
    }

    /// Connects to `url` (`postgres://…` or `sqlite://…`) and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, sqlx::Error> {
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // Migrate as the login user, then serve from connections that act as
            // `corral_app`, so row-level security applies to everything the host does.
            let admin = Db::Postgres(PgPoolOptions::new().max_connections(1).connect(url).await?);
            admin.migrate().await?;
            admin.close().await;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        let member: (bool,) = sqlx::query_as(
                            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'corral_app') \
                             AND pg_has_role(current_user, 'corral_app', 'MEMBER')",
                        )
                        .fetch_one(&mut *conn)
                        .await?;
                        if member.0 {
                            sqlx::query("SET ROLE corral_app")
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
                .connect(url)
                .await?;
            return Ok(Db::Postgres(pool));
        }
        let db = {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .foreign_keys(true)
                // WAL with FULL sync: a committed transaction survives power loss.
                // Group commit amortises the fsync over many executions.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(SQLITE_BUSY_TIMEOUT);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .connect_with(options)
                .await?;
            Db::Sqlite(SqliteDb {
                pool,
                writers: Arc::default(),
            })
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Opens (creating if needed) the SQLite file at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Db, sqlx::Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        Db::connect(&format!("sqlite://{}", path.display()), 8).await
    }

    /// Applies pending migrations from `migrations/<backend>`.
    pub async fn migrate(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await?,
            Db::Sqlite(sqlite) => {
                sqlx::migrate!("../migrations/sqlite")
                    .run(&sqlite.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected()).is_ok())
    }

    /// The pool's connections: open, idle among them, and the most it opens.
    pub fn pool_stats(&self) -> (u64, u64, u64) {
        on_pool!(self, pool => (
            u64::from(pool.size()),
            pool.num_idle() as u64,
            u64::from(pool.options().get_max_connections()),
        ))
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now, truncated to microseconds (what both backends store).
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
