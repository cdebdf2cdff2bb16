//! Usage counters: what each scope — an agent (`agent:<id>`) or a tenant's agents
//! together (`tenant:<id>`) — used per UTC day. Budgets are checked against them.
//!
//! Executions are charged in the same transaction that writes their records, so a
//! counter never disagrees with the executions table. Each group-commit writer adds
//! to its own shard of a row, so concurrent batches never wait on each other; reads
//! sum the shards, and a month is the sum of its days.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::executions::ExecutionRecord;
use super::{Db, DbError, Tx};
use crate::on_tx;

/// The counter scope of an agent.
pub fn agent_scope(agent_id: &str) -> String {
    format!("agent:{agent_id}")
}

/// The counter scope of all of a tenant's agents.
pub fn tenant_scope(tenant_id: &str) -> String {
    format!("tenant:{tenant_id}")
}

/// The UTC day of `at`, as the counters key it (`2026-11-27`).
pub fn day_of(at: DateTime<Utc>) -> String {
    at.date_naive().format("%Y-%m-%d").to_string()
}

/// The first day of `at`'s UTC month.
pub fn month_start_of(at: DateTime<Utc>) -> String {
    let d = at.date_naive();
    NaiveDate::from_ymd_opt(d.year(), d.month(), 1)
        .expect("the first of a month exists")
        .format("%Y-%m-%d")
        .to_string()
}

/// Invocations, fuel and money.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Executions.
    pub invocations: i64,
    /// Fuel units.
    pub fuel: i64,
    /// Cost, in picodollars.
    pub picodollars: i64,
    /// Model tokens, input and output.
    pub tokens: i64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.invocations += other.invocations;
        self.fuel = self.fuel.saturating_add(other.fuel);
        self.picodollars = self.picodollars.saturating_add(other.picodollars);
        self.tokens = self.tokens.saturating_add(other.tokens);
    }
}

/// A scope's use today and this month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consumption {
    /// Today (UTC).
    pub day: Totals,
    /// This calendar month (UTC), today included.
    pub month: Totals,
}

/// Adds a batch of executions to the counters of their agents and tenants, in `shard`.
pub async fn charge(tx: &mut Tx, records: &[&ExecutionRecord], shard: i32) -> Result<(), DbError> {
    let mut rows: HashMap<(String, String), (String, Totals)> = HashMap::new();
    // A host failure is not the tenant's use.
    for record in records.iter().filter(|r| r.outcome != "host_failure") {
        let totals = Totals {
            invocations: 1,
            fuel: record.fuel,
            picodollars: record.cost_picodollars,
            tokens: record.llm_tokens,
        };
        let day = day_of(record.finished_at);
        for scope in [
            agent_scope(&record.agent_id),
            tenant_scope(&record.tenant_id),
        ] {
            rows.entry((scope, day.clone()))
                .or_insert_with(|| (record.tenant_id.clone(), Totals::default()))
                .1
                .add(totals);
        }
    }
    // Lock rows in one order, whoever charges.
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for ((scope, day), (tenant_id, totals)) in rows {
        on_tx!(tx, conn => sqlx::query(
            "INSERT INTO usage_counters (tenant_id, scope, day, shard, invocations, fuel, picodollars, tokens) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (scope, day, shard) DO UPDATE SET \
             invocations = usage_counters.invocations + excluded.invocations, \
             fuel = usage_counters.fuel + excluded.fuel, \
             picodollars = usage_counters.picodollars + excluded.picodollars, \
             tokens = usage_counters.tokens + excluded.tokens")
            .bind(&tenant_id)
            .bind(&scope)
            .bind(&day)
            .bind(shard)
            .bind(totals.invocations)
            .bind(totals.fuel)
            .bind(totals.picodollars)
            .bind(totals.tokens)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// What each of `scopes` used on `now`'s day and in its month.
pub async fn consumption(
    db: &Db,
    tenant_id: &str,
    scopes: &[String],
    now: DateTime<Utc>,
) -> Result<HashMap<String, Consumption>, DbError> {
    let today = day_of(now);
    let month_start = month_start_of(now);
    let mut result: HashMap<String, Consumption> = scopes
        .iter()
        .map(|s| (s.clone(), Consumption::default()))
        .collect();
    // A month's days are the ones from its first up to today; later keys (another
    // host's clock running ahead) are not this period's.
    let mut tx = db.begin_read(tenant_id).await?;
    for scope in scopes {
        let rows: Vec<(String, i64, i64, i64, i64)> = on_tx!(&mut tx, conn => sqlx::query_as(
            "SELECT day, CAST(SUM(invocations) AS BIGINT), CAST(SUM(fuel) AS BIGINT), \
             CAST(SUM(picodollars) AS BIGINT), CAST(SUM(tokens) AS BIGINT) \
             FROM usage_counters WHERE scope = $1 AND day >= $2 AND day <= $3 GROUP BY day")
            .bind(scope)
            .bind(&month_start)
            .bind(&today)
            .fetch_all(conn)
            .await)?;
        let entry = result.get_mut(scope).expect("every scope has an entry");
        for (day, invocations, fuel, picodollars, tokens) in rows {
            let totals = Totals {
                invocations,
                fuel,
                picodollars,
                tokens,
            };
            entry.month.add(totals);
            if day == today {
                entry.day.add(totals);
            }
        }
    }
    tx.commit().await?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_are_utc_calendar_periods() {
        let at = "2026-02-28T23:59:59.999Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(day_of(at), "2026-02-28");
        assert_eq!(month_start_of(at), "2026-02-01");
        let next = at + chrono::Duration::milliseconds(1);
        assert_eq!(
            (day_of(next), month_start_of(next)),
            ("2026-03-01".into(), "2026-03-01".into())
        );
    }
}
