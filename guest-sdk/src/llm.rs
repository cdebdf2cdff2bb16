//! Language-model calls, made by the host on the agent's behalf.
//!
//! The agent names a model by the alias the operator configured and its policy grants
//! (`grants.llm.models`, or `corral run --llm-config FILE --allow-model ALIAS`); the
//! provider, its URL and its key stay on the host. Every call is metered: its tokens and
//! cost are in the execution record and count against the agent's budgets.
//!
//! Build a request with [`chat`], send it with [`Chat::send`]:
//!
//! ```no_run
//! use corral_sdk::{Error, llm};
//!
//! fn summarize(text: &str) -> Result<String, Error> {
//!     let answer = llm::chat("fast")
//!         .system("Summarize in one sentence.")
//!         .user(text)
//!         .max_tokens(100)
//!         .send()?;
//!     Ok(answer.content)
//! }
//! ```
//!
//! A refused or failed call is an [`LlmError`]; `?` turns it into the agent's
//! [`Error`](crate::Error) with a code such as `llm_denied` or `llm_budget_exhausted`.
//! Match on it to fall back instead:
//!
//! ```no_run
//! use corral_sdk::llm::{self, LlmError};
//!
//! let label = match llm::chat("fast").user("Is this spam? yes or no").send() {
//!     Ok(answer) => answer.content,
//!     Err(LlmError::BudgetExhausted(_)) => "unknown".to_string(),
//!     Err(other) => return Err(other.into()),
//! };
//! # Ok::<(), corral_sdk::Error>(())
//! ```

use std::fmt;

use crate::bindings::corral::agent::llm as wit;

pub use wit::{Role, ToolCall, Usage};

/// A chat request being built. Start one with [`chat`].
#[derive(Debug, Clone)]
pub struct Chat {
    request: wit::ChatRequest,
}

/// Starts a chat request to the model alias `model`.
pub fn chat(model: &str) -> Chat {
    Chat {
        request: wit::ChatRequest {
            model: model.to_string(),
            messages: Vec::new(),
            tools: Vec::new(),
            max_tokens: None,
            temperature: None,
            response_format: wit::ResponseFormat::Text,
        },
    }
}

impl Chat {
    fn message(mut self, role: Role, content: impl Into<String>) -> Self {
        self.request.messages.push(wit::Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        });
        self
    }

    /// Adds a system message (instructions).
    pub fn system(self, content: impl Into<String>) -> Self {
        self.message(Role::System, content)
    }

    /// Adds a user message.
    pub fn user(self, content: impl Into<String>) -> Self {
        self.message(Role::User, content)
    }

    /// Adds an assistant message: an earlier answer, to continue the conversation.
    pub fn assistant(self, answer: &Answer) -> Self {
        let mut chat = self.message(Role::Assistant, answer.content.clone());
        if let Some(last) = chat.request.messages.last_mut() {
            last.tool_calls = answer.tool_calls.clone();
        }
        chat
    }

    /// Adds the result of the tool call `call_id`.
    pub fn tool_result(mut self, call_id: &str, content: impl Into<String>) -> Self {
        self = self.message(Role::Tool, content);
        if let Some(last) = self.request.messages.last_mut() {
            last.tool_call_id = Some(call_id.to_string());
        }
        self
    }

    /// Offers a tool: its name, what it does and a JSON Schema of its arguments.
    pub fn tool(mut self, name: &str, description: &str, parameters: &serde_json::Value) -> Self {
        self.request.tools.push(wit::Tool {
            name: name.to_string(),
            description: description.to_string(),
            parameters: parameters.to_string(),
        });
        self
    }

    /// Most tokens of answer (the host clamps it to the grant's `max_tokens_per_call`).
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.request.max_tokens = Some(tokens);
        self
    }

    /// The sampling temperature, 0 to 2.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.request.temperature = Some(temperature);
        self
    }

    /// Asks for the answer as a JSON object.
    pub fn json(mut self) -> Self {
        self.request.response_format = wit::ResponseFormat::Json;
        self
    }

    /// Sends the request and waits for the whole answer.
    pub fn send(&self) -> Result<Answer, LlmError> {
        let response = wit::chat(&self.request).map_err(LlmError::from)?;
        Ok(Answer {
            content: response.content,
            tool_calls: response.tool_calls,
            finish_reason: response.finish_reason,
            model: response.model,
            usage: response.usage,
        })
    }
}

/// A model's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its text (empty when it only calls tools).
    pub content: String,
    /// The tools it asks to run.
    pub tool_calls: Vec<ToolCall>,
    /// `stop`, `length`, `tool_calls` or `content_filter`.
    pub finish_reason: String,
    /// The provider's name of the model that answered.
    pub model: String,
    /// The tokens it used.
    pub usage: Usage,
}

impl Answer {
    /// The answer parsed as JSON (ask for it with [`Chat::json`]).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::Error> {
        serde_json::from_str(&self.content).map_err(|e| {
            crate::Error::new(
                "llm_bad_answer",
                format!("the model's answer is not the JSON asked for: {e}"),
            )
        })
    }
}

/// Why a model call returned no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmError {
    /// No such model, or not granted to this agent (`llm_denied`).
    Denied(String),
    /// A budget, or the grant's call count, is spent (`llm_budget_exhausted`).
    BudgetExhausted(String),
    /// A rate quota refused the call for now (`llm_rate_limited`, retryable).
    RateLimited(String),
    /// The provider failed (`llm_provider_error`); whether retrying may help.
    Provider {
        /// What happened.
        message: String,
        /// Whether trying later may help.
        retryable: bool,
    },
    /// No answer in time (`llm_timeout`, retryable).
    Timeout(String),
    /// The request cannot be sent as it is (`llm_invalid_request`).
    InvalidRequest(String),
}

impl LlmError {
    /// The stable code this error becomes as the agent's [`Error`](crate::Error).
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::Denied(_) => "llm_denied",
            LlmError::BudgetExhausted(_) => "llm_budget_exhausted",
            LlmError::RateLimited(_) => "llm_rate_limited",
            LlmError::Provider { .. } => "llm_provider_error",
            LlmError::Timeout(_) => "llm_timeout",
            LlmError::InvalidRequest(_) => "llm_invalid_request",
        }
    }

    /// Whether trying again later may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::RateLimited(_) | LlmError::Timeout(_) => true,
            LlmError::Provider { retryable, .. } => *retryable,
            _ => false,
        }
    }

    fn message(&self) -> &str {
        match self {
            LlmError::Denied(m)
            | LlmError::BudgetExhausted(m)
            | LlmError::RateLimited(m)
            | LlmError::Timeout(m)
            | LlmError::InvalidRequest(m) => m,
            LlmError::Provider { message, .. } => message,
        }
    }
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for LlmError {}

impl From<wit::LlmError> for LlmError {
    fn from(e: wit::LlmError) -> LlmError {
        match e {
            wit::LlmError::Denied(m) => LlmError::Denied(m),
            wit::LlmError::BudgetExhausted(m) => LlmError::BudgetExhausted(m),
            wit::LlmError::RateLimited(m) => LlmError::RateLimited(m),
            wit::LlmError::ProviderError(f) => LlmError::Provider {
                message: f.message,
                retryable: f.retryable,
            },
            wit::LlmError::Timeout(m) => LlmError::Timeout(m),
            wit::LlmError::InvalidRequest(m) => LlmError::InvalidRequest(m),
        }
    }
}

impl From<LlmError> for crate::Error {
    /// The agent's error, with the same code and message, retryable when the call was.
    fn from(e: LlmError) -> crate::Error {
        let error = crate::Error::new(e.code(), e.message());
        if e.is_retryable() {
            error.retryable()
        } else {
            error
        }
    }
}
