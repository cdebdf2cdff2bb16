//! The OpenAI-compatible Chat Completions wire format (`POST /chat/completions`).

use serde_json::{Value, json};

use super::{ChatAnswer, ChatRequest, Role, TokenUsage, ToolCall};

/// The request body for `model`.
pub fn request_body(model: &str, request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            };
            let mut message = json!({ "role": role, "content": m.content });
            if !m.tool_calls.is_empty() {
                message["tool_calls"] = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({ "id": c.id, "type": "function",
                                "function": { "name": c.name, "arguments": c.arguments } })
                    })
                    .collect();
            }
            if let Some(id) = &m.tool_call_id {
                message["tool_call_id"] = json!(id);
            }
            message
        })
        .collect();
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_tokens": request.max_tokens,
    });
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({ "type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters } })
            })
            .collect();
    }
    if request.json {
        body["response_format"] = json!({ "type": "json_object" });
    }
    body
}

/// Reads a `200` answer.
pub fn parse_answer(body: &[u8]) -> Result<ChatAnswer, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let choice = value.pointer("/choices/0").ok_or("it has no choices[0]")?;
    let message = choice.get("message").ok_or("choices[0] has no message")?;
    let tool_calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: str_at(c, "/id"),
                    name: str_at(c, "/function/name"),
                    arguments: str_at(c, "/function/arguments"),
                })
                .collect()
        })
        .unwrap_or_default();
    let usage = value.get("usage").and_then(|u| {
        Some(TokenUsage {
            input: u.get("prompt_tokens")?.as_u64()?,
            output: u.get("completion_tokens")?.as_u64()?,
        })
    });
    Ok(ChatAnswer {
        content: str_at(message, "/content"),
        tool_calls,
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("stop")
            .to_string(),
        model: str_at(&value, "/model"),
        usage,
        request_id: None,
    })
}

fn str_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Message;

    #[test]
    fn a_request_and_its_answer_round_trip_the_documented_shapes() {
        let request = ChatRequest {
            messages: vec![
                Message {
                    role: Role::System,
                    content: "be brief".into(),
                    tool_calls: vec![],
                    tool_call_id: None,
                },
                Message {
                    role: Role::User,
                    content: "hi".into(),
                    tool_calls: vec![],
                    tool_call_id: None,
                },
            ],
            tools: vec![],
            max_tokens: 50,
            temperature: Some(0.5),
            json: true,
        };
        let body = request_body("gpt-x", &request);
        assert_eq!(body["model"], "gpt-x");
        assert_eq!(
            body["messages"][1],
            json!({ "role": "user", "content": "hi" })
        );
        assert_eq!(body["response_format"]["type"], "json_object");
        let answer = parse_answer(
            br#"{"id":"c1","model":"gpt-x-2024","choices":[{"index":0,
            "message":{"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function",
            "function":{"name":"lookup","arguments":"{\"q\":1}"}}]},"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#,
        )
        .unwrap();
        assert_eq!(answer.content, "");
        assert_eq!(answer.tool_calls[0].name, "lookup");
        assert_eq!(answer.finish_reason, "tool_calls");
        assert_eq!(
            answer.usage,
            Some(TokenUsage {
                input: 12,
                output: 7
            })
        );
        assert!(parse_answer(br#"{"choices":[]}"#).is_err());
    }
}
