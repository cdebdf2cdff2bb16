//! Shared helpers for the integration tests: real runtimes, real plugins, the real binary.

use std::path::PathBuf;
use std::sync::Arc;

use corral_host::limits::Limits;
use corral_host::runtime::{
    CompileSettings, Execution, InvokeRequest, LoadedAgent, Runtime, RuntimeConfig,
};

/// The `corral` binary of this build (`target/<profile>/corral`). `cargo test
/// --workspace` builds it, because `host/` has integration tests of its own.
pub fn corral_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/corral
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("corral"))
        .expect("target layout");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p corral-host` first)",
        bin.display()
    );
    bin
}

/// A runtime that compiles in worker processes of the real binary and caches
/// artifacts in `cache_dir` (or nowhere).
pub fn runtime_with_cache(cache_dir: Option<PathBuf>) -> Runtime {
    let mut config = RuntimeConfig::in_memory();
    config.compile = CompileSettings::worker(corral_bin());
    config.cache_dir = cache_dir;
    Runtime::new(config).expect("runtime builds")
}

/// A runtime with worker compiles and no disk cache.
pub fn runtime() -> Runtime {
    runtime_with_cache(None)
}

/// Reads a plugin's bytes.
pub fn plugin_bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading plugin {path}: {e}"))
}

/// Loads a plugin, panicking with the load error if it fails.
pub async fn load(runtime: &Runtime, path: &str) -> Arc<LoadedAgent> {
    runtime
        .load(plugin_bytes(path))
        .await
        .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

/// Runs `action` with `input` under `limits`.
pub async fn invoke(
    runtime: &Runtime,
    agent: &LoadedAgent,
    action: &str,
    input: &str,
    limits: Limits,
) -> Execution {
    runtime
        .invoke(agent, InvokeRequest::new(action, input, limits))
        .await
        .expect("the host sets up the run")
}

/// Limits small enough that runaway guests stop quickly.
pub fn tight_limits() -> Limits {
    Limits {
        fuel: 50_000_000,
        memory_bytes: 16 << 20,
        timeout: std::time::Duration::from_secs(5),
        output_bytes: 64 << 10,
        log_bytes: 16 << 10,
    }
}
