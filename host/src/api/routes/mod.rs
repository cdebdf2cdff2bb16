//! One module per resource, each with `pub fn router() -> Router<AppState>`.

pub mod agents;
pub mod audit;
pub mod config;
pub mod costs;
pub mod executions;
pub mod health;
pub mod invoke;
pub mod keys;
pub mod kv;
pub mod metrics;
pub mod openapi;
pub mod schedules;
pub mod tasks;
pub mod tenants;
pub mod usage;
pub mod versions;
pub mod workflows;

use chrono::{DateTime, Utc};

use super::{ApiError, ErrorCode};

/// Parses an RFC 3339 timestamp from a query parameter.
pub fn parse_time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    format!("{name} must be an RFC 3339 time such as 2026-01-31T00:00:00Z, not {v:?}"),
                )
            })
        })
        .transpose()
}
