//! `corral new NAME --lang rust|python|js`: a working agent project in `./NAME`.
//!
//! The project carries everything it builds from, at the versions of this binary: the
//! world (`wit/`), the SDK for its language (copied in, so it always matches the host
//! that will run it) and `corral.toml`, which `corral build` reads. The sources come
//! from `guest-sdk/` and `wit/`, embedded at compile time.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::output::{errln, outln};
use crate::policy::is_agent_name;

/// The languages an agent project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    Python,
    /// JavaScript or TypeScript (the scaffold is TypeScript).
    Js,
}

impl Language {
    fn title(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::Js => "TypeScript",
        }
    }
}

/// `corral.toml`: what `corral build` needs to know about a project.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub agent: ManifestAgent,
    /// Where the world and the SDK are, for projects that share them (the examples in
    /// `plugins/`); a new project has its own copies and leaves this out.
    #[serde(default, skip_serializing_if = "BuildSettings::is_default")]
    pub build: BuildSettings,
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSettings {
    /// The WIT directory [default: wit].
    pub wit: Option<PathBuf>,
    /// The SDK: the directory holding the `corral` package (Python) [default: .], or
    /// the SDK package (JavaScript) [default: corral-sdk].
    pub sdk: Option<PathBuf>,
}

impl BuildSettings {
    fn is_default(&self) -> bool {
        *self == BuildSettings::default()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestAgent {
    /// The agent's name; the component is `dist/<name>.wasm`.
    pub name: String,
    pub language: Language,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The agent's name (lowercase letters, digits and `-`); also the directory made.
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Language,
    /// Where to create the project [default: ./NAME].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// A file of the project: its path in the project and its text.
type File = (&'static str, &'static str);

macro_rules! embed {
    ($($project:literal => $source:literal),* $(,)?) => {
        &[$(($project, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../", $source)))),*]
    };
}

/// The world, in every project.
const WIT: &[File] = embed! {
    "wit/agent.wit" => "wit/agent.wit",
    "wit/deps/wasi-cli/cli.wit" => "wit/deps/wasi-cli/cli.wit",
    "wit/deps/wasi-clocks/clocks.wit" => "wit/deps/wasi-clocks/clocks.wit",
    "wit/deps/wasi-filesystem/filesystem.wit" => "wit/deps/wasi-filesystem/filesystem.wit",
    "wit/deps/wasi-http/http.wit" => "wit/deps/wasi-http/http.wit",
    "wit/deps/wasi-io/io.wit" => "wit/deps/wasi-io/io.wit",
    "wit/deps/wasi-random/random.wit" => "wit/deps/wasi-random/random.wit",
    "wit/deps/wasi-sockets/sockets.wit" => "wit/deps/wasi-sockets/sockets.wit",
};

const RUST: &[File] = embed! {
    "Cargo.toml" => "guest-sdk/templates/rust/Cargo.toml",
    "src/lib.rs" => "guest-sdk/templates/rust/lib.rs",
    "corral-sdk/Cargo.toml" => "guest-sdk/templates/rust/sdk.Cargo.toml",
    "corral-sdk/src/lib.rs" => "guest-sdk/src/lib.rs",
    "corral-sdk/src/__private.rs" => "guest-sdk/src/__private.rs",
    "corral-sdk/src/agents.rs" => "guest-sdk/src/agents.rs",
    "corral-sdk/src/config.rs" => "guest-sdk/src/config.rs",
    "corral-sdk/src/context.rs" => "guest-sdk/src/context.rs",
    "corral-sdk/src/error.rs" => "guest-sdk/src/error.rs",
    "corral-sdk/src/http.rs" => "guest-sdk/src/http.rs",
    "corral-sdk/src/kv.rs" => "guest-sdk/src/kv.rs",
    "corral-sdk/src/llm.rs" => "guest-sdk/src/llm.rs",
    "corral-sdk/src/log.rs" => "guest-sdk/src/log.rs",
};

const PYTHON: &[File] = embed! {
    "app.py" => "guest-sdk/templates/python/app.py",
    "requirements.txt" => "guest-sdk/templates/python/requirements.txt",
    "corral/__init__.py" => "guest-sdk/python/corral/__init__.py",
    "corral/_agent.py" => "guest-sdk/python/corral/_agent.py",
    "corral/_log.py" => "guest-sdk/python/corral/_log.py",
    "corral/_typed.py" => "guest-sdk/python/corral/_typed.py",
    "corral/agents.py" => "guest-sdk/python/corral/agents.py",
    "corral/config.py" => "guest-sdk/python/corral/config.py",
    "corral/errors.py" => "guest-sdk/python/corral/errors.py",
    "corral/http.py" => "guest-sdk/python/corral/http.py",
    "corral/kv.py" => "guest-sdk/python/corral/kv.py",
    "corral/llm.py" => "guest-sdk/python/corral/llm.py",
};

const JS: &[File] = embed! {
    "src/agent.ts" => "guest-sdk/templates/js/agent.ts",
    "package.json" => "guest-sdk/templates/js/package.json",
    "tsconfig.json" => "guest-sdk/templates/js/tsconfig.json",
    "corral-sdk/package.json" => "guest-sdk/js/package.json",
    "corral-sdk/src/index.js" => "guest-sdk/js/src/index.js",
    "corral-sdk/src/index.d.ts" => "guest-sdk/js/src/index.d.ts",
    "corral-sdk/src/errors.js" => "guest-sdk/js/src/errors.js",
    "corral-sdk/src/schema.js" => "guest-sdk/js/src/schema.js",
    "corral-sdk/src/kv.js" => "guest-sdk/js/src/kv.js",
    "corral-sdk/src/config.js" => "guest-sdk/js/src/config.js",
    "corral-sdk/src/agents.js" => "guest-sdk/js/src/agents.js",
    "corral-sdk/src/http.js" => "guest-sdk/js/src/http.js",
    "corral-sdk/src/llm.js" => "guest-sdk/js/src/llm.js",
};

const README: &str = include_str!("../../../guest-sdk/templates/README.md");
const TOOLCHAINS: &str = include_str!("../../../guest-sdk/templates/toolchains.toml");

/// The guest toolchain versions this binary is tested with.
#[derive(Debug, Deserialize)]
pub struct Toolchains {
    #[serde(rename = "componentize-py")]
    pub componentize_py: String,
    #[serde(rename = "componentize-js")]
    pub componentize_js: String,
    pub esbuild: String,
    pub typescript: String,
}

impl Toolchains {
    pub fn pinned() -> Toolchains {
        toml::from_str(TOOLCHAINS).expect("guest-sdk/templates/toolchains.toml parses")
    }
}

/// The files of a new project in `language`, with `{{…}}` placeholders filled in.
pub fn project_files(name: &str, language: Language) -> Vec<(String, String)> {
    let pins = Toolchains::pinned();
    let crate_name = name.replace('-', "_");
    let (setup, sdk) = match language {
        Language::Rust => (
            "rustup target add wasm32-wasip2                                 # once\n",
            "`corral-sdk/` is the Corral Rust SDK (docs in its `src/lib.rs`).",
        ),
        Language::Python => (
            "python3 -m pip install -r requirements.txt                      # once: componentize-py\n",
            "`corral/` is the Corral Python SDK (docs in each module).",
        ),
        Language::Js => (
            "npm install                                                     # once: componentize-js, esbuild\n",
            "`corral-sdk/` is the Corral JavaScript SDK (types in `src/index.d.ts`).",
        ),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{language}}", language.title())
            .replace("{{setup}}", setup)
            .replace("{{sdk}}", sdk)
            .replace("{{componentize-py}}", &pins.componentize_py)
            .replace("{{componentize-js}}", &pins.componentize_js)
            .replace("{{esbuild}}", &pins.esbuild)
            .replace("{{typescript}}", &pins.typescript)
    };
    let specific = match language {
        Language::Rust => RUST,
        Language::Python => PYTHON,
        Language::Js => JS,
    };
    let manifest = toml::to_string(&Manifest {
        agent: ManifestAgent {
            name: name.to_string(),
            language,
        },
        build: BuildSettings::default(),
    })
    .expect("the manifest serializes");
    let ignore = match language {
        Language::Rust => "/target\n/dist\n",
        Language::Python => "/dist\n/.venv\n__pycache__/\n",
        Language::Js => "/dist\n/node_modules\n",
    };
    let mut files: Vec<(String, String)> = WIT
        .iter()
        .chain(specific)
        .map(|(path, text)| (path.to_string(), fill(text)))
        .collect();
    files.push((
        "corral.toml".into(),
        format!("# Read by `corral build`.\n{manifest}"),
    ));
    files.push(("README.md".into(), fill(README)));
    files.push((".gitignore".into(), ignore.into()));
    files
}

pub fn new(args: NewArgs) -> std::io::Result<ExitCode> {
    if !is_agent_name(&args.name) {
        errln!(
            "error: {:?} is not an agent name: 1 to 64 of a-z 0-9 - _, starting with a letter",
            args.name
        );
        return Ok(ExitCode::from(2));
    }
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        errln!("error: {} already exists", dir.display());
        return Ok(ExitCode::from(2));
    }
    match write(&dir, &project_files(&args.name, args.lang)) {
        Ok(()) => {
            outln!(
                "created {} ({} agent {:?}); next:\n  cd {}\n  {}corral build\n  corral run dist/{}.wasm --action greet --input '{{\"name\":\"Ada\"}}'",
                dir.display(),
                args.lang.title(),
                args.name,
                dir.display(),
                match args.lang {
                    Language::Rust => "",
                    Language::Python => "python3 -m pip install -r requirements.txt\n  ",
                    Language::Js => "npm install\n  ",
                },
                args.name
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            errln!("error: writing {}: {e}", dir.display());
            Ok(ExitCode::from(1))
        }
    }
}

fn write(dir: &Path, files: &[(String, String)]) -> std::io::Result<()> {
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of an SDK is in its project: a file added to `guest-sdk/` without
    /// being embedded here would be missing from every new project.
    #[test]
    fn every_sdk_and_world_file_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let listed = |files: &[File], prefix: &str| -> Vec<String> {
            let mut v: Vec<String> = files
                .iter()
                .filter_map(|(p, _)| p.strip_prefix(prefix).map(str::to_string))
                .collect();
            v.sort();
            v
        };
        let on_disk = |dir: &str, ext: &[&str]| -> Vec<String> {
            let base = root.join(dir);
            let mut found = Vec::new();
            let mut stack = vec![base.clone()];
            while let Some(d) = stack.pop() {
                for entry in std::fs::read_dir(&d).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if ext.iter().any(|e| path.to_string_lossy().ends_with(e)) {
                        found.push(
                            path.strip_prefix(&base)
                                .unwrap()
                                .to_string_lossy()
                                .into_owned(),
                        );
                    }
                }
            }
            found.sort();
            found
        };
        assert_eq!(listed(WIT, "wit/"), on_disk("wit", &[".wit"]));
        assert_eq!(
            listed(RUST, "corral-sdk/src/"),
            on_disk("guest-sdk/src", &[".rs"])
        );
        assert_eq!(
            listed(PYTHON, "corral/"),
            on_disk("guest-sdk/python/corral", &[".py"])
        );
        assert_eq!(
            listed(JS, "corral-sdk/src/"),
            on_disk("guest-sdk/js/src", &[".js", ".ts"])
        );
    }

    /// The Rust project's SDK manifest asks for the versions the workspace builds with.
    #[test]
    fn the_rust_sdk_manifest_matches_the_workspace() {
        let workspace: toml::Table = toml::from_str(include_str!("../../../Cargo.toml")).unwrap();
        let sdk: toml::Table = toml::from_str(RUST[2].1).unwrap();
        let deps = &workspace["workspace"]["dependencies"];
        let version = |v: &toml::Value| -> String {
            v.as_str()
                .map(str::to_string)
                .or_else(|| {
                    v.get("version")
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                })
                .unwrap()
        };
        for dep in ["wit-bindgen", "serde", "serde_json", "wasip2"] {
            assert_eq!(
                version(&sdk["dependencies"][dep]),
                version(&deps[dep]),
                "{dep}"
            );
        }
    }

    #[test]
    fn placeholders_are_all_filled() {
        for language in [Language::Rust, Language::Python, Language::Js] {
            for (path, text) in project_files("my-agent", language) {
                assert!(
                    !text.contains("{{"),
                    "{path} of {language:?} keeps a placeholder"
                );
            }
        }
    }
}
