//! The single `bindgen!` call for the `corral:agent` world (see `wit/agent.wit`).
//!
//! Host imports are trappable: a host function returning `Err` stops the guest, which
//! is how the log limit is enforced. Exports are called asynchronously, because the
//! store runs on a fiber and yields at the end of every slice.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "corral:agent/agent",
    imports: {
        default: trappable,
        // These wait on the database or on other agents.
        "corral:agent/kv": async | trappable,
        "corral:agent/config": async | trappable,
        "corral:agent/agents": async | trappable,
        "corral:agent/llm": async | trappable,
    },
    exports: { default: async },
});

pub use corral::agent::logging::Level;
pub use corral::agent::types::{ActionInfo, AgentError, AgentInfo, Context, Invocation};
