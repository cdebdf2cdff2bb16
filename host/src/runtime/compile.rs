//! Compiling untrusted components without letting one stall or exhaust the host.
//!
//! wasmtime cannot cancel a compile, and some files of a few hundred KB take minutes
//! or many GiB to compile. So by default each compile runs in a **worker process**
//! (`corral compile-worker`, the host's own binary) whose address space and CPU time
//! are capped with `setrlimit`, which the host kills at a wall-clock deadline. A
//! semaphore bounds how many compiles run at once, and compiling never blocks the
//! async executor. The worker returns a serialized artifact, which the host stores in
//! its own cache and loads from there: artifacts are never accepted from users.
//!
//! [`CompileIsolation::InProcess`] skips the worker (for embedders and benchmarks that
//! only compile trusted components); time and memory are then not capped.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use wasmtime::Engine;

use super::LoadError;
use super::engine::{EngineRole, EngineSettings, build_engine};

/// Where compiles run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileIsolation {
    /// In a capped child process running `<program> compile-worker`.
    Worker {
        /// The `corral` binary (normally the current executable).
        program: PathBuf,
    },
    /// On a blocking thread of this process, uncapped.
    InProcess,
}

/// How compiles are bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileSettings {
    /// Where compiles run.
    pub isolation: CompileIsolation,
    /// Wall-clock time one compile may take.
    pub timeout: Duration,
    /// Address space one worker may use, in bytes.
    pub memory_bytes: u64,
    /// Compiles that may run at once; further ones wait.
    pub concurrency: usize,
}

impl CompileSettings {
    /// Workers running `program`, with the default caps.
    pub fn worker(program: PathBuf) -> Self {
        CompileSettings {
            isolation: CompileIsolation::Worker { program },
            ..CompileSettings::in_process()
        }
    }

    /// In-process compiles, with the default concurrency.
    pub fn in_process() -> Self {
        CompileSettings {
            isolation: CompileIsolation::InProcess,
            timeout: Duration::from_secs(60),
            memory_bytes: 2 << 30,
            concurrency: 2,
        }
    }
}

/// Compiles components to serialized artifacts under [`CompileSettings`].
pub struct Compiler {
    engine: Engine,
    engine_settings: EngineSettings,
    settings: CompileSettings,
    permits: Arc<Semaphore>,
}

impl Compiler {
    /// A compiler for artifacts loadable by `engine` (built from `engine_settings`).
    pub fn new(engine: Engine, engine_settings: EngineSettings, settings: CompileSettings) -> Self {
        let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        Compiler {
            engine,
            engine_settings,
            settings,
            permits,
        }
    }

    /// Compiles `wasm` to a serialized artifact.
    pub async fn compile(&self, wasm: Arc<[u8]>) -> Result<Vec<u8>, LoadError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("compile semaphore closed");
        match &self.settings.isolation {
            CompileIsolation::InProcess => {
                let engine = self.engine.clone();
                tokio::task::spawn_blocking(move || engine.precompile_component(&wasm))
                    .await
                    .map_err(|e| LoadError::Internal(e.to_string()))?
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))
            }
            CompileIsolation::Worker { program } => self.compile_in_worker(program, wasm).await,
        }
    }

    async fn compile_in_worker(
        &self,
        program: &PathBuf,
        wasm: Arc<[u8]>,
    ) -> Result<Vec<u8>, LoadError> {
        let settings = serde_json::to_string(&self.engine_settings).expect("settings serialize");
        let cpu_seconds = self.settings.timeout.as_secs().max(1) + 1;
        let mut child = tokio::process::Command::new(program)
            .arg("compile-worker")
            .arg("--engine")
            .arg(settings)
            .arg("--memory-bytes")
            .arg(self.settings.memory_bytes.to_string())
            .arg("--cpu-seconds")
            .arg(cpu_seconds.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                LoadError::Internal(format!(
                    "starting the compile worker {}: {e}",
                    program.display()
                ))
            })?;

        let mut stdin = child.stdin.take().expect("piped stdin");
        let feed = tokio::spawn(async move {
            // A worker that dies early closes the pipe; its exit status says why.
            let _ = stdin.write_all(&wasm).await;
        });
        let output = match tokio::time::timeout(self.settings.timeout, child.wait_with_output())
            .await
        {
            Ok(output) => output
                .map_err(|e| LoadError::Internal(format!("waiting for the compile worker: {e}")))?,
            Err(_) => {
                // `kill_on_drop` kills the worker as the future is dropped.
                return Err(LoadError::CompileTimedOut(self.settings.timeout));
            }
        };
        let _ = feed.await;

        if output.status.success() {
            return Ok(output.stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if let Some(message) = stderr.strip_prefix(INVALID_PREFIX) {
            return Err(LoadError::Invalid(message.trim().to_string()));
        }
        Err(LoadError::CompileResourcesExhausted {
            memory_bytes: self.settings.memory_bytes,
            detail: describe_exit(output.status, &stderr),
        })
    }
}

/// The worker prefixes a compile error (as opposed to a crash) with this.
const INVALID_PREFIX: &str = "invalid component:";

fn describe_exit(status: std::process::ExitStatus, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    // The cause, not Rust's hint about backtraces that follows it.
    let last_line = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("note:"))
        .unwrap_or("")
        .to_string();
    if stderr.contains("memory allocation of") {
        return format!("the compile ran out of memory ({last_line})");
    }
    match status.signal() {
        Some(libc::SIGXCPU) => "the worker used up its CPU time".into(),
        Some(libc::SIGKILL) => "the worker was killed (out of memory or CPU time)".into(),
        Some(libc::SIGABRT) | Some(libc::SIGSEGV) => {
            format!("the worker aborted, most likely out of memory. {last_line}")
        }
        Some(signal) => format!("the worker died with signal {signal}. {last_line}"),
        None => format!("the worker failed with {status}. {last_line}"),
    }
}

/// The body of `corral compile-worker`: caps itself, reads a component on stdin,
/// writes the serialized artifact on stdout. Returns the process exit code.
pub fn run_worker(engine_settings: &str, memory_bytes: u64, cpu_seconds: u64) -> i32 {
    // Cap ourselves before touching the input.
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, memory_bytes, memory_bytes)
        .and_then(|()| rlimit::setrlimit(rlimit::Resource::CPU, cpu_seconds, cpu_seconds + 1))
    {
        eprintln!("could not cap the compile worker: {e}");
        return 3;
    }
    let settings: EngineSettings = match serde_json::from_str(engine_settings) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bad engine settings: {e}");
            return 2;
        }
    };
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut wasm) {
        eprintln!("reading the component: {e}");
        return 2;
    }
    let engine = match build_engine(&settings, EngineRole::CompileOnly) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("building the engine: {e:#}");
            return 2;
        }
    };
    match engine.precompile_component(&wasm) {
        Ok(artifact) => match std::io::stdout().write_all(&artifact) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("writing the artifact: {e}");
                2
            }
        },
        Err(e) => {
            eprintln!("{INVALID_PREFIX} {e:#}");
            1
        }
    }
}
