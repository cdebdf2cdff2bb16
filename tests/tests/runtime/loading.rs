//! Anything that is not a valid agent is refused with an error that says what is wrong.

use std::time::Duration;

use corral_host::runtime::{CompileSettings, LoadError, Runtime, RuntimeConfig, StructureLimits};
use corral_tests::harness::{corral_bin, plugin_bytes, runtime};
use corral_tests::plugins::{ECHO, NOT_AN_AGENT};

async fn load_err(runtime: &Runtime, bytes: Vec<u8>) -> LoadError {
    runtime.load(bytes).await.expect_err("must be refused")
}

#[tokio::test]
async fn empty_files_text_core_modules_and_artifacts_are_refused_by_name() {
    let runtime = runtime();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "empty"),
        (
            b"hello, world".to_vec(),
            "not a WebAssembly component (starts with bytes 68 65",
        ),
        (b"(component)".to_vec(), "WebAssembly text"),
        (
            wat::parse_str("(module)").unwrap(),
            "core WebAssembly module",
        ),
        (
            b"\x7fELF\x02\x01\x01\0rest".to_vec(),
            "precompiled native artifact",
        ),
    ];
    for (bytes, expected) in cases {
        let err = load_err(&runtime, bytes).await;
        assert!(matches!(err, LoadError::NotAComponent(_)), "{err:?}");
        assert!(
            err.to_string().contains(expected),
            "{err} should mention {expected:?}"
        );
    }
    assert_eq!(runtime.cache_stats().compiles, 0, "nothing was compiled");
}

#[tokio::test]
async fn a_real_precompiled_artifact_is_refused() {
    let runtime = runtime();
    let artifact = runtime
        .engine()
        .precompile_component(&plugin_bytes(ECHO))
        .unwrap();
    let err = load_err(&runtime, artifact).await;
    assert!(err.to_string().contains("precompiled"), "{err}");
}

#[tokio::test]
async fn a_truncated_component_is_malformed() {
    let runtime = runtime();
    let mut bytes = plugin_bytes(ECHO);
    bytes.truncate(bytes.len() / 2);
    let err = load_err(&runtime, bytes).await;
    assert!(matches!(err, LoadError::Malformed(_)), "{err:?}");
}

#[tokio::test]
async fn a_component_of_another_world_is_refused() {
    let runtime = runtime();
    let err = load_err(&runtime, plugin_bytes(NOT_AN_AGENT)).await;
    assert!(matches!(err, LoadError::WrongWorld(_)), "{err:?}");
    assert!(
        err.to_string().contains("corral:agent/handler@0.1.0"),
        "{err}"
    );

    let empty = wat::parse_str("(component)").unwrap();
    let err = load_err(&runtime, empty).await;
    assert!(matches!(err, LoadError::WrongWorld(_)), "{err:?}");
}

#[tokio::test]
async fn an_import_the_host_does_not_provide_is_named() {
    let runtime = runtime();
    let bytes = wat::parse_str(
        r#"(component (import "acme:secret/vault" (instance (export "open" (func)))))"#,
    )
    .unwrap();
    let err = load_err(&runtime, bytes).await;
    assert!(matches!(err, LoadError::UnknownImport(_)), "{err:?}");
    assert!(err.to_string().contains("acme:secret/vault"), "{err}");
}

#[tokio::test]
async fn an_invalid_component_is_reported_by_the_validator() {
    let runtime = runtime();
    // Well-formed, but the function returns nothing where it promises an i32.
    let bytes = wat::parse_str(r#"(component (core module (func (result i32))))"#).unwrap();
    let err = load_err(&runtime, bytes).await;
    assert!(matches!(err, LoadError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn a_component_over_the_structure_limits_is_refused_before_compiling() {
    let mut config = RuntimeConfig::in_memory();
    config.structure = StructureLimits {
        max_function_body_bytes: 64,
        ..StructureLimits::default()
    };
    let runtime = Runtime::new(config).unwrap();
    let err = load_err(&runtime, plugin_bytes(ECHO)).await;
    assert!(matches!(err, LoadError::TooComplex(_)), "{err:?}");
    assert_eq!(runtime.cache_stats().compiles, 0);
}

#[tokio::test]
async fn a_compile_past_its_deadline_is_killed() {
    let mut config = RuntimeConfig::in_memory();
    config.compile = CompileSettings {
        timeout: Duration::from_millis(1),
        ..CompileSettings::worker(corral_bin())
    };
    let runtime = Runtime::new(config).unwrap();
    let err = load_err(&runtime, plugin_bytes(ECHO)).await;
    assert!(matches!(err, LoadError::CompileTimedOut(_)), "{err:?}");
    assert!(err.to_string().contains("took longer than"), "{err}");
}

#[tokio::test]
async fn a_compile_over_its_memory_cap_fails_cleanly() {
    let mut config = RuntimeConfig::in_memory();
    config.compile = CompileSettings {
        memory_bytes: 32 << 20,
        ..CompileSettings::worker(corral_bin())
    };
    let runtime = Runtime::new(config).unwrap();
    let err = load_err(&runtime, plugin_bytes(ECHO)).await;
    assert!(
        matches!(err, LoadError::CompileResourcesExhausted { .. }),
        "{err:?}"
    );
    // The host is unharmed: the same runtime loads it with a sane cap elsewhere.
    let healthy = corral_tests::harness::runtime();
    healthy
        .load(plugin_bytes(ECHO))
        .await
        .expect("loads with the default cap");
}

#[tokio::test]
async fn describe_metadata_is_read_at_load() {
    let runtime = runtime();
    let agent = runtime.load(plugin_bytes(ECHO)).await.unwrap();
    assert_eq!(agent.metadata.name, "echo");
    assert!(semver_like(&agent.metadata.version));
    let names: Vec<_> = agent
        .metadata
        .actions
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["echo", "transform"]);
    assert!(
        agent
            .interface
            .exports
            .iter()
            .any(|e| e == "corral:agent/handler@0.1.0")
    );
    assert!(
        agent
            .interface
            .imports
            .iter()
            .any(|i| i == "corral:agent/logging@0.1.0")
    );
    assert_eq!(agent.hash, Runtime::content_hash(&plugin_bytes(ECHO)));
}

fn semver_like(v: &str) -> bool {
    v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u64>().is_ok())
}
