//! [`HostState`]: the `T` in `Store<T>`, built fresh for every invocation.
//!
//! Deny by default: the WASI context has no preopened directories, no environment,
//! no arguments, no stdin, no sockets and no name lookups, and outbound HTTP is
//! refused unless the invocation's [`Grants`] hold an HTTP grant (checked by
//! [`Egress`]). Raw sockets stay closed even then. Clocks and random are allowed
//! (random bounded per call). Every WASI 0.2 interface is still *linked*, so
//! components from any toolchain instantiate and an ungranted call fails when it is
//! made, with an error the guest can see.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{Level, corral::agent::logging};
use super::capabilities::{CapabilityState, Providers};
use super::egress::Egress;
use super::logs::{LogSink, LogSource};
use crate::limits::{Limits, StoreBounds, StoreLimiter};
use crate::policy::Grants;

/// Per-invocation host state.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    /// Outbound HTTP: the checks, and what the requests used.
    pub egress: Egress,
    table: ResourceTable,
    /// Enforces linear memory and table limits and records what it refused.
    pub limiter: StoreLimiter,
    /// Logging, stdout and stderr, bounded.
    pub logs: LogSink,
    /// Key-value state, config and secrets, calls to other agents.
    pub caps: CapabilityState,
}

impl HostState {
    /// State for one invocation under `limits`, with the capabilities in `grants`.
    pub fn new(
        limits: &Limits,
        bounds: StoreBounds,
        grants: &Grants,
        providers: &Providers,
    ) -> Self {
        let logs = LogSink::new(limits.log_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdout(logs.stream(LogSource::Stdout))
            .stderr(logs.stream(LogSource::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .max_random_size(bounds.random_bytes)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(bounds.resource_entries);
        HostState {
            wasi,
            http: WasiHttpCtx::new(),
            egress: Egress::new(grants.http.clone()),
            table,
            limiter: StoreLimiter::new(limits.memory_bytes, bounds),
            logs,
            caps: CapabilityState::new(grants, providers),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.logs
            .push(level.into(), LogSource::Agent, message.as_bytes())
            .map_err(wasmtime::Error::from)
    }
}

impl super::bindings::corral::agent::types::Host for HostState {}
