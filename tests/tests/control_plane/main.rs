//! The control API over real HTTP against a real `corral serve` application, on a fresh
//! SQLite file and on a fresh Postgres database: every test runs on both.

mod access;
mod agents;
mod calls;
mod capabilities;
mod cli_client;
mod config;
mod console;
mod guests;
mod invocations;
mod isolation;
mod kv;
mod metrics;
mod models;
mod quotas;
mod records;
mod schedules;
mod task_cli;
mod tasks;
mod traces;
mod versions;
mod workflow_cli;
mod workflows;

/// Generates `mod <test> { fn sqlite(); fn postgres(); }` for each `async fn
/// <test>(backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(corral_tests::app::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(corral_tests::app::Backend::Postgres).await
                }
            }
        )*
    };
}
