//! The one place a `wasmtime::Config` is built.
//!
//! Every component in a host is compiled and run by one shared [`Engine`]: Cranelift,
//! fuel metering, the pooling instance allocator, and one interruption mechanism so a
//! runaway guest gives its executor thread back at the end of each slice. The compile
//! worker builds its engine from the same [`EngineSettings`], so the artifacts it
//! produces are loadable here (wasmtime refuses any artifact whose settings differ).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::{Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// How a running guest is made to yield, so timeouts fire and other invocations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Interruption {
    /// Yield every `interval` units of fuel. Fuel is metered anyway, so this adds no
    /// instrumentation; a slice is a number of instructions rather than a time.
    FuelYield {
        /// Fuel units per slice.
        interval: u64,
    },
    /// Yield at each epoch tick: a background thread bumps the engine's epoch every
    /// `tick`. Adds a check at every loop header and function entry.
    Epoch {
        /// Time between ticks.
        #[serde(with = "humantime_serde_ms")]
        tick: Duration,
    },
}

impl Default for Interruption {
    /// Chosen by `cargo bench -p corral-tests --bench invoke -- interruption`: see docs/PERFORMANCE.md.
    fn default() -> Self {
        Interruption::FuelYield {
            interval: 1_000_000,
        }
    }
}

mod humantime_serde_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

/// Everything that shapes the engine. Settings that change generated code must match
/// between the host and its compile worker, so this travels to the worker as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSettings {
    /// How running guests yield.
    pub interruption: Interruption,
    /// Instances that may be alive at once: the size of the pooling allocator. Further
    /// invocations wait for a free slot.
    pub max_instances: u32,
    /// The largest linear memory any one guest memory may reach (the host ceiling
    /// for the per-invocation memory limit).
    pub max_memory_bytes: u64,
    /// Linear memories one component may declare.
    pub max_memories_per_component: u32,
    /// Core instances one component may create. The pool holds this many for every
    /// instance slot, so guests at the bound never take a neighbour's.
    pub max_core_instances_per_component: u32,
    /// Tables one component may create; the pool holds this many per slot, likewise.
    pub max_tables_per_component: u32,
    /// Native stack available to wasm code; deeper recursion traps with `stack_overflow`.
    pub max_wasm_stack: usize,
    /// Address space reserved for each linear memory slot of the pool (wasmtime's
    /// default, 4 GiB, when `None`, which lets 32-bit memories skip bounds checks). A
    /// smaller reservation shrinks the pool's virtual footprint (slots × memories per
    /// component × this) and caps every memory at it; it costs explicit bounds checks.
    #[serde(default)]
    pub memory_reservation: Option<u64>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            interruption: Interruption::default(),
            max_instances: 256,
            max_memory_bytes: 4 << 30,
            max_memories_per_component: 4,
            max_core_instances_per_component: 50,
            max_tables_per_component: 8,
            max_wasm_stack: 512 << 10,
            memory_reservation: None,
        }
    }
}

/// Whether the engine will run code or only compile it (in the compile worker, which
/// must not reserve the pooling allocator's address space under its memory cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineRole {
    /// Compiles and runs guests.
    Host,
    /// Only compiles.
    CompileOnly,
}

/// Builds the engine. Returns it with the epoch ticker, if the settings need one.
pub fn build_engine(settings: &EngineSettings, role: EngineRole) -> wasmtime::Result<Engine> {
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .cranelift_opt_level(OptLevel::Speed)
        .consume_fuel(true)
        .epoch_interruption(matches!(settings.interruption, Interruption::Epoch { .. }))
        .max_wasm_stack(settings.max_wasm_stack)
        // Guests run on fibers; the fiber stack must hold the wasm stack plus host frames.
        .async_stack_size(settings.max_wasm_stack + (1 << 20));
    if let Some(bytes) = settings.memory_reservation {
        config.memory_reservation(bytes);
    }
    let max_memory = settings
        .memory_reservation
        .map_or(settings.max_memory_bytes, |r| {
            r.min(settings.max_memory_bytes)
        });

    if role == EngineRole::Host {
        let mut pool = PoolingAllocationConfig::new();
        let instances = settings.max_instances;
        // Every total is the per-component maximum times the slots: a component that
        // passes the pool's per-component checks (made when it is loaded) can always
        // be instantiated while a slot is free, however many of its kind already run.
        // Otherwise a few guests at their bounds exhaust the pool's tables or core
        // instances, and every other invocation ends `host_failure`.
        let per_slot = |n: u32| instances.saturating_mul(n);
        pool.total_component_instances(instances)
            .total_stacks(instances)
            .total_memories(per_slot(settings.max_memories_per_component))
            .total_tables(per_slot(settings.max_tables_per_component))
            .total_core_instances(per_slot(settings.max_core_instances_per_component))
            .max_memories_per_component(settings.max_memories_per_component)
            .max_tables_per_component(settings.max_tables_per_component)
            .max_core_instances_per_component(settings.max_core_instances_per_component)
            .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
            // Resetting an instance's memory for reuse: find the pages it dirtied
            // (PAGEMAP_SCAN, Linux 6.7+) and memset up to 2 MiB of them back, rather than
            // madvise them away — which costs page faults on reuse and TLB-shootdown IPIs
            // to every core. See docs/PERFORMANCE.md.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config)
}

/// Increments the engine's epoch every `tick` until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts the ticker thread for `engine`.
    pub fn start(engine: &Engine, tick: Duration) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("corral-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
