//! Anthropic's Messages wire format (`POST /v1/messages`).

use serde_json::{Value, json};

use super::{ChatAnswer, ChatRequest, Role, TokenUsage, ToolCall};

/// The `anthropic-version` header sent.
pub const VERSION: &str = "2023-06-01";

/// The request body for `model`. System messages go to `system`; tool calls and tool
/// results become content blocks; a JSON answer is asked for in the system prompt
/// (this API has no response-format switch).
pub fn request_body(model: &str, request: &ChatRequest) -> Value {
    let mut system: Vec<&str> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in &request.messages {
        match m.role {
            Role::System => system.push(&m.content),
            Role::User => messages.push(json!({ "role": "user", "content": m.content })),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({ "type": "text", "text": m.content }));
                }
                for call in &m.tool_calls {
                    let input: Value =
                        serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(
                        json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": input }),
                    );
                }
                messages.push(json!({ "role": "assistant", "content": blocks }));
            }
            Role::Tool => messages.push(json!({ "role": "user", "content": [{
                "type": "tool_result",
                "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                "content": m.content,
            }]})),
        }
    }
    let json_hint = "Answer with a single JSON object and nothing else.";
    if request.json {
        system.push(json_hint);
    }
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.parameters }))
            .collect();
    }
    body
}

/// Reads a `200` answer; `stop_reason` is mapped to the OpenAI names the guest sees.
pub fn parse_answer(body: &[u8]) -> Result<ChatAnswer, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or("it has no content")?;
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                content.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""))
            }
            Some("tool_use") => tool_calls.push(ToolCall {
                id: block.get("id").and_then(Value::as_str).unwrap_or("").into(),
                name: block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                arguments: block.get("input").map_or("{}".into(), Value::to_string),
            }),
            _ => {}
        }
    }
    let finish_reason = match value.get("stop_reason").and_then(Value::as_str) {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    };
    let usage = value.get("usage").and_then(|u| {
        Some(TokenUsage {
            input: u.get("input_tokens")?.as_u64()?,
            output: u.get("output_tokens")?.as_u64()?,
        })
    });
    Ok(ChatAnswer {
        content,
        tool_calls,
        finish_reason: finish_reason.into(),
        model: value
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        usage,
        request_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Message;

    #[test]
    fn system_prompts_and_tool_results_take_their_documented_places() {
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
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "t1".into(),
                        name: "f".into(),
                        arguments: "{\"a\":1}".into(),
                    }],
                    tool_call_id: None,
                },
                Message {
                    role: Role::Tool,
                    content: "42".into(),
                    tool_calls: vec![],
                    tool_call_id: Some("t1".into()),
                },
            ],
            tools: vec![],
            max_tokens: 10,
            temperature: None,
            json: false,
        };
        let body = request_body("claude-x", &request);
        assert_eq!(body["system"], "be brief");
        assert_eq!(
            body["messages"][1]["content"][0]["input"],
            json!({ "a": 1 })
        );
        assert_eq!(body["messages"][2]["content"][0]["tool_use_id"], "t1");
        let answer = parse_answer(
            br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x-1",
            "content":[{"type":"text","text":"hello"}],"stop_reason":"max_tokens",
            "usage":{"input_tokens":9,"output_tokens":10}}"#,
        )
        .unwrap();
        assert_eq!(
            (answer.content.as_str(), answer.finish_reason.as_str()),
            ("hello", "length")
        );
        assert_eq!(
            answer.usage,
            Some(TokenUsage {
                input: 9,
                output: 10
            })
        );
    }
}
