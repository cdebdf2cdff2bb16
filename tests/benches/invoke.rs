//! Invocation cost, measured against raw wasmtime in the same run.
//!
//! - `invoke/*`: one `echo` call with a fresh instance per call. `raw_wasmtime` is what a
//!   careful embedder writes by hand on the *same* engine (pooling allocator, fuel):
//!   a fresh `Store`, `instantiate_async` from an `InstancePre`, call the export
//!   ([`corral_tests::baseline`]).
//!   `corral` is `Runtime::invoke`: that plus input validation, limits, log capture,
//!   usage and outcome classification.
//! - `interruption/*`: a compute-bound call (hostile `burn`) under each interruption
//!   mechanism, to choose the default (see docs/PERFORMANCE.md).
//!
//! Run: `cargo bench -p corral-tests --bench invoke` (after the plugins are built,
//! which `cargo test --workspace` or any build of this crate does).

use std::time::Duration;

use corral_host::limits::Limits;
use corral_host::runtime::bindings::{Context, Invocation};
use corral_host::runtime::engine::{EngineRole, EpochTicker, build_engine};
use corral_host::runtime::{EngineSettings, Interruption, InvokeRequest, Runtime, RuntimeConfig};
use corral_tests::baseline::{RawState, raw_pre};
use corral_tests::plugins::{ECHO, HOSTILE};
use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::Store;
use wasmtime::component::Component;

fn invocation(action: &str, input: &str) -> Invocation {
    Invocation {
        action: action.into(),
        input: input.into(),
        context: Context {
            execution_id: "bench".into(),
            agent_name: "echo".into(),
            agent_version: "0.1.0".into(),
            correlation_id: None,
        },
    }
}

const INPUT: &str = r#"{"message":"hello","n":[1,2,3]}"#;

fn invoke(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("invoke");

    let engine = build_engine(&EngineSettings::default(), EngineRole::Host).unwrap();
    let _ticker = match EngineSettings::default().interruption {
        Interruption::Epoch { tick } => Some(EpochTicker::start(&engine, tick)),
        Interruption::FuelYield { .. } => None,
    };
    let pre = raw_pre(&engine, &Component::from_file(&engine, ECHO).unwrap());
    group.bench_function("raw_wasmtime", |b| {
        b.to_async(&rt).iter(|| async {
            let mut store = Store::new(&engine, RawState::new());
            store.set_fuel(Limits::DEFAULT_FUEL).unwrap();
            // The same interruption setup the runtime uses, so only Corral's own work differs.
            match EngineSettings::default().interruption {
                Interruption::FuelYield { interval } => {
                    store.fuel_async_yield_interval(Some(interval)).unwrap()
                }
                Interruption::Epoch { .. } => {
                    store.set_epoch_deadline(1);
                    store.epoch_deadline_async_yield_and_update(1);
                }
            }
            let agent = pre.instantiate_async(&mut store).await.unwrap();
            let out = agent
                .corral_agent_handler()
                .call_call(&mut store, &invocation("echo", INPUT))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(out.len(), INPUT.len());
        })
    });

    let runtime = Runtime::new(RuntimeConfig::in_memory()).unwrap();
    let agent = rt
        .block_on(runtime.load(std::fs::read(ECHO).unwrap()))
        .unwrap();
    group.bench_function("corral", |b| {
        b.to_async(&rt).iter(|| async {
            let execution = runtime
                .invoke(&agent, InvokeRequest::new("echo", INPUT, Limits::default()))
                .await
                .unwrap();
            assert!(execution.succeeded());
        })
    });
    group.finish();
}

fn interruption(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("interruption");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    let mechanisms = [
        (
            "fuel_yield_1M",
            Interruption::FuelYield {
                interval: 1_000_000,
            },
        ),
        (
            "fuel_yield_10M",
            Interruption::FuelYield {
                interval: 10_000_000,
            },
        ),
        (
            "epoch_1ms",
            Interruption::Epoch {
                tick: Duration::from_millis(1),
            },
        ),
        (
            "epoch_10ms",
            Interruption::Epoch {
                tick: Duration::from_millis(10),
            },
        ),
    ];
    for (name, interruption) in mechanisms {
        let mut config = RuntimeConfig::in_memory();
        config.engine = EngineSettings {
            interruption,
            ..EngineSettings::default()
        };
        let runtime = Runtime::new(config).unwrap();
        let agent = rt
            .block_on(runtime.load(std::fs::read(HOSTILE).unwrap()))
            .unwrap();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let execution = runtime
                    .invoke(
                        &agent,
                        InvokeRequest::new("burn", r#"{"iterations": 2000000}"#, Limits::default()),
                    )
                    .await
                    .unwrap();
                assert!(execution.succeeded(), "{execution:?}");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, invoke, interruption);
criterion_main!(benches);
