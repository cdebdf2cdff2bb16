//! Relay: calls other agents of its tenant (when its policy grants it).
//!
//! - `call` `{ "agent", "action", "input"? }` runs one call and returns
//!   `{ "output": … }`; a refused or failed call is this agent's error, with the
//!   call's code (`call_denied`, `call_cycle`, `call_depth_exceeded`, `agent_paused`,
//!   `timed_out`, …).
//! - `pipeline` `{ "steps": [{ "agent", "action" }], "input" }` passes `input` to the
//!   first step, each step's output to the next, and returns the last output with
//!   how many steps ran.

use corral_sdk::{Error, agents, info};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Deserialize)]
struct Call {
    agent: String,
    action: String,
    #[serde(default = "empty")]
    input: Value,
}

fn empty() -> Value {
    Value::Object(Default::default())
}

#[derive(Serialize)]
struct Called {
    output: Value,
}

fn call(input: Call) -> Result<Called, Error> {
    info!("calling {}.{}", input.agent, input.action);
    let output = agents::call(&input.agent, &input.action, &input.input)?;
    Ok(Called { output })
}

#[derive(Deserialize)]
struct Step {
    agent: String,
    action: String,
}

#[derive(Deserialize)]
struct Pipeline {
    steps: Vec<Step>,
    #[serde(default = "empty")]
    input: Value,
}

#[derive(Serialize)]
struct Piped {
    output: Value,
    steps: usize,
}

fn pipeline(input: Pipeline) -> Result<Piped, Error> {
    if input.steps.is_empty() {
        return Err(Error::invalid_input("a pipeline needs at least one step"));
    }
    let mut value = input.input;
    for step in &input.steps {
        value = agents::call(&step.agent, &step.action, &value)?;
    }
    Ok(Piped {
        output: value,
        steps: input.steps.len(),
    })
}

corral_sdk::agent! {
    description: "Calls other agents: one call, or a pipeline of them",
    actions: {
        call: "Call one agent's action and return its output",
        pipeline: "Pass the input through a list of agent actions in turn",
    }
}
