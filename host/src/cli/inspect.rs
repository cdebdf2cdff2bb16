//! `corral inspect`: what a component is, and whether it is a valid agent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::RuntimeArgs;
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

/// Exits 0 for a valid agent, 1 for anything else, 2 if the file cannot be read.
pub async fn inspect(args: InspectArgs) -> ExitCode {
    let bytes = match std::fs::read(&args.component) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: reading {}: {e}", args.component.display());
            return ExitCode::from(2);
        }
    };
    let runtime = match args.runtime.runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let kind = validate::detect(&bytes);
    let size = bytes.len() as u64;
    let hash = crate::runtime::Runtime::content_hash(&bytes);
    let bytes: std::sync::Arc<[u8]> = bytes.into();
    let loaded = runtime.load(bytes.clone()).await;
    // For a component that is not a valid agent, still show what it imports and exports.
    let interface = match &loaded {
        Ok(agent) => Some(agent.interface.clone()),
        Err(_) if kind == BinaryKind::Component => runtime.interface(bytes).await.ok(),
        Err(_) => None,
    };

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
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("JSON serializes")
        );
    } else {
        println!("file:     {}", args.component.display());
        println!("kind:     {}", describe_kind(kind));
        println!("size:     {}", format_size(size));
        println!("sha256:   {hash}");
        match &loaded {
            Ok(agent) => {
                let m = &agent.metadata;
                println!("agent:    valid ✓");
                println!("name:     {} {}", m.name, m.version);
                println!("about:    {}", m.description);
                println!("actions:");
                for action in &m.actions {
                    let schema = if action.input_schema.is_some() {
                        " [input schema]"
                    } else {
                        ""
                    };
                    println!("  {:<16} {}{schema}", action.name, action.description);
                }
            }
            Err(e) => println!("agent:    not valid ✗ — {e}"),
        }
        if let Some(interface) = &interface {
            println!("imports:");
            for name in &interface.imports {
                println!("  {name}");
            }
            println!("exports:");
            for name in &interface.exports {
                println!("  {name}");
            }
        }
    }
    if loaded.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn describe_kind(kind: BinaryKind) -> &'static str {
    match kind {
        BinaryKind::Component => "WebAssembly component",
        BinaryKind::CoreModule => "WebAssembly core module",
        BinaryKind::Text => "WebAssembly text (WAT)",
        BinaryKind::Precompiled => "precompiled native artifact",
        BinaryKind::Empty => "empty file",
        BinaryKind::Unknown => "not WebAssembly",
    }
}
