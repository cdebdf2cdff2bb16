//! Support code for the `agent!` macro. Not a public API.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::bindings::corral::agent::types::{ActionInfo, AgentError, AgentInfo, Invocation};
pub use crate::bindings::exports::corral::agent::handler::Guest;
use crate::{Context, Error, context};

/// Sets the context, finds the action with `route` and runs it.
pub fn dispatch(
    invocation: Invocation,
    route: impl FnOnce(&str, &str) -> Option<Result<String, Error>>,
) -> Result<String, AgentError> {
    let ctx = invocation.context;
    context::set(Context {
        execution_id: ctx.execution_id,
        agent_name: ctx.agent_name,
        agent_version: ctx.agent_version,
        correlation_id: ctx.correlation_id,
    });
    match route(&invocation.action, &invocation.input) {
        Some(result) => result.map_err(AgentError::from),
        None => Err(Error::new(
            "unknown_action",
            format!("this agent has no action {:?}", invocation.action),
        )
        .into()),
    }
}

/// Decodes the input, calls the action and encodes its output.
pub fn run<I, O, E>(action: fn(I) -> Result<O, E>, input: &str) -> Result<String, Error>
where
    I: DeserializeOwned,
    O: Serialize,
    E: Into<Error>,
{
    let input: I = serde_json::from_str(input).map_err(|e| Error::invalid_input(e.to_string()))?;
    let output = action(input).map_err(Into::into)?;
    Ok(serde_json::to_string(&output)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(n: i64) -> Result<i64, Error> {
        Ok(n * 2)
    }

    fn invocation(action: &str, input: &str) -> Invocation {
        Invocation {
            action: action.into(),
            input: input.into(),
            context: crate::bindings::corral::agent::types::Context {
                execution_id: "ex-1".into(),
                agent_name: "a".into(),
                agent_version: "1.0.0".into(),
                correlation_id: None,
            },
        }
    }

    fn route(action: &str, input: &str) -> Option<Result<String, Error>> {
        match action {
            "double" => Some(run(double, input)),
            _ => None,
        }
    }

    #[test]
    fn a_known_action_gets_typed_input_and_the_context() {
        assert_eq!(dispatch(invocation("double", "21"), route).unwrap(), "42");
        assert_eq!(context().execution_id, "ex-1");
    }

    #[test]
    fn an_unknown_action_fails_with_unknown_action() {
        let err = dispatch(invocation("triple", "1"), route).unwrap_err();
        assert_eq!(err.code, "unknown_action");
    }

    #[test]
    fn input_of_the_wrong_shape_fails_with_invalid_input() {
        let err = dispatch(invocation("double", "\"x\""), route).unwrap_err();
        assert_eq!(err.code, "invalid_input");
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }
}
