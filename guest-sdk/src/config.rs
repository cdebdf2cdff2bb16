//! The agent's config values and secrets, set by its operator.
//!
//! - [`get`] and [`get_or`] read config values: plain strings the operator set on this
//!   agent (`PUT /v1/agents/{name}/config`, or `corral run --config NAME=VALUE`). They
//!   need no grant.
//! - [`secret`] reads a secret (`PUT /v1/agents/{name}/secrets/{secret}`, or `corral run
//!   --secret NAME=VALUE`). The host refuses it with a [`ConfigError`] of code
//!   `config_denied` unless the agent's policy grants that secret by name
//!   (`grants.secrets`), and records the refusal.
//!
//! Names are 1 to 64 ASCII letters, digits and `_`, not starting with a digit.
//!
//! The host never shows a secret's value: if the agent writes one it read into its
//! logs, output or error, the host replaces it with `[redacted]` there. Use secrets,
//! don't echo them.
//!
//! # Examples
//!
//! ```no_run
//! use corral_sdk::{Error, config};
//!
//! fn greeting(name: &str) -> Result<String, Error> {
//!     let template = config::get_or("greeting", "Hello, {name}!")?;
//!     Ok(template.replace("{name}", name))
//! }
//!
//! fn token() -> Result<String, Error> {
//!     config::secret("API_TOKEN")?
//!         .ok_or_else(|| Error::new("missing_secret", "the operator has not set API_TOKEN"))
//! }
//! ```

use std::fmt;

use crate::bindings::corral::agent::config as wit;

/// The config value `name`, or `None` if the operator did not set it.
///
/// # Examples
///
/// ```no_run
/// let limit: usize = corral_sdk::config::get("max_items")?
///     .map(|v| v.parse().unwrap_or(10))
///     .unwrap_or(10);
/// # Ok::<(), corral_sdk::config::ConfigError>(())
/// ```
pub fn get(name: &str) -> Result<Option<String>, ConfigError> {
    wit::get(name).map_err(ConfigError::from)
}

/// The config value `name`, or `default` if the operator did not set it.
///
/// # Examples
///
/// ```no_run
/// let greeting = corral_sdk::config::get_or("greeting", "Hello")?;
/// # Ok::<(), corral_sdk::config::ConfigError>(())
/// ```
pub fn get_or(name: &str, default: &str) -> Result<String, ConfigError> {
    Ok(get(name)?.unwrap_or_else(|| default.to_string()))
}

/// The secret `name`, or `None` if the operator did not set it. Fails with
/// `config_denied` unless the agent's policy grants the secret.
///
/// # Examples
///
/// ```no_run
/// match corral_sdk::config::secret("API_TOKEN") {
///     Ok(Some(token)) => { /* use it; never log it */ }
///     Ok(None) => { /* not set */ }
///     Err(e) if e.is_denied() => { /* not granted to this agent */ }
///     Err(e) => { /* the host could not read it: e.is_retryable() */ }
/// }
/// ```
pub fn secret(name: &str) -> Result<Option<String>, ConfigError> {
    wit::get_secret(name).map_err(ConfigError::from)
}

/// Why a config value or secret could not be read: `config_denied` (the secret is
/// not granted) or `config_unavailable` (the host could not read it; retrying later
/// may help).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    denied: bool,
    message: String,
}

impl ConfigError {
    /// `config_denied` or `config_unavailable`.
    pub fn code(&self) -> &str {
        if self.denied {
            "config_denied"
        } else {
            "config_unavailable"
        }
    }

    /// What happened, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the secret is not granted to this agent.
    pub fn is_denied(&self) -> bool {
        self.denied
    }

    /// Whether trying again later may help (the host could not read the value).
    pub fn is_retryable(&self) -> bool {
        !self.denied
    }
}

impl From<wit::ConfigError> for ConfigError {
    fn from(e: wit::ConfigError) -> ConfigError {
        match e {
            wit::ConfigError::Denied(message) => ConfigError {
                denied: true,
                message,
            },
            wit::ConfigError::Unavailable(message) => ConfigError {
                denied: false,
                message,
            },
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::Error {
    /// The agent's error, with the same code and message; `config_unavailable` is
    /// retryable.
    fn from(e: ConfigError) -> crate::Error {
        let retryable = e.is_retryable();
        let code = e.code().to_string();
        let error = crate::Error::new(code, e.message);
        if retryable { error.retryable() } else { error }
    }
}
