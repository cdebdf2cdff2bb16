//! Cheap checks on untrusted bytes before anything is compiled.
//!
//! Only binary components are accepted. Everything else — WebAssembly text, core
//! modules, precompiled artifacts, arbitrary files — is refused up front with an
//! error naming what was found. A component is then parsed (not compiled) once to
//! refuse shapes known to make compilation explode in time or memory: very many
//! functions, huge function bodies, huge numbers of locals — and shapes the instance
//! pool cannot hold (more memories or tables per core module, more memories per
//! component, or larger initial memories or tables than it allows), each named with its
//! limit. This pass is linear in the input and allocates little; the compile worker's
//! caps are the backstop.

use wasmparser::{Parser, Payload};

use super::LoadError;

/// What a file turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    /// A binary WebAssembly component.
    Component,
    /// A binary WebAssembly core module.
    CoreModule,
    /// WebAssembly text format.
    Text,
    /// A precompiled native artifact (ELF), such as `wasmtime compile` output.
    Precompiled,
    /// Zero bytes.
    Empty,
    /// A WebAssembly binary of a version or layer this host does not know.
    OtherWasm([u8; 4]),
    /// Anything else.
    Unknown,
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
const MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];

/// Identifies the kind of `bytes` from its first bytes.
pub fn detect(bytes: &[u8]) -> BinaryKind {
    if bytes.is_empty() {
        return BinaryKind::Empty;
    }
    if bytes.starts_with(WASM_MAGIC) && bytes.len() >= 8 {
        let version = &bytes[4..8];
        return if version == COMPONENT_VERSION {
            BinaryKind::Component
        } else if version == MODULE_VERSION {
            BinaryKind::CoreModule
        } else {
            BinaryKind::OtherWasm([version[0], version[1], version[2], version[3]])
        };
    }
    if bytes.starts_with(b"\x7fELF") {
        return BinaryKind::Precompiled;
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with(";;"));
    if first.is_some_and(|l| l.starts_with('(')) {
        return BinaryKind::Text;
    }
    BinaryKind::Unknown
}

/// Bounds on a component's shape, checked before compiling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StructureLimits {
    /// Largest accepted file.
    pub max_bytes: usize,
    /// Functions defined across all core modules.
    pub max_functions: u32,
    /// Bytes in one function body.
    pub max_function_body_bytes: usize,
    /// Locals declared by one function.
    pub max_locals_per_function: u32,
    /// Memories one core module may define (the instance pool's bound; imported ones
    /// belong to the instance that defines them).
    pub max_memories_per_module: u32,
    /// Tables one core module may define (the instance pool's bound).
    pub max_tables_per_module: u32,
    /// Memories all the core modules of a component may define together.
    pub max_memories_per_component: u32,
    /// Elements a table may start with.
    pub max_table_elements: u64,
    /// Bytes a memory may start with.
    pub max_initial_memory_bytes: u64,
}

impl Default for StructureLimits {
    fn default() -> Self {
        StructureLimits {
            max_bytes: 64 << 20,
            max_functions: 200_000,
            max_function_body_bytes: 2 << 20,
            max_locals_per_function: 50_000,
            max_memories_per_module: 1,
            max_tables_per_module: 1,
            max_memories_per_component: 4,
            max_table_elements: 20_000,
            max_initial_memory_bytes: 4 << 30,
        }
    }
}

/// Refuses anything that is not a binary component of an acceptable shape.
pub fn check(bytes: &[u8], limits: &StructureLimits) -> Result<(), LoadError> {
    match detect(bytes) {
        BinaryKind::Component => {}
        BinaryKind::Empty => return Err(LoadError::NotAComponent("the file is empty".into())),
        BinaryKind::CoreModule => {
            return Err(LoadError::NotAComponent(
                "this is a core WebAssembly module, not a component; build for `wasm32-wasip2` \
                 (or wrap the module with `wasm-tools component new`)"
                    .into(),
            ));
        }
        BinaryKind::Text => {
            return Err(LoadError::NotAComponent(
                "this is WebAssembly text (WAT); only binary components are accepted".into(),
            ));
        }
        BinaryKind::Precompiled => {
            return Err(LoadError::NotAComponent(
                "this is a precompiled native artifact; upload the component itself, the host \
                 compiles it"
                    .into(),
            ));
        }
        BinaryKind::OtherWasm(version) => {
            let layer = u16::from_le_bytes([version[2], version[3]]);
            let number = u16::from_le_bytes([version[0], version[1]]);
            return Err(LoadError::NotAComponent(format!(
                "a WebAssembly binary of {} version {number}, which this host does not run; it \
                 takes components of the WASI 0.2 component model (layer 1, version 13)",
                if layer == 1 {
                    "component layer 1,"
                } else {
                    "core layer 0,"
                }
            )));
        }
        BinaryKind::Unknown => {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(LoadError::NotAComponent(format!(
                "not a WebAssembly component (starts with bytes {})",
                head.join(" ")
            )));
        }
    }
    if bytes.len() > limits.max_bytes {
        return Err(LoadError::TooComplex(format!(
            "the component is {} bytes; the limit is {}",
            bytes.len(),
            limits.max_bytes
        )));
    }

    let mut functions: u32 = 0;
    let too_many = |what: &str, count: u32, limit: u32| {
        LoadError::TooComplex(format!(
            "{what}: {count}; this host's instance pool allows {limit}"
        ))
    };
    // Per core module (reset as each begins), and for the component as a whole.
    let (mut memories, mut tables, mut all_memories) = (0u32, 0u32, 0u32);
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| LoadError::Malformed(e.to_string()))?;
        let mut add_memory = |memory: wasmparser::MemoryType| -> Result<(), LoadError> {
            memories += 1;
            all_memories += 1;
            if memories > limits.max_memories_per_module {
                return Err(too_many(
                    "memories in one core module",
                    memories,
                    limits.max_memories_per_module,
                ));
            }
            if all_memories > limits.max_memories_per_component {
                return Err(too_many(
                    "memories in the component",
                    all_memories,
                    limits.max_memories_per_component,
                ));
            }
            let page = 1u64 << memory.page_size_log2.unwrap_or(16);
            let initial = memory.initial.saturating_mul(page);
            if initial > limits.max_initial_memory_bytes {
                return Err(LoadError::TooComplex(format!(
                    "a memory starts at {initial} bytes; this host allows at most {}",
                    limits.max_initial_memory_bytes
                )));
            }
            Ok(())
        };
        match &payload {
            Payload::Version {
                encoding: wasmparser::Encoding::Module,
                ..
            } => {
                memories = 0;
                tables = 0;
            }
            Payload::MemorySection(section) => {
                for memory in section.clone() {
                    add_memory(memory.map_err(|e| LoadError::Malformed(e.to_string()))?)?;
                }
            }
            Payload::TableSection(section) => {
                for table in section.clone() {
                    let table = table.map_err(|e| LoadError::Malformed(e.to_string()))?;
                    tables += 1;
                    check_table(table.ty.initial, tables, limits)?;
                }
            }
            _ => {}
        }
        if let Payload::CodeSectionEntry(body) = payload {
            functions += 1;
            if functions > limits.max_functions {
                return Err(LoadError::TooComplex(format!(
                    "the component defines more than {} functions",
                    limits.max_functions
                )));
            }
            let size = body.range().len();
            if size > limits.max_function_body_bytes {
                return Err(LoadError::TooComplex(format!(
                    "function {functions} has a {size}-byte body; the limit is {}",
                    limits.max_function_body_bytes
                )));
            }
            let mut locals: u32 = 0;
            let reader = body
                .get_locals_reader()
                .map_err(|e| LoadError::Malformed(e.to_string()))?;
            for local in reader {
                let (count, _) = local.map_err(|e| LoadError::Malformed(e.to_string()))?;
                locals = locals.saturating_add(count);
            }
            if locals > limits.max_locals_per_function {
                return Err(LoadError::TooComplex(format!(
                    "function {functions} declares {locals} locals; the limit is {}",
                    limits.max_locals_per_function
                )));
            }
        }
    }
    Ok(())
}

/// Refuses the `count`-th table of a core module, or one that starts too large.
fn check_table(initial: u64, count: u32, limits: &StructureLimits) -> Result<(), LoadError> {
    if count > limits.max_tables_per_module {
        return Err(LoadError::TooComplex(format!(
            "tables in one core module: {count}; this host's instance pool allows {}",
            limits.max_tables_per_module
        )));
    }
    if initial > limits.max_table_elements {
        return Err(LoadError::TooComplex(format!(
            "a table starts with {initial} elements; this host's instance pool allows {}",
            limits.max_table_elements
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_file_is_recognised() {
        assert_eq!(detect(b""), BinaryKind::Empty);
        assert_eq!(detect(b"\0asm\x01\0\0\0"), BinaryKind::CoreModule);
        assert_eq!(detect(b"\0asm\x0d\0\x01\0"), BinaryKind::Component);
        assert_eq!(detect(b";; hello\n(component)"), BinaryKind::Text);
        assert_eq!(detect(b"\x7fELF\x02\x01"), BinaryKind::Precompiled);
        assert_eq!(detect(b"PK\x03\x04"), BinaryKind::Unknown);
        assert_eq!(
            detect(b"\0asm\x0c\0\x01\0"),
            BinaryKind::OtherWasm([0x0c, 0, 1, 0])
        );
        let err = check(b"\0asm\x0c\0\x01\0", &StructureLimits::default()).unwrap_err();
        assert!(err.to_string().contains("version 12"), "{err}");
    }

    #[test]
    fn shapes_the_instance_pool_cannot_hold_are_refused_naming_the_limit() {
        let refused = |wat: &str| check(&wat::parse_str(wat).unwrap(), &StructureLimits::default());
        let two_memories = "(component (core module (memory 1) (memory 1)))";
        let err = refused(two_memories).unwrap_err();
        assert!(
            matches!(&err, LoadError::TooComplex(m) if m.contains("memories in one core module: 2")),
            "{err}"
        );
        let two_tables = "(component (core module (table 1 funcref) (table 1 funcref)))";
        assert!(
            matches!(refused(two_tables), Err(LoadError::TooComplex(m)) if m.contains("tables"))
        );
        let big_table = "(component (core module (table 30000 funcref)))";
        assert!(
            matches!(refused(big_table), Err(LoadError::TooComplex(m)) if m.contains("30000 elements"))
        );
        let five = "(component (core module (memory 1)) (core module (memory 1)) (core module (memory 1)) (core module (memory 1)) (core module (memory 1)))";
        assert!(
            matches!(refused(five), Err(LoadError::TooComplex(m)) if m.contains("memories in the component: 5"))
        );
        assert!(refused("(component (core module (memory 1) (table 10 funcref)))").is_ok());
    }

    #[test]
    fn a_truncated_component_is_malformed() {
        let err = check(b"\0asm\x0d\0\x01\0\x01\xff", &StructureLimits::default()).unwrap_err();
        assert!(matches!(err, LoadError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn a_component_with_too_many_locals_is_refused() {
        let wat = r#"(component (core module (func (local i32 i32 i32 i32))))"#;
        let bytes = wat::parse_str(wat).unwrap();
        let limits = StructureLimits {
            max_locals_per_function: 3,
            ..StructureLimits::default()
        };
        let err = check(&bytes, &limits).unwrap_err();
        assert!(matches!(err, LoadError::TooComplex(m) if m.contains("4 locals")));
    }
}
