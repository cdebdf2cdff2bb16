//! [`ModelServer`]: a fake model provider on 127.0.0.1 for the LLM-capability tests. One
//! server speaks one [`Provider`]'s API in the request and response shapes its public
//! documentation gives, checks its key, and records every request it receives.
//!
//! | provider | route ([`ModelServer::endpoint`]) | headers | base URL ([`ModelServer::url`]) |
//! |---|---|---|---|
//! | [`Provider::OpenAi`] | `POST /v1/chat/completions` | `Authorization: Bearer KEY` | `http://127.0.0.1:PORT/v1` |
//! | [`Provider::Anthropic`] | `POST /v1/messages` | `x-api-key: KEY`, `anthropic-version: 2023-06-01` | `http://127.0.0.1:PORT` |
//!
//! Answers are deterministic and chosen by the requested `model`, so a test picks a
//! behaviour through the operator's alias → model mapping:
//!
//! | model | answer |
//! |---|---|
//! | any other name | `echo: <text of the last user message>` |
//! | `slow-<ms>` | the echo, after `ms` milliseconds |
//! | `flaky-<n>` | `429` with `Retry-After` ([`ModelServer::set_retry_after`]) for the first `n` requests naming it, then the echo |
//! | `error-500`, `error-503` | that status |
//! | `overloaded` | `503` (OpenAI) or `529` (Anthropic) |
//! | `not-found` | `404`: the model does not exist |
//! | `no-usage` | the echo, without the `usage` object |
//! | `truncated` | `200` with the full `Content-Length`, half the JSON body, then the connection closes |
//! | `tools` | a call to the first tool of the request, arguments `{}`; the echo when there are no tools |
//! | `json` | content `{"ok":true}` |
//! | `bad-key` | the echo: the key is checked for every model, so this name only states the intent |
//!
//! Tokens are words (split on whitespace). Input is the words of every message's text and of
//! `system`, plus 3 per message ([`input_tokens`]); output is the words of the answer, and 1
//! for a tool call. When `max_tokens` (or OpenAI's `max_completion_tokens`) is below the
//! answer's words, the answer is cut to that many words and ends with `length` / `max_tokens`.
//!
//! A request is recorded first, then checked in order: the route (`404`), the key (`401`),
//! Anthropic's version header (`400`), the body (`400`: not the documented shape, e.g. no
//! `max_tokens` for Anthropic, a `system` role in Anthropic's `messages`, or OpenAI tool-call
//! `arguments` that are not a string). Errors have the provider's error shape, and every
//! answer carries a request id (`x-request-id` / `request-id`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The API a [`ModelServer`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI-compatible Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl Provider {
    /// The path of the provider's one route.
    pub fn path(self) -> &'static str {
        match self {
            Provider::OpenAi => "/v1/chat/completions",
            Provider::Anthropic => "/v1/messages",
        }
    }

    fn request_id_header(self) -> &'static str {
        match self {
            Provider::OpenAi => "x-request-id",
            Provider::Anthropic => "request-id",
        }
    }
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The request method.
    pub method: Method,
    /// The request path, without the query.
    pub path: String,
    /// Every request header.
    pub headers: HeaderMap,
    /// The body parsed as JSON; `Null` when it was not JSON.
    pub body: Value,
    /// When the server received it.
    pub at: Instant,
}

/// A running fake provider. It stops accepting connections when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ModelServer {
    /// Starts a server for `provider` that accepts only `key`, on the current tokio runtime.
    pub async fn start(provider: Provider, key: &str) -> ModelServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the model server");
        let addr = listener.local_addr().expect("model server address");
        let shared = Arc::new(Shared {
            provider,
            key: key.to_string(),
            retry_after: AtomicU64::new(0),
            ids: AtomicU64::new(0),
            log: Mutex::default(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async { stopped.await.unwrap_or(()) })
                .await
        });
        ModelServer {
            addr,
            shared,
            stop: Some(stop),
            runtime: None,
        }
    }

    /// Starts a server on a runtime of its own, for tests that are not async.
    pub fn start_in_background(provider: Provider, key: &str) -> ModelServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("model server runtime");
        let mut server = runtime.block_on(ModelServer::start(provider, key));
        server.runtime = Some(runtime);
        server
    }

    /// The API this server speaks.
    pub fn provider(&self) -> Provider {
        self.shared.provider
    }

    /// The base URL an operator would configure: `http://127.0.0.1:PORT/v1` for OpenAI,
    /// `http://127.0.0.1:PORT` for Anthropic.
    pub fn url(&self) -> String {
        match self.provider() {
            Provider::OpenAi => format!("http://{}/v1", self.addr),
            Provider::Anthropic => format!("http://{}", self.addr),
        }
    }

    /// The full URL of the provider's route.
    pub fn endpoint(&self) -> String {
        format!("http://{}{}", self.addr, self.provider().path())
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sets the `Retry-After` seconds of every later `429` (0 until set, so tests stay fast).
    pub fn set_retry_after(&self, seconds: u64) {
        self.shared.retry_after.store(seconds, Ordering::Relaxed);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().expect("log").requests.clone()
    }

    /// How many requests so far named `model`, whatever their answer.
    pub fn count(&self, model: &str) -> usize {
        let log = self.shared.log.lock().expect("log");
        log.per_model.get(model).copied().unwrap_or(0)
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may already be gone with its runtime; then there is nothing to stop.
            let _ = stop.send(());
        }
    }
}

/// The input tokens the server counts for a request `body` (either provider's shape): the
/// words of every message's text and of `system`, plus 3 per message.
pub fn input_tokens(body: &Value) -> u64 {
    let messages = body["messages"].as_array().map_or(&[][..], Vec::as_slice);
    let in_messages: u64 = messages
        .iter()
        .map(|m| words(&text_of(&m["content"])) + 3)
        .sum();
    in_messages + words(&text_of(&body["system"]))
}

struct Shared {
    provider: Provider,
    key: String,
    retry_after: AtomicU64,
    ids: AtomicU64,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    requests: Vec<Recorded>,
    per_model: HashMap<String, usize>,
}

impl Shared {
    /// Records a request; returns how many requests have named its model, this one included.
    fn record(&self, request: Recorded) -> usize {
        let mut log = self.log.lock().expect("log");
        let seen = match request.body["model"].as_str() {
            Some(model) => {
                let count = log.per_model.entry(model.to_string()).or_default();
                *count += 1;
                *count
            }
            None => 0,
        };
        log.requests.push(request);
        seen
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let seen = shared.record(Recorded {
        method: method.clone(),
        path: uri.path().to_string(),
        headers: headers.clone(),
        body: body.clone(),
        at: Instant::now(),
    });
    let mut response = answer(&shared, &method, uri.path(), &headers, &body, seen).await;
    let request_id = HeaderValue::from_str(&format!("req_{}", shared.next_id())).unwrap();
    let name = shared.provider.request_id_header();
    response.headers_mut().insert(name, request_id);
    response
}

/// What a model name asks for (see the module table).
enum Behaviour {
    Echo,
    Slow(u64),
    Flaky(usize),
    Fail(StatusCode),
    NotFound,
    NoUsage,
    Truncated,
    Tools,
    Json,
}

impl Behaviour {
    fn of(model: &str, provider: Provider) -> Behaviour {
        let number = |prefix: &str| model.strip_prefix(prefix).and_then(|n| n.parse().ok());
        if let Some(ms) = number("slow-") {
            return Behaviour::Slow(ms);
        }
        if let Some(n) = number("flaky-") {
            return Behaviour::Flaky(n as usize);
        }
        match (model, provider) {
            ("error-500", _) => Behaviour::Fail(StatusCode::INTERNAL_SERVER_ERROR),
            ("error-503", _) | ("overloaded", Provider::OpenAi) => {
                Behaviour::Fail(StatusCode::SERVICE_UNAVAILABLE)
            }
            ("overloaded", Provider::Anthropic) => {
                Behaviour::Fail(StatusCode::from_u16(529).unwrap())
            }
            ("not-found", _) => Behaviour::NotFound,
            ("no-usage", _) => Behaviour::NoUsage,
            ("truncated", _) => Behaviour::Truncated,
            ("tools", _) => Behaviour::Tools,
            ("json", _) => Behaviour::Json,
            _ => Behaviour::Echo,
        }
    }
}

async fn answer(
    shared: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
    seen: usize,
) -> Response {
    let provider = shared.provider;
    if method != Method::POST || path != provider.path() {
        return failure(
            provider,
            StatusCode::NOT_FOUND,
            None,
            format!("no route {method} {path}"),
        );
    }
    let (key_header, expected) = match provider {
        Provider::OpenAi => (
            header::AUTHORIZATION.as_str(),
            format!("Bearer {}", shared.key),
        ),
        Provider::Anthropic => ("x-api-key", shared.key.clone()),
    };
    if headers.get(key_header).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        let message = format!("invalid or missing {key_header}");
        return failure(
            provider,
            StatusCode::UNAUTHORIZED,
            Some("invalid_api_key"),
            message,
        );
    }
    if provider == Provider::Anthropic
        && headers
            .get("anthropic-version")
            .and_then(|v| v.to_str().ok())
            != Some("2023-06-01")
    {
        let message = "anthropic-version: header is required (2023-06-01)";
        return failure(provider, StatusCode::BAD_REQUEST, None, message);
    }
    let call = match Call::parse(provider, body) {
        Ok(call) => call,
        Err(message) => return failure(provider, StatusCode::BAD_REQUEST, None, message),
    };

    let behaviour = Behaviour::of(&call.model, provider);
    let reply = match behaviour {
        Behaviour::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Reply::echo(&call)
        }
        Behaviour::Flaky(n) if seen <= n => {
            let message = "rate limit reached, retry later";
            let status = StatusCode::TOO_MANY_REQUESTS;
            let mut response = failure(provider, status, Some("rate_limit_exceeded"), message);
            let seconds = shared.retry_after.load(Ordering::Relaxed);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
            return response;
        }
        Behaviour::Fail(status) => return failure(provider, status, None, "the model failed"),
        Behaviour::NotFound => {
            let message = format!("the model `{}` does not exist", call.model);
            return failure(
                provider,
                StatusCode::NOT_FOUND,
                Some("model_not_found"),
                message,
            );
        }
        Behaviour::Tools => match &call.first_tool {
            Some(tool) => Reply::Tool(tool.clone()),
            None => Reply::echo(&call),
        },
        Behaviour::Json => Reply::Text(r#"{"ok":true}"#.to_string()),
        Behaviour::Echo | Behaviour::Flaky(_) | Behaviour::NoUsage | Behaviour::Truncated => {
            Reply::echo(&call)
        }
    };
    let usage = !matches!(behaviour, Behaviour::NoUsage);
    let completion = completion(shared, &call, reply, usage);
    match behaviour {
        Behaviour::Truncated => truncated(completion),
        _ => Json(completion).into_response(),
    }
}

/// The parts of a well-formed request the answer depends on.
struct Call {
    model: String,
    max_tokens: Option<usize>,
    first_tool: Option<String>,
    last_user: String,
    input_tokens: u64,
}

impl Call {
    /// Checks `body` against the provider's documented request shape.
    fn parse(provider: Provider, body: &Value) -> Result<Call, String> {
        let model = body["model"]
            .as_str()
            .ok_or("model: a string is required")?;
        let messages = body["messages"]
            .as_array()
            .filter(|m| !m.is_empty())
            .ok_or("messages: a non-empty array is required")?;
        for (i, message) in messages.iter().enumerate() {
            let checked = match provider {
                Provider::OpenAi => check_openai_message(message),
                Provider::Anthropic => check_anthropic_message(message),
            };
            checked.map_err(|e| format!("messages.{i}.{e}"))?;
        }
        let (max_tokens, highest_temperature) = match provider {
            Provider::OpenAi => {
                let newer = positive(body, "max_completion_tokens")?;
                (newer.or(positive(body, "max_tokens")?), 2.0)
            }
            Provider::Anthropic => {
                let max = positive(body, "max_tokens")?.ok_or("max_tokens: Field required")?;
                (Some(max), 1.0)
            }
        };
        if let Some(t) = body.get("temperature") {
            let t = t.as_f64().ok_or("temperature: a number is required")?;
            if !(0.0..=highest_temperature).contains(&t) {
                return Err(format!("temperature: must be in 0..={highest_temperature}"));
            }
        }
        let first_tool = first_tool(provider, body)?;
        if provider == Provider::OpenAi && body.get("response_format").is_some() {
            let kind = body["response_format"]["type"].as_str();
            if !matches!(kind, Some("text" | "json_object" | "json_schema")) {
                return Err("response_format.type: text, json_object or json_schema".into());
            }
        }
        if provider == Provider::Anthropic
            && !matches!(body["system"], Value::Null | Value::String(_))
        {
            check_blocks(&body["system"]).map_err(|e| format!("system.{e}"))?;
        }
        let last_user = messages.iter().rev().find(|m| m["role"] == "user");
        Ok(Call {
            model: model.to_string(),
            max_tokens,
            first_tool,
            last_user: last_user
                .map(|m| text_of(&m["content"]))
                .unwrap_or_default(),
            input_tokens: input_tokens(body),
        })
    }
}

fn check_openai_message(message: &Value) -> Result<(), String> {
    let role = message["role"].as_str().unwrap_or_default();
    if !["system", "developer", "user", "assistant", "tool"].contains(&role) {
        return Err(format!(
            "role: {role:?} is not system, user, assistant or tool"
        ));
    }
    match &message["content"] {
        Value::String(_) | Value::Array(_) => {}
        Value::Null if role == "assistant" => {}
        _ => return Err("content: a string is required".into()),
    }
    if role == "tool" && !message["tool_call_id"].is_string() {
        return Err("tool_call_id: required in a tool message".into());
    }
    if let Some(calls) = message.get("tool_calls") {
        let calls = calls.as_array().ok_or("tool_calls: an array is required")?;
        for call in calls {
            let function = &call["function"];
            if !call["id"].is_string()
                || call["type"] != "function"
                || !function["name"].is_string()
            {
                return Err(
                    "tool_calls: each needs id, type \"function\" and function.name".into(),
                );
            }
            if !function["arguments"].is_string() {
                return Err("tool_calls: function.arguments must be a JSON string".into());
            }
        }
    }
    Ok(())
}

fn check_anthropic_message(message: &Value) -> Result<(), String> {
    match message["role"].as_str() {
        Some("user" | "assistant") => {}
        Some("system") => return Err("role: use the top-level system parameter".into()),
        other => return Err(format!("role: {other:?} is not user or assistant")),
    }
    match &message["content"] {
        Value::String(_) => Ok(()),
        blocks => check_blocks(blocks).map_err(|e| format!("content.{e}")),
    }
}

/// Checks Anthropic content blocks: `text`, `tool_use` and `tool_result`.
fn check_blocks(blocks: &Value) -> Result<(), String> {
    let blocks = blocks
        .as_array()
        .ok_or("a string or an array of blocks is required")?;
    for (i, block) in blocks.iter().enumerate() {
        let fine = match block["type"].as_str() {
            Some("text") => block["text"].is_string(),
            Some("tool_use") => {
                block["id"].is_string() && block["name"].is_string() && block["input"].is_object()
            }
            Some("tool_result") => {
                block["tool_use_id"].is_string()
                    && matches!(
                        block["content"],
                        Value::Null | Value::String(_) | Value::Array(_)
                    )
            }
            _ => false,
        };
        if !fine {
            return Err(format!(
                "{i}: not a well-formed text, tool_use or tool_result block"
            ));
        }
    }
    Ok(())
}

/// The name of the first tool in `body`, after checking every tool's shape.
fn first_tool(provider: Provider, body: &Value) -> Result<Option<String>, String> {
    let Some(tools) = body.get("tools") else {
        return Ok(None);
    };
    let tools = tools.as_array().ok_or("tools: an array is required")?;
    let mut names = Vec::new();
    for tool in tools {
        let name = match provider {
            Provider::OpenAi if tool["type"] == "function" => tool["function"]["name"].as_str(),
            Provider::Anthropic if tool["input_schema"].is_object() => tool["name"].as_str(),
            _ => None,
        };
        names.push(name.ok_or("tools: a tool is not the documented shape")?);
    }
    Ok(names.first().map(|name| name.to_string()))
}

/// `body[field]` as a count of at least 1, if present.
fn positive(body: &Value, field: &str) -> Result<Option<usize>, String> {
    match &body[field] {
        Value::Null => Ok(None),
        value => match value.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n as usize)),
            _ => Err(format!("{field}: a positive integer is required")),
        },
    }
}

/// The text of a message content: a string, or the text of its blocks (tool results included).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => {
            let texts = blocks.iter().map(|block| match &block["text"] {
                Value::String(text) => text.clone(),
                _ => text_of(&block["content"]),
            });
            texts.collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

enum Reply {
    Text(String),
    Tool(String),
}

impl Reply {
    fn echo(call: &Call) -> Reply {
        Reply::Text(format!("echo: {}", call.last_user))
    }
}

/// A successful answer in the provider's shape, cut to the call's `max_tokens`.
fn completion(shared: &Shared, call: &Call, reply: Reply, usage: bool) -> Value {
    let id = shared.next_id();
    let (text, tool, output_tokens, finish) = match reply {
        Reply::Tool(name) => (None, Some(name), 1, Finish::Tool),
        Reply::Text(text) => {
            let all: Vec<&str> = text.split_whitespace().collect();
            match call.max_tokens {
                Some(max) if max < all.len() => {
                    (Some(all[..max].join(" ")), None, max, Finish::Length)
                }
                _ => (Some(text.clone()), None, all.len(), Finish::Stop),
            }
        }
    };
    let input_tokens = call.input_tokens;
    let mut answer = match shared.provider {
        Provider::OpenAi => {
            let mut message = json!({"role": "assistant", "content": text});
            if let Some(name) = tool {
                message["tool_calls"] = json!([{
                    "id": format!("call_{id}"),
                    "type": "function",
                    "function": {"name": name, "arguments": "{}"},
                }]);
            }
            let created = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let finish = ["stop", "length", "tool_calls"][finish as usize];
            json!({
                "id": format!("chatcmpl-{id}"),
                "object": "chat.completion",
                "created": created,
                "model": call.model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": input_tokens,
                    "completion_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens as u64,
                },
            })
        }
        Provider::Anthropic => {
            let content = match (text, tool) {
                (_, Some(name)) => {
                    json!([{"type": "tool_use", "id": format!("toolu_{id}"), "name": name, "input": {}}])
                }
                (text, None) => json!([{"type": "text", "text": text}]),
            };
            let stop = ["end_turn", "max_tokens", "tool_use"][finish as usize];
            json!({
                "id": format!("msg_{id}"),
                "type": "message",
                "role": "assistant",
                "model": call.model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            })
        }
    };
    if !usage {
        answer.as_object_mut().unwrap().remove("usage");
    }
    answer
}

#[derive(Clone, Copy)]
enum Finish {
    Stop = 0,
    Length = 1,
    Tool = 2,
}

/// An error in the provider's shape.
fn failure(
    provider: Provider,
    status: StatusCode,
    code: Option<&str>,
    message: impl Into<String>,
) -> Response {
    let message = message.into();
    let body = match provider {
        Provider::OpenAi => {
            let kind = match status.as_u16() {
                429 => "requests",
                500.. => "server_error",
                _ => "invalid_request_error",
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Provider::Anthropic => {
            let kind = match status.as_u16() {
                400 => "invalid_request_error",
                401 => "authentication_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    (status, Json(body)).into_response()
}

/// Headers announcing all of `answer`, half of it, then a closed connection.
fn truncated(answer: Value) -> Response {
    use futures::StreamExt;
    let bytes = serde_json::to_vec(&answer).unwrap();
    let half = Ok::<_, std::io::Error>(bytes[..bytes.len() / 2].to_vec());
    // The pause lets the half be flushed: an error at once could drop it unsent.
    let close = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err(std::io::Error::other("truncated on purpose"))
    });
    let stream = futures::stream::iter([half]).chain(close);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(Body::from_stream(stream))
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const KEY: &str = "sk-test";
    const BOTH: [Provider; 2] = [Provider::OpenAi, Provider::Anthropic];

    /// A minimal well-formed request: a system prompt of 3 words and one user message.
    fn request(provider: Provider, model: &str, text: &str) -> Value {
        match provider {
            Provider::OpenAi => json!({
                "model": model,
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": text},
                ],
            }),
            Provider::Anthropic => json!({
                "model": model,
                "max_tokens": 100,
                "system": "You are terse.",
                "messages": [{"role": "user", "content": text}],
            }),
        }
    }

    async fn post(server: &ModelServer, key: &str, body: &Value) -> reqwest::Response {
        let builder = reqwest::Client::new().post(server.endpoint()).json(body);
        let builder = match server.provider() {
            Provider::OpenAi => builder.bearer_auth(key),
            Provider::Anthropic => builder
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01"),
        };
        builder.send().await.unwrap()
    }

    /// The answer's text, finish reason and (input, output) tokens.
    fn read(provider: Provider, answer: &Value) -> (String, String, Option<(u64, u64)>) {
        let (text, finish, usage) = match provider {
            Provider::OpenAi => {
                let choice = &answer["choices"][0];
                let usage = &answer["usage"];
                let tokens = (&usage["prompt_tokens"], &usage["completion_tokens"]);
                (
                    &choice["message"]["content"],
                    &choice["finish_reason"],
                    tokens,
                )
            }
            Provider::Anthropic => {
                let usage = &answer["usage"];
                let tokens = (&usage["input_tokens"], &usage["output_tokens"]);
                (
                    &answer["content"][0]["text"],
                    &answer["stop_reason"],
                    tokens,
                )
            }
        };
        let usage = usage.0.as_u64().zip(usage.1.as_u64());
        let text = text.as_str().unwrap_or_default().to_string();
        (text, finish.as_str().unwrap().to_string(), usage)
    }

    /// `error.type`, where both providers put it.
    fn error_type(answer: &Value) -> &str {
        answer["error"]["type"].as_str().unwrap()
    }

    #[tokio::test]
    async fn a_normal_model_echoes_the_last_user_message_and_counts_words() {
        for provider in BOTH {
            let server = ModelServer::start(provider, KEY).await;
            let response = post(
                &server,
                KEY,
                &request(provider, "gpt-x", "hello there world"),
            )
            .await;
            assert_eq!(response.status(), 200);
            let id_header = provider.request_id_header();
            assert!(
                response.headers()[id_header]
                    .to_str()
                    .unwrap()
                    .starts_with("req_")
            );
            let answer: Value = response.json().await.unwrap();
            let (text, finish, usage) = read(provider, &answer);
            assert_eq!(text, "echo: hello there world");
            // OpenAI: 2 messages of 3 words, +3 each; Anthropic: 3 system words, 1 message.
            let expected_input = match provider {
                Provider::OpenAi => 12,
                Provider::Anthropic => 9,
            };
            assert_eq!(usage, Some((expected_input, 4)));
            match provider {
                Provider::OpenAi => {
                    assert_eq!(finish, "stop");
                    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
                    assert_eq!(answer["object"], "chat.completion");
                    assert_eq!(answer["model"], "gpt-x");
                    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
                    assert_eq!(answer["usage"]["total_tokens"], 16);
                }
                Provider::Anthropic => {
                    assert_eq!(finish, "end_turn");
                    assert!(answer["id"].as_str().unwrap().starts_with("msg_"));
                    assert_eq!(answer["type"], "message");
                    assert_eq!(answer["role"], "assistant");
                }
            }
            let sent = request(provider, "gpt-x", "hello there world");
            assert_eq!(input_tokens(&sent), expected_input);
        }
    }

    #[tokio::test]
    async fn max_tokens_below_the_answer_cuts_it_to_that_many_words() {
        for provider in BOTH {
            let server = ModelServer::start(provider, KEY).await;
            let mut body = request(provider, "gpt-x", "one two three four");
            body["max_tokens"] = json!(2);
            let answer: Value = post(&server, KEY, &body).await.json().await.unwrap();
            let (text, finish, usage) = read(provider, &answer);
            assert_eq!(text, "echo: one");
            assert_eq!(usage.unwrap().1, 2);
            let expected = match provider {
                Provider::OpenAi => "length",
                Provider::Anthropic => "max_tokens",
            };
            assert_eq!(finish, expected);
        }
        let server = ModelServer::start(Provider::OpenAi, KEY).await;
        let mut body = request(Provider::OpenAi, "gpt-x", "one two three four");
        body["max_completion_tokens"] = json!(3);
        let answer: Value = post(&server, KEY, &body).await.json().await.unwrap();
        assert_eq!(read(Provider::OpenAi, &answer).0, "echo: one two");
    }

    #[tokio::test]
    async fn a_wrong_or_missing_key_is_401_for_every_model() {
        for provider in BOTH {
            let server = ModelServer::start(provider, KEY).await;
            for model in ["bad-key", "gpt-x", "flaky-1"] {
                let response = post(&server, "sk-wrong", &request(provider, model, "hi")).await;
                assert_eq!(response.status(), 401);
                let answer: Value = response.json().await.unwrap();
                let expected = match provider {
                    Provider::OpenAi => "invalid_request_error",
                    Provider::Anthropic => "authentication_error",
                };
                assert_eq!(error_type(&answer), expected);
            }
            let unkeyed = reqwest::Client::new()
                .post(server.endpoint())
                .header("anthropic-version", "2023-06-01")
                .json(&request(provider, "gpt-x", "hi"));
            assert_eq!(unkeyed.send().await.unwrap().status(), 401);
            let response = post(&server, KEY, &request(provider, "bad-key", "hi")).await;
            assert_eq!(response.status(), 200);
        }
    }

    #[tokio::test]
    async fn anthropic_refuses_a_request_without_its_version_header_or_max_tokens() {
        let server = ModelServer::start(Provider::Anthropic, KEY).await;
        let versionless = reqwest::Client::new()
            .post(server.endpoint())
            .header("x-api-key", KEY)
            .json(&request(Provider::Anthropic, "claude-x", "hi"));
        let response = versionless.send().await.unwrap();
        assert_eq!(response.status(), 400);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["type"], "error");
        assert_eq!(answer["error"]["type"], "invalid_request_error");

        let mut body = request(Provider::Anthropic, "claude-x", "hi");
        body.as_object_mut().unwrap().remove("max_tokens");
        let answer: Value = post(&server, KEY, &body).await.json().await.unwrap();
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_tokens")
        );
    }

    #[tokio::test]
    async fn requests_off_the_documented_shape_are_400() {
        let openai = ModelServer::start(Provider::OpenAi, KEY).await;
        let object_arguments = json!({"model": "gpt-x", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
        ]});
        let no_messages = json!({"model": "gpt-x", "messages": []});
        let hot = json!({"model": "gpt-x", "temperature": 3, "messages": [{"role": "user", "content": "hi"}]});
        for body in [object_arguments, no_messages, hot, json!("not an object")] {
            assert_eq!(post(&openai, KEY, &body).await.status(), 400, "{body}");
        }

        let anthropic = ModelServer::start(Provider::Anthropic, KEY).await;
        let system_role = json!({"model": "c", "max_tokens": 5, "messages": [
            {"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}]});
        let bad_block = json!({"model": "c", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "tool_result"}]}]});
        let no_schema = json!({"model": "c", "max_tokens": 5, "tools": [{"name": "f"}],
            "messages": [{"role": "user", "content": "hi"}]});
        for body in [system_role, bad_block, no_schema] {
            assert_eq!(post(&anthropic, KEY, &body).await.status(), 400, "{body}");
        }
    }

    #[tokio::test]
    async fn a_flaky_model_answers_429_with_retry_after_then_succeeds() {
        for provider in BOTH {
            let server = ModelServer::start(provider, KEY).await;
            let body = request(provider, "flaky-2", "hi");
            let first = post(&server, KEY, &body).await;
            assert_eq!(first.status(), 429);
            assert_eq!(first.headers()["retry-after"], "0");
            let answer: Value = first.json().await.unwrap();
            let expected = match provider {
                Provider::OpenAi => "requests",
                Provider::Anthropic => "rate_limit_error",
            };
            assert_eq!(error_type(&answer), expected);

            server.set_retry_after(1);
            let second = post(&server, KEY, &body).await;
            assert_eq!(second.status(), 429);
            assert_eq!(second.headers()["retry-after"], "1");
            assert_eq!(post(&server, KEY, &body).await.status(), 200);
            assert_eq!(server.count("flaky-2"), 3);
        }
    }

    #[tokio::test]
    async fn failing_models_answer_their_status_in_the_providers_error_shape() {
        for provider in BOTH {
            let server = ModelServer::start(provider, KEY).await;
            let overloaded = match provider {
                Provider::OpenAi => 503,
                Provider::Anthropic => 529,
            };
            let cases = [
                ("error-500", 500),
                ("error-503", 503),
                ("overloaded", overloaded),
                ("not-found", 404),
            ];
            for (model, status) in cases {
                let response = post(&server, KEY, &request(provider, model, "hi")).await;
                assert_eq!(response.status(), status, "{model}");
                let answer: Value = response.json().await.unwrap();
                assert!(answer["error"]["message"].is_string(), "{answer}");
                if provider == Provider::Anthropic {
                    assert_eq!(answer["type"], "error");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_slow_model_waits_before_answering() {
        for provider in BOTH {
            let server = ModelServer::start(provider, KEY).await;
            let started = Instant::now();
            let response = post(&server, KEY, &request(provider, "slow-300", "hi")).await;
            assert_eq!(response.status(), 200);
            assert!(started.elapsed() >= Duration::from_millis(300));
        }
    }

    #[tokio::test]
    async fn the_no_usage_model_answers_without_usage() {
        for provider in BOTH {
            let server = ModelServer::start(provider, KEY).await;
            let answer: Value = post(&server, KEY, &request(provider, "no-usage", "hi"))
                .await
                .json()
                .await
                .unwrap();
            let (text, _, usage) = read(provider, &answer);
            assert_eq!(text, "echo: hi");
            assert_eq!(usage, None);
            assert!(answer.get("usage").is_none());
        }
    }

    #[tokio::test]
    async fn the_truncated_model_sends_headers_and_half_the_body_then_closes() {
        for provider in BOTH {
            let server = ModelServer::start(provider, KEY).await;
            let response = post(&server, KEY, &request(provider, "truncated", "hi")).await;
            assert_eq!(response.status(), 200);
            assert!(
                response.bytes().await.is_err(),
                "the body must not complete"
            );

            // On the wire: a Content-Length for the whole answer, and half of it.
            let body = request(provider, "truncated", "hi").to_string();
            let keys = match provider {
                Provider::OpenAi => format!("authorization: Bearer {KEY}\r\n"),
                Provider::Anthropic => {
                    format!("x-api-key: {KEY}\r\nanthropic-version: 2023-06-01\r\n")
                }
            };
            let raw = format!(
                "POST {} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{keys}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                provider.path(),
                body.len()
            );
            let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
                .await
                .unwrap();
            socket.write_all(raw.as_bytes()).await.unwrap();
            let mut received = Vec::new();
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = socket.read(&mut chunk).await {
                received.extend_from_slice(&chunk[..n]);
            }
            let received = String::from_utf8(received).unwrap();
            let (head, body) = received.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let announced: usize = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(body.len(), announced / 2);
            assert!(serde_json::from_str::<Value>(body).is_err());
        }
    }

    #[tokio::test]
    async fn the_tools_model_calls_the_first_tool_given() {
        for provider in BOTH {
            let server = ModelServer::start(provider, KEY).await;
            let mut body = request(provider, "tools", "what time is it");
            body["tools"] = match provider {
                Provider::OpenAi => json!([
                    {"type": "function", "function": {"name": "clock", "description": "now", "parameters": {"type": "object"}}},
                    {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
                ]),
                Provider::Anthropic => json!([
                    {"name": "clock", "description": "now", "input_schema": {"type": "object"}},
                    {"name": "other", "input_schema": {"type": "object"}},
                ]),
            };
            let answer: Value = post(&server, KEY, &body).await.json().await.unwrap();
            match provider {
                Provider::OpenAi => {
                    let choice = &answer["choices"][0];
                    assert_eq!(choice["finish_reason"], "tool_calls");
                    assert_eq!(choice["message"]["content"], Value::Null);
                    let call = &choice["message"]["tool_calls"][0];
                    assert_eq!(call["type"], "function");
                    assert!(call["id"].as_str().unwrap().starts_with("call_"));
                    assert_eq!(call["function"]["name"], "clock");
                    assert_eq!(call["function"]["arguments"], "{}");
                }
                Provider::Anthropic => {
                    assert_eq!(answer["stop_reason"], "tool_use");
                    let block = &answer["content"][0];
                    assert_eq!(block["type"], "tool_use");
                    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
                    assert_eq!(block["name"], "clock");
                    assert_eq!(block["input"], json!({}));
                }
            }
            // Without tools it echoes.
            let answer: Value = post(&server, KEY, &request(provider, "tools", "hi"))
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(read(provider, &answer).0, "echo: hi");
        }
    }

    #[tokio::test]
    async fn the_json_model_answers_a_json_object() {
        for provider in BOTH {
            let server = ModelServer::start(provider, KEY).await;
            let mut body = request(provider, "json", "give me json");
            if provider == Provider::OpenAi {
                body["response_format"] = json!({"type": "json_object"});
            }
            let answer: Value = post(&server, KEY, &body).await.json().await.unwrap();
            let (text, _, usage) = read(provider, &answer);
            assert_eq!(
                serde_json::from_str::<Value>(&text).unwrap(),
                json!({"ok": true})
            );
            assert_eq!(usage.unwrap().1, 1);
        }
    }

    #[tokio::test]
    async fn every_request_is_recorded_and_counted_per_model() {
        for provider in BOTH {
            let server = ModelServer::start(provider, KEY).await;
            post(&server, KEY, &request(provider, "a", "one")).await;
            post(&server, "sk-wrong", &request(provider, "a", "two")).await;
            post(&server, KEY, &request(provider, "b", "three")).await;
            let requests = server.requests();
            assert_eq!(requests.len(), 3);
            assert!(
                requests
                    .iter()
                    .all(|r| r.method == Method::POST && r.path == provider.path())
            );
            assert_eq!(
                requests[1].body["messages"]
                    .as_array()
                    .unwrap()
                    .last()
                    .unwrap()["content"],
                "two"
            );
            let key = match provider {
                Provider::OpenAi => requests[0].headers["authorization"].to_str().unwrap(),
                Provider::Anthropic => requests[0].headers["x-api-key"].to_str().unwrap(),
            };
            assert!(key.ends_with(KEY));
            assert!(requests[0].at <= requests[2].at);
            assert_eq!(
                (server.count("a"), server.count("b"), server.count("c")),
                (2, 1, 0)
            );
        }
    }

    #[tokio::test]
    async fn the_base_url_is_the_one_an_operator_configures() {
        let openai = ModelServer::start(Provider::OpenAi, KEY).await;
        assert_eq!(
            format!("{}/chat/completions", openai.url()),
            openai.endpoint()
        );
        let anthropic = ModelServer::start(Provider::Anthropic, KEY).await;
        assert_eq!(
            format!("{}/v1/messages", anthropic.url()),
            anthropic.endpoint()
        );
        let elsewhere = reqwest::Client::new().post(format!("{}/v1/complete", anthropic.url()));
        assert_eq!(elsewhere.send().await.unwrap().status(), 404);
    }

    #[tokio::test]
    async fn the_server_stops_when_dropped() {
        let server = ModelServer::start(Provider::OpenAi, KEY).await;
        let port = server.port();
        drop(server);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server still accepts connections");
    }
}
