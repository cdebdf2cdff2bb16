//! Many invocations at once, good and bad mixed: each gets its own correct outcome.

use std::sync::Arc;
use std::time::Duration;

use corral_host::limits::Limits;
use corral_host::runtime::{InvokeRequest, Outcome};
use corral_tests::harness::{load, runtime, tight_limits};
use corral_tests::plugins::{ECHO, HOSTILE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_burst_gets_the_right_outcome_each() {
    let runtime = Arc::new(runtime());
    let echo = load(&runtime, ECHO).await;
    let hostile = load(&runtime, HOSTILE).await;

    let timeout_limits = Limits {
        fuel: u64::MAX / 2,
        timeout: Duration::from_millis(300),
        ..tight_limits()
    };
    let cases: Vec<(&Arc<_>, &str, String, Limits, Outcome)> = (0..12)
        .flat_map(|i| {
            vec![
                (
                    &echo,
                    "echo",
                    format!(r#"{{"i":{i}}}"#),
                    Limits::default(),
                    Outcome::Succeeded,
                ),
                (
                    &hostile,
                    "spin",
                    "{}".to_string(),
                    Limits {
                        fuel: 2_000_000,
                        ..tight_limits()
                    },
                    Outcome::FuelExhausted,
                ),
                (
                    &hostile,
                    "spin",
                    "{}".to_string(),
                    timeout_limits,
                    Outcome::TimedOut,
                ),
                (
                    &hostile,
                    "hog_memory",
                    "{}".to_string(),
                    Limits {
                        memory_bytes: 4 << 20,
                        ..tight_limits()
                    },
                    Outcome::MemoryLimitExceeded,
                ),
                (
                    &hostile,
                    "fail",
                    "{}".to_string(),
                    tight_limits(),
                    Outcome::AgentError,
                ),
                (
                    &hostile,
                    "panic",
                    "{}".to_string(),
                    tight_limits(),
                    Outcome::Trapped,
                ),
                (
                    &hostile,
                    "sleep",
                    r#"{"ms": 20}"#.to_string(),
                    tight_limits(),
                    Outcome::Succeeded,
                ),
            ]
        })
        .collect();

    let tasks: Vec<_> = cases
        .into_iter()
        .map(|(agent, action, input, limits, expected)| {
            let runtime = runtime.clone();
            let agent = Arc::clone(agent);
            let action = action.to_string();
            tokio::spawn(async move {
                let execution = runtime
                    .invoke(&agent, InvokeRequest::new(&action, &input, limits))
                    .await
                    .unwrap();
                (action, input, expected, execution)
            })
        })
        .collect();

    for task in tasks {
        let (action, input, expected, execution) = task.await.unwrap();
        assert_eq!(
            execution.outcome, expected,
            "{action} {input}: {execution:#?}"
        );
        if action == "echo" {
            assert_eq!(
                execution.output.as_deref(),
                Some(input.as_str()),
                "each echo gets its own input back"
            );
        }
    }
}
