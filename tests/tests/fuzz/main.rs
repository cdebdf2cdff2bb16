//! Fuzz targets for the inputs Corral takes from strangers, as property tests
//! (proptest) against the real host code: component bytes on upload, policy and grant
//! JSON, invocation bodies and the input schemas agents publish, egress rules and URLs,
//! and names, ids and the text the databases store. Cron expressions do not exist yet,
//! so there is no target for them.
//!
//! Every target takes bytes — what the host itself would be handed — so that any input
//! can be kept as a file. A run first replays the target's corpus,
//! `tests/fuzz/corpus/<target>/` (seeds chosen by hand, and every input a run found
//! failing, shrunk), then generates new inputs:
//!
//! - under plain `cargo test`, [`CASES`] of them per target, from a fresh seed;
//! - with `FUZZ_SECONDS=<n>`, as many as fit in `n` seconds per target, and prints one
//!   `fuzz-report` line with the count (`scripts/fuzz` runs each target so and tabulates
//!   them). `FUZZ_SEED=<n>` fixes the seed.
//!
//! A failing input is shrunk, written to the corpus as `regression-<hash>` (so every
//! later run replays it), and fails the test with the reason.

mod component;
mod egress;
mod input;
mod json;
mod mutate;
mod names;
mod policy;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{
    Config, RngAlgorithm, RngSeed, TestCaseError, TestError, TestRng, TestRunner,
};

/// Generated inputs per target under plain `cargo test`: enough to catch a regression
/// of a seeded bug, few enough that the whole binary stays within seconds.
const CASES: u32 = 256;

/// Inputs per round of a timed run; the clock is checked between rounds.
const ROUND: u32 = 512;

/// What every property returns: `Err` (via `prop_assert!`) says which invariant broke.
type Verdict = Result<(), TestCaseError>;

/// One fuzz target: how to make inputs, and what must hold for each.
pub struct Target {
    /// The name of its test and of its corpus directory.
    name: &'static str,
    /// Generated inputs, as the bytes the host would be handed.
    inputs: fn() -> BoxedStrategy<Vec<u8>>,
    /// The properties every input must satisfy.
    check: fn(&[u8]) -> Verdict,
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// The files of a target's corpus, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(corpus_dir(target)) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.expect("corpus entry"))
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).expect("corpus file"))
        })
        .collect();
    files.sort();
    files
}

/// FNV-1a, for stable regression file names (no hasher seed to vary between runs).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Keeps a shrunk failing input in the corpus, so every later run replays it.
fn keep_regression(target: &str, input: &[u8]) -> PathBuf {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let path = dir.join(format!("regression-{:016x}", fnv(input)));
    std::fs::write(&path, input).expect("writing the regression");
    path
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
    )
}

/// A runner whose seed is `seed`, for `cases` inputs, shrinking for at most 30 s.
fn runner(cases: u32, seed: u64) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_time: 30_000,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed));
    TestRunner::new_with_rng(config, rng)
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes(),
        );
    }
    bytes
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned());
    format!("panicked: {}", text.unwrap_or_default())
}

/// Replays `target`'s corpus, then generates inputs (see the module docs); panics with
/// the shrunk input's file on the first failure.
fn fuzz(target: &Target) {
    let started = Instant::now();
    let corpus = corpus(target.name);
    for (file, bytes) in &corpus {
        let verdict = std::panic::catch_unwind(|| (target.check)(bytes))
            .unwrap_or_else(|panic| Err(TestCaseError::fail(panic_message(&panic))));
        if let Err(why) = verdict {
            println!(
                "fuzz-report target={} executions=0 seconds=0 seeds=0 regressions=0 failures=1",
                target.name
            );
            panic!(
                "{}: corpus file tests/fuzz/corpus/{}/{file} fails: {why}",
                target.name, target.name
            );
        }
    }

    let executions = AtomicU64::new(corpus.len() as u64);
    let seconds = env_u64("FUZZ_SECONDS");
    let mut seed = env_u64("FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let strategy = (target.inputs)();
    let deadline = seconds.map(|s| started + Duration::from_secs(s));
    let mut failure = None;
    loop {
        let cases = if deadline.is_some() { ROUND } else { CASES };
        let mut runner = runner(cases, seed);
        let result = runner.run(&strategy, |input| {
            executions.fetch_add(1, Ordering::Relaxed);
            (target.check)(&input)
        });
        if let Err(error) = result {
            failure = Some((seed, error));
            break;
        }
        seed = seed.wrapping_add(1);
        match deadline {
            Some(deadline) if Instant::now() < deadline => {}
            _ => break,
        }
    }

    let elapsed = started.elapsed().as_secs_f64();
    let executions = executions.into_inner();
    let regressions = corpus
        .iter()
        .filter(|(name, _)| name.starts_with("regression-"))
        .count();
    let mut report = format!(
        "fuzz-report target={} executions={executions} seconds={elapsed:.1} seeds={} regressions={regressions}",
        target.name,
        corpus.len() - regressions,
    );
    let Some((seed, error)) = failure else {
        let _ = write!(report, " failures=0");
        println!("{report}");
        return;
    };
    let _ = write!(report, " failures=1");
    println!("{report}");
    match error {
        TestError::Fail(why, input) => {
            let kept = keep_regression(target.name, &input);
            panic!(
                "{}: {why}\nseed {seed} (FUZZ_SEED={seed} reproduces); the shrunk input is kept as {}: {:?}",
                target.name,
                kept.display(),
                String::from_utf8_lossy(&input[..input.len().min(512)])
            );
        }
        TestError::Abort(why) => panic!("{}: aborted: {why}", target.name),
    }
}

#[test]
fn component() {
    fuzz(&component::BYTES);
}

#[test]
fn component_shape() {
    fuzz(&component::SHAPE);
}

#[test]
fn policy() {
    fuzz(&policy::TARGET);
}

#[test]
fn invocation_input() {
    fuzz(&input::BODY);
}

#[test]
fn agent_schema() {
    fuzz(&input::SCHEMA);
}

#[test]
fn egress() {
    fuzz(&egress::TARGET);
}

#[test]
fn names() {
    fuzz(&names::NAMES);
}

#[test]
fn stored_text() {
    fuzz(&names::TEXT);
}
