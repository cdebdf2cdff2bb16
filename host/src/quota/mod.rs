//! Quotas, enforced before a guest runs: budgets, rate and concurrency, for the agent
//! and for its tenant's agents together.
//!
//! - **Budgets** are checked against the usage counters (`db::usage`), which the
//!   group-commit writer charges in the same transaction as each execution record.
//!   An invocation is admitted only while every budget of its scopes has something
//!   left, and its fuel limit is lowered to the fuel budget that is left. So a budget
//!   is overspent by at most what invocations already in flight when it ran out go on
//!   to use: with `C` invocations of a scope running at once (its concurrency quota,
//!   if set), fuel by at most `(C − 1) ×` the per-invocation fuel limit, and dollars
//!   by at most `C ×` the largest cost of one invocation.
//! - **Rate** (a token bucket) and **concurrency** (leases) are taken together for
//!   every scope, or not at all. On Postgres, hosts sharing the database admit
//!   through one stored function (`corral_admit`, one round trip) that locks each
//!   scope, so the quotas hold across hosts; a lease expires after the invocation's
//!   timeout plus a grace period, so a host that dies holding one frees it. With
//!   SQLite, one host owns the file and keeps them in memory.
//!
//! An [`Admission`] holds its leases until it is dropped — after the execution record
//! is committed, so a budget read never misses an execution whose slot was freed.

pub mod clock;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use sqlx::PgPool;

use self::clock::Clock;
use crate::api::ErrorCode;
use crate::costs::picodollars;
use crate::db::usage::{self, Consumption};
use crate::db::{Db, DbError};
use crate::policy::Quotas;

/// One scope's quotas: an agent's (`agent:<id>`) or a tenant's (`tenant:<id>`).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The counter and lease key.
    pub key: &'a str,
    /// Its quotas.
    pub quotas: &'a Quotas,
}

/// Why an invocation was refused before it ran.
#[derive(Debug, Clone, PartialEq)]
pub enum Denial {
    /// The scope's token bucket is empty.
    RateLimited {
        /// The refusing scope.
        scope: String,
        /// When a token will be back.
        retry_after: Duration,
    },
    /// The scope already runs as many invocations as it may.
    ConcurrencyLimited {
        /// The refusing scope.
        scope: String,
        /// A hint: slots free as invocations finish.
        retry_after: Duration,
    },
    /// A budget of the scope is spent for the current period.
    BudgetExhausted {
        /// The refusing scope.
        scope: String,
        /// Which budget (`fuel_per_day`, `dollars_per_month`, …).
        budget: &'static str,
        /// When the period rolls over.
        retry_after: Duration,
    },
}

impl Denial {
    /// The API error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Denial::RateLimited { .. } => ErrorCode::RateLimited,
            Denial::ConcurrencyLimited { .. } => ErrorCode::ConcurrencyLimited,
            Denial::BudgetExhausted { .. } => ErrorCode::BudgetExhausted,
        }
    }

    /// The refusing scope.
    pub fn scope(&self) -> &str {
        match self {
            Denial::RateLimited { scope, .. }
            | Denial::ConcurrencyLimited { scope, .. }
            | Denial::BudgetExhausted { scope, .. } => scope,
        }
    }

    /// When trying again may help.
    pub fn retry_after(&self) -> Duration {
        match self {
            Denial::RateLimited { retry_after, .. }
            | Denial::ConcurrencyLimited { retry_after, .. }
            | Denial::BudgetExhausted { retry_after, .. } => *retry_after,
        }
    }

    /// A sentence for the caller.
    pub fn message(&self) -> String {
        let whose = |scope: &str| {
            if scope.starts_with("tenant:") {
                "the tenant's"
            } else {
                "the agent's"
            }
        };
        match self {
            Denial::RateLimited { scope, .. } => format!("{} rate quota is used up", whose(scope)),
            Denial::ConcurrencyLimited { scope, .. } => {
                format!("{} concurrency quota is full", whose(scope))
            }
            Denial::BudgetExhausted { scope, budget, .. } => {
                format!("{} {budget} budget is spent for this period", whose(scope))
            }
        }
    }
}

/// Why [`Enforcer::admit`] did not admit.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// A quota refused.
    #[error("{}", .0.message())]
    Denied(Denial),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What is needed to admit one invocation.
#[derive(Debug, Clone, Copy)]
pub struct AdmitRequest<'a> {
    /// The tenant.
    pub tenant_id: &'a str,
    /// The agent's scope and the tenant's.
    pub scopes: [Scope<'a>; 2],
    /// The invocation's timeout: its leases outlive it by the grace period.
    pub timeout: Duration,
}

/// An admitted invocation. Its leases are given back when it is dropped.
#[derive(Debug)]
pub struct Admission {
    /// What is left in the tightest budgets (fuel, dollars, tokens), where any is set.
    pub left: Left,
    release: Option<Release>,
}

#[derive(Debug)]
enum Release {
    /// The pool, the admission's id and its tenant.
    Shared(PgPool, String, String),
    /// The scopes, the ones holding a slot, the ones a token was taken from.
    Local(
        Arc<Mutex<HashMap<String, LocalScope>>>,
        Vec<String>,
        Vec<String>,
    ),
}

impl Admission {
    /// Puts back the tokens this admission took, for a call refused after admission (a
    /// spent budget). Only a single host's in-memory buckets can: on Postgres the token
    /// stays spent, so a caller hammering a spent budget also drains its rate.
    fn refund(&mut self) {
        if let Some(Release::Local(scopes, _, taken)) = &self.release {
            let mut scopes = scopes.lock().expect("quota lock");
            for key in taken {
                if let Some((tokens, _)) = scopes.get_mut(key).and_then(|s| s.bucket.as_mut()) {
                    *tokens += 1.0;
                }
            }
        }
    }

    /// Gives the leases back now, so the caller's next invocation finds its slot free.
    /// (Dropping an admission also gives them back, in the background: the fallback
    /// when a request is cancelled.)
    pub async fn release(mut self) {
        // A local release happens in `drop`, at once.
        if let Some(Release::Shared(pool, id, tenant)) = &self.release {
            if let Err(e) = sqlx::query("SELECT corral_release($1, $2)")
                .bind(id)
                .bind(tenant)
                .execute(pool)
                .await
            {
                tracing::warn!(error = %e, "could not release a lease; it will expire");
            }
            self.release = None;
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        match self.release.take() {
            None => {}
            Some(Release::Local(scopes, keys, _)) => {
                let mut scopes = scopes.lock().expect("quota lock");
                for key in keys {
                    if let Some(scope) = scopes.get_mut(&key) {
                        scope.in_flight = scope.in_flight.saturating_sub(1);
                    }
                }
            }
            Some(Release::Shared(pool, id, tenant)) => {
                // Dropped outside a runtime only at shutdown, when expiry frees it.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Err(e) = sqlx::query("SELECT corral_release($1, $2)")
                            .bind(&id)
                            .bind(&tenant)
                            .execute(&pool)
                            .await
                        {
                            tracing::warn!(error = %e, "could not release a lease; it will expire");
                        }
                    });
                }
            }
        }
    }
}

/// In-memory rate and concurrency state of one scope (single-host SQLite mode).
#[derive(Debug, Default)]
struct LocalScope {
    in_flight: u32,
    /// Tokens and when they were counted; `None` until first used (a full bucket).
    bucket: Option<(f64, DateTime<Utc>)>,
}

/// Admits invocations against their quotas.
#[derive(Debug)]
pub struct Enforcer {
    db: Db,
    clock: Arc<dyn Clock>,
    /// This host, as lease holder.
    holder: String,
    lease_grace: Duration,
    local: Arc<Mutex<HashMap<String, LocalScope>>>,
    /// The least any invocation costs (its price per invocation), in picodollars: a
    /// dollar budget with less left refuses, rather than admit what must overspend it.
    min_cost_picodollars: i64,
}

impl Enforcer {
    /// The same enforcer, refusing dollar budgets with less left than `picodollars`.
    pub fn with_min_cost(mut self, picodollars: i64) -> Enforcer {
        self.min_cost_picodollars = picodollars;
        self
    }

    /// An enforcer over `db`, measuring time by `clock`.
    pub fn new(db: Db, clock: Arc<dyn Clock>, lease_grace: Duration) -> Enforcer {
        Enforcer {
            db,
            clock,
            holder: crate::db::new_id(),
            lease_grace,
            local: Arc::default(),
            min_cost_picodollars: 0,
        }
    }

    /// The clock quotas are measured by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Admits one invocation, or says which quota refuses it. Nothing is taken from
    /// any scope unless every scope admits.
    pub async fn admit(&self, request: AdmitRequest<'_>) -> Result<Admission, AdmitError> {
        let now = self.clock.now();
        let mut scopes: Vec<Scope<'_>> = request
            .scopes
            .iter()
            .copied()
            .filter(|s| s.quotas.rate.is_some() || s.quotas.max_concurrency.is_some())
            .collect();
        scopes.sort_by_key(|s| s.key);
        let release = match &self.db {
            _ if scopes.is_empty() => None,
            Db::Postgres(pool) => {
                let id = crate::db::new_id();
                self.admit_shared(pool, &id, &request, &scopes, now).await?;
                Some(Release::Shared(pool.clone(), id, request.tenant_id.into()))
            }
            Db::Sqlite(_) => Some(self.admit_local(&scopes, now)?),
        };
        let mut admission = Admission {
            left: Left::default(),
            release,
        };
        if request.scopes.iter().all(|s| s.quotas.budgets.is_empty()) {
            return Ok(admission);
        }
        // Budgets are read once this invocation holds its slots: everything not counted
        // yet is then in flight in the other slots, which is what makes the overspend
        // bound (C − 1 invocations, not C) hold.
        match self
            .check_budgets(request.tenant_id, &request.scopes, self.clock.now())
            .await
        {
            Ok(left) => {
                admission.left = left;
                Ok(admission)
            }
            Err(denied) => {
                admission.refund();
                admission.release().await;
                Err(denied)
            }
        }
    }

    /// Refuses if any budget of `scopes` is spent; otherwise returns what is left in the
    /// tightest budget of each unit.
    async fn check_budgets(
        &self,
        tenant_id: &str,
        scopes: &[Scope<'_>],
        now: DateTime<Utc>,
    ) -> Result<Left, AdmitError> {
        let budgeted: Vec<String> = scopes
            .iter()
            .filter(|s| !s.quotas.budgets.is_empty())
            .map(|s| s.key.to_string())
            .collect();
        if budgeted.is_empty() {
            return Ok(Left::default());
        }
        let used = usage::consumption(&self.db, tenant_id, &budgeted, now).await?;
        let mut left = Left::default();
        for scope in scopes {
            let Some(used) = used.get(scope.key) else {
                continue;
            };
            for check in budget_checks(scope.quotas, used) {
                let least = match check.unit {
                    BudgetUnit::Dollars => self.min_cost_picodollars,
                    BudgetUnit::Fuel | BudgetUnit::Tokens => 0,
                };
                if check.used >= check.limit || check.limit - check.used < least {
                    return Err(AdmitError::Denied(Denial::BudgetExhausted {
                        scope: scope.key.into(),
                        budget: check.name,
                        retry_after: until_next(check.period, now),
                    }));
                }
                let rest = check.limit - check.used;
                let tighter = |current: Option<u64>| {
                    Some(current.map_or(rest as u64, |c| c.min(rest as u64)))
                };
                match check.unit {
                    BudgetUnit::Fuel => left.fuel = tighter(left.fuel),
                    BudgetUnit::Tokens => left.tokens = tighter(left.tokens),
                    BudgetUnit::Dollars => {
                        left.picodollars = Some(left.picodollars.map_or(rest, |c| c.min(rest)));
                    }
                }
            }
        }
        Ok(left)
    }

    async fn admit_shared(
        &self,
        pool: &PgPool,
        id: &str,
        request: &AdmitRequest<'_>,
        scopes: &[Scope<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), AdmitError> {
        let expires = now + request.timeout + self.lease_grace;
        let keys: Vec<&str> = scopes.iter().map(|s| s.key).collect();
        let concurrency: Vec<Option<i32>> = scopes
            .iter()
            .map(|s| s.quotas.max_concurrency.map(|n| n as i32))
            .collect();
        let rate: Vec<Option<f64>> = scopes
            .iter()
            .map(|s| s.quotas.rate.map(|r| r.per_second()))
            .collect();
        let burst: Vec<Option<f64>> = scopes
            .iter()
            .map(|s| s.quotas.rate.map(|r| r.burst() as f64))
            .collect();
        let denied: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT denied_scope, reason, retry_after_ms \
             FROM corral_admit($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(request.tenant_id)
        .bind(&self.holder)
        .bind(now)
        .bind(expires)
        .bind(&keys)
        .bind(&concurrency)
        .bind(&rate)
        .bind(&burst)
        .fetch_optional(pool)
        .await
        .map_err(DbError::from)?;
        let Some((scope, reason, retry_ms)) = denied else {
            return Ok(());
        };
        let retry_after = Duration::from_millis(retry_ms.max(0) as u64);
        Err(AdmitError::Denied(
            if reason == ErrorCode::RateLimited.as_str() {
                Denial::RateLimited { scope, retry_after }
            } else {
                Denial::ConcurrencyLimited { scope, retry_after }
            },
        ))
    }

    fn admit_local(&self, scopes: &[Scope<'_>], now: DateTime<Utc>) -> Result<Release, AdmitError> {
        let mut state = self.local.lock().expect("quota lock");
        let mut tokens_after = Vec::with_capacity(scopes.len());
        for scope in scopes {
            let entry = state.entry(scope.key.to_string()).or_default();
            let mut tokens = None;
            if let Some(rate) = scope.quotas.rate {
                let available = refill(entry.bucket, rate.per_second(), rate.burst() as f64, now);
                if available < 1.0 {
                    let wait = (1.0 - available) / rate.per_second();
                    return Err(AdmitError::Denied(Denial::RateLimited {
                        scope: scope.key.into(),
                        retry_after: Duration::from_millis((wait * 1000.0).ceil() as u64),
                    }));
                }
                tokens = Some(available - 1.0);
            }
            if let Some(max) = scope.quotas.max_concurrency
                && entry.in_flight >= max
            {
                return Err(AdmitError::Denied(Denial::ConcurrencyLimited {
                    scope: scope.key.into(),
                    retry_after: Duration::from_secs(1),
                }));
            }
            tokens_after.push(tokens);
        }
        let (mut held, mut taken) = (Vec::new(), Vec::new());
        for (scope, tokens) in scopes.iter().zip(tokens_after) {
            let entry = state.get_mut(scope.key).expect("entered above");
            if let Some(tokens) = tokens {
                let at = entry.bucket.map_or(now, |(_, at)| at.max(now));
                entry.bucket = Some((tokens, at));
                taken.push(scope.key.to_string());
            }
            if scope.quotas.max_concurrency.is_some() {
                entry.in_flight += 1;
                held.push(scope.key.to_string());
            }
        }
        Ok(Release::Local(self.local.clone(), held, taken))
    }

    /// Takes model tokens from every bucket of `scopes` (`(bucket key, tokens per
    /// minute)`; each holds a minute's worth): the same amount from each, as much of
    /// `want` as all of them have, and at least `least`. Returns what was taken, or how
    /// long until `least` would be there. On Postgres the buckets are shared by every
    /// host, like the invocation rate's.
    pub async fn take_tokens(
        &self,
        tenant_id: &str,
        scopes: &[(String, u64)],
        want: u64,
        least: u64,
    ) -> Result<u64, TokenWait> {
        let now = self.clock.now();
        let per_second: Vec<f64> = scopes.iter().map(|(_, m)| *m as f64 / 60.0).collect();
        let burst: Vec<f64> = scopes.iter().map(|(_, m)| *m as f64).collect();
        match &self.db {
            Db::Postgres(pool) => {
                let keys: Vec<&str> = scopes.iter().map(|(k, _)| k.as_str()).collect();
                let (taken, wait_ms): (f64, i64) = sqlx::query_as(
                    "SELECT taken, retry_after_ms FROM corral_take_tokens($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(tenant_id)
                .bind(&keys)
                .bind(&per_second)
                .bind(&burst)
                .bind(want as f64)
                .bind(least as f64)
                .bind(now)
                .fetch_one(pool)
                .await
                .map_err(|e| TokenWait::Unavailable(e.to_string()))?;
                if wait_ms > 0 {
                    return Err(TokenWait::For(Duration::from_millis(wait_ms as u64)));
                }
                Ok(taken as u64)
            }
            Db::Sqlite(_) => {
                let mut state = self.local.lock().expect("quota lock");
                let mut available = Vec::with_capacity(scopes.len());
                let mut taken = want as f64;
                let mut wait = 0.0f64;
                for (i, (key, _)) in scopes.iter().enumerate() {
                    let bucket = state.get(key).and_then(|s| s.bucket);
                    let tokens = refill(bucket, per_second[i], burst[i], now);
                    available.push(tokens);
                    taken = taken.min(tokens.floor());
                    if tokens < least as f64 {
                        wait = wait.max((least as f64 - tokens) / per_second[i]);
                    }
                }
                if wait > 0.0 {
                    return Err(TokenWait::For(Duration::from_secs_f64(wait.max(0.001))));
                }
                for ((key, _), tokens) in scopes.iter().zip(available) {
                    let entry = state.entry(key.clone()).or_default();
                    let at = entry.bucket.map_or(now, |(_, at)| at.max(now));
                    entry.bucket = Some((tokens - taken, at));
                }
                Ok(taken as u64)
            }
        }
    }

    /// Puts back `tokens` a call took and did not use (never past a bucket's size).
    pub async fn return_tokens(&self, tenant_id: &str, scopes: &[(String, u64)], tokens: u64) {
        if tokens == 0 {
            return;
        }
        match &self.db {
            Db::Postgres(pool) => {
                let keys: Vec<&str> = scopes.iter().map(|(k, _)| k.as_str()).collect();
                let burst: Vec<f64> = scopes.iter().map(|(_, m)| *m as f64).collect();
                if let Err(e) = sqlx::query("SELECT corral_return_tokens($1, $2, $3, $4)")
                    .bind(tenant_id)
                    .bind(&keys)
                    .bind(&burst)
                    .bind(tokens as f64)
                    .execute(pool)
                    .await
                {
                    tracing::warn!(error = %e, "could not return model tokens to their buckets");
                }
            }
            Db::Sqlite(_) => {
                let mut state = self.local.lock().expect("quota lock");
                for (key, per_minute) in scopes {
                    if let Some((held, _)) = state.get_mut(key).and_then(|s| s.bucket.as_mut()) {
                        *held = (*held + tokens as f64).min(*per_minute as f64);
                    }
                }
            }
        }
    }

    /// What `scope` has in flight and in its bucket now, for usage reports. On
    /// Postgres, read from the shared leases and buckets.
    pub async fn live(&self, tenant_id: &str, scope: &Scope<'_>) -> Result<LiveState, DbError> {
        let now = self.clock.now();
        let (in_flight, bucket) = match &self.db {
            Db::Postgres(pool) => {
                let mut tx = crate::db::begin_scoped(pool, tenant_id.into()).await?;
                let in_flight: (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM concurrency_leases WHERE scope = $1 AND expires_at > $2",
                )
                .bind(scope.key)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let bucket: Option<(f64, DateTime<Utc>)> =
                    sqlx::query_as("SELECT tokens, updated_at FROM rate_buckets WHERE scope = $1")
                        .bind(scope.key)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.commit().await?;
                (in_flight.0 as u64, bucket)
            }
            Db::Sqlite(_) => {
                let state = self.local.lock().expect("quota lock");
                let entry = state.get(scope.key);
                (
                    entry.map_or(0, |e| e.in_flight.into()),
                    entry.and_then(|e| e.bucket),
                )
            }
        };
        Ok(LiveState {
            in_flight,
            tokens: scope
                .quotas
                .rate
                .map(|r| refill(bucket, r.per_second(), r.burst() as f64, now)),
        })
    }
}

/// A scope's admissions in progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveState {
    /// Invocations holding a slot.
    pub in_flight: u64,
    /// Tokens in the bucket, if the scope has a rate quota.
    pub tokens: Option<f64>,
}

/// The tokens in a bucket at `now`: what it held, plus what accrued since, up to full.
fn refill(
    bucket: Option<(f64, DateTime<Utc>)>,
    per_second: f64,
    burst: f64,
    now: DateTime<Utc>,
) -> f64 {
    match bucket {
        None => burst,
        Some((tokens, at)) => {
            let elapsed = (now - at).to_std().unwrap_or_default().as_secs_f64();
            (tokens + per_second * elapsed).min(burst)
        }
    }
}

/// A calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A UTC day.
    Day,
    /// A UTC month.
    Month,
}

/// One budget against what its scope used.
#[derive(Debug, Clone, Copy)]
pub struct BudgetCheck {
    /// `fuel_per_day`, …
    pub name: &'static str,
    /// Its period.
    pub period: Period,
    /// What it counts.
    pub unit: BudgetUnit,
    /// The budget, in fuel, picodollars or tokens.
    pub limit: i64,
    /// What was used this period.
    pub used: i64,
}

/// Why model tokens could not be taken.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenWait {
    /// Not enough in a bucket: this long until there is.
    For(Duration),
    /// The shared buckets could not be reached.
    Unavailable(String),
}

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetUnit {
    /// Fuel units.
    Fuel,
    /// Picodollars.
    Dollars,
    /// Model tokens, input and output.
    Tokens,
}

/// What is left in the tightest budget of each unit, for one invocation; `None` where
/// no budget of that unit is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Left {
    /// Fuel.
    pub fuel: Option<u64>,
    /// Picodollars.
    pub picodollars: Option<i64>,
    /// Model tokens.
    pub tokens: Option<u64>,
}

/// The budgets `quotas` sets, each with what `used` says was spent against it.
pub fn budget_checks(quotas: &Quotas, used: &Consumption) -> Vec<BudgetCheck> {
    use BudgetUnit::{Dollars, Fuel, Tokens};
    let b = &quotas.budgets;
    let count = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    let dollars = |v: Option<rust_decimal::Decimal>| v.map(picodollars);
    [
        (
            "fuel_per_day",
            Period::Day,
            Fuel,
            count(b.fuel_per_day),
            used.day.fuel,
        ),
        (
            "fuel_per_month",
            Period::Month,
            Fuel,
            count(b.fuel_per_month),
            used.month.fuel,
        ),
        (
            "dollars_per_day",
            Period::Day,
            Dollars,
            dollars(b.dollars_per_day),
            used.day.picodollars,
        ),
        (
            "dollars_per_month",
            Period::Month,
            Dollars,
            dollars(b.dollars_per_month),
            used.month.picodollars,
        ),
        (
            "tokens_per_day",
            Period::Day,
            Tokens,
            count(b.tokens_per_day),
            used.day.tokens,
        ),
        (
            "tokens_per_month",
            Period::Month,
            Tokens,
            count(b.tokens_per_month),
            used.month.tokens,
        ),
    ]
    .into_iter()
    .filter_map(|(name, period, unit, limit, used)| {
        limit.map(|limit| BudgetCheck {
            name,
            period,
            unit,
            limit,
            used,
        })
    })
    .collect()
}

/// The start of the period after the one `now` is in.
pub fn next_period_start(period: Period, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.date_naive();
    let next = match period {
        Period::Day => today.succ_opt().expect("a next day"),
        Period::Month => {
            let (y, m) = if today.month() == 12 {
                (today.year() + 1, 1)
            } else {
                (today.year(), today.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1).expect("the first of a month")
        }
    };
    Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0).expect("midnight"))
}

fn until_next(period: Period, now: DateTime<Utc>) -> Duration {
    (next_period_start(period, now) - now)
        .to_std()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_roll_over_at_utc_midnight_and_on_the_first() {
        let at = "2026-12-31T23:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            next_period_start(Period::Day, at).to_rfc3339(),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next_period_start(Period::Month, at).to_rfc3339(),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(until_next(Period::Day, at), Duration::from_secs(3600));
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = "2026-11-27T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(refill(None, 2.0, 5.0, t0), 5.0);
        let later = t0 + chrono::Duration::milliseconds(500);
        assert_eq!(refill(Some((0.0, t0)), 2.0, 5.0, later), 1.0);
        let much_later = t0 + chrono::Duration::seconds(60);
        assert_eq!(refill(Some((0.0, t0)), 2.0, 5.0, much_later), 5.0);
        // A clock behind the bucket's adds nothing.
        assert_eq!(refill(Some((0.5, later)), 2.0, 5.0, t0), 0.5);
    }

    #[test]
    fn budgets_compare_fuel_and_picodollars() {
        let quotas: Quotas = serde_json::from_str(
            r#"{"budgets": {"fuel_per_day": 100, "dollars_per_month": "0.000001"}}"#,
        )
        .unwrap();
        let mut used = Consumption::default();
        used.day.fuel = 40;
        used.month.picodollars = 999_999;
        let checks = budget_checks(&quotas, &used);
        assert_eq!(checks.len(), 2);
        assert_eq!((checks[0].limit, checks[0].used), (100, 40));
        assert_eq!((checks[1].limit, checks[1].used), (1_000_000, 999_999));
    }
}
