//! The sandbox: loading agent components and running invocations under hard limits.
//!
//! ```text
//! bytes ─ validate::check ─ sha256 ─┬ memory cache ──────────────────────────┐
//!                                   ├ disk cache (cache.rs) ─────────────────┤
//!                                   └ compile.rs (capped worker) ─ disk ─────┴ InstancePre + describe() = LoadedAgent
//! LoadedAgent + Invocation + Limits ─ invoke.rs (fresh Store) ─ Execution { outcome, usage, output | error, logs }
//! ```
//!
//! [`Runtime`] owns the one [`Engine`], the linker (every WASI 0.2 interface and
//! `wasi:http`, all denied by default, plus Corral's own host interfaces), the
//! compiler and both caches. It is `Send + Sync`; share it behind an `Arc`. Outbound
//! HTTP is opened per invocation by the grants in its [`InvokeRequest`] (see [`egress`]).

#[allow(unsafe_code)] // generated code
pub mod bindings;
pub mod cache;
pub mod capabilities;
pub mod compile;
pub mod component;
pub mod egress;
pub mod engine;
mod invoke;
pub mod logs;
pub mod outcome;
pub mod state;
pub mod validate;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use self::bindings::{Agent, AgentPre};
use self::cache::{CacheMiss, DiskCache};
pub use self::capabilities::Providers;
use self::compile::Compiler;
pub use self::compile::{CompileIsolation, CompileSettings};
pub use self::component::{
    ActionMetadata, AgentMetadata, ComponentInterface, InputRefusal, LoadedAgent,
};
use self::engine::{EngineRole, EpochTicker, build_engine};
pub use self::engine::{EngineSettings, Interruption};
pub use self::invoke::InvokeRequest;
pub use self::logs::{LogEntry, LogLevel, LogSource};
pub use self::outcome::{
    Denial, DenialReason, Execution, ExecutionError, HttpUsage, Outcome, Usage,
};
use self::state::HostState;
pub use self::validate::StructureLimits;
use crate::limits::{Limits, StoreBounds};

/// Why bytes could not be loaded as an agent. Each message says exactly what is wrong.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// Not a binary component: empty, text, a core module, an artifact, or unknown.
    #[error("{0}")]
    NotAComponent(String),
    /// A component binary that does not parse (e.g. truncated).
    #[error("malformed component: {0}")]
    Malformed(String),
    /// A component of a shape too expensive to compile.
    #[error("component refused before compiling: {0}")]
    TooComplex(String),
    /// wasmtime rejected the component (validation failed).
    #[error("invalid component: {0}")]
    Invalid(String),
    /// Compiling took longer than allowed.
    #[error("compiling the component took longer than {0:?}; it was stopped")]
    CompileTimedOut(Duration),
    /// Compiling ran out of its memory or CPU allowance.
    #[error(
        "compiling the component exceeded its allowance ({memory_bytes} bytes of memory): {detail}"
    )]
    CompileResourcesExhausted {
        /// The worker's memory cap.
        memory_bytes: u64,
        /// What happened to the worker.
        detail: String,
    },
    /// The component imports something the host does not provide.
    #[error("the component imports something Corral does not provide: {0}")]
    UnknownImport(String),
    /// The component does not implement the `corral:agent` world.
    #[error("the component does not implement the corral:agent@0.1.0 world: {0}")]
    WrongWorld(String),
    /// Calling `describe` failed.
    #[error("calling describe() failed ({outcome}): {message}")]
    DescribeFailed {
        /// How the describe call ended.
        outcome: Outcome,
        /// What went wrong.
        message: String,
    },
    /// `describe` returned unusable metadata.
    #[error("bad agent metadata: {0}")]
    BadMetadata(String),
    /// A host-side failure unrelated to the component.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A host-side failure while running an invocation (never the guest's fault: those
/// are [`Outcome`]s).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be set up.
    #[error("setting up the sandbox failed: {0}")]
    Setup(String),
}

/// Everything a [`Runtime`] needs. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Shape of the engine.
    pub engine: EngineSettings,
    /// How compiles are isolated and bounded.
    pub compile: CompileSettings,
    /// Shape checks before compiling.
    pub structure: StructureLimits,
    /// Host-wide bounds on tables, instances and host allocations per invocation.
    pub bounds: StoreBounds,
    /// Where compiled artifacts are kept across restarts; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Limits for the `describe` call made when loading.
    pub describe_limits: Limits,
    /// Bytes of components whose loaded agents are kept in memory; past it, the least
    /// recently used are dropped (and reloaded from the disk cache when needed).
    pub cache_bytes: u64,
}

impl RuntimeConfig {
    /// Defaults, compiling in-process and without a disk cache.
    pub fn in_memory() -> RuntimeConfig {
        RuntimeConfig {
            engine: EngineSettings::default(),
            compile: CompileSettings::in_process(),
            structure: StructureLimits::default(),
            bounds: StoreBounds::default(),
            cache_dir: None,
            cache_bytes: 256 << 20,
            describe_limits: Limits {
                fuel: 100_000_000,
                timeout: Duration::from_secs(5),
                ..Limits::default()
            },
        }
    }
}

/// Counters for the compile cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components compiled.
    pub compiles: u64,
    /// Loads served from memory.
    pub memory_hits: u64,
    /// Loads served from a disk artifact.
    pub disk_hits: u64,
    /// Disk artifacts discarded as bad (then recompiled).
    pub disk_discards: u64,
}

#[derive(Default)]
struct Counters {
    compiles: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    disk_discards: AtomicU64,
}

/// The sandboxed agent runtime. See the module docs.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    compiler: Compiler,
    disk: Option<DiskCache>,
    /// Loaded agents by content hash, bounded by their components' bytes.
    loaded: moka::future::Cache<String, Arc<LoadedAgent>>,
    counters: Counters,
    /// One permit per pooling-allocator slot: invocations wait rather than fail.
    instances: Semaphore,
    /// How long compiles took (for `GET /metrics`).
    compile_seconds: prometheus_client::metrics::histogram::Histogram,
    config: RuntimeConfig,
    _ticker: Option<EpochTicker>,
}

impl Runtime {
    /// Builds the engine and linker and opens the disk cache.
    pub fn new(mut config: RuntimeConfig) -> Result<Runtime, LoadError> {
        // The shape checks refuse, before compiling, what the engine's pool cannot hold.
        let structure = &mut config.structure;
        structure.max_memories_per_component = structure
            .max_memories_per_component
            .min(config.engine.max_memories_per_component);
        structure.max_initial_memory_bytes = structure
            .max_initial_memory_bytes
            .min(config.engine.max_memory_bytes);
        // A store may create no more than the pool holds per component.
        let (engine_settings, bounds) = (&config.engine, &mut config.bounds);
        bounds.instances = bounds
            .instances
            .min(engine_settings.max_core_instances_per_component as usize);
        bounds.tables = bounds
            .tables
            .min(engine_settings.max_tables_per_component as usize);
        bounds.memories = bounds
            .memories
            .min(engine_settings.max_memories_per_component as usize);
        let internal = |e: wasmtime::Error| LoadError::Internal(format!("{e:#}"));
        let engine = build_engine(&config.engine, EngineRole::Host).map_err(internal)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(internal)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(internal)?;
        Agent::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(internal)?;

        let disk = match &config.cache_dir {
            Some(dir) => Some(DiskCache::open(dir, &engine).map_err(|e| {
                LoadError::Internal(format!("opening the artifact cache {}: {e}", dir.display()))
            })?),
            None => None,
        };
        let ticker = match config.engine.interruption {
            Interruption::Epoch { tick } => Some(EpochTicker::start(&engine, tick)),
            Interruption::FuelYield { .. } => None,
        };
        Ok(Runtime {
            compiler: Compiler::new(engine.clone(), config.engine, config.compile.clone()),
            engine,
            linker,
            disk,
            loaded: moka::future::Cache::builder()
                .max_capacity(config.cache_bytes)
                .weigher(|_, agent: &Arc<LoadedAgent>| {
                    u32::try_from(agent.resident_bytes)
                        .unwrap_or(u32::MAX)
                        .max(1)
                })
                .build(),
            counters: Counters::default(),
            instances: Semaphore::new(config.engine.max_instances as usize),
            compile_seconds: prometheus_client::metrics::histogram::Histogram::new(
                // 10 ms to about 80 s, doubling.
                prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 14),
            ),
            config,
            _ticker: ticker,
        })
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Cache counters so far.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            compiles: self.counters.compiles.load(Ordering::Relaxed),
            memory_hits: self.counters.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.counters.disk_hits.load(Ordering::Relaxed),
            disk_discards: self.counters.disk_discards.load(Ordering::Relaxed),
        }
    }

    /// How long compiles took: a histogram shared with `GET /metrics`.
    pub fn compile_seconds(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.compile_seconds.clone()
    }

    /// Instance-pool slots held by running invocations (calls between agents run in
    /// their caller's), and the pool's size.
    pub fn instances(&self) -> (u64, u64) {
        let size = self.config.engine.max_instances as u64;
        let free = self.instances.available_permits() as u64;
        (size.saturating_sub(free), size)
    }

    /// The sha256 of `bytes` as 64 hex digits: the key of the caches.
    pub fn content_hash(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// Loads an agent: validates, compiles (or finds it cached), links and describes
    /// it. Loading the same bytes again returns the same agent without recompiling;
    /// concurrent loads of the same bytes compile once.
    pub async fn load(&self, bytes: impl Into<Arc<[u8]>>) -> Result<Arc<LoadedAgent>, LoadError> {
        let bytes: Arc<[u8]> = bytes.into();
        validate::check(&bytes, &self.config.structure)?;
        let hash = Self::content_hash(&bytes);
        if let Some(agent) = self.loaded.get(&hash).await {
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(agent);
        }
        // Concurrent loads of the same bytes share one compile; a failed load is not kept.
        self.loaded
            .try_get_with(hash.clone(), self.load_uncached(hash, bytes))
            .await
            .map_err(|e: Arc<LoadError>| (*e).clone())
    }

    /// The loaded agent with this content hash, if the memory cache holds it.
    pub async fn cached_agent(&self, hash: &str) -> Option<Arc<LoadedAgent>> {
        let agent = self.loaded.get(hash).await?;
        self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
        Some(agent)
    }

    /// The agent whose component has content hash `hash` (and `size` bytes), loaded from
    /// its disk artifact, if a good one is there; `None` otherwise (then load the bytes).
    /// For components this host has already accepted — a stored version, whose hash
    /// was taken at upload — so after a restart the first call neither reads, checks
    /// nor hashes the component's bytes again: an artifact exists only for bytes that
    /// passed those checks and compiled.
    pub async fn load_compiled(&self, hash: &str, size: usize) -> Option<Arc<LoadedAgent>> {
        let disk = self.disk.clone()?;
        if let Some(agent) = self.cached_agent(hash).await {
            return Some(agent);
        }
        let (engine, key) = (self.engine.clone(), hash.to_string());
        // Reading and checking tens of megabytes: off the async threads.
        let component = tokio::task::spawn_blocking(move || disk.load(&engine, &key))
            .await
            .ok()?;
        let component = match component {
            Ok(component) => component,
            Err(CacheMiss::Absent) => return None,
            Err(CacheMiss::Discarded(_)) => {
                self.counters.disk_discards.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
        self.loaded
            .try_get_with(
                hash.to_string(),
                self.agent_of(hash.to_string(), size, component),
            )
            .await
            .ok()
    }

    /// Collects the disk cache: see [`DiskCache::collect`]. `(0, 0)` without one.
    pub fn collect_artifacts(
        &self,
        needed: &std::collections::HashSet<String>,
        max_bytes: u64,
        min_age: std::time::Duration,
    ) -> (usize, u64) {
        match &self.disk {
            Some(disk) => disk.collect(needed, max_bytes, min_age),
            None => (0, 0),
        }
    }

    /// How many loaded agents the memory cache holds, and their components' bytes
    /// (after settling pending evictions).
    pub async fn cached(&self) -> (u64, u64) {
        self.loaded.run_pending_tasks().await;
        (self.loaded.entry_count(), self.loaded.weighted_size())
    }

    /// Drops the agent with this content hash from the memory cache and its artifact
    /// from disk (an upload that was refused after it compiled).
    pub async fn forget(&self, hash: &str) {
        self.loaded.invalidate(hash).await;
        if let Some(disk) = &self.disk {
            let _ = std::fs::remove_file(disk.path(hash));
        }
    }

    /// Loads `bytes` as an agent (not cached) and, whether or not they are one, says what
    /// the component imports and exports, compiling once (`corral inspect`).
    pub async fn inspect(
        &self,
        bytes: impl Into<Arc<[u8]>>,
    ) -> (
        Result<Arc<LoadedAgent>, LoadError>,
        Option<ComponentInterface>,
    ) {
        let bytes: Arc<[u8]> = bytes.into();
        if let Err(e) = validate::check(&bytes, &self.config.structure) {
            return (Err(e), None);
        }
        let hash = Self::content_hash(&bytes);
        let component = match self.compiled(&hash, bytes.clone()).await {
            Ok(component) => component,
            Err(e) => return (Err(e), None),
        };
        let interface = ComponentInterface::of(&component);
        let agent = self.agent_of(hash, bytes.len(), component).await;
        (agent, Some(interface))
    }

    async fn load_uncached(
        &self,
        hash: String,
        bytes: Arc<[u8]>,
    ) -> Result<Arc<LoadedAgent>, LoadError> {
        let component = self.compiled(&hash, bytes.clone()).await?;
        self.agent_of(hash, bytes.len(), component).await
    }

    /// Links a compiled component as an agent and asks it to describe itself.
    async fn agent_of(
        &self,
        hash: String,
        size: usize,
        component: Component,
    ) -> Result<Arc<LoadedAgent>, LoadError> {
        let interface = ComponentInterface::of(&component);
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::UnknownImport(format!("{e:#}")))?;
        let pre =
            AgentPre::new(instance_pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let info = self.describe(&pre).await?;
        let metadata = AgentMetadata::from_describe(info)?;
        let image = component.image_range();
        let image_bytes = (image.end as usize).saturating_sub(image.start as usize);
        Ok(Arc::new(LoadedAgent {
            hash,
            size,
            // Measured: a loaded agent holds about its image plus twice the component's
            // bytes (metadata, types, instance templates, validators).
            resident_bytes: image_bytes + 2 * size,
            validators: component::validators(&metadata),
            metadata,
            interface,
            pre,
        }))
    }

    /// The compiled component, from disk if a good artifact is there.
    async fn compiled(&self, hash: &str, bytes: Arc<[u8]>) -> Result<Component, LoadError> {
        if let Some(disk) = &self.disk {
            match disk.load(&self.engine, hash) {
                Ok(component) => {
                    self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(component);
                }
                Err(CacheMiss::Absent) => {}
                Err(CacheMiss::Discarded(_)) => {
                    self.counters.disk_discards.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let started = std::time::Instant::now();
        let artifact = self.compiler.compile(bytes).await?;
        self.compile_seconds
            .observe(started.elapsed().as_secs_f64());
        self.counters.compiles.fetch_add(1, Ordering::Relaxed);
        #[allow(unsafe_code)]
        // SAFETY: the artifact was produced just now by our own compiler (in-process or
        // our own worker binary) from these bytes; it never came from a user.
        let component = unsafe { Component::deserialize(&self.engine, &artifact) }
            // Our own fresh artifact is refused only by the instance pool's checks of
            // the component's shape, which count exactly what the shape checks before
            // compiling can only bound (a module instantiated five times has five
            // memories): more core instances, memories or tables than a slot holds.
            // wasmtime's message names the count and the limit. Nothing is cached.
            .map_err(|e| LoadError::TooComplex(format!("{e:#}")))?;
        if let Some(disk) = &self.disk
            && let Err(e) = disk.store(hash, &artifact)
        {
            tracing::warn!(error = %e, "could not write the artifact cache; continuing without it");
        }
        Ok(component)
    }
}
