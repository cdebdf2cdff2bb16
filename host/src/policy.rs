//! An agent's policy: what its invocations may use. Stored as JSON with the agent.
//!
//! Every limit is optional and can only *tighten* the host's defaults: the effective
//! limits of an invocation are the host defaults, tightened by the agent's policy,
//! tightened by the limits on the call itself. Values are whole numbers in the unit
//! their name says (`_bytes`, `_ms`); zero and values above the host's ceiling are
//! refused with a message naming the field.
//!
//! Capabilities beyond the sandbox are [`Grants`], each absent (denied) unless set:
//!
//! ```json
//! { "limits": { "timeout_ms": 2000 },
//!   "grants": { "http": { "allow": ["https://api.example.com", "https://*.example.org"],
//!                         "timeout_ms": 3000, "max_response_bytes": 1048576, "max_requests": 5 } } }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::Limits;
pub use crate::runtime::egress::{HostPattern, HostRule, RuleError, Scheme};

/// An agent's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicy {
    /// Per-invocation limits.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Capabilities granted to the agent; none by default (and then not serialized).
    #[serde(default, skip_serializing_if = "Grants::is_empty")]
    pub grants: Grants,
}

impl AgentPolicy {
    /// Refuses limits outside `1..=ceiling` and unusable grants, naming the field.
    pub fn validate(&self, ceiling: &Limits) -> Result<(), String> {
        self.limits.validate(ceiling)?;
        self.grants.validate()
    }
}

/// Capabilities an invocation may use beyond the sandbox. Each is denied unless set;
/// more (key-value state, config, calling agents) will sit beside `http`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Outbound HTTP through `wasi:http/outgoing-handler`, to the hosts listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpGrant>,
}

impl Grants {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.http.is_none()
    }

    /// Refuses unusable grants, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        match &self.http {
            Some(http) => http.validate(),
            None => Ok(()),
        }
    }
}

/// Outbound HTTP to an allowlist, bounded per invocation. Requests to anything else
/// fail in the guest with a `wasi:http` error code and are recorded as denials; see
/// docs/RUNTIME.md for how names and addresses are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Where requests may go: rules such as `https://api.example.com`,
    /// `http://127.0.0.1:8080` or `https://*.example.com:8443` (see [`HostRule`]).
    pub allow: Vec<HostRule>,
    /// How long each request may wait to connect (DNS included), for the first byte of
    /// the response, and between bytes of the response body, in milliseconds. A guest
    /// may ask for shorter timeouts, never longer.
    #[serde(default = "HttpGrant::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Response body bytes each request may receive; the body is cut there and the
    /// guest's next read fails.
    #[serde(default = "HttpGrant::default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Requests one invocation may make, counting denied ones; later requests are
    /// refused with `connection-limit-reached`.
    #[serde(default = "HttpGrant::default_max_requests")]
    pub max_requests: u64,
}

impl HttpGrant {
    /// Default per-request timeout: 5 seconds.
    pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
    /// Longest per-request timeout a grant may set: 60 seconds.
    pub const CEILING_TIMEOUT_MS: u64 = 60_000;
    /// Default response body cap: 1 MiB.
    pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1 << 20;
    /// Largest response body cap a grant may set: 64 MiB.
    pub const CEILING_MAX_RESPONSE_BYTES: u64 = 64 << 20;
    /// Default requests per invocation: 10.
    pub const DEFAULT_MAX_REQUESTS: u64 = 10;
    /// Most requests per invocation a grant may set: 1,000.
    pub const CEILING_MAX_REQUESTS: u64 = 1_000;
    /// Most rules in one allowlist: 100.
    pub const CEILING_RULES: usize = 100;

    /// A grant for `allow` with the default timeout and caps.
    pub fn new(allow: Vec<HostRule>) -> HttpGrant {
        HttpGrant {
            allow,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
            max_requests: Self::DEFAULT_MAX_REQUESTS,
        }
    }

    fn default_timeout_ms() -> u64 {
        Self::DEFAULT_TIMEOUT_MS
    }

    fn default_max_response_bytes() -> u64 {
        Self::DEFAULT_MAX_RESPONSE_BYTES
    }

    fn default_max_requests() -> u64 {
        Self::DEFAULT_MAX_REQUESTS
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Refuses an empty or oversized allowlist, and zeros and values above the host's
    /// ceilings, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.allow.is_empty() {
            return Err(
                "grants.http.allow is empty; list at least one rule, or remove grants.http to deny HTTP"
                    .into(),
            );
        }
        if self.allow.len() > Self::CEILING_RULES {
            return Err(format!(
                "grants.http.allow has {} rules; this host allows at most {}",
                self.allow.len(),
                Self::CEILING_RULES
            ));
        }
        let checks = [
            ("timeout_ms", self.timeout_ms, Self::CEILING_TIMEOUT_MS),
            (
                "max_response_bytes",
                self.max_response_bytes,
                Self::CEILING_MAX_RESPONSE_BYTES,
            ),
            (
                "max_requests",
                self.max_requests,
                Self::CEILING_MAX_REQUESTS,
            ),
        ];
        for (name, value, max) in checks {
            if value == 0 {
                return Err(format!("grants.http.{name} must be at least 1"));
            }
            if value > max {
                return Err(format!(
                    "grants.http.{name} is {value}; this host allows at most {max}"
                ));
            }
        }
        Ok(())
    }
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
        assert!(serde_json::from_str::<AgentPolicy>(r#"{"grants": {"sockets": {}}}"#).is_err());
        let err = serde_json::from_str::<AgentPolicy>(
            r#"{"grants": {"http": {"allow": ["https://a.example"], "follow": true}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `follow`"), "{err}");
    }

    #[test]
    fn a_policy_without_grants_grants_nothing_and_serializes_without_them() {
        let policy: AgentPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(policy.grants.http, None);
        assert!(policy.grants.is_empty());
        assert_eq!(serde_json::to_string(&policy).unwrap(), r#"{"limits":{}}"#);
    }

    #[test]
    fn an_http_grant_parses_its_rules_and_fills_in_the_defaults() {
        let policy: AgentPolicy = serde_json::from_str(
            r#"{"grants": {"http": {"allow": ["https://api.example.com", "http://127.0.0.1:8080"]}}}"#,
        )
        .unwrap();
        let http = policy.grants.http.clone().unwrap();
        assert_eq!(http.allow.len(), 2);
        assert_eq!(http.allow[1].port, 8080);
        assert_eq!(http.timeout_ms, HttpGrant::DEFAULT_TIMEOUT_MS);
        assert_eq!(
            http.max_response_bytes,
            HttpGrant::DEFAULT_MAX_RESPONSE_BYTES
        );
        assert_eq!(http.max_requests, HttpGrant::DEFAULT_MAX_REQUESTS);
        assert!(policy.validate(&Limits::default()).is_ok());
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(
            json["grants"]["http"]["allow"],
            serde_json::json!(["https://api.example.com", "http://127.0.0.1:8080"])
        );
    }

    #[test]
    fn a_bad_rule_is_refused_when_the_policy_is_read() {
        let err = serde_json::from_str::<AgentPolicy>(
            r#"{"grants": {"http": {"allow": ["https://api.example.com/v1"]}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("remove \"/v1\""), "{err}");
    }

    #[test]
    fn http_grant_numbers_and_rules_are_checked_by_name() {
        let rule: HostRule = "https://api.example.com".parse().unwrap();
        let ok = HttpGrant::new(vec![rule.clone()]);
        assert!(ok.validate().is_ok());
        let empty = HttpGrant::new(Vec::new());
        assert!(
            empty
                .validate()
                .unwrap_err()
                .contains("grants.http.allow is empty")
        );
        let zero = HttpGrant {
            max_requests: 0,
            ..ok.clone()
        };
        assert_eq!(
            zero.validate().unwrap_err(),
            "grants.http.max_requests must be at least 1"
        );
        let slow = HttpGrant {
            timeout_ms: HttpGrant::CEILING_TIMEOUT_MS + 1,
            ..ok.clone()
        };
        assert_eq!(
            slow.validate().unwrap_err(),
            "grants.http.timeout_ms is 60001; this host allows at most 60000"
        );
        let big = HttpGrant {
            max_response_bytes: HttpGrant::CEILING_MAX_RESPONSE_BYTES + 1,
            ..ok.clone()
        };
        assert!(
            big.validate()
                .unwrap_err()
                .contains("grants.http.max_response_bytes")
        );
        let many = HttpGrant::new(vec![rule; HttpGrant::CEILING_RULES + 1]);
        assert!(many.validate().unwrap_err().contains("at most 100"));
    }
}
