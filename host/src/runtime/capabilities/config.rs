//! `corral:agent/config`: an agent's config values and secrets.
//!
//! Skeleton: every call is refused until the source is implemented.

use serde::{Deserialize, Serialize};

use super::Providers;
use crate::policy::Grants;
use crate::runtime::bindings::corral::agent::config::{self, ConfigError};
use crate::runtime::state::HostState;

/// Where an agent's config values and secrets come from.
pub trait ConfigSource: Send + Sync {}

/// What one invocation's config calls used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigUsage {}

/// Per-invocation config state.
pub struct ConfigState {}

impl ConfigState {
    /// State for one invocation.
    pub fn new(_grants: &Grants, _providers: &Providers) -> ConfigState {
        ConfigState {}
    }

    /// What the calls used.
    pub fn usage(&self) -> ConfigUsage {
        ConfigUsage {}
    }
}

impl config::Host for HostState {
    async fn get(
        &mut self,
        _name: String,
    ) -> wasmtime::Result<Result<Option<String>, ConfigError>> {
        Ok(Ok(None))
    }

    async fn get_secret(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Option<String>, ConfigError>> {
        Ok(Err(ConfigError::Denied(format!(
            "the secret {name:?} is not granted to this agent"
        ))))
    }
}
