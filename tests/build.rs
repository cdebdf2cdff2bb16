//! Builds the agents in `plugins/` once per build of this crate and emits their paths
//! as constants (`corral_tests::plugins::ECHO`, …), so no test builds anything.

use std::path::{Path, PathBuf};
use std::process::Command;

const PLUGINS: &[(&str, &str)] = &[
    ("ECHO", "echo.wasm"),
    ("TEXT_STATS", "text_stats.wasm"),
    ("HOSTILE", "hostile.wasm"),
    ("NOT_AN_AGENT", "not-an-agent.wasm"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for dir in ["plugins", "guest-sdk", "wit"] {
        watch(&root.join(dir));
    }

    // A separate target directory: the outer cargo holds the lock on the main one.
    let target_dir = root.join("target").join("plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(root.join("plugins").join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir);
    // Nothing from the outer build (flags for the host target, wrappers, jobserver)
    // may leak into the wasm build.
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" || key.starts_with("RUSTC") || key == "RUSTFLAGS" || key == "RUSTDOCFLAGS" {
            command.env_remove(key);
        }
    }
    let status = command.status().expect("running cargo to build plugins/");
    if !status.success() {
        panic!(
            "building plugins/ for wasm32-wasip2 failed. If the target is missing, run \
             `rustup target add wasm32-wasip2` (the README's test command does this)."
        );
    }

    let release = target_dir.join("wasm32-wasip2").join("release");
    let mut constants = String::new();
    for (name, file) in PLUGINS {
        let path = release.join(file);
        assert!(path.exists(), "{} was not built", path.display());
        constants.push_str(&format!("/// `{file}`, built from `plugins/`.\npub const {name}: &str = {:?};\n", path.display().to_string()));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("plugins.rs");
    std::fs::write(out, constants).unwrap();
}

/// Re-run when any source under `dir` changes (but not build output).
fn watch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if path.is_dir() {
            watch(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
