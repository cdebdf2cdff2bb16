//! `corral:agent/config`: an agent's config values and secrets.
//!
//! - `get(name)` reads one of the agent's own config values; it needs no grant.
//! - `get-secret(name)` reads one of its secrets only if the invocation's
//!   [`Grants::secrets`] lists `name`. Otherwise it fails with `denied` and a [`Denial`]
//!   (capability `secrets`, target the secret's *name*) is recorded; the source is not
//!   even asked, so the answer does not reveal whether the secret exists.
//! - Without a [`ConfigSource`], every value is unset and every granted secret is
//!   `unavailable`. A source that fails answers `unavailable`, retryable.
//!
//! Secret values never reach a log or a record through the host: they are not
//! `Debug`-printed, and denials name secrets only. The guest could still write a secret
//! it read into its own logs, output or error; [`ConfigState::redactor`] lists every
//! secret value this invocation read, so the runtime replaces each with
//! [`REDACTED`] before the execution record is built (see [`Redactor`]).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Providers;
use crate::policy::{Grants, check_config_name};
use crate::runtime::bindings::corral::agent::config::{self, ConfigError};
use crate::runtime::egress::MAX_LISTED_DENIALS;
use crate::runtime::outcome::{Denial, DenialReason};
use crate::runtime::state::HostState;

/// Characters of a refused secret's name kept in its denial.
const MAX_SHOWN_NAME_CHARS: usize = 128;

/// What a secret value is replaced with wherever the guest wrote it.
pub const REDACTED: &str = "[redacted]";

/// Why a [`ConfigSource`] could not answer: a message for the guest (say nothing
/// secret in it; log the cause where it happens).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Where an agent's config values and secrets come from, for one invocation: the
/// database under `corral serve` ([`crate::db::config::DbConfigSource`]), the command
/// line under `corral run` ([`StaticConfig`]).
#[async_trait::async_trait]
pub trait ConfigSource: Send + Sync {
    /// The config value `name`, if one is set.
    async fn value(&self, name: &str) -> Result<Option<String>, Unavailable>;

    /// The secret `name` in plain text, if one is set. Called only for granted names.
    async fn secret(&self, name: &str) -> Result<Option<String>, Unavailable>;
}

/// Config values and secrets held in memory: `corral run --config/--secret`, and tests.
#[derive(Clone, Default)]
pub struct StaticConfig {
    /// Config values by name.
    pub values: HashMap<String, String>,
    /// Secrets by name.
    pub secrets: HashMap<String, String>,
}

impl std::fmt::Debug for StaticConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut secrets: Vec<&String> = self.secrets.keys().collect();
        secrets.sort();
        f.debug_struct("StaticConfig")
            .field("values", &self.values)
            .field("secrets", &secrets)
            .finish()
    }
}

#[async_trait::async_trait]
impl ConfigSource for StaticConfig {
    async fn value(&self, name: &str) -> Result<Option<String>, Unavailable> {
        Ok(self.values.get(name).cloned())
    }

    async fn secret(&self, name: &str) -> Result<Option<String>, Unavailable> {
        Ok(self.secrets.get(name).cloned())
    }
}

/// What one invocation's config calls used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConfigUsage {
    /// `get` calls answered (set or unset).
    pub values_read: u64,
    /// `get-secret` calls of granted secrets answered (set or unset).
    pub secrets_read: u64,
    /// `get-secret` calls refused because the secret is not granted; each is listed in
    /// [`Execution::denials`](crate::runtime::Execution) (up to a bound).
    pub secrets_denied: u64,
}

/// Per-invocation config state.
pub struct ConfigState {
    source: Option<Arc<dyn ConfigSource>>,
    granted: Vec<String>,
    usage: ConfigUsage,
    denials: Vec<Denial>,
    /// Secret values handed to the guest, to be redacted from what it writes.
    revealed: Vec<String>,
}

impl ConfigState {
    /// State for one invocation with `grants`, served by `providers.config`.
    pub fn new(grants: &Grants, providers: &Providers) -> ConfigState {
        ConfigState {
            source: providers.config.clone(),
            granted: grants.secrets.clone(),
            usage: ConfigUsage::default(),
            denials: Vec::new(),
            revealed: Vec::new(),
        }
    }

    /// What the calls used.
    pub fn usage(&self) -> ConfigUsage {
        self.usage
    }

    /// The secrets refused, in order (the first [`MAX_LISTED_DENIALS`]).
    pub fn denials(&self) -> &[Denial] {
        &self.denials
    }

    /// Redacts every secret value this invocation read.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.revealed.iter().cloned())
    }

    fn deny(&mut self, name: &str) -> ConfigError {
        self.usage.secrets_denied += 1;
        // A guest picks the name: keep what is recorded of it short.
        let name: String = name.chars().take(MAX_SHOWN_NAME_CHARS).collect();
        let detail = format!("the secret {name:?} is not granted to this agent");
        if self.denials.len() < MAX_LISTED_DENIALS {
            self.denials.push(Denial {
                capability: "secrets".into(),
                target: name,
                reason: DenialReason::NotGranted,
                detail: detail.clone(),
            });
        }
        ConfigError::Denied(detail)
    }

    async fn get(&mut self, name: &str) -> Result<Option<String>, ConfigError> {
        // No value can be stored under a bad name; there is nothing to look up.
        if check_config_name(name).is_err() {
            self.usage.values_read += 1;
            return Ok(None);
        }
        let Some(source) = self.source.clone() else {
            self.usage.values_read += 1;
            return Ok(None);
        };
        let value = source
            .value(name)
            .await
            .map_err(|e| ConfigError::Unavailable(e.0))?;
        self.usage.values_read += 1;
        Ok(value)
    }

    async fn get_secret(&mut self, name: &str) -> Result<Option<String>, ConfigError> {
        if !self.granted.iter().any(|granted| granted == name) {
            return Err(self.deny(name));
        }
        let Some(source) = self.source.clone() else {
            return Err(ConfigError::Unavailable(
                "this host serves no secrets".into(),
            ));
        };
        let secret = source
            .secret(name)
            .await
            .map_err(|e| ConfigError::Unavailable(e.0))?;
        self.usage.secrets_read += 1;
        if let Some(value) = &secret
            && !self.revealed.contains(value)
        {
            self.revealed.push(value.clone());
        }
        Ok(secret)
    }
}

impl config::Host for HostState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<Option<String>, ConfigError>> {
        Ok(self.caps.config.get(&name).await)
    }

    async fn get_secret(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Option<String>, ConfigError>> {
        Ok(self.caps.config.get_secret(&name).await)
    }
}

/// Replaces secret values in what a guest wrote with [`REDACTED`].
///
/// Each secret is looked for as it is and as it appears inside a JSON string (escaped),
/// longest first, so a secret that contains another is replaced whole. Text split
/// across two separate writes (two log entries) is not matched: each entry is redacted
/// on its own.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    patterns: Vec<String>,
}

impl Redactor {
    /// A redactor for `secrets` (empty ones are ignored: they reveal nothing).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut patterns: Vec<String> = Vec::new();
        for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
            let quoted = serde_json::to_string(&secret).expect("a string serializes");
            let escaped = quoted[1..quoted.len() - 1].to_string();
            if escaped != secret {
                patterns.push(escaped);
            }
            patterns.push(secret);
        }
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        patterns.dedup();
        Redactor { patterns }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `text` with every secret replaced.
    pub fn text(&self, text: &str) -> String {
        let mut text = text.to_string();
        for pattern in &self.patterns {
            if text.contains(pattern.as_str()) {
                text = text.replace(pattern.as_str(), REDACTED);
            }
        }
        text
    }

    /// JSON text with every secret replaced. Should the replacement break the JSON
    /// (a secret that is a bare number, or spans a quote), the whole output becomes the
    /// JSON string `"[redacted]"`: better no output than a leak or invalid JSON.
    pub fn json(&self, json: &str) -> String {
        let redacted = self.text(json);
        if redacted == json || serde_json::from_str::<serde::de::IgnoredAny>(&redacted).is_ok() {
            redacted
        } else {
            format!("\"{REDACTED}\"")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_wherever_they_appear() {
        let redactor = Redactor::new(["hunter2".to_string(), String::new()]);
        assert_eq!(
            redactor.text("token=hunter2; again hunter2"),
            "token=[redacted]; again [redacted]"
        );
        assert_eq!(redactor.text("nothing here"), "nothing here");
        assert!(Redactor::new([String::new()]).is_empty());
    }

    #[test]
    fn the_longer_secret_is_replaced_first() {
        let redactor = Redactor::new(["abc".to_string(), "abcdef".to_string()]);
        assert_eq!(redactor.text("x abcdef y abc"), "x [redacted] y [redacted]");
    }

    #[test]
    fn a_secret_is_found_in_json_output_also_when_escaped() {
        let redactor = Redactor::new([r#"pa"ss\word"#.to_string()]);
        let output = serde_json::json!({ "leak": r#"pa"ss\word"# }).to_string();
        assert_eq!(redactor.json(&output), r#"{"leak":"[redacted]"}"#);
    }

    #[test]
    fn output_whose_json_the_redaction_would_break_is_replaced_whole() {
        let redactor = Redactor::new(["1234".to_string()]);
        assert_eq!(redactor.json(r#"{"pin":1234}"#), r#""[redacted]""#);
        assert_eq!(
            redactor.json(r#"{"pin":"1234"}"#),
            r#"{"pin":"[redacted]"}"#
        );
        assert_eq!(redactor.json(r#"{"n":5}"#), r#"{"n":5}"#);
    }

    #[test]
    fn static_config_does_not_debug_print_secret_values() {
        let config = StaticConfig {
            values: HashMap::from([("greeting".into(), "hi".into())]),
            secrets: HashMap::from([("TOKEN".into(), "s3cr3t".into())]),
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("TOKEN") && shown.contains("hi"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
