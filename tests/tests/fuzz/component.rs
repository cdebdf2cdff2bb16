//! Component bytes on upload: `validate::detect` and `validate::check`
//! (`host/src/runtime/validate.rs`), which `Runtime::load` runs on every upload before
//! anything is compiled.
//!
//! `component`: arbitrary bytes, and the real test agents and small components mutated
//! (bit flips, truncation, insertion, deletion, splicing). Nothing panics; only what
//! `detect` calls a component may pass, and only within the size limit; anything else
//! is `NotAComponent`; tighter limits never accept what looser ones refuse; a component
//! that wasmparser's full validator accepts is never called malformed; messages stay
//! short.
//!
//! `component_shape`: components generated from a description (core modules with so
//! many memories of so many pages, tables of so many elements, functions with so many
//! locals, some nested in an inner component) checked under limits from the same
//! description. The verdict must be what the description says: `TooComplex` exactly
//! when some limit is passed, and accepted otherwise.

use corral_host::runtime::LoadError;
use corral_host::runtime::validate::{BinaryKind, StructureLimits, check, detect};
use corral_tests::plugins;
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use serde::{Deserialize, Serialize};

use super::{Target, Verdict, mutate};

pub const BYTES: Target = Target {
    name: "component",
    inputs: byte_inputs,
    check: check_bytes,
};

pub const SHAPE: Target = Target {
    name: "component_shape",
    inputs: shape_inputs,
    check: check_shape,
};

/// Limits small enough that generated and mutated components reach every refusal.
const TIGHT: StructureLimits = StructureLimits {
    max_bytes: 1 << 20,
    max_functions: 64,
    max_function_body_bytes: 512,
    max_locals_per_function: 16,
    max_memories_per_module: 1,
    max_tables_per_module: 1,
    max_memories_per_component: 2,
    max_table_elements: 64,
    max_initial_memory_bytes: 2 << 16,
};

/// Small components in text, to mutate alongside the real agents.
const SMALL: &[&str] = &[
    "(component)",
    "(component (core module (memory 1) (table 10 funcref) (func (local i32 i64) nop)))",
    "(component (core module (memory 1) (memory 1)))",
    "(component (core module (func (export \"f\") (result i32) i32.const 1)) (core instance (instantiate 0)))",
    "(component (component (core module (memory i64 3))) (core module (table 30000 funcref)))",
    "(component (import \"x\" (func)) (core module (import \"m\" \"mem\" (memory 1)) (memory 2)))",
];

fn seeds() -> Vec<Vec<u8>> {
    let agents = [
        plugins::ECHO,
        plugins::TEXT_STATS,
        plugins::HOSTILE,
        plugins::RELAY,
        plugins::FETCH,
        plugins::GREETER,
        plugins::NOT_AN_AGENT,
        plugins::NOTES,
    ];
    let mut seeds: Vec<Vec<u8>> = agents
        .iter()
        .map(|path| std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}")))
        .collect();
    seeds.extend(
        SMALL
            .iter()
            .map(|wat| wat::parse_str(wat).expect("a small component")),
    );
    seeds.extend(
        super::corpus("component")
            .into_iter()
            .map(|(_, bytes)| bytes),
    );
    seeds
}

fn byte_inputs() -> BoxedStrategy<Vec<u8>> {
    let header = prop::sample::select(vec![
        b"\0asm\x0d\0\x01\0".to_vec(),
        b"\0asm\x01\0\0\0".to_vec(),
        b"\0asm".to_vec(),
        b"\x7fELF".to_vec(),
        b";; x\n(".to_vec(),
        Vec::new(),
    ]);
    prop_oneof![
        6 => mutate::mutated(seeds()),
        2 => (header, prop::collection::vec(any::<u8>(), 0..256)).prop_map(|(mut h, rest)| {
            h.extend(rest);
            h
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
    .boxed()
}

fn message(error: &LoadError) -> String {
    error.to_string()
}

fn check_bytes(bytes: &[u8]) -> Verdict {
    let kind = detect(bytes);
    let default = StructureLimits::default();
    let loose = check(bytes, &default);
    let tight = check(bytes, &TIGHT);
    for verdict in [&loose, &tight] {
        match (kind, verdict) {
            (BinaryKind::Component, Ok(())) => {}
            (BinaryKind::Component, Err(e)) => {
                prop_assert!(
                    matches!(e, LoadError::Malformed(_) | LoadError::TooComplex(_)),
                    "{:?}",
                    e
                );
            }
            (_, Err(LoadError::NotAComponent(_))) => {}
            (kind, verdict) => {
                return Err(TestCaseError::fail(format!("{kind:?} got {verdict:?}")));
            }
        }
        if let Err(e) = verdict {
            let text = message(e);
            prop_assert!(
                !text.is_empty() && text.len() < 1024,
                "message of {} bytes",
                text.len()
            );
        }
    }
    if tight.is_ok() {
        prop_assert!(bytes.len() <= TIGHT.max_bytes);
        prop_assert!(
            loose.is_ok(),
            "tighter limits accept what looser refuse: {:?}",
            loose
        );
    }
    if matches!(loose, Err(LoadError::TooComplex(_))) {
        prop_assert!(tight.is_err());
    }
    // Full validation is the expensive part: only for the smaller inputs.
    if kind == BinaryKind::Component && bytes.len() <= 64 << 10 {
        let features = wasmparser::WasmFeatures::all();
        let valid = wasmparser::Validator::new_with_features(features)
            .validate_all(bytes)
            .is_ok();
        if valid {
            prop_assert!(
                !matches!(loose, Err(LoadError::Malformed(_))),
                "a valid component is called malformed: {:?}",
                loose
            );
        }
    }
    Ok(())
}

/// A component to generate: its modules, and the limits to check it under.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Shape {
    limits: ShapeLimits,
    modules: Vec<Module>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShapeLimits {
    functions: u32,
    locals: u32,
    memories_per_module: u32,
    tables_per_module: u32,
    memories_per_component: u32,
    table_elements: u64,
    memory_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Module {
    /// In an inner component rather than the outer one.
    nested: bool,
    /// Memories it imports (which belong to another instance).
    imported_memories: u32,
    /// Initial pages of each memory it defines, and whether it is 64-bit.
    memories: Vec<(u32, bool)>,
    /// Initial elements of each table.
    tables: Vec<u32>,
    /// Locals of each function.
    functions: Vec<u32>,
}

impl Module {
    fn wat(&self) -> String {
        let mut text = String::from("(core module");
        for i in 0..self.imported_memories {
            text.push_str(&format!(" (import \"m\" \"mem{i}\" (memory 1))"));
        }
        for (pages, wide) in &self.memories {
            let index = if *wide { "i64 " } else { "" };
            text.push_str(&format!(" (memory {index}{pages})"));
        }
        for elements in &self.tables {
            text.push_str(&format!(" (table {elements} funcref)"));
        }
        for locals in &self.functions {
            text.push_str(" (func");
            if *locals > 0 {
                text.push_str(" (local");
                for _ in 0..*locals {
                    text.push_str(" i32");
                }
                text.push(')');
            }
            text.push_str(" nop)");
        }
        text.push(')');
        if self.nested {
            text = format!("(component {text})");
        }
        text
    }
}

impl Shape {
    fn wat(&self) -> String {
        let modules: Vec<String> = self.modules.iter().map(Module::wat).collect();
        format!("(component {})", modules.join(" "))
    }

    fn limits(&self) -> StructureLimits {
        StructureLimits {
            max_functions: self.limits.functions,
            max_locals_per_function: self.limits.locals,
            max_memories_per_module: self.limits.memories_per_module,
            max_tables_per_module: self.limits.tables_per_module,
            max_memories_per_component: self.limits.memories_per_component,
            max_table_elements: self.limits.table_elements,
            max_initial_memory_bytes: self.limits.memory_bytes,
            ..StructureLimits::default()
        }
    }

    /// Whether the description passes any of its limits.
    fn too_complex(&self) -> bool {
        let l = &self.limits;
        let memories: usize = self.modules.iter().map(|m| m.memories.len()).sum();
        let functions: usize = self.modules.iter().map(|m| m.functions.len()).sum();
        memories > l.memories_per_component as usize
            || functions > l.functions as usize
            || self.modules.iter().any(|m| {
                m.memories.len() > l.memories_per_module as usize
                    || m.tables.len() > l.tables_per_module as usize
                    || m.memories
                        .iter()
                        .any(|(pages, _)| u64::from(*pages) << 16 > l.memory_bytes)
                    || m.tables.iter().any(|e| u64::from(*e) > l.table_elements)
                    || m.functions.iter().any(|n| *n > l.locals)
            })
    }
}

fn shape() -> impl Strategy<Value = Shape> {
    let limits = (
        0u32..6,
        0u32..12,
        0u32..3,
        0u32..3,
        0u32..5,
        0u64..100,
        0u64..5,
    )
        .prop_map(
            |(functions, locals, mpm, tpm, mpc, elements, pages)| ShapeLimits {
                functions,
                locals,
                memories_per_module: mpm,
                tables_per_module: tpm,
                memories_per_component: mpc,
                table_elements: elements,
                memory_bytes: pages << 16,
            },
        );
    let module = (
        any::<bool>(),
        0u32..2,
        prop::collection::vec((0u32..7, any::<bool>()), 0..4),
        prop::collection::vec(0u32..120, 0..4),
        prop::collection::vec(0u32..16, 0..4),
    )
        .prop_map(
            |(nested, imported_memories, memories, tables, functions)| Module {
                nested,
                imported_memories,
                memories,
                tables,
                functions,
            },
        );
    (limits, prop::collection::vec(module, 0..4))
        .prop_map(|(limits, modules)| Shape { limits, modules })
}

fn shape_inputs() -> BoxedStrategy<Vec<u8>> {
    shape()
        .prop_map(|shape| serde_json::to_vec(&shape).expect("a shape serializes"))
        .boxed()
}

fn check_shape(bytes: &[u8]) -> Verdict {
    let Ok(shape) = serde_json::from_slice::<Shape>(bytes) else {
        return Err(TestCaseError::fail(
            "a component_shape input is a JSON shape",
        ));
    };
    let wat = shape.wat();
    let component = wat::parse_str(&wat).map_err(|e| TestCaseError::fail(format!("{wat}: {e}")))?;
    let verdict = check(&component, &shape.limits());
    if shape.too_complex() {
        prop_assert!(
            matches!(verdict, Err(LoadError::TooComplex(_))),
            "{} passes {:?}: {:?}",
            wat,
            shape.limits,
            verdict
        );
    } else {
        prop_assert!(
            verdict.is_ok(),
            "{} within {:?}: {:?}",
            wat,
            shape.limits,
            verdict
        );
    }
    Ok(())
}
