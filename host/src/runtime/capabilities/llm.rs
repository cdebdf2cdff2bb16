//! `corral:agent/llm`: model calls the host makes, meters and prices.
//!
//! A call is refused (`denied`, one answer whether the alias is unknown or not granted,
//! so a guest cannot probe what exists) unless the invocation's [`LlmGrant`] lists the
//! alias and the host's [`Catalogue`] has it; past the grant's `max_calls` it is
//! `budget-exhausted`. `max-tokens` is clamped to the grant's `max_tokens_per_call`.
//! The call waits on the provider without burning fuel, and never past the
//! invocation's deadline. Each call — answered or not — is kept as an [`LlmCall`] for
//! the execution record, with its tokens and exact cost. A call is reserved before it
//! is sent, at the estimate (the prompt's estimated tokens and the answer's
//! `max_tokens`), and settled with the provider's reported usage; a call without usage,
//! or one the invocation's end cut short (`interrupted`), is charged at the estimate and
//! flagged `usage_estimated`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use std::time::Instant;
use utoipa::ToSchema;

use super::Providers;
use crate::llm::{self, CallError, Catalogue, ChatRequest, Message, Role, Tool, ToolCall};
use crate::policy::{Grants, LlmGrant};
use crate::runtime::bindings::corral::agent::llm as wit;
use crate::runtime::egress::MAX_LISTED_DENIALS;
use crate::runtime::outcome::{Denial, DenialReason};
use crate::runtime::state::HostState;

/// Most messages and tools in one request, and bytes of text across them.
const MAX_MESSAGES: usize = 1_000;
const MAX_TOOLS: usize = 128;
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// What one invocation's model calls used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LlmUsage {
    /// Calls sent to a provider (answered or not).
    pub calls: u64,
    /// Input tokens charged.
    pub input_tokens: u64,
    /// Output tokens charged.
    pub output_tokens: u64,
    /// What the calls cost, in picodollars (part of the execution's cost).
    pub cost_picodollars: i64,
    /// Calls refused before reaching a provider (not granted, over `max_calls`, …).
    pub denied: u64,
    /// Calls that reached a provider and got no answer.
    pub failed: u64,
}

/// One model call, for the execution record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmCall {
    /// The alias the guest asked for.
    pub model: String,
    /// The operator's provider.
    pub provider: String,
    /// The provider's model name asked for, and the one that answered.
    pub provider_model: String,
    /// `ok`, `provider_error` or `timeout`.
    pub outcome: String,
    /// Input tokens charged.
    pub input_tokens: u64,
    /// Output tokens charged.
    pub output_tokens: u64,
    /// Whether the provider reported no usage, so the estimate was charged.
    pub usage_estimated: bool,
    /// The cost, in picodollars.
    pub cost_picodollars: i64,
    /// From sending to the answer, retries included, in milliseconds.
    pub latency_ms: u64,
    /// HTTP attempts made.
    pub attempts: u32,
    /// `stop`, `length`, `tool_calls`, `content_filter`, or empty without an answer.
    pub finish_reason: String,
    /// The provider's id of the request.
    pub request_id: Option<String>,
    /// Why there was no answer.
    pub error: Option<String>,
    /// The messages sent, as JSON, when the grant keeps prompts (cut at
    /// [`LlmGrant::RECORDED_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The answer's text and tool calls, as JSON, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// What the budgets leave for one invocation's model calls when it starts: the tokens
/// and picodollars left in the tightest token and dollar budgets of its agent and
/// tenant (`None`: no such budget). Each call reserves within what is left of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LlmAllowance {
    /// Tokens, input and output.
    pub tokens: Option<u64>,
    /// Picodollars.
    pub picodollars: Option<i64>,
}

/// Why a [`TokenMeter`] gave no tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenShortage {
    /// A bucket has too few: this long until it has enough.
    Wait(Duration),
    /// The buckets could not be reached.
    Unavailable(String),
}

/// The token rate quotas of one invocation's agent and tenant (`quotas.tokens_per_minute`):
/// the pipeline's shared buckets under `corral serve`.
#[async_trait::async_trait]
pub trait TokenMeter: Send + Sync {
    /// Takes as much of `want` tokens as every bucket has, at least `least`.
    async fn take(&self, want: u64, least: u64) -> Result<u64, TokenShortage>;
    /// Returns tokens taken and not used.
    async fn give_back(&self, tokens: u64);
}

/// Per-invocation model-call state.
pub struct LlmState {
    catalogue: Option<Arc<Catalogue>>,
    meter: Option<Arc<dyn TokenMeter>>,
    grant: Option<LlmGrant>,
    allowance: LlmAllowance,
    deadline: Instant,
    calls: Vec<LlmCall>,
    denied: u64,
    denials: Vec<Denial>,
    /// The execution's span, sent to providers as `traceparent`.
    pub trace: Option<opentelemetry::trace::SpanContext>,
}

impl LlmState {
    /// State for one invocation with `grants`, served by `providers.llm`.
    pub fn new(grants: &Grants, providers: &Providers) -> LlmState {
        LlmState {
            catalogue: providers.llm.clone(),
            meter: providers.llm_meter.clone(),
            grant: grants.llm.clone(),
            allowance: LlmAllowance::default(),
            deadline: Instant::now() + Duration::from_secs(3600),
            calls: Vec::new(),
            denied: 0,
            denials: Vec::new(),
            trace: None,
        }
    }

    /// Starts the clock: calls must finish by `deadline`, within `allowance`.
    pub fn start(&mut self, deadline: Instant, allowance: LlmAllowance) {
        self.deadline = deadline;
        self.allowance = allowance;
    }

    /// What the calls used.
    pub fn usage(&self) -> LlmUsage {
        let mut usage = LlmUsage {
            denied: self.denied,
            ..LlmUsage::default()
        };
        for call in &self.calls {
            usage.calls += 1;
            usage.input_tokens += call.input_tokens;
            usage.output_tokens += call.output_tokens;
            usage.cost_picodollars = usage.cost_picodollars.saturating_add(call.cost_picodollars);
            if call.outcome != "ok" {
                usage.failed += 1;
            }
        }
        usage
    }

    /// Every call sent to a provider, in order.
    pub fn calls(&self) -> &[LlmCall] {
        &self.calls
    }

    /// The calls refused, in order (the first [`MAX_LISTED_DENIALS`]).
    pub fn denials(&self) -> &[Denial] {
        &self.denials
    }

    fn deny(&mut self, target: &str, reason: DenialReason, detail: String) -> String {
        self.denied += 1;
        let target: String = target.chars().take(64).collect();
        if self.denials.len() < MAX_LISTED_DENIALS {
            self.denials.push(Denial {
                capability: "llm".into(),
                target,
                reason,
                detail: detail.clone(),
            });
        }
        detail
    }

    /// Checks a call: returns the model and the request to send (its `max_tokens`
    /// clamped to the grant and the budgets), or the refusal.
    fn admit(
        &mut self,
        request: wit::ChatRequest,
    ) -> Result<(llm::Model, ChatRequest), wit::LlmError> {
        let alias = request.model.clone();
        let granted = self.grant.as_ref().is_some_and(|g| g.allows(&alias));
        let model = match (&self.catalogue, granted) {
            (Some(catalogue), true) => catalogue.model(&alias).cloned(),
            _ => None,
        };
        let Some(model) = model else {
            let detail = format!("no model {alias:?} is granted to this agent");
            return Err(wit::LlmError::Denied(self.deny(
                &alias,
                DenialReason::NotGranted,
                detail,
            )));
        };
        let grant = self.grant.clone().expect("granted above");
        if self.calls.len() as u64 >= grant.max_calls {
            let detail = format!(
                "the invocation already made the {} model calls its grant allows",
                grant.max_calls
            );
            return Err(wit::LlmError::BudgetExhausted(self.deny(
                &alias,
                DenialReason::RequestLimit,
                detail,
            )));
        }
        let mut translated =
            translate(request, grant.max_tokens_per_call).map_err(wit::LlmError::InvalidRequest)?;
        let input = llm::estimate_input_tokens(&translated);
        match self.affordable(&model, input) {
            Ok(most) => translated.max_tokens = translated.max_tokens.min(most),
            Err(budget) => {
                let detail = format!(
                    "the {budget} budget has too little left for this call (its prompt alone is about {input} tokens)"
                );
                return Err(wit::LlmError::BudgetExhausted(self.deny(
                    &alias,
                    DenialReason::Refused,
                    detail,
                )));
            }
        }
        Ok((model, translated))
    }

    /// Reserves a call about to be sent, at its estimate (kept as `interrupted` unless
    /// it is settled), and returns its index.
    fn reserve(&mut self, model: &llm::Model, translated: &ChatRequest) -> usize {
        let input = llm::estimate_input_tokens(translated);
        let output = u64::from(translated.max_tokens);
        let record_prompts = self.grant.as_ref().is_some_and(|g| g.record_prompts);
        self.calls.push(LlmCall {
            model: model.alias.clone(),
            provider: model.provider.name.clone(),
            provider_model: model.name.clone(),
            outcome: "interrupted".into(),
            input_tokens: input,
            output_tokens: output,
            usage_estimated: true,
            cost_picodollars: model.price.picodollars(input, output),
            latency_ms: 0,
            attempts: 0,
            finish_reason: String::new(),
            request_id: None,
            error: Some("the invocation ended before the provider answered".into()),
            prompt: record_prompts.then(|| recorded(&prompt_json(translated))),
            answer: None,
        });
        self.calls.len() - 1
    }

    /// The most answer tokens a call to `model` with a prompt of about `input` tokens
    /// may reserve within what the budgets left, after this invocation's earlier calls;
    /// or the budget (`tokens` or `dollars`) that leaves no room for one.
    fn affordable(&self, model: &llm::Model, input: u64) -> Result<u32, &'static str> {
        let mut most = u32::MAX;
        let (spent_tokens, spent_picodollars) =
            self.calls
                .iter()
                .fold((0u64, 0i64), |(tokens, cost), call| {
                    (
                        tokens + call.input_tokens + call.output_tokens,
                        cost.saturating_add(call.cost_picodollars),
                    )
                });
        if let Some(tokens) = self.allowance.tokens {
            let left = tokens.saturating_sub(spent_tokens);
            if left <= input {
                return Err("tokens");
            }
            most = most.min(u32::try_from(left - input).unwrap_or(u32::MAX));
        }
        if let Some(picodollars) = self.allowance.picodollars {
            let left = picodollars
                .saturating_sub(spent_picodollars)
                .saturating_sub(model.price.picodollars(input, 0));
            if left <= 0 {
                return Err("dollars");
            }
            // What one answer token costs, rounded up so the reservation never falls short.
            let per_token = model.price.picodollars_per_output_token();
            if per_token > 0 {
                let tokens = left / per_token;
                if tokens == 0 {
                    return Err("dollars");
                }
                most = most.min(u32::try_from(tokens).unwrap_or(u32::MAX));
            }
        }
        Ok(most)
    }

    /// Settles reserved call `index` with what the provider did, and returns what the
    /// guest gets.
    fn settle(
        &mut self,
        index: usize,
        model: &llm::Model,
        result: Result<llm::ChatAnswer, CallError>,
        attempts: llm::Attempts,
        latency: Duration,
    ) -> Result<wit::ChatResponse, wit::LlmError> {
        let call = &mut self.calls[index];
        call.latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        call.attempts = attempts.0;
        let answer = match result {
            Ok(answer) => {
                call.outcome = "ok".into();
                call.error = None;
                if let Some(reported) = answer.usage {
                    call.input_tokens = reported.input;
                    call.output_tokens = reported.output;
                    call.usage_estimated = false;
                }
                call.finish_reason = answer.finish_reason.clone();
                call.request_id = answer.request_id.clone();
                if call.prompt.is_some() {
                    call.answer = Some(recorded(&answer_json(&answer)));
                }
                if !answer.model.is_empty() {
                    call.provider_model = answer.model.clone();
                }
                Ok(answer)
            }
            Err(mut e) => {
                if let CallError::Provider { message, .. } = &mut e {
                    // A provider may echo what it was sent; keys never go further.
                    for key in self.catalogue.iter().flat_map(|c| c.keys()) {
                        *message =
                            message.replace(&key, crate::runtime::capabilities::config::REDACTED);
                    }
                }
                call.outcome = match &e {
                    CallError::Provider { .. } => "provider_error",
                    CallError::Timeout(_) => "timeout",
                }
                .into();
                call.error = Some(e.to_string());
                Err(match e {
                    CallError::Provider {
                        message, retryable, ..
                    } => wit::LlmError::ProviderError(wit::ProviderFailure { message, retryable }),
                    CallError::Timeout(message) => wit::LlmError::Timeout(message),
                })
            }
        };
        call.cost_picodollars = model
            .price
            .picodollars(call.input_tokens, call.output_tokens);
        let (input_tokens, output_tokens) = (call.input_tokens, call.output_tokens);
        let answer = answer?;
        Ok(wit::ChatResponse {
            content: answer.content,
            tool_calls: answer
                .tool_calls
                .into_iter()
                .map(|c| wit::ToolCall {
                    id: c.id,
                    name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
            finish_reason: answer.finish_reason,
            model: answer.model,
            usage: wit::Usage {
                input_tokens: u32::try_from(input_tokens).unwrap_or(u32::MAX),
                output_tokens: u32::try_from(output_tokens).unwrap_or(u32::MAX),
            },
        })
    }
}

/// A prompt as kept in the record: each message's role, text, tool calls and tool-call id.
fn prompt_json(request: &ChatRequest) -> String {
    let messages: Vec<serde_json::Value> = request
        .messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "role": format!("{:?}", m.role).to_lowercase(),
                "content": m.content,
                "tool_calls": m.tool_calls.iter()
                    .map(|c| serde_json::json!({ "id": c.id, "name": c.name, "arguments": c.arguments }))
                    .collect::<Vec<_>>(),
                "tool_call_id": m.tool_call_id,
            })
        })
        .collect();
    serde_json::Value::Array(messages).to_string()
}

/// An answer as kept in the record.
fn answer_json(answer: &llm::ChatAnswer) -> String {
    serde_json::json!({
        "content": answer.content,
        "tool_calls": answer.tool_calls.iter()
            .map(|c| serde_json::json!({ "id": c.id, "name": c.name, "arguments": c.arguments }))
            .collect::<Vec<_>>(),
    })
    .to_string()
}

/// `text` cut at [`LlmGrant::RECORDED_BYTES`] (on a character boundary), saying so.
fn recorded(text: &str) -> String {
    if text.len() <= LlmGrant::RECORDED_BYTES {
        return text.to_string();
    }
    let mut end = LlmGrant::RECORDED_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [cut at {} bytes of {}]",
        &text[..end],
        LlmGrant::RECORDED_BYTES,
        text.len()
    )
}

/// The guest's request in the host's terms, checked and with `max_tokens` clamped.
fn translate(request: wit::ChatRequest, max_tokens: u32) -> Result<ChatRequest, String> {
    if request.messages.is_empty() {
        return Err("a chat request needs at least one message".into());
    }
    if request.messages.len() > MAX_MESSAGES || request.tools.len() > MAX_TOOLS {
        return Err(format!(
            "a chat request may have at most {MAX_MESSAGES} messages and {MAX_TOOLS} tools"
        ));
    }
    let bytes: usize = request
        .messages
        .iter()
        .map(|m| {
            m.content.len()
                + m.tool_calls
                    .iter()
                    .map(|c| c.arguments.len())
                    .sum::<usize>()
        })
        .sum::<usize>()
        + request
            .tools
            .iter()
            .map(|t| t.parameters.len() + t.description.len())
            .sum::<usize>();
    if bytes > MAX_REQUEST_BYTES {
        return Err(format!(
            "a chat request may carry at most {MAX_REQUEST_BYTES} bytes of text"
        ));
    }
    let mut tools = Vec::with_capacity(request.tools.len());
    for tool in request.tools {
        let parameters: serde_json::Value = serde_json::from_str(&tool.parameters)
            .map_err(|e| format!("tool {:?}: parameters are not JSON: {e}", tool.name))?;
        tools.push(Tool {
            name: tool.name,
            description: tool.description,
            parameters,
        });
    }
    if request
        .temperature
        .is_some_and(|t| !(0.0..=2.0).contains(&t))
    {
        return Err("temperature must be between 0 and 2".into());
    }
    let messages = request
        .messages
        .into_iter()
        .map(|m| Message {
            role: match m.role {
                wit::Role::System => Role::System,
                wit::Role::User => Role::User,
                wit::Role::Assistant => Role::Assistant,
                wit::Role::Tool => Role::Tool,
            },
            content: m.content,
            tool_calls: m
                .tool_calls
                .into_iter()
                .map(|c| ToolCall {
                    id: c.id,
                    name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
            tool_call_id: m.tool_call_id,
        })
        .collect();
    Ok(ChatRequest {
        messages,
        tools,
        max_tokens: request
            .max_tokens
            .map_or(max_tokens, |asked| asked.min(max_tokens))
            .max(1),
        temperature: request.temperature,
        json: matches!(request.response_format, wit::ResponseFormat::Json),
    })
}

impl wit::Host for HostState {
    async fn chat(
        &mut self,
        request: wit::ChatRequest,
    ) -> wasmtime::Result<Result<wit::ChatResponse, wit::LlmError>> {
        let state = &mut self.caps.llm;
        let (model, mut request) = match state.admit(request) {
            Ok(admitted) => admitted,
            Err(refused) => return Ok(Err(refused)),
        };
        // The token rate quotas: take what the call may use, at least its prompt and one
        // answer token; give back what it did not use once it is settled.
        let meter = state.meter.clone();
        let mut taken = None;
        if let Some(meter) = &meter {
            let input = llm::estimate_input_tokens(&request);
            let want = input + u64::from(request.max_tokens);
            match meter.take(want, input + 1).await {
                Ok(got) => {
                    let answer = got.saturating_sub(input).max(1);
                    request.max_tokens = request
                        .max_tokens
                        .min(u32::try_from(answer).unwrap_or(u32::MAX));
                    taken = Some(got);
                }
                Err(why) => {
                    let detail = match why {
                        TokenShortage::Wait(wait) => format!(
                            "the model-token rate quota has room for this call in {} ms",
                            wait.as_millis().max(1)
                        ),
                        TokenShortage::Unavailable(e) => {
                            tracing::warn!(error = %e, "model-token buckets unavailable");
                            "the model-token rate quota could not be checked".into()
                        }
                    };
                    let alias = model.alias.clone();
                    return Ok(Err(wit::LlmError::RateLimited(state.deny(
                        &alias,
                        DenialReason::Refused,
                        detail,
                    ))));
                }
            }
        }
        let index = state.reserve(&model, &request);
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(state.deadline);
        let (result, attempts) = model.chat(&request, deadline, state.trace.as_ref()).await;
        let latency = started.elapsed();
        let answer = state.settle(index, &model, result, attempts, latency);
        if let (Some(meter), Some(taken)) = (meter, taken) {
            let call = &state.calls[index];
            meter
                .give_back(taken.saturating_sub(call.input_tokens + call.output_tokens))
                .await;
        }
        Ok(answer)
    }
}
