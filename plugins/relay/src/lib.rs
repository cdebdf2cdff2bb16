//! Relay: calls other agents of its tenant (when its policy grants it), directly or
//! as tasks.
//!
//! - `call` `{ "agent", "action", "input"? }` runs one call and returns
//!   `{ "output": … }`; a refused or failed call is this agent's error, with the
//!   call's code (`call_denied`, `call_cycle`, `call_depth_exceeded`, `agent_paused`,
//!   `timed_out`, …).
//! - `pipeline` `{ "steps": [{ "agent", "action" }], "input" }` passes `input` to the
//!   first step, each step's output to the next, and returns the last output with
//!   how many steps ran.
//! - `fan_out` `{ "agent", "action", "inputs": [..], "wait_ms"? }` submits one task per
//!   input to `agent`'s `action`, then waits (up to `wait_ms` each, default 10000, never
//!   past its own deadline) for them in order, and returns `{ "tasks": [ids],
//!   "outputs": [..] }`; a task still running is `null`, a failed one this agent's
//!   error.
//! - `wait` `{ "task", "wait_ms"? }` waits for one task (default 0: only looks) and
//!   returns `{ "output": … }` (`null` while it runs).

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

#[derive(Deserialize)]
struct FanOut {
    agent: String,
    action: String,
    inputs: Vec<Value>,
    #[serde(default = "ten_seconds")]
    wait_ms: u64,
}

fn ten_seconds() -> u64 {
    10_000
}

#[derive(Serialize)]
struct Gathered {
    tasks: Vec<String>,
    outputs: Vec<Option<Value>>,
}

fn fan_out(input: FanOut) -> Result<Gathered, Error> {
    let tasks = input
        .inputs
        .iter()
        .map(|each| agents::submit_task(&input.agent, &input.action, each))
        .collect::<Result<Vec<_>, _>>()?;
    info!(
        "submitted {} tasks to {}.{}",
        tasks.len(),
        input.agent,
        input.action
    );
    let wait = std::time::Duration::from_millis(input.wait_ms);
    let outputs = tasks
        .iter()
        .map(|id| agents::wait_task(id, wait))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Gathered { tasks, outputs })
}

#[derive(Deserialize)]
struct Wait {
    task: String,
    #[serde(default)]
    wait_ms: u64,
}

fn wait(input: Wait) -> Result<Called, Error> {
    let output: Option<Value> =
        agents::wait_task(&input.task, std::time::Duration::from_millis(input.wait_ms))?;
    Ok(Called {
        output: output.unwrap_or(Value::Null),
    })
}

corral_sdk::agent! {
    description: "Calls other agents: one call, or a pipeline of them",
    actions: {
        call: "Call one agent's action and return its output",
        pipeline: "Pass the input through a list of agent actions in turn",
        fan_out: "Submit a task per input to one agent's action, then gather their outputs",
        wait: "Wait for one task and return its output",
    }
}
