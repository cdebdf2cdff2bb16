//! The compile cache: in memory by content hash, on disk across restarts, and never
//! trusting a bad file.

use std::sync::Arc;

use corral_host::runtime::{EngineSettings, Interruption, Runtime, RuntimeConfig};
use corral_tests::harness::{plugin_bytes, runtime_with_cache};
use corral_tests::plugins::{ECHO, NOT_AN_AGENT};

#[tokio::test]
async fn a_second_load_does_not_recompile() {
    let runtime = corral_tests::harness::runtime();
    let first = runtime.load(plugin_bytes(ECHO)).await.unwrap();
    let second = runtime.load(plugin_bytes(ECHO)).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    let stats = runtime.cache_stats();
    assert_eq!(stats.compiles, 1);
    assert_eq!(stats.memory_hits, 1);
}

#[tokio::test]
async fn inspecting_a_component_that_is_not_an_agent_compiles_it_once() {
    let runtime = corral_tests::harness::runtime();
    let (loaded, interface) = runtime.inspect(plugin_bytes(NOT_AN_AGENT)).await;
    assert!(loaded.is_err(), "a wasi:cli command is not an agent");
    let interface = interface.expect("its interface is still shown");
    assert!(
        interface
            .exports
            .iter()
            .any(|e| e.starts_with("wasi:cli/run")),
        "{:?}",
        interface.exports
    );
    assert_eq!(runtime.cache_stats().compiles, 1);
    let (loaded, interface) = runtime.inspect(plugin_bytes(ECHO)).await;
    assert_eq!(loaded.unwrap().metadata.name, "echo");
    assert!(interface.is_some());
    assert_eq!(runtime.cache_stats().compiles, 2);
}

#[tokio::test]
async fn concurrent_loads_of_the_same_bytes_compile_once() {
    let runtime = corral_tests::harness::runtime();
    let loads = (0..8).map(|_| runtime.load(plugin_bytes(ECHO)));
    for agent in futures::future::join_all(loads).await {
        agent.unwrap();
    }
    let stats = runtime.cache_stats();
    assert_eq!(stats.compiles, 1);
}

#[tokio::test]
async fn a_restart_reuses_the_disk_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let first = runtime_with_cache(Some(dir.path().to_path_buf()));
    first.load(plugin_bytes(ECHO)).await.unwrap();
    assert_eq!(first.cache_stats().compiles, 1);
    drop(first);

    let restarted = runtime_with_cache(Some(dir.path().to_path_buf()));
    let agent = restarted.load(plugin_bytes(ECHO)).await.unwrap();
    let stats = restarted.cache_stats();
    assert_eq!((stats.compiles, stats.disk_hits), (0, 1));
    assert_eq!(agent.metadata.name, "echo");
}

#[tokio::test]
async fn a_restart_loads_a_known_component_from_its_artifact_without_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = plugin_bytes(ECHO);
    let hash = Runtime::content_hash(&bytes);
    let first = runtime_with_cache(Some(dir.path().to_path_buf()));
    // Nothing compiled yet: no artifact, so the caller must load the bytes.
    assert!(first.load_compiled(&hash, bytes.len()).await.is_none());
    first.load(bytes.clone()).await.unwrap();
    drop(first);

    let restarted = runtime_with_cache(Some(dir.path().to_path_buf()));
    let agent = restarted
        .load_compiled(&hash, bytes.len())
        .await
        .expect("the artifact is there");
    assert_eq!(agent.metadata.name, "echo");
    assert_eq!(agent.hash, hash);
    let stats = restarted.cache_stats();
    assert_eq!((stats.compiles, stats.disk_hits), (0, 1));
    // Now in memory: the bytes' load finds it there.
    restarted.load(bytes.clone()).await.unwrap();
    assert_eq!(restarted.cache_stats().compiles, 0);

    // A damaged artifact is not used (and is removed): the caller loads the bytes.
    let path = only_artifact(dir.path());
    let mut file = std::fs::read(&path).unwrap();
    let middle = file.len() / 2;
    file[middle] ^= 0xff;
    std::fs::write(&path, &file).unwrap();
    let third = runtime_with_cache(Some(dir.path().to_path_buf()));
    assert!(third.load_compiled(&hash, bytes.len()).await.is_none());
    assert_eq!(third.cache_stats().disk_discards, 1);
    assert!(!path.exists());
}

fn only_artifact(dir: &std::path::Path) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[tokio::test]
async fn a_corrupted_artifact_is_detected_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    runtime_with_cache(Some(dir.path().to_path_buf()))
        .load(plugin_bytes(ECHO))
        .await
        .unwrap();
    let path = only_artifact(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let restarted = runtime_with_cache(Some(dir.path().to_path_buf()));
    let agent = restarted.load(plugin_bytes(ECHO)).await.unwrap();
    let stats = restarted.cache_stats();
    assert_eq!(
        (stats.disk_discards, stats.compiles, stats.disk_hits),
        (1, 1, 0)
    );
    assert_eq!(agent.metadata.name, "echo");

    // The rewritten artifact is good again.
    let third = runtime_with_cache(Some(dir.path().to_path_buf()));
    third.load(plugin_bytes(ECHO)).await.unwrap();
    assert_eq!(third.cache_stats().disk_hits, 1);
}

#[tokio::test]
async fn a_truncated_artifact_is_detected_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    runtime_with_cache(Some(dir.path().to_path_buf()))
        .load(plugin_bytes(ECHO))
        .await
        .unwrap();
    let path = only_artifact(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();

    let restarted = runtime_with_cache(Some(dir.path().to_path_buf()));
    restarted.load(plugin_bytes(ECHO)).await.unwrap();
    assert_eq!(restarted.cache_stats().disk_discards, 1);
    assert_eq!(restarted.cache_stats().compiles, 1);
}

#[tokio::test]
async fn an_artifact_from_an_incompatible_engine_is_detected_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    // An engine that differs in code generation: the other interruption mechanism.
    let other_interruption = match EngineSettings::default().interruption {
        Interruption::Epoch { .. } => Interruption::FuelYield {
            interval: 1_000_000,
        },
        Interruption::FuelYield { .. } => Interruption::Epoch {
            tick: std::time::Duration::from_millis(1),
        },
    };
    // Compile with that engine, then plant its artifact under the file name the default
    // engine uses.
    let mut config = RuntimeConfig::in_memory();
    config.engine = EngineSettings {
        interruption: other_interruption,
        ..EngineSettings::default()
    };
    let other = Runtime::new(config).unwrap();
    let foreign = other
        .engine()
        .precompile_component(&plugin_bytes(ECHO))
        .unwrap();

    let runtime = runtime_with_cache(Some(dir.path().to_path_buf()));
    let cache = corral_host::runtime::cache::DiskCache::open(dir.path(), runtime.engine()).unwrap();
    let hash = Runtime::content_hash(&plugin_bytes(ECHO));
    cache.store(&hash, &foreign).unwrap();

    runtime.load(plugin_bytes(ECHO)).await.unwrap();
    let stats = runtime.cache_stats();
    assert_eq!(
        (stats.disk_discards, stats.compiles, stats.disk_hits),
        (1, 1, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn the_memory_cache_keeps_to_its_bytes_and_reloads_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (echo, stats) = (
        plugin_bytes(ECHO),
        plugin_bytes(corral_tests::plugins::TEXT_STATS),
    );
    let mut config = RuntimeConfig::in_memory();
    config.compile =
        corral_host::runtime::CompileSettings::worker(corral_tests::harness::corral_bin());
    config.cache_dir = Some(dir.path().to_path_buf());
    // What each weighs (its compiled image and twice its bytes), from a first load.
    let weigh = corral_tests::harness::runtime();
    let weights = [
        weigh.load(echo.clone()).await.unwrap().resident_bytes,
        weigh.load(stats.clone()).await.unwrap().resident_bytes,
    ];
    assert!(
        weights
            .iter()
            .zip([&echo, &stats])
            .all(|(w, b)| *w > 2 * b.len())
    );
    // Room for one of the two agents, not both.
    let room = *weights.iter().max().unwrap() as u64 + 1;
    config.cache_bytes = room;
    let runtime = Runtime::new(config).unwrap();
    runtime.load(echo.clone()).await.unwrap();
    runtime.load(stats.clone()).await.unwrap();
    let (count, bytes) = runtime.cached().await;
    assert_eq!(count, 1, "the least recently used agent was dropped");
    assert!(bytes <= room);
    // Dropped from memory, it comes back from the disk artifact, not a compile.
    let compiles = runtime.cache_stats().compiles;
    runtime.load(echo).await.unwrap();
    runtime.load(stats).await.unwrap();
    assert_eq!(
        runtime.cache_stats().compiles,
        compiles,
        "reloaded, not recompiled"
    );
    assert!(runtime.cache_stats().disk_hits >= 1);
}
