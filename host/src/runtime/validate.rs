//! Cheap checks on untrusted bytes before anything is compiled.
//!
//! Only binary components are accepted. Everything else — WebAssembly text, core
//! modules, precompiled artifacts, arbitrary files — is refused up front with an
//! error naming what was found. A component is then parsed (not compiled) once to
//! refuse shapes known to make compilation explode in time or memory: very many
//! functions, huge function bodies, huge numbers of locals. This pass is linear in
//! the input and allocates little; the compile worker's caps are the backstop.

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
            BinaryKind::Unknown
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
}

impl Default for StructureLimits {
    fn default() -> Self {
        StructureLimits {
            max_bytes: 64 << 20,
            max_functions: 200_000,
            max_function_body_bytes: 2 << 20,
            max_locals_per_function: 50_000,
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
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| LoadError::Malformed(e.to_string()))?;
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
