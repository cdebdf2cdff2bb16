//! Per-invocation limits, and the [`StoreLimiter`] that enforces the memory side of them.
//!
//! [`Limits`] is plain data: one serializable value, set in one place (flags, env, or an
//! agent's policy) and handed to each invocation. The limiter is the `ResourceLimiter`
//! wasmtime consults whenever a guest asks for linear memory, table slots or instances.
//! It never guesses from trap messages: it *records* every denial, so the invocation can
//! be classified from what actually happened.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Hard limits for one invocation. A guest that exceeds any of them is stopped there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Instructions the guest may execute, in wasmtime fuel units (about one per
    /// wasm instruction).
    pub fuel: u64,
    /// Total linear memory, summed over every memory of the component, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock time from instantiation to the end of the call, including time the
    /// guest spends blocked in host calls.
    #[serde(with = "duration_ms", rename = "timeout_ms")]
    #[schema(value_type = u64)]
    pub timeout: Duration,
    /// Size of the JSON output the guest may return, in bytes.
    pub output_bytes: u64,
    /// Log bytes captured from the `logging` interface, stdout and stderr together.
    pub log_bytes: u64,
}

impl Limits {
    /// Default fuel: 1e9 instructions, roughly a second of busy compute.
    pub const DEFAULT_FUEL: u64 = 1_000_000_000;
    /// Default memory: 64 MiB.
    pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
    /// Default timeout: 5 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default output: 1 MiB.
    pub const DEFAULT_OUTPUT_BYTES: u64 = 1 << 20;
    /// Default logs: 64 KiB.
    pub const DEFAULT_LOG_BYTES: u64 = 64 << 10;

    /// The tighter of `self` and `other`, field by field.
    pub fn tightened_by(self, other: Limits) -> Limits {
        Limits {
            fuel: self.fuel.min(other.fuel),
            memory_bytes: self.memory_bytes.min(other.memory_bytes),
            timeout: self.timeout.min(other.timeout),
            output_bytes: self.output_bytes.min(other.output_bytes),
            log_bytes: self.log_bytes.min(other.log_bytes),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: Self::DEFAULT_FUEL,
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            timeout: Self::DEFAULT_TIMEOUT,
            output_bytes: Self::DEFAULT_OUTPUT_BYTES,
            log_bytes: Self::DEFAULT_LOG_BYTES,
        }
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Bounds on what a guest may make the host allocate, besides linear memory.
/// These are host-wide settings rather than per-agent policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreBounds {
    /// Elements one table may grow to.
    pub table_elements: usize,
    /// Core instances one component may create.
    pub instances: usize,
    /// Tables one component may create.
    pub tables: usize,
    /// Linear memories one component may create.
    pub memories: usize,
    /// Entries in the store's resource table (streams, pollables, handles).
    pub resource_entries: usize,
    /// Bytes one `wasi:random` call may request.
    pub random_bytes: u64,
}

impl Default for StoreBounds {
    fn default() -> Self {
        StoreBounds {
            table_elements: 100_000,
            instances: 50,
            tables: 50,
            memories: 8,
            resource_entries: 10_000,
            random_bytes: 1 << 20,
        }
    }
}

/// What the limiter saw during one invocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryReport {
    /// The most linear memory the guest held at once, over all memories, in bytes.
    pub peak_bytes: u64,
    /// Whether a memory growth was refused for exceeding [`Limits::memory_bytes`].
    pub memory_denied: bool,
    /// Whether a table growth was refused for exceeding [`StoreBounds::table_elements`].
    pub table_denied: bool,
}

/// The `ResourceLimiter` of one store. Sums linear memory across all of the
/// component's memories, so a guest cannot dodge the limit by declaring many.
#[derive(Debug)]
pub struct StoreLimiter {
    memory_limit: u64,
    bounds: StoreBounds,
    current_bytes: u64,
    /// The last growth approved (its bytes, and the peak before it), until the next.
    approved: Option<(u64, u64)>,
    report: MemoryReport,
}

impl StoreLimiter {
    /// A limiter that allows `memory_limit` bytes in total.
    pub fn new(memory_limit: u64, bounds: StoreBounds) -> Self {
        StoreLimiter {
            memory_limit,
            bounds,
            current_bytes: 0,
            approved: None,
            report: MemoryReport::default(),
        }
    }

    /// What happened so far.
    pub fn report(&self) -> MemoryReport {
        self.report
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Called for the initial allocation too (current = 0), so the sum is exact.
        let grow_by = desired.saturating_sub(current) as u64;
        let total = self.current_bytes.saturating_add(grow_by);
        if total > self.memory_limit {
            self.report.memory_denied = true;
            return Ok(false);
        }
        self.approved = Some((grow_by, self.report.peak_bytes));
        self.current_bytes = total;
        self.report.peak_bytes = self.report.peak_bytes.max(total);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // We approved the growth but the allocator could not provide it (e.g. the
        // pooling slot is smaller). To the guest that is the same as a denial, and the
        // memory it never got is not counted.
        if let Some((grow_by, peak_before)) = self.approved.take() {
            self.current_bytes = self.current_bytes.saturating_sub(grow_by);
            self.report.peak_bytes = peak_before;
        }
        self.report.memory_denied = true;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bounds.table_elements {
            self.report.table_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.bounds.instances
    }

    fn tables(&self) -> usize {
        self.bounds.tables
    }

    fn memories(&self) -> usize {
        self.bounds.memories
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_growth_that_was_approved_but_failed_is_not_counted() {
        use wasmtime::ResourceLimiter;
        let mut limiter = StoreLimiter::new(10 << 20, StoreBounds::default());
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(limiter.memory_growing(1 << 20, 4 << 20, None).unwrap());
        limiter
            .memory_grow_failed(wasmtime::Error::msg("the pool slot is smaller"))
            .unwrap();
        let report = limiter.report();
        assert_eq!(
            report.peak_bytes,
            1 << 20,
            "the failed growth is not in the peak"
        );
        assert!(report.memory_denied);
        // And the memory it never got does not count against what is left.
        assert!(limiter.memory_growing(1 << 20, 10 << 20, None).unwrap());
    }

    use wasmtime::ResourceLimiter;

    use super::*;

    const PAGE: usize = 64 << 10;

    #[test]
    fn memory_is_summed_over_all_memories() {
        let mut limiter = StoreLimiter::new(3 * PAGE as u64, StoreBounds::default());
        assert!(limiter.memory_growing(0, 2 * PAGE, None).unwrap());
        assert!(limiter.memory_growing(0, PAGE, None).unwrap());
        // A second memory cannot take the total past the limit.
        assert!(!limiter.memory_growing(PAGE, 2 * PAGE, None).unwrap());
        let report = limiter.report();
        assert_eq!(report.peak_bytes, 3 * PAGE as u64);
        assert!(report.memory_denied);
    }

    #[test]
    fn growth_exactly_to_the_limit_is_allowed() {
        let mut limiter = StoreLimiter::new(2 * PAGE as u64, StoreBounds::default());
        assert!(limiter.memory_growing(0, 2 * PAGE, None).unwrap());
        assert!(!limiter.report().memory_denied);
    }

    #[test]
    fn tables_beyond_the_bound_are_refused() {
        let bounds = StoreBounds {
            table_elements: 10,
            ..StoreBounds::default()
        };
        let mut limiter = StoreLimiter::new(u64::MAX, bounds);
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert!(!limiter.table_growing(10, 11, None).unwrap());
        assert!(limiter.report().table_denied);
    }

    #[test]
    fn tightening_takes_the_smaller_value_of_each_field() {
        let loose = Limits::default();
        let tight = Limits {
            fuel: 10,
            timeout: Duration::from_millis(1),
            ..Limits::default()
        };
        let both = loose.tightened_by(tight);
        assert_eq!(both.fuel, 10);
        assert_eq!(both.timeout, Duration::from_millis(1));
        assert_eq!(both.memory_bytes, Limits::DEFAULT_MEMORY_BYTES);
    }
}
