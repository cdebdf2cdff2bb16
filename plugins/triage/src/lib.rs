//! `triage`: reads support messages with a language model through `corral_sdk::llm`,
//! and keeps working when it may not use one. It is the example of the llm grant, and
//! the fixture of the host's model-call tests.
//!
//! # Actions
//!
//! - `classify` `{ "text", "model"? }` returns `{ "label", "by" }`: the label
//!   (`bug`, `billing`, `question` or `other`) and who chose it, `model` or `rules`.
//!   It asks the model (alias `model`, default `fast`) for a JSON answer, and falls
//!   back to keyword rules when the model is denied, its budget is spent or it fails.
//! - `summarize` `{ "text", "model"?, "max_tokens"? }` returns `{ "summary", "tokens" }`;
//!   a refused or failed call is the agent's error (`llm_…`).
//! - `ask` `{ "model", "messages": [{ "role", "content" }], "max_tokens"?, "json"?,
//!   "tools"? [name…], "repeat"? }` sends the messages as they are (`repeat` times) and
//!   returns the (last) whole answer
//!   `{ "content", "tool_calls", "finish_reason", "model", "usage" }` (for testing every
//!   path of the host).

use corral_sdk::llm::{self, LlmError};
use corral_sdk::{Error, info};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Classify {
    text: String,
    model: Option<String>,
}

#[derive(Serialize)]
struct Label {
    label: String,
    by: &'static str,
}

fn classify(input: Classify) -> Result<Label, Error> {
    let model = input.model.as_deref().unwrap_or("fast");
    let asked = llm::chat(model)
        .system(
            "Classify the support message as bug, billing, question or other. \
             Answer {\"label\": \"...\"}.",
        )
        .user(&input.text)
        .max_tokens(20)
        .json()
        .send();
    match asked {
        Ok(answer) => {
            let label = answer
                .json::<Value>()
                .ok()
                .and_then(|v| v["label"].as_str().map(str::to_string))
                .filter(|l| ["bug", "billing", "question", "other"].contains(&l.as_str()));
            match label {
                Some(label) => Ok(Label { label, by: "model" }),
                None => Ok(by_rules(&input.text)),
            }
        }
        Err(e @ (LlmError::Denied(_) | LlmError::BudgetExhausted(_) | LlmError::RateLimited(_))) => {
            info!("no model for this one ({}); using the rules", e.code());
            Ok(by_rules(&input.text))
        }
        Err(e @ (LlmError::Provider { .. } | LlmError::Timeout(_))) => {
            info!("the model failed ({e}); using the rules");
            Ok(by_rules(&input.text))
        }
        Err(e @ LlmError::InvalidRequest(_)) => Err(e.into()),
    }
}

fn by_rules(text: &str) -> Label {
    let text = text.to_lowercase();
    let label = if ["crash", "error", "broken", "bug"].iter().any(|w| text.contains(w)) {
        "bug"
    } else if ["invoice", "refund", "charge", "billing"].iter().any(|w| text.contains(w)) {
        "billing"
    } else if text.contains('?') {
        "question"
    } else {
        "other"
    };
    Label {
        label: label.into(),
        by: "rules",
    }
}

#[derive(Deserialize)]
struct Summarize {
    text: String,
    model: Option<String>,
    max_tokens: Option<u32>,
}

fn summarize(input: Summarize) -> Result<Value, Error> {
    let answer = llm::chat(input.model.as_deref().unwrap_or("fast"))
        .system("Summarize the text in one sentence.")
        .user(&input.text)
        .max_tokens(input.max_tokens.unwrap_or(100))
        .send()?;
    Ok(json!({
        "summary": answer.content,
        "tokens": answer.usage.input_tokens + answer.usage.output_tokens,
    }))
}

#[derive(Deserialize)]
struct Said {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct Ask {
    model: String,
    messages: Vec<Said>,
    max_tokens: Option<u32>,
    #[serde(default)]
    json: bool,
    #[serde(default)]
    tools: Vec<String>,
    /// Sends the same request this many times (default once); the last answer is returned.
    repeat: Option<u32>,
}

fn ask(input: Ask) -> Result<Value, Error> {
    let mut chat = llm::chat(&input.model);
    for said in input.messages {
        chat = match said.role.as_str() {
            "system" => chat.system(said.content),
            "user" => chat.user(said.content),
            other => return Err(Error::invalid_input(format!("role {other:?}: use system or user"))),
        };
    }
    for tool in &input.tools {
        chat = chat.tool(tool, "a tool", &json!({ "type": "object", "properties": {} }));
    }
    if let Some(n) = input.max_tokens {
        chat = chat.max_tokens(n);
    }
    if input.json {
        chat = chat.json();
    }
    let mut answer = chat.send()?;
    for _ in 1..input.repeat.unwrap_or(1) {
        answer = chat.send()?;
    }
    Ok(json!({
        "content": answer.content,
        "tool_calls": answer.tool_calls.iter()
            .map(|c| json!({ "id": c.id, "name": c.name, "arguments": c.arguments }))
            .collect::<Vec<_>>(),
        "finish_reason": answer.finish_reason,
        "model": answer.model,
        "usage": { "input_tokens": answer.usage.input_tokens, "output_tokens": answer.usage.output_tokens },
    }))
}

corral_sdk::agent! {
    description: "Classifies and summarizes support messages with a model (needs an llm grant; classify falls back to rules without one)",
    actions: {
        classify: "Label a message bug, billing, question or other",
        summarize: "Summarize a text in one sentence",
        ask: "Send messages to a model as they are and return the whole answer",
    }
}
