//! Housekeeping every `corral serve` does in the background: renewing the leases of the
//! idempotency keys whose requests this node runs, and purging expired keys in small
//! batches (any node may purge; deleting an expired key twice is harmless).

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
