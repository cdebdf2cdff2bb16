//! The invocation context: who and what the current call is for.
//!
//! The dispatcher sets it (per thread) before running an action; [`context()`] reads it.

use std::cell::RefCell;

/// What the host told the agent about the current invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The id of this execution, as recorded by the host.
    pub execution_id: String,
    /// The agent's registered name.
    pub agent_name: String,
    /// The agent's version.
    pub agent_version: String,
    /// The caller's correlation id, if any.
    pub correlation_id: Option<String>,
}

thread_local! {
    static CURRENT: RefCell<Context> = RefCell::new(Context::default());
}

/// The current invocation's context. Outside an invocation every field is empty.
///
/// # Examples
///
/// ```no_run
/// let ctx = corral_sdk::context();
/// corral_sdk::info!("running as execution {}", ctx.execution_id);
/// ```
pub fn context() -> Context {
    CURRENT.with(|c| c.borrow().clone())
}

pub(crate) fn set(context: Context) {
    CURRENT.with(|c| *c.borrow_mut() = context);
}
