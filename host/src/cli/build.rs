//! `corral build`: builds the agent project in the current directory (its
//! `corral.toml`) with its language's toolchain, and writes `dist/<name>.wasm`.
//!
//! - Rust: `cargo build --release --target wasm32-wasip2`.
//! - Python: `componentize-py` against the world `corral:agent/agent-with-http`.
//! - JavaScript/TypeScript: `esbuild` bundles `src/agent.ts` (or `.js`) with the SDK
//!   into one module, then `componentize-js` makes it a component of the world `agent`.
//!
//! Tools are looked for in the project (`.venv/bin`, `node_modules`), then in the
//! `--toolchains` directory (`CORRAL_GUEST_TOOLCHAINS`: `python/bin`, `js/node_modules`,
//! as `scripts/guest-toolchains` installs them), then on `PATH`. A missing tool is named with
//! the command that installs it; a version other than the pinned one is a warning.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Args;

use super::new::{Language, Manifest, Toolchains};
use super::output::{errln, outln};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The project directory (holding corral.toml).
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Where to write the component (and the JavaScript bundle) [default: DIR/dist].
    #[arg(long, value_name = "DIR")]
    dist: Option<PathBuf>,
    /// A directory of guest toolchains, searched after the project's own: `python/bin`
    /// (componentize-py) and `js/node_modules` (componentize-js, esbuild), as
    /// scripts/guest-toolchains installs them.
    #[arg(long, env = "CORRAL_GUEST_TOOLCHAINS", value_name = "DIR")]
    toolchains: Option<PathBuf>,
}

/// Why a build did not produce a component.
#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error("{0}")]
    Project(String),
    #[error("{tool} was not found. {install}")]
    Missing { tool: &'static str, install: String },
    #[error("{0} failed (its output is above)")]
    Step(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub fn build(args: BuildArgs) -> std::io::Result<ExitCode> {
    match run(&args.dir, args.dist, args.toolchains.as_deref()) {
        Ok(path) => {
            outln!("built {}", path.display())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (BuildError::Project(_) | BuildError::Missing { .. })) => {
            errln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => {
            errln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn run(
    dir: &Path,
    dist: Option<PathBuf>,
    toolchains: Option<&Path>,
) -> Result<PathBuf, BuildError> {
    let manifest_path = dir.join("corral.toml");
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
        BuildError::Project(format!(
            "reading {}: {e} (make a project with `corral new NAME --lang rust|python|js`)",
            manifest_path.display()
        ))
    })?;
    let manifest: Manifest = toml::from_str(&text)
        .map_err(|e| BuildError::Project(format!("{}: {e}", manifest_path.display())))?;
    let dist = dist.unwrap_or_else(|| dir.join("dist"));
    std::fs::create_dir_all(&dist)?;
    let out = dist.join(format!("{}.wasm", manifest.agent.name));
    let out_abs = std::path::absolute(&out)?;
    let settings = &manifest.build;
    let wit = dir.join(settings.wit.as_deref().unwrap_or(Path::new("wit")));
    let pins = Toolchains::pinned();
    match manifest.agent.language {
        Language::Rust => build_rust(dir, &manifest.agent.name, &out_abs)?,
        Language::Python => {
            let sdk = dir.join(settings.sdk.as_deref().unwrap_or(Path::new(".")));
            let tool = find(dir, toolchains, &[".venv/bin"], &["python/bin"], "componentize-py").ok_or_else(|| {
                BuildError::Missing {
                    tool: "componentize-py",
                    install: format!(
                        "Install it with `python3 -m pip install componentize-py=={}` (Python 3.10 or later).",
                        pins.componentize_py
                    ),
                }
            })?;
            check_version(&tool, "componentize-py", &pins.componentize_py);
            step(
                Command::new(&tool)
                    .current_dir(dir)
                    .arg("-d")
                    .arg(std::path::absolute(&wit)?)
                    .args([
                        "-w",
                        "corral:agent/agent-with-http",
                        "componentize",
                        "app",
                        "-p",
                        ".",
                    ])
                    .arg("-p")
                    .arg(std::path::absolute(&sdk)?)
                    .arg("-o")
                    .arg(&out_abs),
                "componentize-py",
            )?;
        }
        Language::Js => {
            let sdk = dir.join(settings.sdk.as_deref().unwrap_or(Path::new("corral-sdk")));
            let missing = || BuildError::Missing {
                tool: "the JavaScript toolchain (node, esbuild, componentize-js)",
                install: format!(
                    "Run `npm install` in the project (Node.js 18 or later; it installs componentize-js {} and esbuild {}).",
                    pins.componentize_js, pins.esbuild
                ),
            };
            let node = find(dir, toolchains, &[], &[], "node").ok_or_else(missing)?;
            let modules = node_modules(dir, toolchains).ok_or_else(missing)?;
            let componentize = modules.join("@bytecodealliance/componentize-js");
            if let Some(version) = package_version(&componentize) {
                if version != pins.componentize_js {
                    errln!(
                        "warning: componentize-js {version} found; Corral is tested with {}",
                        pins.componentize_js
                    );
                }
            }
            let entry = ["src/agent.ts", "src/agent.js"]
                .iter()
                .map(|p| dir.join(p))
                .find(|p| p.exists())
                .ok_or_else(|| BuildError::Project("no src/agent.ts or src/agent.js".into()))?;
            let bundle = std::path::absolute(dist.join("agent.js"))?;
            step(
                // esbuild's installed `bin/esbuild` is its native executable.
                Command::new(modules.join("esbuild/bin/esbuild"))
                    .arg(&entry)
                    .args([
                        "--bundle",
                        "--format=esm",
                        "--platform=neutral",
                        "--log-level=warning",
                        "--external:corral:*",
                        "--external:wasi:*",
                    ])
                    .arg(format!(
                        "--alias:corral-sdk={}",
                        std::path::absolute(sdk.join("src/index.js"))?.display()
                    ))
                    .arg(format!("--outfile={}", bundle.display())),
                "esbuild",
            )?;
            step(
                Command::new(&node)
                    .arg(componentize.join("src/cli.js"))
                    .arg(&bundle)
                    .arg("--wit")
                    .arg(std::path::absolute(&wit)?)
                    .args(["--world-name", "agent", "--disable", "fetch-event", "-o"])
                    .arg(&out_abs),
                "componentize-js",
            )?;
        }
    }
    Ok(out)
}

fn build_rust(dir: &Path, name: &str, out: &Path) -> Result<(), BuildError> {
    let cargo = find(dir, None, &[], &[], "cargo").ok_or_else(|| BuildError::Missing {
        tool: "cargo",
        install:
            "Install Rust with rustup (https://rustup.rs), then `rustup target add wasm32-wasip2`."
                .into(),
    })?;
    step(
        Command::new(cargo).current_dir(dir).args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
        ]),
        "cargo build (is the target installed? `rustup target add wasm32-wasip2`)",
    )?;
    // Cargo's own setting, relative to where it runs (the project).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| dir.join(t))
        .unwrap_or_else(|| dir.join("target"));
    let built = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::copy(&built, out)?;
    Ok(())
}

/// Runs one step with its output shown; fails naming it.
fn step(command: &mut Command, what: &str) -> Result<(), BuildError> {
    let status = command
        .status()
        .map_err(|e| BuildError::Step(format!("{what}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Step(what.to_string()))
    }
}

/// `tool` in the project's own directories (`local`), in the toolchains directory
/// (`shared`), or on `PATH`.
fn find(
    project: &Path,
    toolchains: Option<&Path>,
    local: &[&str],
    shared: &[&str],
    tool: &str,
) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = local.iter().map(|d| project.join(d)).collect();
    if let Some(root) = toolchains {
        dirs.extend(shared.iter().map(|d| root.join(d)));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .and_then(|p| std::path::absolute(p).ok())
}

fn node_modules(project: &Path, toolchains: Option<&Path>) -> Option<PathBuf> {
    let mut candidates = vec![project.join("node_modules")];
    if let Some(root) = toolchains {
        candidates.push(root.join("js/node_modules"));
    }
    candidates
        .into_iter()
        .find(|m| {
            m.join("@bytecodealliance/componentize-js").is_dir() && m.join("esbuild").is_dir()
        })
        .and_then(|m| std::path::absolute(m).ok())
}

fn package_version(package: &Path) -> Option<String> {
    let text = std::fs::read_to_string(package.join("package.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["version"].as_str().map(str::to_string)
}

fn check_version(tool: &Path, name: &str, pinned: &str) {
    let Ok(output) = Command::new(tool).arg("--version").output() else {
        return;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    if !text.split_whitespace().any(|word| word == pinned) {
        errln!(
            "warning: {} found; Corral is tested with {name} {pinned}",
            text.trim()
        );
    }
}
