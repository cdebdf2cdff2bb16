//! A loaded agent: a compiled component, pre-instantiated against the host's linker,
//! with the metadata its `describe` export reported.

use serde::{Deserialize, Serialize};
use wasmtime::component::Component;

use super::LoadError;
use super::bindings::{AgentInfo, AgentPre};
use super::state::HostState;

/// An agent ready to run: each invocation instantiates a fresh copy from `pre`.
pub struct LoadedAgent {
    /// sha256 of the component bytes, as 64 hex digits.
    pub hash: String,
    /// Size of the component in bytes.
    pub size: usize,
    /// What it holds in memory, estimated: its compiled code image and the component
    /// bytes' worth of metadata, type information and instance templates. The memory
    /// cache is bounded by this.
    pub resident_bytes: usize,
    /// What the agent said about itself.
    pub metadata: AgentMetadata,
    /// What the component imports and exports.
    pub interface: ComponentInterface,
    /// The compiled input schema of each action that publishes one.
    pub validators: std::collections::HashMap<String, std::sync::Arc<jsonschema::Validator>>,
    pub(crate) pre: AgentPre<HostState>,
}

impl LoadedAgent {
    /// Checks `input` (JSON text) for `action` before anything runs: the action must
    /// be one the agent describes, and the input must satisfy its schema, if it
    /// publishes one.
    pub fn check_input(&self, action: &str, input: &str) -> Result<(), InputRefusal> {
        if !self.metadata.actions.iter().any(|a| a.name == action) {
            let known: Vec<&str> = self
                .metadata
                .actions
                .iter()
                .map(|a| a.name.as_str())
                .collect();
            return Err(InputRefusal::UnknownAction {
                action: action.into(),
                known: known.join(", "),
            });
        }
        let Some(validator) = self.validators.get(action) else {
            return Ok(());
        };
        let value: serde_json::Value =
            serde_json::from_str(input).map_err(|e| InputRefusal::Invalid {
                path: String::new(),
                message: format!("the input is not JSON: {e}"),
            })?;
        validator
            .validate(&value)
            .map_err(|e| InputRefusal::Invalid {
                path: e.instance_path().to_string(),
                message: e.to_string(),
            })
    }
}

/// Why an input was refused before the guest ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputRefusal {
    /// The agent does not describe this action.
    #[error("the agent has no action {action:?} (it has: {known})")]
    UnknownAction {
        /// The action asked for.
        action: String,
        /// The actions it has.
        known: String,
    },
    /// The input does not satisfy the action's schema.
    #[error("the input does not match the action's schema at {}: {message}", if path.is_empty() { "/" } else { path.as_str() })]
    Invalid {
        /// The JSON pointer of the failing part (empty for the whole input).
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Compiles the published input schemas (checked already by [`AgentMetadata::from_describe`]).
pub(crate) fn validators(
    metadata: &AgentMetadata,
) -> std::collections::HashMap<String, std::sync::Arc<jsonschema::Validator>> {
    metadata
        .actions
        .iter()
        .filter_map(|a| {
            let schema = a.input_schema.as_ref()?;
            jsonschema::validator_for(schema)
                .ok()
                .map(|v| (a.name.clone(), std::sync::Arc::new(v)))
        })
        .collect()
}

impl std::fmt::Debug for LoadedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedAgent")
            .field("hash", &self.hash)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// An agent's `describe` output, checked: a non-empty name, a semver version, unique
/// action names, and schemas that are JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentMetadata {
    /// The agent's name.
    pub name: String,
    /// The agent's version (semver).
    pub version: String,
    /// What the agent is for.
    pub description: String,
    /// The actions it supports.
    pub actions: Vec<ActionMetadata>,
}

/// One action of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionMetadata {
    /// The action's name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema of its input, if published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
}

impl AgentMetadata {
    /// Checks and converts what `describe` returned.
    pub fn from_describe(info: AgentInfo) -> Result<AgentMetadata, LoadError> {
        let bad = |m: String| Err(LoadError::BadMetadata(m));
        if info.name.trim().is_empty() {
            return bad("describe() returned an empty name".into());
        }
        if let Err(e) = semver::Version::parse(&info.version) {
            return bad(format!(
                "describe() returned version {:?}, which is not semver: {e}",
                info.version
            ));
        }
        let mut actions = Vec::with_capacity(info.actions.len());
        for action in info.actions {
            if action.name.trim().is_empty() {
                return bad("describe() lists an action with an empty name".into());
            }
            if actions
                .iter()
                .any(|a: &ActionMetadata| a.name == action.name)
            {
                return bad(format!(
                    "describe() lists the action {:?} twice",
                    action.name
                ));
            }
            let input_schema = match action.input_schema {
                None => None,
                Some(text) => match serde_json::from_str(&text) {
                    Ok(schema) => {
                        if let Err(e) = jsonschema::validator_for(&schema) {
                            return bad(format!(
                                "the input schema of action {:?} is not a valid JSON Schema: {e}",
                                action.name
                            ));
                        }
                        Some(schema)
                    }
                    Err(e) => {
                        return bad(format!(
                            "the input schema of action {:?} is not JSON: {e}",
                            action.name
                        ));
                    }
                },
            };
            actions.push(ActionMetadata {
                name: action.name,
                description: action.description,
                input_schema,
            });
        }
        Ok(AgentMetadata {
            name: info.name,
            version: info.version,
            description: info.description,
            actions,
        })
    }

    /// Whether the agent lists `action`.
    pub fn has_action(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a.name == action)
    }
}

/// A component's imports and exports, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInterface {
    /// Imported interfaces and functions, e.g. `wasi:cli/stdout@0.2.6`.
    pub imports: Vec<String>,
    /// Exported interfaces and functions, e.g. `corral:agent/handler@0.1.0`.
    pub exports: Vec<String>,
}

impl ComponentInterface {
    /// Reads the names from a compiled component's type.
    pub fn of(component: &Component) -> ComponentInterface {
        let ty = component.component_type();
        let engine = component.engine();
        ComponentInterface {
            imports: ty
                .imports(engine)
                .map(|(name, _)| name.to_string())
                .collect(),
            exports: ty
                .exports(engine)
                .map(|(name, _)| name.to_string())
                .collect(),
        }
    }
}
