//! The Python and JavaScript agents in `plugins/python` and `plugins/js`, built with
//! `corral build` — the command their authors use — once per test process, into
//! `target/guest-plugins/<lang>/<name>/`, and compiled once into [`cache_dir`] (a
//! 10–20 MB component takes seconds to compile; tests that compiled it each, at once,
//! would starve each other). The toolchains are the pinned ones
//! `scripts/guest-toolchains` installs (`./scripts/test` runs it and sets
//! `CORRAL_GUEST_TOOLCHAINS`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::harness::corral_bin;

/// A guest language with examples in `plugins/<dir>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    Python,
    Js,
}

impl Lang {
    pub fn dir(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    /// The suffix of its agents' names: `text-stats-py`, `probe-js`.
    pub fn suffix(self) -> &'static str {
        match self {
            Lang::Python => "py",
            Lang::Js => "js",
        }
    }
}

static BUILT: Mutex<Option<HashMap<(Lang, String), PathBuf>>> = Mutex::new(None);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The artifact cache every test shares for these components (`--cache-dir`).
pub fn cache_dir() -> PathBuf {
    workspace().join("target/guest-plugins/cache")
}

/// The directory of the pinned toolchains.
pub fn toolchains() -> PathBuf {
    let dir = std::env::var_os("CORRAL_GUEST_TOOLCHAINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/guest-toolchains"));
    assert!(
        dir.join("python/bin/componentize-py").exists() && dir.join("js/node_modules").exists(),
        "the guest toolchains are not in {}: run ./scripts/guest-toolchains (./scripts/test does)",
        dir.display()
    );
    dir
}

/// The component of example `name` (`text-stats`, `notes`, `probe`) in `lang`, built
/// on first use.
pub fn component(lang: Lang, name: &str) -> PathBuf {
    // Held across the build: builds are CPU-bound, one at a time is as fast.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(&(lang, name.to_string())) {
        return path.clone();
    }
    let project = workspace().join("plugins").join(lang.dir()).join(name);
    let dist = workspace()
        .join("target/guest-plugins")
        .join(lang.dir())
        .join(name);
    let output = Command::new(corral_bin())
        .arg("build")
        .arg("--dir")
        .arg(&project)
        .arg("--dist")
        .arg(&dist)
        .env("CORRAL_GUEST_TOOLCHAINS", toolchains())
        .output()
        .expect("corral build runs");
    assert!(
        output.status.success(),
        "corral build of {} failed:\n{}\n{}",
        project.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let path = dist.join(format!("{name}-{}.wasm", lang.suffix()));
    assert!(path.exists(), "{} was not written", path.display());
    // `inspect` compiles it into the shared cache; the generous timeout is for debug
    // builds of the compiler on a busy machine, not what a release server needs.
    let compiled = Command::new(corral_bin())
        .arg("inspect")
        .arg(&path)
        .arg("--cache-dir")
        .arg(cache_dir())
        .args(["--compile-timeout", "600s"])
        .output()
        .expect("corral inspect runs");
    assert!(
        compiled.status.success(),
        "corral inspect {}: {}",
        path.display(),
        String::from_utf8_lossy(&compiled.stderr)
    );
    built.insert((lang, name.to_string()), path.clone());
    path
}
