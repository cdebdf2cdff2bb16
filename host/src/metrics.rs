//! This process's metrics for `GET /metrics`, in the Prometheus text format (0.0.4),
//! kept and encoded by `prometheus-client`, the Prometheus organisation's Rust client.
//! Per process, since it started.
//!
//! Most series are counted as things happen: executions by outcome (a `host_failure` is
//! the host's, counted apart from the guests'), their latencies, fuel, memory and cost,
//! quota refusals, capability use and denials, model calls. The runtime's compile
//! histogram and the group-commit writer's batch histograms are owned by those parts
//! and registered here. What is a state rather than an event — the compile cache's
//! counters, the instance pool, the database pool, tasks by state — is read at scrape
//! time ([`Scrape`]).
//!
//! Labels stay few and fixed: outcomes, quota codes, capabilities, task states. Agent
//! names label the per-agent series only when the operator opts in
//! (`CORRAL_METRICS_AGENT_LABELS`); execution ids never label anything. Without agent
//! labels, the hot path's counters are resolved once, at start, so counting an
//! execution takes no lock but the histograms' own.

use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::cache::TtlCache;
use crate::runtime::{CacheStats, Outcome, Usage};

type Labels = Vec<(&'static str, String)>;

/// The capabilities counted by `corral_capability_requests_total` and
/// `corral_capability_denials_total`, in the order of [`capability_counts`].
const CAPABILITIES: [&str; 5] = ["http", "kv", "config", "agents", "llm"];

/// Buckets for latencies in seconds: 1 ms to about 33 s, doubling.
pub fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

/// How long a count of tasks by state serves scrapes.
const TASKS_TTL: Duration = Duration::from_secs(5);

/// This process's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Tasks by state, counted at most every few seconds however often scrapes come.
    pub tasks: TtlCache<(), Vec<(String, i64)>>,
    registry: Registry,
    executions: Family<Labels, Counter>,
    /// `executions` by outcome, resolved once (empty with agent labels).
    by_outcome: Vec<Counter>,
    charged: Family<Labels, Counter>,
    fuel: Family<Labels, Counter>,
    /// `charged` and `fuel` without labels (`None` with agent labels).
    totals: Option<(Counter, Counter)>,
    queue_wait: Histogram,
    run: Histogram,
    commit: Histogram,
    peak_memory: Histogram,
    quota_refusals: Family<Labels, Counter>,
    capability_requests: Vec<Counter>,
    capability_denials: Vec<Counter>,
    model_calls: Counter,
    model_calls_failed: Counter,
    model_tokens: [Counter; 2],
    model_picodollars: Counter,
}

/// What one execution took, beyond its [`Execution`].
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// From the request's arrival to the guest's start.
    pub queue_wait: Duration,
    /// From handing the record to the writer to its commit.
    pub commit: Duration,
}

/// The states read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The compile cache's counters.
    pub cache: CacheStats,
    /// Instance-pool slots held, and the pool's size.
    pub instances: (u64, u64),
    /// Database connections open, idle among them, and the most there may be.
    pub db: (u64, u64, u64),
    /// Tasks by state, every tenant's (`None` when they could not be counted).
    pub tasks: Option<Vec<(String, i64)>>,
}

impl Metrics {
    /// Empty metrics, with `agent` labels on the per-agent series if `agent_labels`,
    /// and the parts' own histograms registered (`owned`: name, help, unit, histogram).
    pub fn new(agent_labels: bool, owned: Vec<(&str, &str, Option<Unit>, Histogram)>) -> Metrics {
        let mut registry = Registry::with_prefix("corral");
        let executions = Family::<Labels, Counter>::default();
        registry.register(
            "executions",
            "Executions by outcome; host_failure is the host's, never billed",
            executions.clone(),
        );
        let by_outcome = match agent_labels {
            true => Vec::new(),
            false => Outcome::ALL
                .iter()
                .map(|o| {
                    executions
                        .get_or_create(&vec![("outcome", o.as_str().to_string())])
                        .clone()
                })
                .collect(),
        };
        let charged = Family::<Labels, Counter>::default();
        registry.register(
            "charged_picodollars",
            "What executions were charged, in picodollars",
            charged.clone(),
        );
        let fuel = Family::<Labels, Counter>::default();
        registry.register("fuel", "Fuel executions used", fuel.clone());
        // Without labels, present from the start (so a rate over them has a first
        // sample) and resolved once.
        let totals = (!agent_labels).then(|| {
            (
                charged.get_or_create(&Vec::new()).clone(),
                fuel.get_or_create(&Vec::new()).clone(),
            )
        });
        let histogram = |registry: &mut Registry, name: &str, help: &str| {
            let histogram = Histogram::new(seconds_buckets());
            registry.register_with_unit(name, help, Unit::Seconds, histogram.clone());
            histogram
        };
        let queue_wait = histogram(
            &mut registry,
            "queue_wait",
            "From an invocation's arrival (or a task attempt's claim) to its guest's start",
        );
        let run = histogram(&mut registry, "run", "Guests' wall time");
        let commit = histogram(
            &mut registry,
            "commit",
            "From an execution's end to its record's commit (the group commit's wait included)",
        );
        // 64 KiB to 4 GiB, by fours.
        let peak_memory = Histogram::new(exponential_buckets(65536.0, 4.0, 9));
        registry.register_with_unit(
            "peak_memory",
            "Executions' peak linear memory",
            Unit::Bytes,
            peak_memory.clone(),
        );
        let quota_refusals = Family::<Labels, Counter>::default();
        registry.register(
            "quota_refusals",
            "Invocations a quota refused, by code",
            quota_refusals.clone(),
        );
        let by_capability = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<Labels, Counter>::default();
            registry.register(name, help, family.clone());
            CAPABILITIES
                .iter()
                .map(|c| {
                    family
                        .get_or_create(&vec![("capability", c.to_string())])
                        .clone()
                })
                .collect::<Vec<_>>()
        };
        let capability_requests = by_capability(
            &mut registry,
            "capability_requests",
            "Capability requests guests made that were served (HTTP requests, key-value operations, config and secret reads, calls and tasks, model calls)",
        );
        let capability_denials = by_capability(
            &mut registry,
            "capability_denials",
            "Capability requests refused by policy or limits",
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let model_calls = counter(
            &mut registry,
            "model_calls",
            "Model calls sent to a provider",
        );
        let model_calls_failed = counter(
            &mut registry,
            "model_calls_failed",
            "Model calls that got no answer",
        );
        let tokens = Family::<Labels, Counter>::default();
        registry.register(
            "model_tokens",
            "Model tokens charged, by direction (input, output)",
            tokens.clone(),
        );
        let model_tokens = ["input", "output"].map(|d| {
            tokens
                .get_or_create(&vec![("direction", d.to_string())])
                .clone()
        });
        let model_picodollars = counter(
            &mut registry,
            "model_picodollars",
            "What model calls cost, in picodollars",
        );
        for (name, help, unit, histogram) in owned {
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, histogram),
                None => registry.register(name, help, histogram),
            }
        }
        Metrics {
            tasks: TtlCache::new(TASKS_TTL),
            registry,

            executions,
            by_outcome,
            charged,
            fuel,
            totals,
            queue_wait,
            run,
            commit,
            peak_memory,
            quota_refusals,
            capability_requests,
            capability_denials,
            model_calls,
            model_calls_failed,
            model_tokens,
            model_picodollars,
        }
    }

    /// Counts one execution of `agent`, what it was charged and how long it waited.
    pub fn executed(
        &self,
        agent: &str,
        outcome: Outcome,
        usage: &Usage,
        cost_picodollars: i64,
        timings: Timings,
    ) {
        let cost = cost_picodollars.max(0) as u64;
        if let Some((charged, fuel)) = &self.totals {
            let index = Outcome::ALL
                .iter()
                .position(|o| *o == outcome)
                .expect("every outcome is in ALL");
            self.by_outcome[index].inc();
            charged.inc_by(cost);
            fuel.inc_by(usage.fuel);
        } else {
            let agent = || ("agent", agent.to_string());
            self.executions
                .get_or_create(&vec![("outcome", outcome.as_str().to_string()), agent()])
                .inc();
            self.charged.get_or_create(&vec![agent()]).inc_by(cost);
            self.fuel.get_or_create(&vec![agent()]).inc_by(usage.fuel);
        }
        self.queue_wait.observe(timings.queue_wait.as_secs_f64());
        self.run.observe(usage.wall_time.as_secs_f64());
        self.commit.observe(timings.commit.as_secs_f64());
        self.peak_memory.observe(usage.peak_memory_bytes as f64);
        for ((requests, denials), counter) in capability_counts(usage).into_iter().zip(
            self.capability_requests
                .iter()
                .zip(&self.capability_denials),
        ) {
            counter.0.inc_by(requests);
            counter.1.inc_by(denials);
        }
        let llm = &usage.llm;
        self.model_calls.inc_by(llm.calls);
        self.model_calls_failed.inc_by(llm.failed);
        self.model_tokens[0].inc_by(llm.input_tokens);
        self.model_tokens[1].inc_by(llm.output_tokens);
        self.model_picodollars
            .inc_by(llm.cost_picodollars.max(0) as u64);
    }

    /// Counts an invocation a quota refused, by the refusal's code.
    pub fn quota_refused(&self, code: &str) {
        self.quota_refusals
            .get_or_create(&vec![("code", code.to_string())])
            .inc();
    }

    /// Every series as Prometheus text, with the states read at scrape time.
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut sampled = Registry::with_prefix("corral");
        let cache = scrape.cache;
        for (name, help, value) in [
            (
                "compiles",
                "Components compiled: the compile cache's misses",
                cache.compiles,
            ),
            (
                "component_cache_hits",
                "Loads served from the memory cache",
                cache.memory_hits,
            ),
            (
                "artifact_cache_hits",
                "Loads served from the disk cache",
                cache.disk_hits,
            ),
            (
                "artifact_cache_discards",
                "Disk artifacts found bad and compiled again",
                cache.disk_discards,
            ),
        ] {
            sampled.register(name, help, ConstCounter::new(value));
        }
        let (in_use, pool) = scrape.instances;
        sampled.register(
            "instances_in_use",
            "Instance-pool slots held by running invocations",
            ConstGauge::new(in_use as i64),
        );
        sampled.register(
            "instances_max",
            "The instance pool's size",
            ConstGauge::new(pool as i64),
        );
        let (open, idle, max) = scrape.db;
        let connections = Family::<Labels, Gauge>::default();
        for (state, count) in [("in_use", open.saturating_sub(idle)), ("idle", idle)] {
            connections
                .get_or_create(&vec![("state", state.to_string())])
                .set(count as i64);
        }
        sampled.register(
            "db_connections",
            "Database connections open, by state",
            connections,
        );
        sampled.register(
            "db_connections_max",
            "The most database connections the pool opens",
            ConstGauge::new(max as i64),
        );
        if let Some(tasks) = &scrape.tasks {
            let by_state = Family::<Labels, Gauge>::default();
            for state in crate::tasks::TaskState::ALL {
                by_state
                    .get_or_create(&vec![("state", state.as_str().to_string())])
                    .set(0);
            }
            for (state, count) in tasks {
                by_state
                    .get_or_create(&vec![("state", state.clone())])
                    .set(*count);
            }
            sampled.register(
                "tasks",
                "Tasks by state, every tenant's (read at most every few seconds)",
                by_state,
            );
        }
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String");
        prometheus_text::encode(&mut out, &sampled).expect("writing to a String");
        out
    }
}

/// Per capability of [`CAPABILITIES`]: requests served, requests refused.
fn capability_counts(usage: &Usage) -> [(u64, u64); 5] {
    let (kv, config, agents) = (&usage.kv, &usage.config, &usage.agents);
    [
        (usage.http.requests, usage.http.requests_denied),
        (
            kv.reads + kv.writes + kv.deletes + kv.lists,
            kv.denied + kv.refused,
        ),
        (
            config.values_read + config.secrets_read,
            config.secrets_denied,
        ),
        (agents.calls + agents.tasks_submitted, agents.calls_denied),
        (usage.llm.calls, usage.llm.denied),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings() -> Timings {
        Timings {
            queue_wait: Duration::from_millis(3),
            commit: Duration::from_millis(2),
        }
    }

    #[test]
    fn an_execution_moves_its_outcome_fuel_and_histograms() {
        let metrics = Metrics::new(false, Vec::new());
        let usage = Usage {
            fuel: 1234,
            ..Usage::default()
        };
        metrics.executed("echo", Outcome::TimedOut, &usage, 7, timings());
        let text = metrics.render(&Scrape::default());
        assert!(
            text.contains("corral_executions_total{outcome=\"timed_out\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("corral_executions_total{outcome=\"succeeded\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("corral_fuel_total 1234\n"), "{text}");
        assert!(
            text.contains("corral_charged_picodollars_total 7\n"),
            "{text}"
        );
        assert!(
            text.contains("corral_queue_wait_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("echo"),
            "no agent names unless asked: {text}"
        );
    }

    #[test]
    fn agent_labels_are_opt_in() {
        let metrics = Metrics::new(true, Vec::new());
        metrics.executed("echo", Outcome::Succeeded, &Usage::default(), 0, timings());
        let text = metrics.render(&Scrape::default());
        assert!(
            text.contains("corral_executions_total{outcome=\"succeeded\",agent=\"echo\"} 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("corral_executions_total{outcome=\"succeeded\"} "),
            "{text}"
        );
    }
}
