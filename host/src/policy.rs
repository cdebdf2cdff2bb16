//! Policies: what an agent's invocations may use, and what a tenant's agents may use
//! together. Stored as JSON with the agent and with the tenant.
//!
//! Every limit is optional and can only *tighten*: the effective per-invocation limits
//! are the host defaults, tightened by the tenant's policy, by the agent's, and by the
//! limits on the call itself. Quotas (concurrency, rate, budgets) are enforced at both
//! levels — the agent's for that agent, the tenant's for all its agents together — so
//! the tighter of the two always holds. Values are whole numbers in the unit their
//! name says (`_bytes`, `_ms`, `fuel_`, `dollars_`); zero, negatives and values above
//! the host's ceiling are refused with a message naming the field.
//!
//! Capabilities beyond the sandbox are [`Grants`], each absent (denied) unless set:
//!
//! ```json
//! { "limits": { "timeout_ms": 2000 },
//!   "grants": { "http": { "allow": ["https://api.example.com", "https://*.example.org"],
//!                         "timeout_ms": 3000, "max_response_bytes": 1048576, "max_requests": 5 },
//!               "kv": { "max_value_bytes": 65536, "max_keys": 1000, "max_total_bytes": 10485760 },
//!               "secrets": ["API_TOKEN"] } }
//! ```

use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::limits::Limits;
pub use crate::runtime::egress::{HostPattern, HostRule, RuleError, Scheme};

/// An agent's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicy {
    /// Per-invocation limits.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Concurrency, rate and budgets of this agent.
    #[serde(default)]
    pub quotas: Quotas,
    /// Capabilities granted to the agent; none by default (and then not serialized).
    #[serde(default, skip_serializing_if = "Grants::is_empty")]
    pub grants: Grants,
    /// Keep each execution's whole input in its record (bounded by the body limit);
    /// otherwise only a 1 KiB excerpt is kept. Inputs may hold users' data: opt in.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_input: bool,
}

impl AgentPolicy {
    /// Refuses zeros, negatives and values above the host's ceiling, naming the field.
    pub fn validate(&self, ceiling: &Limits) -> Result<(), String> {
        self.limits.validate(ceiling)?;
        self.quotas.validate()?;
        self.grants.validate()
    }
}

/// Capabilities an invocation may use beyond the sandbox. Each is denied unless set;
/// an agent's own config values need no grant: only its secrets do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Outbound HTTP through `wasi:http/outgoing-handler`, to the hosts listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpGrant>,
    /// Key-value state through `corral:agent/kv`, within the grant's limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv: Option<KvGrant>,
    /// Calls to the agents listed (of the same tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<AgentsGrant>,
    /// Model calls through `corral:agent/llm`, to the model aliases listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmGrant>,
    /// The agent's secrets it may read through `config.get-secret`, by name; every
    /// other secret is refused (`denied`) and the refusal recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// The most secrets one policy may grant.
pub const MAX_GRANTED_SECRETS: usize = 64;

impl Grants {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.http.is_none()
            && self.kv.is_none()
            && self.agents.is_none()
            && self.llm.is_none()
            && self.secrets.is_empty()
    }

    /// Whether the secret `name` is granted.
    pub fn grants_secret(&self, name: &str) -> bool {
        self.secrets.iter().any(|granted| granted == name)
    }

    /// Refuses unusable grants, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(http) = &self.http {
            http.validate()?;
        }
        if let Some(kv) = &self.kv {
            kv.validate()?;
        }
        if let Some(agents) = &self.agents {
            agents.validate()?;
        }
        if let Some(llm) = &self.llm {
            llm.validate()?;
        }
        if self.secrets.len() > MAX_GRANTED_SECRETS {
            return Err(format!(
                "grants.secrets lists {} secrets; this host allows at most {MAX_GRANTED_SECRETS}",
                self.secrets.len()
            ));
        }
        for name in &self.secrets {
            check_config_name(name).map_err(|why| format!("grants.secrets: {why}"))?;
        }
        Ok(())
    }
}

/// Key-value state that outlives an invocation, kept per agent (and so per tenant).
/// Without it every `corral:agent/kv` call fails with `denied`; with it, a `set` that
/// would pass one of these limits fails with `limit-exceeded` and stores nothing. See
/// docs/CAPABILITIES.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KvGrant {
    /// Bytes of one value.
    #[serde(default = "KvGrant::default_max_value_bytes")]
    pub max_value_bytes: u64,
    /// Keys the agent may hold at once (expired ones do not count).
    #[serde(default = "KvGrant::default_max_keys")]
    pub max_keys: u64,
    /// Bytes of all the agent's keys and values together (expired ones do not count).
    #[serde(default = "KvGrant::default_max_total_bytes")]
    pub max_total_bytes: u64,
}

impl Default for KvGrant {
    fn default() -> Self {
        KvGrant {
            max_value_bytes: Self::DEFAULT_MAX_VALUE_BYTES,
            max_keys: Self::DEFAULT_MAX_KEYS,
            max_total_bytes: Self::DEFAULT_MAX_TOTAL_BYTES,
        }
    }
}

impl KvGrant {
    /// Default value size cap: 64 KiB.
    pub const DEFAULT_MAX_VALUE_BYTES: u64 = 64 << 10;
    /// Largest value size cap a grant may set: 1 MiB. Every value crosses into the
    /// host and back whole, so this bounds what one call can make the host hold.
    pub const CEILING_MAX_VALUE_BYTES: u64 = 1 << 20;
    /// Default key count: 1,000.
    pub const DEFAULT_MAX_KEYS: u64 = 1_000;
    /// Most keys a grant may allow: 100,000.
    pub const CEILING_MAX_KEYS: u64 = 100_000;
    /// Default total of keys and values: 10 MiB.
    pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 10 << 20;
    /// Largest total a grant may allow: 256 MiB.
    pub const CEILING_MAX_TOTAL_BYTES: u64 = 256 << 20;

    fn default_max_value_bytes() -> u64 {
        Self::DEFAULT_MAX_VALUE_BYTES
    }

    fn default_max_keys() -> u64 {
        Self::DEFAULT_MAX_KEYS
    }

    fn default_max_total_bytes() -> u64 {
        Self::DEFAULT_MAX_TOTAL_BYTES
    }

    /// Refuses zeros and values above the host's ceilings, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            (
                "max_value_bytes",
                self.max_value_bytes,
                Self::CEILING_MAX_VALUE_BYTES,
            ),
            ("max_keys", self.max_keys, Self::CEILING_MAX_KEYS),
            (
                "max_total_bytes",
                self.max_total_bytes,
                Self::CEILING_MAX_TOTAL_BYTES,
            ),
        ];
        for (name, value, max) in checks {
            check_count(&format!("grants.kv.{name}"), value, max)?;
        }
        Ok(())
    }
}

/// The longest name of a config value or secret.
pub const MAX_CONFIG_NAME_CHARS: usize = 64;

/// Checks the name of a config value or secret: 1 to 64 characters, ASCII letters,
/// digits and `_`, not starting with a digit (`[A-Za-z_][A-Za-z0-9_]{0,63}`), so every
/// name is also a valid environment variable name.
pub fn check_config_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_CONFIG_NAME_CHARS
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if valid {
        Ok(())
    } else {
        let shown: String = name.chars().take(MAX_CONFIG_NAME_CHARS + 8).collect();
        Err(format!(
            "{shown:?} is not a valid name: use 1 to {MAX_CONFIG_NAME_CHARS} ASCII letters, digits and '_', not starting with a digit"
        ))
    }
}

/// Calls to other agents of the same tenant, each a full execution of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentsGrant {
    /// The agents this one may call, by name; `"*"` spells out "any agent of the tenant".
    pub allow: Vec<String>,
    /// Calls one invocation may make.
    #[serde(default = "AgentsGrant::default_max_calls")]
    pub max_calls: u64,
}

impl AgentsGrant {
    /// Default calls per invocation: 16.
    pub const DEFAULT_MAX_CALLS: u64 = 16;
    /// Most calls per invocation a grant may set: 1,000.
    pub const CEILING_MAX_CALLS: u64 = 1_000;

    fn default_max_calls() -> u64 {
        Self::DEFAULT_MAX_CALLS
    }

    /// A grant to call the agents in `allow`, with the default call count.
    pub fn new(allow: Vec<String>) -> AgentsGrant {
        AgentsGrant {
            allow,
            max_calls: Self::DEFAULT_MAX_CALLS,
        }
    }

    /// Whether `agent` may be called.
    pub fn allows(&self, agent: &str) -> bool {
        self.allow.iter().any(|a| a == "*" || a == agent)
    }

    /// Refuses an empty list, bad names and call counts outside `1..=1000`.
    pub fn validate(&self) -> Result<(), String> {
        if self.allow.is_empty() {
            return Err(
                "grants.agents.allow is empty; name the agents it may call, or remove grants.agents"
                    .into(),
            );
        }
        if let Some(bad) = self
            .allow
            .iter()
            .find(|a| a.as_str() != "*" && !crate::policy::is_agent_name(a))
        {
            return Err(format!(
                "grants.agents.allow: {bad:?} is not an agent name (or \"*\" for any)"
            ));
        }
        if self.max_calls == 0 || self.max_calls > Self::CEILING_MAX_CALLS {
            return Err(format!(
                "grants.agents.max_calls is {}; it must be between 1 and {}",
                self.max_calls,
                Self::CEILING_MAX_CALLS
            ));
        }
        Ok(())
    }
}

/// Model calls, to the operator's model aliases listed (see docs/MODELS.md). Every call
/// is priced and recorded; a model the operator has not configured (and priced) is
/// refused at call time exactly like one not listed here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmGrant {
    /// The model aliases the agent may call.
    pub models: Vec<String>,
    /// Calls one invocation may make.
    #[serde(default = "LlmGrant::default_max_calls")]
    pub max_calls: u64,
    /// Most tokens of answer one call may ask for; a call asking for more is clamped
    /// to it (and one asking for none gets it).
    #[serde(default = "LlmGrant::default_max_tokens_per_call")]
    pub max_tokens_per_call: u32,
    /// Keep each call's prompt and answer in its record (each cut at
    /// [`LlmGrant::RECORDED_BYTES`]). Prompts may hold users' data: opt in.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_prompts: bool,
}

impl LlmGrant {
    /// Default calls per invocation: 16.
    pub const DEFAULT_MAX_CALLS: u64 = 16;
    /// Most calls per invocation a grant may set: 1,000.
    pub const CEILING_MAX_CALLS: u64 = 1_000;
    /// Default answer tokens per call: 1,024.
    pub const DEFAULT_MAX_TOKENS_PER_CALL: u32 = 1_024;
    /// Most answer tokens per call a grant may allow: 200,000.
    pub const CEILING_MAX_TOKENS_PER_CALL: u32 = 200_000;
    /// Most model aliases one grant may list.
    pub const CEILING_MODELS: usize = 64;
    /// Bytes of a prompt or an answer kept when `record_prompts` is set.
    pub const RECORDED_BYTES: usize = 64 << 10;

    fn default_max_calls() -> u64 {
        Self::DEFAULT_MAX_CALLS
    }

    fn default_max_tokens_per_call() -> u32 {
        Self::DEFAULT_MAX_TOKENS_PER_CALL
    }

    /// A grant for `models` with the default bounds.
    pub fn new(models: Vec<String>) -> LlmGrant {
        LlmGrant {
            models,
            max_calls: Self::DEFAULT_MAX_CALLS,
            max_tokens_per_call: Self::DEFAULT_MAX_TOKENS_PER_CALL,
            record_prompts: false,
        }
    }

    /// Whether the alias `model` is granted.
    pub fn allows(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
    }

    /// Refuses an empty or overlong list, bad aliases and bounds outside their ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.models.is_empty() {
            return Err(
                "grants.llm.models is empty; name the model aliases it may call, or remove grants.llm"
                    .into(),
            );
        }
        if self.models.len() > Self::CEILING_MODELS {
            return Err(format!(
                "grants.llm.models lists {} models; at most {}",
                self.models.len(),
                Self::CEILING_MODELS
            ));
        }
        if let Some(bad) = self.models.iter().find(|m| !is_model_alias(m)) {
            return Err(format!(
                "grants.llm.models: {bad:?} is not a model alias (1 to 64 of a-z 0-9 . _ -)"
            ));
        }
        check_count(
            "grants.llm.max_calls",
            self.max_calls,
            Self::CEILING_MAX_CALLS,
        )?;
        check_count(
            "grants.llm.max_tokens_per_call",
            self.max_tokens_per_call.into(),
            Self::CEILING_MAX_TOKENS_PER_CALL.into(),
        )
    }
}

/// Whether `alias` may name a model: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter
/// or digit.
pub fn is_model_alias(alias: &str) -> bool {
    alias
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && alias.len() <= 64
        && alias
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Whether `name` is a valid agent name: 1 to 64 of `a-z 0-9 - _`, starting with a
/// letter.
pub fn is_agent_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Outbound HTTP to an allowlist, bounded per invocation. Requests to anything else
/// fail in the guest with a `wasi:http` error code and are recorded as denials; see
/// docs/RUNTIME.md for how names and addresses are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Where requests may go: rules such as `https://api.example.com`,
    /// `http://127.0.0.1:8080` or `https://*.example.com:8443` (see [`HostRule`]).
    #[schema(value_type = Vec<String>)]
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

/// A tenant's policy: defaults every agent's limits are tightened by, quotas for all
/// the tenant's agents together, and plan caps on what it may store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicy {
    /// Per-invocation limits for every agent of the tenant.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Concurrency, rate and budgets of all the tenant's agents together.
    #[serde(default)]
    pub quotas: Quotas,
    /// What the tenant may store.
    #[serde(default)]
    pub caps: PlanCaps,
    /// How long its records are kept, within the host's bounds.
    #[serde(default, skip_serializing_if = "Retention::is_empty")]
    pub retention: Retention,
}

/// How long a tenant's records are kept, in days; each may only shorten the host's
/// (`CORRAL_RETAIN_*`), and audit events are kept at least `CORRAL_AUDIT_FLOOR`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Executions (and their results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executions_days: Option<u32>,
    /// Executions' logs (the rest of the record stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_days: Option<u32>,
    /// Audit events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_days: Option<u32>,
}

impl Retention {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &Retention::default()
    }

    /// Refuses zero and an audit retention under `audit_floor`, naming the field.
    pub fn validate(&self, audit_floor: std::time::Duration) -> Result<(), String> {
        for (name, days) in [
            ("executions_days", self.executions_days),
            ("logs_days", self.logs_days),
            ("audit_days", self.audit_days),
        ] {
            if days == Some(0) {
                return Err(format!("retention.{name} must be at least 1"));
            }
        }
        if let Some(days) = self.audit_days
            && u64::from(days) * 86_400 < audit_floor.as_secs()
        {
            return Err(format!(
                "retention.audit_days is {days}; this host keeps audit events at least {} days",
                audit_floor.as_secs().div_ceil(86_400)
            ));
        }
        Ok(())
    }

    /// The tenant's retention of one kind: its own days, never longer than the host's.
    pub fn effective(days: Option<u32>, host: std::time::Duration) -> std::time::Duration {
        days.map_or(host, |d| {
            host.min(std::time::Duration::from_secs(u64::from(d) * 86_400))
        })
    }
}

impl TenantPolicy {
    /// Refuses zeros, negatives and values above the host's ceilings, naming the field.
    pub fn validate(&self, ceiling: &Limits, max_upload_bytes: u64) -> Result<(), String> {
        self.limits.validate(ceiling)?;
        self.quotas.validate()?;
        self.caps.validate(max_upload_bytes)
    }
}

/// The most a concurrency quota may be set to.
pub const MAX_CONCURRENCY: u32 = 100_000;
/// The most requests a rate quota may allow per second (and the largest burst).
pub const MAX_RATE_PER_SECOND: u64 = 1_000_000;
/// The largest dollar budget: what fits in the picodollar counters, rounded down.
pub const MAX_DOLLARS: u64 = 1_000_000;

/// Quotas of one scope (an agent, or a tenant's agents together). Unset means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Invocations running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// A token bucket on invocations started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimit>,
    /// Spending per calendar period (UTC).
    #[serde(default, skip_serializing_if = "Budgets::is_empty")]
    pub budgets: Budgets,
    /// Model tokens (input and output) per minute, a bucket that holds a minute's worth:
    /// each model call takes what it reserves, and gets back what it did not use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

impl Quotas {
    /// Whether any quota is set.
    pub fn is_empty(&self) -> bool {
        self.max_concurrency.is_none()
            && self.rate.is_none()
            && self.budgets.is_empty()
            && self.tokens_per_minute.is_none()
    }

    /// Refuses zeros and values above the host's ceilings, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(n) = self.max_concurrency {
            check_count("quotas.max_concurrency", n.into(), MAX_CONCURRENCY.into())?;
        }
        if let Some(rate) = &self.rate {
            rate.validate()?;
        }
        if let Some(tokens) = self.tokens_per_minute {
            check_count("quotas.tokens_per_minute", tokens, MAX_TOKENS_PER_MINUTE)?;
        }
        self.budgets.validate()
    }
}

/// The most model tokens per minute a quota may allow: 100 million.
pub const MAX_TOKENS_PER_MINUTE: u64 = 100_000_000;

/// `requests` per `per`, with bursts of up to `burst` (default: `requests`, at most
/// [`MAX_RATE_PER_SECOND`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Invocations allowed per period.
    pub requests: u64,
    /// The period.
    pub per: RatePeriod,
    /// The most invocations that may start at once after a quiet spell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

/// The period of a [`RateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RatePeriod {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
}

impl RateLimit {
    /// Tokens added per second.
    pub fn per_second(&self) -> f64 {
        let seconds = match self.per {
            RatePeriod::Second => 1.0,
            RatePeriod::Minute => 60.0,
            RatePeriod::Hour => 3600.0,
        };
        self.requests as f64 / seconds
    }

    /// The bucket's size: `burst`, or else `requests` — never more than
    /// [`MAX_RATE_PER_SECOND`], which an explicit burst is held to as well (a rate per
    /// minute or hour may count more requests than that).
    pub fn burst(&self) -> u64 {
        self.burst.unwrap_or(self.requests.min(MAX_RATE_PER_SECOND))
    }

    fn validate(&self) -> Result<(), String> {
        let ceiling = match self.per {
            RatePeriod::Second => MAX_RATE_PER_SECOND,
            RatePeriod::Minute => MAX_RATE_PER_SECOND * 60,
            RatePeriod::Hour => MAX_RATE_PER_SECOND * 3600,
        };
        check_count("quotas.rate.requests", self.requests, ceiling)?;
        if let Some(burst) = self.burst {
            check_count("quotas.rate.burst", burst, MAX_RATE_PER_SECOND)?;
        }
        Ok(())
    }
}

/// Budgets per UTC calendar day and month. Fuel in fuel units; dollars as exact
/// decimal strings (`"2.50"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Fuel per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_per_day: Option<u64>,
    /// Fuel per month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_per_month: Option<u64>,
    /// US dollars per UTC day, as an exact decimal string, e.g. `"2.50"` (read back as
    /// written). A JSON number is also accepted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "exact_dollars"
    )]
    #[schema(value_type = Option<String>)]
    pub dollars_per_day: Option<Decimal>,
    /// US dollars per UTC calendar month, as an exact decimal string, e.g. `"100"`. A
    /// JSON number is also accepted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "exact_dollars"
    )]
    #[schema(value_type = Option<String>)]
    pub dollars_per_month: Option<Decimal>,
    /// Model tokens (input and output together) per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Model tokens (input and output together) per month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_month: Option<u64>,
}

/// A dollar amount, as a string (`"2.50"`) or a JSON number taken exactly as written
/// (`2.50`, `1e-3`): never through a binary float, which would round it.
fn exact_dollars<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    use serde::de::Error;
    let raw: Option<Box<serde_json::value::RawValue>> = Option::deserialize(d)?;
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get().trim();
    let text = match serde_json::from_str::<String>(text) {
        Ok(quoted) => quoted,
        Err(_) => text.to_string(),
    };
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(&text)
    } else {
        text.parse::<Decimal>()
    };
    parsed
        .map(Some)
        .map_err(|e| D::Error::custom(format!("{text:?} is not a dollar amount: {e}")))
}

impl Budgets {
    /// Whether no budget is set.
    pub fn is_empty(&self) -> bool {
        self == &Budgets::default()
    }

    fn validate(&self) -> Result<(), String> {
        for (name, fuel) in [
            ("fuel_per_day", self.fuel_per_day),
            ("fuel_per_month", self.fuel_per_month),
            ("tokens_per_day", self.tokens_per_day),
            ("tokens_per_month", self.tokens_per_month),
        ] {
            if let Some(fuel) = fuel {
                check_count(&format!("quotas.budgets.{name}"), fuel, i64::MAX as u64)?;
            }
        }
        for (name, dollars) in [
            ("dollars_per_day", self.dollars_per_day),
            ("dollars_per_month", self.dollars_per_month),
        ] {
            let Some(dollars) = dollars else { continue };
            if dollars <= Decimal::ZERO {
                return Err(format!(
                    "quotas.budgets.{name} must be more than 0 dollars, not {dollars}"
                ));
            }
            if dollars > Decimal::from(MAX_DOLLARS) {
                return Err(format!(
                    "quotas.budgets.{name} is {dollars} dollars; this host allows at most {MAX_DOLLARS}"
                ));
            }
            if dollars.scale() > 12 {
                return Err(format!(
                    "quotas.budgets.{name} has more than 12 decimals (picodollars are the smallest unit)"
                ));
            }
        }
        Ok(())
    }
}

/// What a tenant may store. Unset means only the host's own limits apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanCaps {
    /// Live agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_agents: Option<u64>,
    /// Stored versions of live agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_versions: Option<u64>,
    /// Bytes of all stored versions of live agents together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_component_bytes: Option<u64>,
    /// Bytes of one component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_component_bytes: Option<u64>,
    /// Tasks waiting at once (queued, scheduled, blocked or retrying); a submission
    /// past it is `429 queue_full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_tasks: Option<u64>,
}

impl PlanCaps {
    fn validate(&self, max_upload_bytes: u64) -> Result<(), String> {
        let checks = [
            ("max_agents", self.max_agents, i64::MAX as u64),
            ("max_versions", self.max_versions, i64::MAX as u64),
            (
                "max_total_component_bytes",
                self.max_total_component_bytes,
                i64::MAX as u64,
            ),
            (
                "max_component_bytes",
                self.max_component_bytes,
                max_upload_bytes,
            ),
            ("max_queued_tasks", self.max_queued_tasks, i64::MAX as u64),
        ];
        for (name, value, max) in checks {
            if let Some(value) = value {
                check_count(&format!("caps.{name}"), value, max)?;
            }
        }
        Ok(())
    }
}

fn check_count(name: &str, value: u64, max: u64) -> Result<(), String> {
    if value == 0 {
        return Err(format!("{name} must be at least 1"));
    }
    if value > max {
        return Err(format!("{name} is {value}; this host allows at most {max}"));
    }
    Ok(())
}

/// Optional per-invocation limits, each tightening the one above it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    fn quotas_parse_with_explicit_units_and_are_checked() {
        let policy: AgentPolicy = serde_json::from_str(
            r#"{"quotas": {"max_concurrency": 2, "rate": {"requests": 10, "per": "minute"},
                "budgets": {"fuel_per_day": 1000, "dollars_per_month": "2.50"}}}"#,
        )
        .unwrap();
        let rate = policy.quotas.rate.unwrap();
        assert_eq!((rate.burst(), rate.per_second()), (10, 10.0 / 60.0));
        assert_eq!(
            policy.quotas.budgets.dollars_per_month,
            Some(Decimal::new(250, 2))
        );
        assert!(policy.validate(&Limits::default()).is_ok());

        let refused = |json: &str| {
            serde_json::from_str::<AgentPolicy>(json)
                .map_err(|e| e.to_string())
                .and_then(|p| p.validate(&Limits::default()))
                .unwrap_err()
        };
        assert!(refused(r#"{"quotas": {"max_concurrency": 0}}"#).contains("max_concurrency"));
        assert!(refused(r#"{"quotas": {"max_concurrency": -1}}"#).contains("invalid value"));
        assert!(refused(r#"{"quotas": {"rate": {"requests": 5}}}"#).contains("per"));
        assert!(
            refused(r#"{"quotas": {"rate": {"requests": 5, "per": "fortnight"}}}"#)
                .contains("unknown variant")
        );
        assert!(
            refused(r#"{"quotas": {"budgets": {"dollars_per_day": "-1"}}}"#)
                .contains("dollars_per_day")
        );
        assert!(
            refused(r#"{"quotas": {"budgets": {"dollars_per_day": "9999999"}}}"#)
                .contains("at most")
        );
        assert!(
            refused(r#"{"quotas": {"budgets": {"fuel_per_week": 5}}}"#).contains("unknown field")
        );
        assert!(refused(r#"{"quotas": {"max_concurrency": 100001}}"#).contains("at most 100000"));
    }

    #[test]
    fn the_default_burst_is_requests_but_never_past_the_largest_burst() {
        let rate = |json: &str| serde_json::from_str::<RateLimit>(json).unwrap();
        let hourly = rate(r#"{"requests": 3600000000, "per": "hour"}"#);
        assert!(
            Quotas {
                rate: Some(hourly),
                ..Quotas::default()
            }
            .validate()
            .is_ok()
        );
        assert_eq!(hourly.burst(), MAX_RATE_PER_SECOND);
        assert_eq!(rate(r#"{"requests": 50, "per": "minute"}"#).burst(), 50);
    }

    #[test]
    fn plan_caps_are_bounded_by_the_upload_limit() {
        let policy = TenantPolicy {
            caps: PlanCaps {
                max_component_bytes: Some(2 << 20),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(policy.validate(&Limits::default(), 4 << 20).is_ok());
        assert!(
            policy
                .validate(&Limits::default(), 1 << 20)
                .unwrap_err()
                .contains("caps.max_component_bytes")
        );
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
        assert_eq!(
            serde_json::to_string(&policy).unwrap(),
            r#"{"limits":{},"quotas":{}}"#
        );
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
    fn a_kv_grant_fills_in_the_defaults_and_is_checked_by_name() {
        let policy: AgentPolicy = serde_json::from_str(r#"{"grants": {"kv": {}}}"#).unwrap();
        assert_eq!(policy.grants.kv, Some(KvGrant::default()));
        assert!(!policy.grants.is_empty());
        assert!(policy.validate(&Limits::default()).is_ok());
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(
            json["grants"]["kv"],
            serde_json::json!({"max_value_bytes": 65536, "max_keys": 1000, "max_total_bytes": 10485760})
        );

        let refused = |json: &str| {
            serde_json::from_str::<AgentPolicy>(json)
                .map_err(|e| e.to_string())
                .and_then(|p| p.validate(&Limits::default()))
                .unwrap_err()
        };
        assert_eq!(
            refused(r#"{"grants": {"kv": {"max_keys": 0}}}"#),
            "grants.kv.max_keys must be at least 1"
        );
        assert_eq!(
            refused(r#"{"grants": {"kv": {"max_value_bytes": 1048577}}}"#),
            "grants.kv.max_value_bytes is 1048577; this host allows at most 1048576"
        );
        assert!(
            refused(r#"{"grants": {"kv": {"max_total_bytes": 268435457}}}"#)
                .contains("grants.kv.max_total_bytes")
        );
        assert!(
            refused(r#"{"grants": {"kv": {"max_values": 3}}}"#)
                .contains("unknown field `max_values`")
        );
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

    #[test]
    fn secret_grants_are_names_checked_one_by_one() {
        let policy: AgentPolicy =
            serde_json::from_str(r#"{"grants": {"secrets": ["API_TOKEN", "_x9"]}}"#).unwrap();
        assert!(policy.validate(&Limits::default()).is_ok());
        assert!(policy.grants.grants_secret("API_TOKEN"));
        assert!(!policy.grants.grants_secret("api_token"));
        assert_eq!(
            serde_json::to_value(&policy).unwrap()["grants"],
            serde_json::json!({ "secrets": ["API_TOKEN", "_x9"] })
        );
        let refused = |names: Vec<String>| {
            Grants {
                secrets: names,
                ..Grants::default()
            }
            .validate()
            .unwrap_err()
        };
        assert_eq!(
            refused(vec!["9LIVES".into()]),
            "grants.secrets: \"9LIVES\" is not a valid name: use 1 to 64 ASCII letters, digits and '_', not starting with a digit"
        );
        assert!(refused(vec!["A-B".into()]).contains("\"A-B\" is not a valid name"));
        assert!(refused(vec![String::new()]).contains("\"\" is not a valid name"));
        assert!(refused(vec!["A".repeat(65)]).contains("is not a valid name"));
        assert!(check_config_name(&"A".repeat(64)).is_ok());
        assert_eq!(
            refused(vec!["A".into(); MAX_GRANTED_SECRETS + 1]),
            "grants.secrets lists 65 secrets; this host allows at most 64"
        );
    }
}
