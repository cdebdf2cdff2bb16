//! `corral inspect`: what a component is, and whether it is a valid agent.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::RuntimeArgs;
use super::output::{errln, outln};
use super::units::format_size;
use crate::runtime::validate::{self, BinaryKind};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The component (.wasm) to inspect.
    component: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// Exits 0 for a valid agent, 1 for anything else, 2 if the file cannot be read. The
/// error is only the output's (see [`super::output::status`]).
pub async fn inspect(args: InspectArgs) -> io::Result<ExitCode> {
    let bytes = match std::fs::read(&args.component) {
        Ok(bytes) => bytes,
        Err(e) => {
            errln!("error: reading {}: {e}", args.component.display());
            return Ok(ExitCode::from(2));
        }
    };
    let runtime = match args.runtime.runtime() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let kind = validate::detect(&bytes);
    let size = bytes.len() as u64;
    let hash = crate::runtime::Runtime::content_hash(&bytes);
    let bytes: std::sync::Arc<[u8]> = bytes.into();
    // One compile: for a component that is not a valid agent, it still says what the
    // component imports and exports.
    let (loaded, interface) = runtime.inspect(bytes).await;

    if args.json {
        let report = match &loaded {
            Ok(agent) => json!({
                "valid_agent": true,
                "kind": format!("{kind:?}").to_lowercase(),
                "size_bytes": size,
                "sha256": hash,
                "metadata": agent.metadata,
                "imports": agent.interface.imports,
                "exports": agent.interface.exports,
            }),
            Err(e) if interface.is_some() => json!({
                "valid_agent": false,
                "kind": format!("{kind:?}").to_lowercase(),
                "size_bytes": size,
                "sha256": hash,
                "error": e.to_string(),
                "imports": interface.as_ref().map(|i| &i.imports),
                "exports": interface.as_ref().map(|i| &i.exports),
            }),
            Err(e) => json!({
                "valid_agent": false,
                "kind": format!("{kind:?}").to_lowercase(),
                "size_bytes": size,
                "sha256": hash,
                "error": e.to_string(),
            }),
        };
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).expect("JSON serializes")
        )?;
    } else {
        outln!("file:     {}", args.component.display())?;
        outln!("kind:     {}", describe_kind(kind))?;
        outln!("size:     {}", format_size(size))?;
        outln!("sha256:   {hash}")?;
        match &loaded {
            Ok(agent) => {
                let m = &agent.metadata;
                outln!("agent:    valid ✓")?;
                outln!("name:     {} {}", m.name, m.version)?;
                outln!("about:    {}", m.description)?;
                outln!("actions:")?;
                for action in &m.actions {
                    let schema = if action.input_schema.is_some() {
                        " [input schema]"
                    } else {
                        ""
                    };
                    outln!("  {:<16} {}{schema}", action.name, action.description)?;
                }
            }
            Err(e) => outln!("agent:    not valid ✗ — {e}")?,
        }
        if let Some(interface) = &interface {
            // A component may list a hundred thousand names: show the first few.
            let unknown = interface
                .imports
                .iter()
                .filter(|name| !name.starts_with("wasi:") && !name.starts_with("corral:"))
                .count();
            outln!(
                "imports:  {} ({unknown} outside WASI and corral:agent)",
                interface.imports.len()
            )?;
            list(&interface.imports)?;
            outln!("exports:  {}", interface.exports.len())?;
            list(&interface.exports)?;
        }
    }
    Ok(if loaded.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Names shown before "… and N more".
const LISTED: usize = 20;

fn list(names: &[String]) -> std::io::Result<()> {
    for name in names.iter().take(LISTED) {
        outln!("  {name}")?;
    }
    if names.len() > LISTED {
        outln!(
            "  … and {} more (all of them with --json)",
            names.len() - LISTED
        )?;
    }
    Ok(())
}

fn describe_kind(kind: BinaryKind) -> &'static str {
    match kind {
        BinaryKind::Component => "WebAssembly component",
        BinaryKind::CoreModule => "WebAssembly core module",
        BinaryKind::Text => "WebAssembly text (WAT)",
        BinaryKind::Precompiled => "precompiled native artifact",
        BinaryKind::Empty => "empty file",
        BinaryKind::OtherWasm(_) => "WebAssembly binary of a version this host does not run",
        BinaryKind::Unknown => "not WebAssembly",
    }
}
