//! An agent's policy: what its invocations may use. Stored as JSON with the agent.
//!
//! Every limit is optional and can only *tighten* the host's defaults: the effective
//! limits of an invocation are the host defaults, tightened by the agent's policy,
//! tightened by the limits on the call itself. Values are whole numbers in the unit
//! their name says (`_bytes`, `_ms`); zero and values above the host's ceiling are
//! refused with a message naming the field.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::Limits;

/// An agent's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicy {
    /// Per-invocation limits.
    #[serde(default)]
    pub limits: LimitOverrides,
}

/// Optional per-invocation limits, each tightening the one above it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Fuel units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Linear memory, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Wall-clock timeout, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Output size, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    /// Log size, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<u64>,
}

impl LimitOverrides {
    /// Refuses zeros and values above `ceiling`, naming the field.
    pub fn validate(&self, ceiling: &Limits) -> Result<(), String> {
        let checks = [
            ("fuel", self.fuel, ceiling.fuel),
            ("memory_bytes", self.memory_bytes, ceiling.memory_bytes),
            (
                "timeout_ms",
                self.timeout_ms,
                ceiling.timeout.as_millis() as u64,
            ),
            ("output_bytes", self.output_bytes, ceiling.output_bytes),
            ("log_bytes", self.log_bytes, ceiling.log_bytes),
        ];
        for (name, value, max) in checks {
            match value {
                Some(0) => return Err(format!("limits.{name} must be at least 1")),
                Some(v) if v > max => {
                    return Err(format!(
                        "limits.{name} is {v}; this host allows at most {max}"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `limits`, with each field lowered to this override where one is set.
    pub fn tighten(&self, limits: Limits) -> Limits {
        Limits {
            fuel: self.fuel.map_or(limits.fuel, |v| v.min(limits.fuel)),
            memory_bytes: self
                .memory_bytes
                .map_or(limits.memory_bytes, |v| v.min(limits.memory_bytes)),
            timeout: self.timeout_ms.map_or(limits.timeout, |v| {
                Duration::from_millis(v).min(limits.timeout)
            }),
            output_bytes: self
                .output_bytes
                .map_or(limits.output_bytes, |v| v.min(limits.output_bytes)),
            log_bytes: self
                .log_bytes
                .map_or(limits.log_bytes, |v| v.min(limits.log_bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_only_ever_tighten() {
        let base = Limits::default();
        let loose = LimitOverrides {
            fuel: Some(base.fuel * 2),
            ..Default::default()
        };
        assert_eq!(loose.tighten(base).fuel, base.fuel);
        let tight = LimitOverrides {
            timeout_ms: Some(10),
            ..Default::default()
        };
        assert_eq!(tight.tighten(base).timeout, Duration::from_millis(10));
    }

    #[test]
    fn zero_and_above_the_ceiling_are_refused_by_name() {
        let ceiling = Limits::default();
        let zero = LimitOverrides {
            memory_bytes: Some(0),
            ..Default::default()
        };
        assert!(
            zero.validate(&ceiling)
                .unwrap_err()
                .contains("limits.memory_bytes")
        );
        let huge = LimitOverrides {
            log_bytes: Some(ceiling.log_bytes + 1),
            ..Default::default()
        };
        assert!(huge.validate(&ceiling).unwrap_err().contains("at most"));
        let exact = LimitOverrides {
            fuel: Some(ceiling.fuel),
            ..Default::default()
        };
        assert!(exact.validate(&ceiling).is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<AgentPolicy>(r#"{"limits": {"fuel_units": 5}}"#).is_err());
    }
}
