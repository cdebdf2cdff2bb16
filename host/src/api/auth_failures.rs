//! Requests that fail authentication (no key, an unknown or revoked one), per source
//! address: rate-limited, and audited in aggregate.
//!
//! Each source has a token bucket that only failures drain. While it is empty, a
//! request from that source whose key is not already known to this node is refused
//! with `429 too_many_auth_failures` before the database is asked — so a flood of bad
//! keys costs neither lookups nor audit rows. Failures (refused ones included) are
//! counted per source and window (`CORRAL_AUTH_AUDIT_WINDOW`, default a minute) and
//! written as one `auth.authenticate` audit event with the count when the window
//! closes (and at shutdown). Both maps are bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::db::audit::AuditEvent;

/// Most sources tracked at once; past it, the idlest are forgotten.
const MAX_SOURCES: usize = 10_000;

/// How failures are limited and aggregated.
#[derive(Debug, Clone, Copy)]
pub struct AuthFailureSettings {
    /// Failures a source may make at once.
    pub burst: u32,
    /// Failures a source regains per minute.
    pub per_minute: u32,
    /// Failures of one source within this window become one audit event.
    pub window: Duration,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One source's failures within one window.
#[derive(Debug)]
struct Aggregate {
    count: u64,
    refused: u64,
    first_path: String,
    user_agent: Option<String>,
    request_id: Option<String>,
    key_prefix: Option<String>,
}

/// The failures of this node.
#[derive(Debug)]
pub struct AuthFailures {
    settings: AuthFailureSettings,
    buckets: Mutex<HashMap<String, Bucket>>,
    windows: Mutex<HashMap<(String, DateTime<Utc>), Aggregate>>,
}

/// One failure, as the request showed it.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    /// The source address.
    pub source: &'a str,
    /// The path asked for (bounded).
    pub path: &'a str,
    /// The user agent (bounded).
    pub user_agent: Option<&'a str>,
    /// The request id.
    pub request_id: Option<&'a str>,
    /// The first characters of the key sent, if any.
    pub key_prefix: Option<&'a str>,
}

impl AuthFailures {
    /// Nothing counted yet.
    pub fn new(settings: AuthFailureSettings) -> AuthFailures {
        AuthFailures {
            settings,
            buckets: Mutex::default(),
            windows: Mutex::default(),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let per_second = f64::from(self.settings.per_minute) / 60.0;
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(f64::from(self.settings.burst));
        bucket.updated = now;
    }

    /// `Err(wait)` while `source` may not fail again; its failures drained its bucket.
    pub fn check(&self, source: &str) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("buckets lock");
        let Some(bucket) = buckets.get_mut(source) else {
            return Ok(());
        };
        self.refill(bucket, Instant::now());
        if bucket.tokens >= 1.0 {
            return Ok(());
        }
        let per_second = f64::from(self.settings.per_minute.max(1)) / 60.0;
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
    }

    /// Counts a failure (`refused`: turned away by [`check`](Self::check) without a
    /// lookup), drawing on its source's bucket.
    pub fn record(&self, failure: &Failure<'_>, refused: bool, now: DateTime<Utc>) {
        {
            let mut buckets = self.buckets.lock().expect("buckets lock");
            if buckets.len() >= MAX_SOURCES && !buckets.contains_key(failure.source) {
                // Forget the sources with the most tokens: they failed the least lately.
                let mut fullest: Vec<(String, f64)> =
                    buckets.iter().map(|(k, b)| (k.clone(), b.tokens)).collect();
                fullest.sort_by(|a, b| b.1.total_cmp(&a.1));
                for (source, _) in fullest.into_iter().take(MAX_SOURCES / 10) {
                    buckets.remove(&source);
                }
            }
            let at = Instant::now();
            let bucket = buckets.entry(failure.source.to_string()).or_insert(Bucket {
                tokens: f64::from(self.settings.burst),
                updated: at,
            });
            self.refill(bucket, at);
            bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        }
        let window = self.window_start(now);
        let mut windows = self.windows.lock().expect("windows lock");
        if windows.len() >= MAX_SOURCES && !windows.contains_key(&(failure.source.into(), window)) {
            // A flood from more sources than can be tracked: count it under one key.
            let aggregate = windows
                .entry(("(many sources)".into(), window))
                .or_insert_with(|| Aggregate::first(failure));
            aggregate.add(refused);
            return;
        }
        windows
            .entry((failure.source.to_string(), window))
            .or_insert_with(|| Aggregate::first(failure))
            .add(refused);
    }

    fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let window = self.settings.window.as_micros().max(1) as i64;
        let micros = now.timestamp_micros();
        DateTime::from_timestamp_micros(micros - micros.rem_euclid(window)).unwrap_or(now)
    }

    /// The audit events of the windows closed by `now` (all of them with `all`), each in
    /// the operator tenant `tenant_id`; they are no longer held.
    pub fn take_closed(&self, tenant_id: &str, now: DateTime<Utc>, all: bool) -> Vec<AuditEvent> {
        let window = chrono::Duration::from_std(self.settings.window).unwrap_or_default();
        let mut windows = self.windows.lock().expect("windows lock");
        let closed: Vec<(String, DateTime<Utc>)> = windows
            .keys()
            .filter(|(_, start)| all || *start + window <= now)
            .cloned()
            .collect();
        closed
            .into_iter()
            .filter_map(|key| {
                let aggregate = windows.remove(&key)?;
                let (source, start) = key;
                Some(AuditEvent {
                    id: crate::db::new_id(),
                    tenant_id: tenant_id.to_string(),
                    occurred_at: start,
                    actor_key_id: None,
                    action: "auth.authenticate".into(),
                    resource_type: "api_key".into(),
                    resource_id: aggregate.key_prefix,
                    before: None,
                    after: Some(sqlx::types::Json(serde_json::json!({
                        "path": aggregate.first_path,
                        "count": aggregate.count,
                        "rate_limited": aggregate.refused,
                        "window_start": start,
                        "window_seconds": self.settings.window.as_secs_f64(),
                    }))),
                    result: "denied".into(),
                    request_id: aggregate.request_id,
                    client_addr: Some(source),
                    user_agent: aggregate.user_agent,
                })
            })
            .collect()
    }
}

impl Aggregate {
    fn first(failure: &Failure<'_>) -> Aggregate {
        Aggregate {
            count: 0,
            refused: 0,
            first_path: failure.path.to_string(),
            user_agent: failure.user_agent.map(str::to_string),
            request_id: failure.request_id.map(str::to_string),
            key_prefix: failure.key_prefix.map(str::to_string),
        }
    }

    fn add(&mut self, refused: bool) {
        self.count += 1;
        self.refused += u64::from(refused);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(burst: u32) -> AuthFailures {
        AuthFailures::new(AuthFailureSettings {
            burst,
            per_minute: 60,
            window: Duration::from_secs(60),
        })
    }

    fn failure(source: &str) -> Failure<'_> {
        Failure {
            source,
            path: "/v1/agents",
            user_agent: None,
            request_id: None,
            key_prefix: None,
        }
    }

    #[test]
    fn a_source_is_refused_once_its_failures_drain_its_bucket_and_others_are_not() {
        let limiter = failures(3);
        let now = Utc::now();
        for _ in 0..3 {
            assert!(limiter.check("10.0.0.1").is_ok());
            limiter.record(&failure("10.0.0.1"), false, now);
        }
        let wait = limiter.check("10.0.0.1").unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check("10.0.0.2").is_ok());
    }

    #[test]
    fn failures_of_a_window_become_one_event_with_their_count() {
        let limiter = failures(100);
        let now: DateTime<Utc> = "2026-12-05T10:00:30Z".parse().unwrap();
        for _ in 0..5 {
            limiter.record(&failure("10.0.0.1"), false, now);
        }
        limiter.record(&failure("10.0.0.1"), true, now);
        limiter.record(&failure("10.0.0.2"), false, now);
        assert!(
            limiter.take_closed("op", now, false).is_empty(),
            "the window is open"
        );
        let later = now + chrono::Duration::seconds(31);
        let mut events = limiter.take_closed("op", later, false);
        events.sort_by(|a, b| a.client_addr.cmp(&b.client_addr));
        assert_eq!(events.len(), 2);
        let after = &events[0].after.as_ref().unwrap().0;
        assert_eq!(
            (after["count"].as_u64(), after["rate_limited"].as_u64()),
            (Some(6), Some(1))
        );
        assert_eq!(
            events[0].occurred_at,
            "2026-12-05T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(
            limiter.take_closed("op", later, true).is_empty(),
            "taken once"
        );
    }
}
