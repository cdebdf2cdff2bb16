//! Model calls made by the host on an agent's behalf.
//!
//! The operator describes providers and model aliases in one JSON file
//! (`CORRAL_LLM_CONFIG`, see docs/MODELS.md): each provider's kind (the OpenAI-compatible
//! Chat Completions API or Anthropic's Messages API), base URL and API key; each alias's
//! provider, the provider's model name and its prices per million input and output
//! tokens, as exact decimals. A model without both prices is refused when the file is
//! read, so nothing unpriced can ever be granted.
//!
//! A call ([`Catalogue::chat`]) translates the request to the provider's wire format
//! ([`openai`], [`anthropic`]), sends it through the same address checks and pinned
//! connections as a guest's outbound HTTP ([`crate::runtime::egress::host_request`]),
//! retries a `429` or `5xx` a bounded number of times — honouring `Retry-After` and
//! never past the invocation's deadline — and reads the answer and its usage back.
//! Keys stay here: never in a record, a log, an error or the guest.

pub mod anthropic;
pub mod openai;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::policy::HttpGrant;
use crate::runtime::egress::{HostRule, host_request};

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// `POST {base_url}/chat/completions` (OpenAI, vLLM, llama.cpp, Ollama, OpenRouter, …).
    Openai,
    /// `POST {base_url}/v1/messages` (Anthropic).
    Anthropic,
}

/// A provider as the operator wrote it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    kind: ProviderKind,
    base_url: String,
    /// The key itself; prefer `api_key_env`.
    #[serde(default)]
    api_key: Option<String>,
    /// The environment variable holding the key.
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
}

fn default_timeout_ms() -> u64 {
    60_000
}

fn default_max_retries() -> u32 {
    2
}

/// A model alias as the operator wrote it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    provider: String,
    model: String,
    input_per_million: Option<Decimal>,
    output_per_million: Option<Decimal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    #[serde(default)]
    providers: BTreeMap<String, ProviderFile>,
    #[serde(default)]
    models: BTreeMap<String, ModelFile>,
}

/// One provider, ready to call.
pub struct Provider {
    /// The operator's name for it.
    pub name: String,
    /// Its wire format.
    pub kind: ProviderKind,
    base_url: String,
    api_key: String,
    /// The one address rule its calls may use (its base URL's scheme, host and port).
    grant: Arc<HttpGrant>,
    timeout: Duration,
    max_retries: u32,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Prices of one model, in dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Price {
    /// Per million input (prompt) tokens.
    pub input_per_million: Decimal,
    /// Per million output (completion) tokens.
    pub output_per_million: Decimal,
}

impl Price {
    /// What one output token costs, in picodollars rounded up.
    pub fn picodollars_per_output_token(&self) -> i64 {
        (self.output_per_million * Decimal::from(1_000_000u32))
            .ceil()
            .to_i64()
            .unwrap_or(i64::MAX)
    }

    /// The exact cost of `input` and `output` tokens in picodollars (10⁻¹² USD),
    /// rounded half-up: a token at $p per million is p × 10⁶ picodollars.
    pub fn picodollars(&self, input: u64, output: u64) -> i64 {
        let micro = Decimal::from(1_000_000u32);
        let cost = Decimal::from(input) * self.input_per_million * micro
            + Decimal::from(output) * self.output_per_million * micro;
        cost.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            .to_i64()
            .unwrap_or(i64::MAX)
    }
}

/// A model alias.
#[derive(Debug, Clone)]
pub struct Model {
    /// The alias agents use.
    pub alias: String,
    /// Who serves it.
    pub provider: Arc<Provider>,
    /// The provider's name of the model.
    pub name: String,
    /// What it costs.
    pub price: Price,
}

/// Every model the operator configured, by alias.
#[derive(Debug, Default)]
pub struct Catalogue {
    models: BTreeMap<String, Model>,
}

/// Why the model configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[error("model configuration: {0}")]
pub struct ConfigError(String);

impl Catalogue {
    /// Reads the catalogue from a JSON file (see the module docs).
    pub fn load(path: &Path) -> Result<Catalogue, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))?;
        Self::parse(&text, |name| {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        })
    }

    /// Parses a catalogue, reading keys named by `api_key_env` through `env`.
    pub fn parse(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Catalogue, ConfigError> {
        let file: CatalogueFile =
            serde_json::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        let mut providers = BTreeMap::new();
        for (name, p) in file.providers {
            let api_key = match (&p.api_key, &p.api_key_env) {
                (Some(key), None) => key.clone(),
                (None, Some(var)) => env(var).ok_or_else(|| {
                    ConfigError(format!(
                        "provider {name:?}: the environment variable {var} (api_key_env) is not set"
                    ))
                })?,
                (None, None) => String::new(),
                (Some(_), Some(_)) => {
                    return Err(ConfigError(format!(
                        "provider {name:?}: give api_key or api_key_env, not both"
                    )));
                }
            };
            let base_url = p.base_url.trim_end_matches('/').to_string();
            let uri: http::Uri = base_url
                .parse()
                .map_err(|e| ConfigError(format!("provider {name:?}: base_url: {e}")))?;
            let origin = format!(
                "{}://{}",
                uri.scheme_str().unwrap_or("https"),
                uri.authority().map_or("", |a| a.as_str())
            );
            let rule: HostRule = origin
                .parse()
                .map_err(|e| ConfigError(format!("provider {name:?}: base_url: {e}")))?;
            if p.timeout_ms == 0 || p.max_retries > 10 {
                return Err(ConfigError(format!(
                    "provider {name:?}: timeout_ms must be positive and max_retries at most 10"
                )));
            }
            let mut grant = HttpGrant::new(vec![rule]);
            grant.timeout_ms = p.timeout_ms;
            grant.max_response_bytes = MAX_ANSWER_BYTES;
            let provider = Provider {
                name: name.clone(),
                kind: p.kind,
                base_url,
                api_key,
                grant: Arc::new(grant),
                timeout: Duration::from_millis(p.timeout_ms),
                max_retries: p.max_retries,
            };
            providers.insert(name, Arc::new(provider));
        }
        let mut models = BTreeMap::new();
        for (alias, m) in file.models {
            let provider = providers.get(&m.provider).ok_or_else(|| {
                ConfigError(format!(
                    "model {alias:?}: no provider named {:?}",
                    m.provider
                ))
            })?;
            let (Some(input), Some(output)) = (m.input_per_million, m.output_per_million) else {
                return Err(ConfigError(format!(
                    "model {alias:?} has no price: set input_per_million and output_per_million (dollars, e.g. \"0.15\")"
                )));
            };
            if input.is_sign_negative() || output.is_sign_negative() {
                return Err(ConfigError(format!(
                    "model {alias:?}: prices cannot be negative"
                )));
            }
            models.insert(
                alias.clone(),
                Model {
                    alias,
                    provider: provider.clone(),
                    name: m.model,
                    price: Price {
                        input_per_million: input,
                        output_per_million: output,
                    },
                },
            );
        }
        Ok(Catalogue { models })
    }

    /// The model with this alias.
    pub fn model(&self, alias: &str) -> Option<&Model> {
        self.models.get(alias)
    }

    /// Every alias, in order.
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// Every provider key, for redaction: none may reach a record or a log.
    pub fn keys(&self) -> Vec<String> {
        self.models
            .values()
            .map(|m| m.provider.api_key.clone())
            .filter(|k| !k.is_empty())
            .collect()
    }
}

/// Most bytes of one provider answer.
pub const MAX_ANSWER_BYTES: u64 = 8 << 20;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// A tool call asked for by the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The provider's id of the call.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its author.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// An assistant message's tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// A tool message's call id.
    pub tool_call_id: Option<String>,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// A JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// One chat request, in the host's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools offered.
    pub tools: Vec<Tool>,
    /// Most tokens of answer (always set by the host before sending).
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Whether a JSON object is asked for.
    pub json: bool,
}

/// Tokens used, as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatAnswer {
    /// Its text.
    pub content: String,
    /// Tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// `stop`, `length`, `tool_calls` or `content_filter`.
    pub finish_reason: String,
    /// The model that answered.
    pub model: String,
    /// Usage, if the provider reported it.
    pub usage: Option<TokenUsage>,
    /// The provider's id of the request.
    pub request_id: Option<String>,
}

/// Why a call returned no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The provider failed; `retryable` says whether later may work.
    #[error("{message}")]
    Provider {
        /// What happened, without secrets.
        message: String,
        /// Whether trying later may help.
        retryable: bool,
        /// The last HTTP status, if one came.
        status: Option<u16>,
    },
    /// No answer in time.
    #[error("{0}")]
    Timeout(String),
}

/// What a call cost the provider's side: how many HTTP attempts it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts(pub u32);

impl Model {
    /// Sends `request` to this model's provider and waits for the answer, retrying
    /// what is worth retrying, until `deadline` at the latest. Each attempt carries
    /// `trace` (the calling execution's span) as `traceparent`.
    pub async fn chat(
        &self,
        request: &ChatRequest,
        deadline: Instant,
        trace: Option<&opentelemetry::trace::SpanContext>,
    ) -> (Result<ChatAnswer, CallError>, Attempts) {
        let provider = &self.provider;
        let (url, body) = match provider.kind {
            ProviderKind::Openai => (
                format!("{}/chat/completions", provider.base_url),
                openai::request_body(&self.name, request),
            ),
            ProviderKind::Anthropic => (
                format!("{}/v1/messages", provider.base_url),
                anthropic::request_body(&self.name, request),
            ),
        };
        let body = Bytes::from(serde_json::to_vec(&body).expect("a request serializes"));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let now = Instant::now();
            if now >= deadline {
                return (
                    Err(CallError::Timeout("the invocation's time ran out".into())),
                    Attempts(attempts - 1),
                );
            }
            let until = deadline.min(now + provider.timeout);
            let mut http = self.http_request(&url, body.clone());
            if let Some(trace) = trace {
                crate::telemetry::context::inject(trace, http.headers_mut());
            }
            let sent =
                tokio::time::timeout_at(until, host_request(provider.grant.clone(), http)).await;
            let (status, headers, bytes) = match sent {
                Err(_) => {
                    let message = if until == deadline {
                        "the provider did not answer before the invocation's time ran out"
                    } else {
                        "the provider did not answer within its timeout"
                    };
                    return (Err(CallError::Timeout(message.into())), Attempts(attempts));
                }
                Ok(Err(
                    wasmtime_wasi_http::Error::ConnectionReadTimeout
                    | wasmtime_wasi_http::Error::ConnectionTimeout
                    | wasmtime_wasi_http::Error::DnsTimeout,
                )) => {
                    return (
                        Err(CallError::Timeout(
                            "the provider did not answer within its timeout".into(),
                        )),
                        Attempts(attempts),
                    );
                }
                Ok(Err(e)) => {
                    // Connection failures are worth another try, like a 503.
                    let failure = CallError::Provider {
                        message: format!("could not reach the provider: {e}"),
                        retryable: true,
                        status: None,
                    };
                    match self.pause_before_retry(attempts, None, deadline) {
                        Some(pause) => {
                            tokio::time::sleep(pause).await;
                            continue;
                        }
                        None => return (Err(failure), Attempts(attempts)),
                    }
                }
                Ok(Ok(response)) => {
                    let (parts, body) = response.into_parts();
                    (parts.status, parts.headers, body)
                }
            };
            if status.is_success() {
                let parsed = match provider.kind {
                    ProviderKind::Openai => openai::parse_answer(&bytes),
                    ProviderKind::Anthropic => anthropic::parse_answer(&bytes),
                };
                let answer = parsed.map(|mut answer| {
                    answer.request_id = request_id(&headers);
                    answer
                });
                return (
                    answer.map_err(|why| CallError::Provider {
                        message: format!("the provider's answer could not be read: {why}"),
                        retryable: true,
                        status: Some(status.as_u16()),
                    }),
                    Attempts(attempts),
                );
            }
            let retryable = status.as_u16() == 429 || status.is_server_error();
            let failure = CallError::Provider {
                message: format!("the provider answered {status}: {}", error_message(&bytes)),
                retryable,
                status: Some(status.as_u16()),
            };
            if !retryable {
                return (Err(failure), Attempts(attempts));
            }
            match self.pause_before_retry(attempts, retry_after(&headers), deadline) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return (Err(failure), Attempts(attempts)),
            }
        }
    }

    /// How long to wait before attempt `attempts + 1`, or `None` if no more attempts
    /// are allowed or the wait would pass the deadline.
    fn pause_before_retry(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
        deadline: Instant,
    ) -> Option<Duration> {
        if attempts > self.provider.max_retries {
            return None;
        }
        let backoff = Duration::from_millis(250 * 2u64.pow(attempts - 1)).min(MAX_BACKOFF);
        let pause = retry_after.unwrap_or(backoff);
        (Instant::now() + pause < deadline).then_some(pause)
    }

    fn http_request(&self, url: &str, body: Bytes) -> http::Request<Bytes> {
        let provider = &self.provider;
        let mut request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            // A known length, not chunked: not every server reads chunked requests.
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::USER_AGENT, "corral");
        if let Ok(authority) = url.parse::<http::Uri>()
            && let Some(authority) = authority.authority()
        {
            request = request.header(http::header::HOST, authority.as_str());
        }
        request = match provider.kind {
            ProviderKind::Openai if !provider.api_key.is_empty() => request.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", provider.api_key),
            ),
            ProviderKind::Openai => request,
            ProviderKind::Anthropic => request
                .header("x-api-key", &provider.api_key)
                .header("anthropic-version", anthropic::VERSION),
        };
        request.body(body).expect("a valid request")
    }
}

/// The longest pause between two attempts when the provider names none.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// `Retry-After` in seconds (the HTTP-date form is not used by these APIs).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

fn request_id(headers: &http::HeaderMap) -> Option<String> {
    ["x-request-id", "request-id"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok())
        .map(|id| id.chars().take(200).collect())
}

/// The provider's error message, if its body has one (both APIs use `error.message`),
/// cut short.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    message.chars().take(300).collect()
}

/// Tokens of `request` before it is sent, estimated (about four characters a token,
/// plus a few per message), for reservations and for answers without usage.
pub fn estimate_input_tokens(request: &ChatRequest) -> u64 {
    let chars: usize = request
        .messages
        .iter()
        .map(|m| {
            m.content.len()
                + m.tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments.len())
                    .sum::<usize>()
        })
        .sum::<usize>()
        + request
            .tools
            .iter()
            .map(|t| t.name.len() + t.description.len() + t.parameters.to_string().len())
            .sum::<usize>();
    (chars as u64).div_ceil(4) + 4 * request.messages.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_to_the_picodollar() {
        let price = Price {
            input_per_million: "0.15".parse().unwrap(),
            output_per_million: "0.60".parse().unwrap(),
        };
        // 1,234 × 0.15 + 567 × 0.60 = 185.1 + 340.2 = 525.3 micro-dollars.
        assert_eq!(price.picodollars(1_234, 567), 525_300_000);
        let odd = Price {
            input_per_million: "0.0000003".parse().unwrap(),
            output_per_million: "0".parse().unwrap(),
        };
        // 0.3 picodollars rounds to 0; 5 tokens make 1.5, which rounds up to 2.
        assert_eq!(odd.picodollars(1, 0), 0);
        assert_eq!(odd.picodollars(5, 0), 2);
    }

    #[test]
    fn a_model_without_a_price_or_provider_is_refused() {
        let env = |_: &str| None;
        let providers =
            r#""providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}}"#;
        let unpriced =
            format!(r#"{{{providers}, "models": {{"m": {{"provider": "p", "model": "x"}}}}}}"#);
        let err = Catalogue::parse(&unpriced, env).unwrap_err().to_string();
        assert!(err.contains("has no price"), "{err}");
        let orphan = format!(
            r#"{{{providers}, "models": {{"m": {{"provider": "q", "model": "x", "input_per_million": "1", "output_per_million": "1"}}}}}}"#
        );
        let err = Catalogue::parse(&orphan, env).unwrap_err().to_string();
        assert!(err.contains("no provider named"), "{err}");
        let missing_key = r#"{"providers": {"p": {"kind": "anthropic", "base_url": "https://api.anthropic.com", "api_key_env": "NOPE"}}}"#;
        let err = Catalogue::parse(missing_key, env).unwrap_err().to_string();
        assert!(err.contains("NOPE"), "{err}");
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let text = r#"{"providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-very-secret"}},
                       "models": {"m": {"provider": "p", "model": "x", "input_per_million": "1", "output_per_million": "2"}}}"#;
        let catalogue = Catalogue::parse(text, |_| None).unwrap();
        let shown = format!("{catalogue:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert_eq!(catalogue.keys(), vec!["sk-very-secret".to_string()]);
    }
}
