//! Durable tasks: work submitted now and run later, by whichever node's workers claim
//! it, through the same invocation pipeline as a synchronous invoke.
//!
//! - [`TaskState`]: `queued`, `scheduled`, `blocked`, `running`, `retrying`, then one of
//!   `succeeded`, `failed`, `cancelled` — final once recorded.
//! - [`RetryPolicy`]: what is retried ([`retryable`]) and when ([`Backoff`]).
//! - [`worker`]: the claim → run → complete loop every `corral serve` runs.
//! - Persistence is in [`crate::db::tasks`]; the HTTP routes in `api/routes/tasks.rs`.
//!
//! The guarantee: an attempt may run more than once only if its node died; each
//! attempt's outcome is recorded exactly once (in the same transaction as its execution
//! record); a task's result is final once recorded. Every write about an attempt is
//! fenced on the task's id and attempt number, so a stale worker cannot overwrite a
//! newer attempt.

pub mod submit;
pub mod worker;

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::runtime::{ExecutionError, Outcome};

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a worker; may start now.
    Queued,
    /// Waiting for its `run_at`.
    Scheduled,
    /// Waiting for the tasks it depends on to succeed.
    Blocked,
    /// An attempt is running on some node.
    Running,
    /// An attempt failed in a way worth retrying; the next waits for its backoff.
    Retrying,
    /// An attempt succeeded: the result is final.
    Succeeded,
    /// It failed for good: the error is final.
    Failed,
    /// It was cancelled (by a caller, or because a task it depends on failed).
    Cancelled,
}

impl TaskState {
    /// Every state, in declaration order.
    pub const ALL: [TaskState; 8] = [
        TaskState::Queued,
        TaskState::Scheduled,
        TaskState::Blocked,
        TaskState::Running,
        TaskState::Retrying,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// The stable name, e.g. `retrying`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Scheduled => "scheduled",
            TaskState::Blocked => "blocked",
            TaskState::Running => "running",
            TaskState::Retrying => "retrying",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// Parses a stable name.
    pub fn parse(name: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the task is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }
}

/// Exponential backoff with jitter between attempts: the n-th retry waits a random
/// time between half and all of `min(cap, base × 2ⁿ⁻¹)` ("equal jitter"), so retries of
/// many tasks that failed together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// The first retry's delay, in milliseconds (default 1000).
    #[serde(default = "Backoff::default_base_ms")]
    pub base_ms: u64,
    /// The longest delay, in milliseconds (default 300000, five minutes).
    #[serde(default = "Backoff::default_cap_ms")]
    pub cap_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base_ms: Backoff::default_base_ms(),
            cap_ms: Backoff::default_cap_ms(),
        }
    }
}

impl Backoff {
    fn default_base_ms() -> u64 {
        1_000
    }

    fn default_cap_ms() -> u64 {
        300_000
    }

    /// Longest a backoff may be: a day.
    pub const MAX_MS: u64 = 86_400_000;

    /// Refuses zero and values over a day, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("backoff.base_ms", self.base_ms),
            ("backoff.cap_ms", self.cap_ms),
        ] {
            if value == 0 || value > Self::MAX_MS {
                return Err(format!(
                    "{name} is {value}; it must be between 1 and {}",
                    Self::MAX_MS
                ));
            }
        }
        if self.base_ms > self.cap_ms {
            return Err("backoff.base_ms must not be above backoff.cap_ms".into());
        }
        Ok(())
    }

    /// The delay before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let exponential = self.base_ms.saturating_mul(
            1u64.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u64::MAX),
        );
        let ceiling = exponential.min(self.cap_ms);
        let jittered = rand::rng().random_range(ceiling / 2..=ceiling);
        Duration::from_millis(jittered)
    }
}

/// When and whether to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The delay between them.
    pub backoff: Backoff,
    /// Whether an attempt that timed out is retried.
    pub retry_timeouts: bool,
}

/// Whether an attempt that ended with `outcome` (and `error`) may succeed next time:
/// an agent error the agent marked retryable, or a timeout (if the task allows). Never
/// invalid input, traps, fuel or memory exhaustion, oversized output or logs, a
/// cancellation, or a failure after a capability was denied (`denied`: the grant will
/// not change by itself). (Host failures and lost nodes are retried too; they leave no
/// outcome.)
pub fn retryable(
    outcome: Outcome,
    error: Option<&ExecutionError>,
    denied: bool,
    policy: &RetryPolicy,
) -> bool {
    if denied {
        return false;
    }
    match outcome {
        Outcome::AgentError => error.is_some_and(|e| e.retryable),
        Outcome::TimedOut => policy.retry_timeouts,
        Outcome::HostFailure => true,
        Outcome::Succeeded
        | Outcome::Trapped
        | Outcome::FuelExhausted
        | Outcome::MemoryLimitExceeded
        | Outcome::OutputTooLarge
        | Outcome::LogLimitExceeded
        | Outcome::InvalidInput
        | Outcome::Cancelled => false,
    }
}

/// A task's error, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskError {
    /// A stable code: the execution's error code, or the host's (`node_lost`,
    /// `host_failure`, `budget_exhausted`, `dependency_failed`, `cancelled`, …).
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
    /// Whether the last attempt's failure was worth retrying.
    #[serde(default)]
    pub retryable: bool,
}

impl TaskError {
    /// An error of the host's.
    pub fn new(code: &str, message: impl Into<String>, retryable: bool) -> TaskError {
        TaskError {
            code: code.into(),
            message: message.into(),
            retryable,
        }
    }
}

/// The attempt of a task an invocation runs as.
#[derive(Debug, Clone)]
pub struct TaskAttempt {
    /// The task.
    pub task_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// The attempt number (1 for the first).
    pub attempt: u32,
    /// When to retry and what.
    pub policy: RetryPolicy,
    /// The workflow the task is a step (or compensation) of.
    pub workflow_id: Option<String>,
}

/// What an attempt's end does to its task: written in the same transaction as the
/// attempt's execution record, fenced on (task, attempt).
#[derive(Debug, Clone)]
pub struct TaskCompletion {
    /// The task.
    pub task_id: String,
    /// The attempt that ended.
    pub attempt: u32,
    /// What the attempt is recorded as (an execution outcome, or the host's word).
    pub attempt_outcome: String,
    /// What happens to the task.
    pub next: Next,
    /// When.
    pub at: DateTime<Utc>,
    /// The workflow the task is a step (or compensation) of: the group commit moves it
    /// on in the transaction that records the end.
    pub workflow_id: Option<String>,
}

/// Where a task goes after an attempt.
#[derive(Debug, Clone)]
pub enum Next {
    /// Done: the full output (JSON text) is its result.
    Succeeded {
        /// The output.
        result: String,
    },
    /// Another attempt at `run_at`.
    Retry {
        /// When.
        run_at: DateTime<Utc>,
        /// Why this attempt failed.
        error: TaskError,
    },
    /// Failed for good.
    Failed {
        /// Why.
        error: TaskError,
    },
    /// Cancelled while it ran.
    Cancelled {
        /// Why.
        error: TaskError,
    },
}

impl Next {
    /// The task's state after it.
    pub fn state(&self) -> TaskState {
        match self {
            Next::Succeeded { .. } => TaskState::Succeeded,
            Next::Retry { .. } => TaskState::Retrying,
            Next::Failed { .. } => TaskState::Failed,
            Next::Cancelled { .. } => TaskState::Cancelled,
        }
    }

    /// After a failure worth retrying: a retry if attempts remain, else failed.
    pub fn after_retryable(attempt: &TaskAttempt, error: TaskError, now: DateTime<Utc>) -> Next {
        if attempt.attempt >= attempt.policy.max_attempts {
            return Next::Failed { error };
        }
        let delay = attempt.policy.backoff.delay(attempt.attempt);
        Next::Retry {
            run_at: now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero()),
            error,
        }
    }
}

impl TaskCompletion {
    /// What an attempt that ran and ended with `outcome` does to its task (`denied`:
    /// the guest was refused a capability during the attempt).
    pub fn of_run(
        attempt: &TaskAttempt,
        outcome: Outcome,
        output: Option<&str>,
        error: Option<&ExecutionError>,
        denied: bool,
        now: DateTime<Utc>,
    ) -> TaskCompletion {
        let task_error = || match error {
            Some(e) => TaskError::new(&e.code, e.message.clone(), e.retryable),
            None => TaskError::new(
                outcome.as_str(),
                format!("the attempt ended with {outcome}"),
                false,
            ),
        };
        let next = match (outcome, output) {
            (Outcome::Succeeded, Some(output)) => Next::Succeeded {
                result: output.to_string(),
            },
            (Outcome::Cancelled, _) => Next::Cancelled {
                error: task_error(),
            },
            (outcome, _) if retryable(outcome, error, denied, &attempt.policy) => {
                Next::after_retryable(attempt, task_error(), now)
            }
            _ => Next::Failed {
                error: task_error(),
            },
        };
        TaskCompletion {
            task_id: attempt.task_id.clone(),
            attempt: attempt.attempt,
            attempt_outcome: outcome.as_str().into(),
            next,
            at: now,
            workflow_id: attempt.workflow_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(n: u32, max: u32) -> TaskAttempt {
        TaskAttempt {
            task_id: "t".into(),
            tenant_id: "x".into(),
            attempt: n,
            policy: RetryPolicy {
                max_attempts: max,
                backoff: Backoff {
                    base_ms: 1000,
                    cap_ms: 5000,
                },
                retry_timeouts: true,
            },
            workflow_id: None,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let backoff = Backoff {
            base_ms: 1000,
            cap_ms: 5000,
        };
        for _ in 0..100 {
            let first = backoff.delay(1).as_millis();
            assert!((500..=1000).contains(&first), "{first}");
            let third = backoff.delay(3).as_millis();
            assert!((2000..=4000).contains(&third), "{third}");
            let tenth = backoff.delay(10).as_millis();
            assert!((2500..=5000).contains(&tenth), "{tenth}");
            assert!(backoff.delay(200).as_millis() <= 5000);
        }
    }

    #[test]
    fn only_failures_that_can_succeed_next_time_are_retried() {
        let now = Utc::now();
        let retryable_error = ExecutionError {
            code: "upstream".into(),
            message: "down".into(),
            retryable: true,
        };
        let fatal_error = ExecutionError {
            retryable: false,
            ..retryable_error.clone()
        };
        let next = |outcome, error: Option<&ExecutionError>| {
            TaskCompletion::of_run(&attempt(1, 3), outcome, None, error, false, now)
                .next
                .state()
        };
        assert_eq!(
            next(Outcome::AgentError, Some(&retryable_error)),
            TaskState::Retrying
        );
        assert_eq!(
            next(Outcome::AgentError, Some(&fatal_error)),
            TaskState::Failed
        );
        assert_eq!(next(Outcome::TimedOut, None), TaskState::Retrying);
        for outcome in [
            Outcome::InvalidInput,
            Outcome::Trapped,
            Outcome::FuelExhausted,
            Outcome::MemoryLimitExceeded,
            Outcome::OutputTooLarge,
            Outcome::LogLimitExceeded,
        ] {
            assert_eq!(
                next(outcome, Some(&retryable_error)),
                TaskState::Failed,
                "{outcome}"
            );
        }
        assert_eq!(next(Outcome::Cancelled, None), TaskState::Cancelled);
        let last =
            TaskCompletion::of_run(&attempt(3, 3), Outcome::TimedOut, None, None, false, now);
        assert_eq!(last.next.state(), TaskState::Failed, "no attempts left");
        let denied = TaskCompletion::of_run(
            &attempt(1, 3),
            Outcome::AgentError,
            None,
            Some(&retryable_error),
            true,
            now,
        );
        assert_eq!(
            denied.next.state(),
            TaskState::Failed,
            "a denial is not retried"
        );
    }
}
