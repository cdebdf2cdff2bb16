//! Housekeeping every `corral serve` does in the background: renewing the leases of the
//! idempotency keys whose requests this node runs, and purging expired keys in small
//! batches (any node may purge; deleting an expired key twice is harmless); and
//! retention ([`retain`]): one node at a time deletes what has been kept long enough,
//! in small batches, and records each purge in the tenant's audit trail.

use std::time::Duration;

use crate::db::idempotency;
use crate::invocations::Invocations;

/// Keys deleted per statement.
const PURGE_BATCH: i64 = 1000;

/// Runs until aborted.
pub async fn run(pipeline: Invocations) {
    let settings = pipeline.settings.clone();
    let renew_every = (settings.idempotency_lease / 3).max(Duration::from_millis(250));
    let purge_every =
        (settings.idempotency_ttl / 2).clamp(Duration::from_millis(500), Duration::from_secs(60));
    let mut renewal = tokio::time::interval(renew_every);
    let mut purge = tokio::time::interval(purge_every);
    let lease = chrono::Duration::from_std(settings.idempotency_lease).unwrap_or_default();
    let ttl = chrono::Duration::from_std(settings.idempotency_ttl).unwrap_or_default();
    loop {
        tokio::select! {
            _ = renewal.tick() => {
                let until = pipeline.quotas.clock().now() + lease;
                if let Err(e) = idempotency::renew(&pipeline.db, &pipeline.node, until).await {
                    tracing::warn!(error = %e, "renewing idempotency leases failed");
                }
            }
            _ = purge.tick() => {
                let now = pipeline.quotas.clock().now();
                loop {
                    match idempotency::purge(&pipeline.db, now, ttl, PURGE_BATCH).await {
                        Ok(n) if n as i64 == PURGE_BATCH => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "purging expired idempotency keys failed");
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Rows deleted per statement by retention.
const RETENTION_BATCH: i64 = 1000;

/// Runs retention every `retention.interval` until aborted.
pub async fn retain(pipeline: Invocations) {
    let mut tick = tokio::time::interval(pipeline.settings.retention.interval);
    loop {
        tick.tick().await;
        if let Err(e) = retain_once(&pipeline).await {
            tracing::warn!(error = %e, "a retention purge failed; the next one picks up");
        }
        if let Err(e) = collect_artifacts(&pipeline).await {
            tracing::warn!(error = %e, "collecting compiled artifacts failed");
        }
    }
}

/// Collects this node's artifact cache (every node has its own): artifacts no stored
/// version of a live agent needs, then the least recently written past the bound.
pub async fn collect_artifacts(pipeline: &Invocations) -> Result<(), crate::db::DbError> {
    let sql = "SELECT DISTINCT v.sha256 FROM agent_versions v JOIN agents a ON a.id = v.agent_id \
               WHERE a.deleted_at IS NULL";
    let rows: Vec<(String,)> = crate::in_scope!(&pipeline.db, crate::db::Wide::Housekeeping, conn => sqlx::query_as(sql).fetch_all(conn).await)?;
    let needed = rows.into_iter().map(|(hash,)| hash).collect();
    let settings = pipeline.settings.retention;
    let runtime = pipeline.runtime.clone();
    let (deleted, kept) = tokio::task::spawn_blocking(move || {
        runtime.collect_artifacts(&needed, settings.artifact_bytes, settings.artifact_min_age)
    })
    .await
    .unwrap_or((0, 0));
    if deleted > 0 {
        tracing::info!(deleted, kept_bytes = kept, "collected compiled artifacts");
    }
    Ok(())
}

/// One purge, if it is this node's turn.
pub async fn retain_once(pipeline: &Invocations) -> Result<(), crate::db::DbError> {
    use crate::db::retention::{self, take_turn};
    use crate::policy::Retention;
    let Some(turn) = take_turn(&pipeline.db).await? else {
        return Ok(());
    };
    let result = async {
        let settings = pipeline.settings.retention;
        let now = pipeline.quotas.clock().now();
        let before = |keep: Duration| now - chrono::Duration::from_std(keep).unwrap_or_default();
        let mut after = None;
        loop {
            let page = crate::db::tenants::list(&pipeline.db, after.as_deref(), 200).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for tenant in &page {
                let own = tenant.policy.0.retention;
                let mut purged = [0u64; 3];
                let cutoffs = [
                    before(Retention::effective(
                        own.executions_days,
                        settings.executions,
                    )),
                    before(Retention::effective(own.logs_days, settings.logs)),
                    before(
                        Retention::effective(own.audit_days, settings.audit)
                            .max(settings.audit_floor),
                    ),
                ];
                loop {
                    let n = retention::executions(
                        &pipeline.db,
                        &tenant.id,
                        cutoffs[0],
                        RETENTION_BATCH,
                    )
                    .await?;
                    purged[0] += n;
                    if (n as i64) < RETENTION_BATCH {
                        break;
                    }
                }
                loop {
                    let n = retention::logs(&pipeline.db, &tenant.id, cutoffs[1], RETENTION_BATCH)
                        .await?;
                    purged[1] += n;
                    if (n as i64) < RETENTION_BATCH {
                        break;
                    }
                }
                loop {
                    let n = retention::audit(&pipeline.db, &tenant.id, cutoffs[2], RETENTION_BATCH)
                        .await?;
                    purged[2] += n;
                    if (n as i64) < RETENTION_BATCH {
                        break;
                    }
                }
                if purged.iter().any(|&n| n > 0) {
                    let mut event = crate::invocations::Actor {
                        tenant_id: tenant.id.clone(),
                        ..Default::default()
                    }
                    .event("retention.purge", "tenant", Some(&tenant.id));
                    event.occurred_at = now;
                    event.after = Some(sqlx::types::Json(serde_json::json!({
                        "executions_deleted": purged[0],
                        "logs_emptied": purged[1],
                        "audit_events_deleted": purged[2],
                        "executions_before": cutoffs[0],
                        "logs_before": cutoffs[1],
                        "audit_before": cutoffs[2],
                    })));
                    pipeline.audit_alone(event).await;
                }
            }
            if page.len() < 200 {
                break;
            }
        }
        let mut kv = 0;
        loop {
            let n = retention::kv(&pipeline.db, now, RETENTION_BATCH).await?;
            kv += n;
            if (n as i64) < RETENTION_BATCH {
                break;
            }
        }
        if kv > 0 {
            tracing::info!(
                kv_entries = kv,
                "reaped expired and orphaned key-value entries"
            );
        }
        Ok(())
    }
    .await;
    turn.give_back().await;
    result
}
