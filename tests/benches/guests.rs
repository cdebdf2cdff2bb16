//! Python and JavaScript agents: per-call cost against raw wasmtime on the same
//! component in the same run, and the fuel each typical action burns.
//!
//! - `guests/<lang>/raw_wasmtime`: what a careful embedder writes by hand on the same
//!   engine (pooling allocator, fuel, the same interruption): a fresh `Store`,
//!   `instantiate_async` from an `InstancePre` with WASI and `wasi:http` linked, call
//!   `stats`.
//! - `guests/<lang>/corral`: `Runtime::invoke` of the same component and input.
//!
//! `<lang>` is `rust` (plugins/text-stats), `python` and `js` (plugins/python/text-stats,
//! plugins/js/text-stats: the same actions). Before the measurements it prints the fuel
//! and peak memory of each action in each language (docs/GUESTS.md).
//!
//! Run: `./scripts/bench-guests` (builds the Python and JavaScript components first).

use corral_host::limits::Limits;
use corral_host::runtime::bindings::{Context, Invocation};
use corral_host::runtime::engine::{EngineRole, EpochTicker, build_engine};
use corral_host::runtime::{EngineSettings, Interruption, InvokeRequest, Runtime, RuntimeConfig};
use corral_tests::baseline::{RawState, raw_pre};
use corral_tests::plugins::TEXT_STATS;
use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::Store;
use wasmtime::component::Component;

const TEXT: &str = "Corral runs agents in WebAssembly. Each call gets a fresh instance, \
    hard limits and a receipt: fuel, memory, time and cost. Don't trust the guest; \
    measure it. It's 3.14 times better, or so they say!";

/// (language, component path).
fn components() -> Vec<(&'static str, String)> {
    let built = |lang: &str, name: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/guest-plugins")
            .join(lang)
            .join("text-stats")
            .join(name);
        assert!(
            path.exists(),
            "{} is missing: run ./scripts/bench-guests, which builds it",
            path.display()
        );
        path.to_string_lossy().into_owned()
    };
    vec![
        ("rust", TEXT_STATS.to_string()),
        ("python", built("python", "text-stats-py.wasm")),
        ("js", built("js", "text-stats-js.wasm")),
    ]
}

fn invocation(action: &str, input: &str) -> Invocation {
    Invocation {
        action: action.into(),
        input: input.into(),
        context: Context {
            execution_id: "bench".into(),
            agent_name: "text-stats".into(),
            agent_version: "0.1.0".into(),
            correlation_id: None,
        },
    }
}

/// Fuel and peak memory of each action in each language, printed once.
fn fuel_table(rt: &tokio::runtime::Runtime, runtime: &Runtime) {
    let input = serde_json::json!({ "text": TEXT }).to_string();
    eprintln!(
        "\n{:<8} {:<10} {:>14} {:>12}",
        "language", "action", "fuel", "peak memory"
    );
    for (lang, path) in components() {
        let agent = rt
            .block_on(runtime.load(std::fs::read(&path).unwrap()))
            .unwrap();
        for action in ["stats", "top_words", "describe"] {
            let execution = if action == "describe" {
                rt.block_on(runtime.invoke(
                    &agent,
                    InvokeRequest::new("no_such_action", "{}", Limits::default()),
                ))
            } else {
                rt.block_on(runtime.invoke(
                    &agent,
                    InvokeRequest::new(action, &input, Limits::default()),
                ))
            }
            .unwrap();
            let label = if action == "describe" {
                "(unknown)"
            } else {
                action
            };
            eprintln!(
                "{lang:<8} {label:<10} {:>14} {:>9.1} MiB",
                execution.usage.fuel,
                execution.usage.peak_memory_bytes as f64 / (1 << 20) as f64
            );
        }
    }
    eprintln!();
}

fn guests(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = EngineSettings::default();
    let engine = build_engine(&settings, EngineRole::Host).unwrap();
    let _ticker = match settings.interruption {
        Interruption::Epoch { tick } => Some(EpochTicker::start(&engine, tick)),
        Interruption::FuelYield { .. } => None,
    };
    let runtime = Runtime::new(RuntimeConfig::in_memory()).unwrap();
    fuel_table(&rt, &runtime);
    let input = serde_json::json!({ "text": TEXT }).to_string();

    for (lang, path) in components() {
        let mut group = c.benchmark_group(format!("guests/{lang}"));
        let component = Component::from_file(&engine, &path).unwrap();
        let pre = raw_pre(&engine, &component);
        let input = input.clone();
        group.bench_function("raw_wasmtime", |b| {
            b.to_async(&rt).iter(|| async {
                let mut store = Store::new(&engine, RawState::new());
                store.set_fuel(Limits::DEFAULT_FUEL).unwrap();
                match settings.interruption {
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
                    .call_call(&mut store, &invocation("stats", &input))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(out.contains("\"words\""));
            })
        });

        let agent = rt
            .block_on(runtime.load(std::fs::read(&path).unwrap()))
            .unwrap();
        group.bench_function("corral", |b| {
            b.to_async(&rt).iter(|| async {
                let execution = runtime
                    .invoke(
                        &agent,
                        InvokeRequest::new("stats", &input, Limits::default()),
                    )
                    .await
                    .unwrap();
                assert!(execution.succeeded(), "{execution:?}");
            })
        });
        group.finish();
    }
}

criterion_group!(benches, guests);
criterion_main!(benches);
