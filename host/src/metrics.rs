//! Counters for monitoring, in the Prometheus text format (`GET /metrics`): executions
//! by outcome (a `host_failure` is the host's, counted apart from the guests'), model
//! calls, their tokens and cost, and the compile cache. Per process, since it started.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::runtime::{CacheStats, Execution, Outcome};

/// This process's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    executions: [AtomicU64; Outcome::ALL.len()],
    picodollars: AtomicU64,
    model_calls: AtomicU64,
    model_calls_failed: AtomicU64,
    model_tokens: AtomicU64,
    model_picodollars: AtomicU64,
}

impl Metrics {
    /// Counts one execution and what it was charged.
    pub fn executed(&self, execution: &Execution, cost_picodollars: i64) {
        let index = Outcome::ALL
            .iter()
            .position(|o| *o == execution.outcome)
            .expect("every outcome is in ALL");
        self.executions[index].fetch_add(1, Ordering::Relaxed);
        self.picodollars
            .fetch_add(cost_picodollars.max(0) as u64, Ordering::Relaxed);
        let llm = &execution.usage.llm;
        self.model_calls.fetch_add(llm.calls, Ordering::Relaxed);
        self.model_calls_failed
            .fetch_add(llm.failed, Ordering::Relaxed);
        self.model_tokens
            .fetch_add(llm.input_tokens + llm.output_tokens, Ordering::Relaxed);
        self.model_picodollars
            .fetch_add(llm.cost_picodollars.max(0) as u64, Ordering::Relaxed);
    }

    /// The counters as Prometheus text, with the runtime's compile cache.
    pub fn render(&self, cache: CacheStats) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        counter(
            &mut out,
            "corral_executions_total",
            "Executions by outcome; host_failure is the host's, never billed.",
        );
        for (outcome, count) in Outcome::ALL.iter().zip(&self.executions) {
            let _ = writeln!(
                out,
                "corral_executions_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        let plain = [
            (
                "corral_charged_picodollars_total",
                "What executions were charged, in picodollars.",
                &self.picodollars,
            ),
            (
                "corral_model_calls_total",
                "Model calls sent to a provider.",
                &self.model_calls,
            ),
            (
                "corral_model_calls_failed_total",
                "Model calls that got no answer.",
                &self.model_calls_failed,
            ),
            (
                "corral_model_tokens_total",
                "Model tokens charged, input and output.",
                &self.model_tokens,
            ),
            (
                "corral_model_picodollars_total",
                "What model calls cost, in picodollars.",
                &self.model_picodollars,
            ),
        ];
        for (name, help, value) in plain {
            counter(&mut out, name, help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let cache = [
            (
                "corral_compiles_total",
                "Components compiled.",
                cache.compiles,
            ),
            (
                "corral_component_cache_hits_total",
                "Loads served from the memory cache.",
                cache.memory_hits,
            ),
            (
                "corral_artifact_cache_hits_total",
                "Loads served from the disk cache.",
                cache.disk_hits,
            ),
        ];
        for (name, help, value) in cache {
            counter(&mut out, name, help);
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
