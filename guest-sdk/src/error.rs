//! [`Error`]: an agent's own, expected failure, and the conversions into it.

use std::fmt;

/// An agent's own error, returned to the caller as the execution's error.
///
/// The host records the outcome `agent_error` (or `invalid_input` for
/// [`Error::invalid_input`]) with this code and message.
///
/// # Examples
///
/// ```no_run
/// use corral_sdk::Error;
///
/// fn lookup(id: u32) -> Result<String, Error> {
///     Err(Error::new("not_found", format!("no record {id}")))
/// }
///
/// let busy = Error::new("upstream_unavailable", "try again soon").retryable();
/// assert!(busy.is_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: String,
    message: String,
    retryable: bool,
}

impl Error {
    /// An error with a stable snake_case `code` and a human-readable `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// The input was unusable; the host records the outcome `invalid_input`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new("invalid_input", message)
    }

    /// Marks the error as retryable: the same invocation may succeed if tried again later.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// The error's code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    /// A JSON failure inside the agent (not in its input) is an internal error.
    fn from(e: serde_json::Error) -> Self {
        Error::new("internal", e.to_string())
    }
}

impl From<String> for Error {
    /// A bare message becomes an `agent_error`.
    fn from(message: String) -> Self {
        Error::new("agent_error", message)
    }
}

impl From<&str> for Error {
    /// A bare message becomes an `agent_error`.
    fn from(message: &str) -> Self {
        Error::new("agent_error", message)
    }
}

impl From<Error> for crate::bindings::corral::agent::types::AgentError {
    fn from(e: Error) -> Self {
        crate::bindings::corral::agent::types::AgentError {
            code: e.code,
            message: e.message,
            retryable: e.retryable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_error_inside_the_agent_is_internal() {
        let e: Error = serde_json::from_str::<u8>("x").unwrap_err().into();
        assert_eq!(e.code(), "internal");
    }

    #[test]
    fn a_bare_message_is_an_agent_error_and_not_retryable() {
        let e = Error::from("nope");
        assert_eq!(
            (e.code(), e.message(), e.is_retryable()),
            ("agent_error", "nope", false)
        );
        assert_eq!(Error::from(String::from("x")).code(), "agent_error");
    }

    #[test]
    fn retryable_marks_the_error_and_display_shows_code_and_message() {
        let e = Error::new("busy", "later").retryable();
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "busy: later");
    }
}
