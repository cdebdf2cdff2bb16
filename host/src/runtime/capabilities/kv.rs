//! `corral:agent/kv`: per-agent, tenant-scoped key-value state.
//!
//! Skeleton: every call is refused until the store is implemented.

use serde::{Deserialize, Serialize};

use super::Providers;
use crate::policy::Grants;
use crate::runtime::bindings::corral::agent::kv::{self, KvError};
use crate::runtime::state::HostState;

/// Where key-value state is kept.
pub trait KvStore: Send + Sync {}

/// What one invocation's key-value calls used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvUsage {}

/// Per-invocation key-value state.
pub struct KvState {}

impl KvState {
    /// State for one invocation.
    pub fn new(_grants: &Grants, _providers: &Providers) -> KvState {
        KvState {}
    }

    /// What the calls used.
    pub fn usage(&self) -> KvUsage {
        KvUsage {}
    }
}

fn denied() -> KvError {
    KvError::Denied("key-value state is not granted to this agent".into())
}

impl kv::Host for HostState {
    async fn get(&mut self, _key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        Ok(Err(denied()))
    }

    async fn set(
        &mut self,
        _key: String,
        _value: Vec<u8>,
        _ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), KvError>> {
        Ok(Err(denied()))
    }

    async fn delete(&mut self, _key: String) -> wasmtime::Result<Result<bool, KvError>> {
        Ok(Err(denied()))
    }

    async fn list_keys(
        &mut self,
        _prefix: String,
        _cursor: Option<String>,
        _limit: u32,
    ) -> wasmtime::Result<Result<Vec<String>, KvError>> {
        Ok(Err(denied()))
    }
}
