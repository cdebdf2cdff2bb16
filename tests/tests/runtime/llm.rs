//! Model calls (`corral:agent/llm`) against real HTTP servers on 127.0.0.1 speaking the
//! OpenAI-compatible and Anthropic APIs: grants and denials, exact prices, retries,
//! timeouts, answers without usage or cut short, tool calls, budgets, and that no key
//! reaches a record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_host::limits::Limits;
use corral_host::llm::Catalogue;
use corral_host::policy::{Grants, LlmGrant};
use corral_host::runtime::capabilities::llm::LlmAllowance;
use corral_host::runtime::{Execution, InvokeRequest, Outcome, Providers};
use corral_tests::harness::{load, runtime};
use corral_tests::plugins::TRIAGE;
use corral_tests::providers::{ModelServer, Provider, input_tokens};
use serde_json::{Value, json};

const OPENAI_KEY: &str = "sk-openai-test-key-4242";
const ANTHROPIC_KEY: &str = "sk-ant-test-key-4343";

/// Both fake providers and a catalogue over them: for each provider `p` (`openai`,
/// `claude`), the alias `<p>-<model>` is the fake's `<model>`. Prices: $0.15 / $0.60 per
/// million tokens on OpenAI, $3 / $15 on Anthropic.
struct Models {
    openai: ModelServer,
    anthropic: ModelServer,
    catalogue: Arc<Catalogue>,
}

const MODELS: &[&str] = &[
    "fast",
    "slow-3000",
    "flaky-2",
    "error-500",
    "not-found",
    "no-usage",
    "truncated",
    "tools",
    "json",
];

async fn models(max_retries: u32, timeout_ms: u64) -> Models {
    let openai = ModelServer::start(Provider::OpenAi, OPENAI_KEY).await;
    let anthropic = ModelServer::start(Provider::Anthropic, ANTHROPIC_KEY).await;
    let mut aliases = serde_json::Map::new();
    for model in MODELS {
        aliases.insert(
            format!("openai-{model}"),
            json!({ "provider": "openai", "model": model,
                    "input_per_million": "0.15", "output_per_million": "0.60" }),
        );
        aliases.insert(
            format!("claude-{model}"),
            json!({ "provider": "claude", "model": model,
                    "input_per_million": "3", "output_per_million": "15" }),
        );
    }
    let config = json!({
        "providers": {
            "openai": { "kind": "openai", "base_url": openai.url(), "api_key_env": "OPENAI",
                        "max_retries": max_retries, "timeout_ms": timeout_ms },
            "claude": { "kind": "anthropic", "base_url": anthropic.url(), "api_key_env": "ANTHROPIC",
                        "max_retries": max_retries, "timeout_ms": timeout_ms },
        },
        "models": aliases,
    });
    let env = |name: &str| match name {
        "OPENAI" => Some(OPENAI_KEY.to_string()),
        "ANTHROPIC" => Some(ANTHROPIC_KEY.to_string()),
        _ => None,
    };
    let catalogue = Catalogue::parse(&config.to_string(), env).expect("the catalogue parses");
    Models {
        openai,
        anthropic,
        catalogue: Arc::new(catalogue),
    }
}

impl Models {
    fn server(&self, provider: &str) -> &ModelServer {
        if provider == "openai" {
            &self.openai
        } else {
            &self.anthropic
        }
    }
}

fn grant(models: &[&str]) -> LlmGrant {
    LlmGrant::new(models.iter().map(|m| m.to_string()).collect())
}

async fn run_with(
    models: &Models,
    grant: Option<LlmGrant>,
    action: &str,
    input: Value,
    limits: Limits,
    allowance: LlmAllowance,
) -> Execution {
    let runtime = runtime();
    let agent = load(&runtime, TRIAGE).await;
    let mut request = InvokeRequest::new(action, input.to_string(), limits).with_grants(Grants {
        llm: grant,
        ..Grants::default()
    });
    request.providers = Providers {
        llm: Some(models.catalogue.clone()),
        ..Providers::default()
    };
    request.llm_allowance = allowance;
    runtime
        .invoke(&agent, request)
        .await
        .expect("the run is set up")
}

async fn run(models: &Models, grant: LlmGrant, action: &str, input: Value) -> Execution {
    run_with(
        models,
        Some(grant),
        action,
        input,
        Limits::default(),
        LlmAllowance::default(),
    )
    .await
}

fn ask(model: &str, text: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": text }] })
}

fn output(execution: &Execution) -> Value {
    let text = execution
        .output
        .as_deref()
        .unwrap_or_else(|| panic!("no output: {execution:#?}"));
    serde_json::from_str(text).unwrap()
}

fn error_code(execution: &Execution) -> String {
    assert_eq!(execution.outcome, Outcome::AgentError, "{execution:#?}");
    execution.error.as_ref().unwrap().code.clone()
}

/// Neither key appears anywhere in what the host would record or show.
fn assert_no_key(execution: &Execution) {
    let text = serde_json::to_string(execution).unwrap();
    for key in [OPENAI_KEY, ANTHROPIC_KEY] {
        assert!(
            !text.contains(key),
            "a provider key reached the record: {text}"
        );
    }
}

#[tokio::test]
async fn a_granted_call_is_answered_priced_to_the_picodollar_and_recorded() {
    let models = models(0, 10_000).await;
    for (provider, per_in, per_out) in [
        ("openai", 150_000i64, 600_000i64),
        ("claude", 3_000_000, 15_000_000),
    ] {
        let alias = format!("{provider}-fast");
        let execution = run(
            &models,
            grant(&[&alias]),
            "ask",
            ask(&alias, "the quick brown fox"),
        )
        .await;
        assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
        let answer = output(&execution);
        assert_eq!(answer["content"], "echo: the quick brown fox");
        assert_eq!(answer["finish_reason"], "stop");
        // What the provider counted is what is charged, at the alias's prices.
        let server = models.server(provider);
        let request = server.requests().last().unwrap().clone();
        let input = input_tokens(&request.body);
        assert_eq!(answer["usage"]["input_tokens"], input);
        assert_eq!(answer["usage"]["output_tokens"], 5);
        let call = &execution.llm_calls[0];
        assert_eq!((call.input_tokens, call.output_tokens), (input, 5));
        assert!(!call.usage_estimated);
        assert_eq!(call.cost_picodollars, input as i64 * per_in + 5 * per_out);
        assert_eq!(execution.usage.llm.cost_picodollars, call.cost_picodollars);
        assert_eq!((call.outcome.as_str(), call.attempts), ("ok", 1));
        assert_eq!(call.provider, provider);
        assert!(
            call.request_id.as_deref().is_some_and(|id| !id.is_empty()),
            "{call:?}"
        );
        // The key went to the provider, in its own header, and nowhere else.
        let sent = match provider {
            "openai" => request.headers["authorization"]
                .to_str()
                .unwrap()
                .to_string(),
            _ => request.headers["x-api-key"].to_str().unwrap().to_string(),
        };
        assert!(sent.ends_with(if provider == "openai" {
            OPENAI_KEY
        } else {
            ANTHROPIC_KEY
        }));
        assert_no_key(&execution);
    }
}

#[tokio::test]
async fn an_ungranted_or_unknown_model_gets_one_denial_and_reaches_no_provider() {
    let models = models(0, 10_000).await;
    let before = models.openai.requests().len();
    for alias in ["openai-json", "ghost"] {
        let execution = run(&models, grant(&["openai-fast"]), "ask", ask(alias, "hi")).await;
        assert_eq!(error_code(&execution), "llm_denied");
        let message = &execution.error.as_ref().unwrap().message;
        assert_eq!(
            message,
            &format!("no model {alias:?} is granted to this agent")
        );
        assert_eq!(execution.usage.llm.denied, 1);
        assert_eq!(execution.denials[0].capability, "llm");
    }
    // Without any grant, the same; and the classifier falls back to its rules.
    let execution = run_with(
        &models,
        None,
        "classify",
        json!({ "text": "my invoice is wrong" }),
        Limits::default(),
        LlmAllowance::default(),
    )
    .await;
    assert_eq!(
        output(&execution),
        json!({ "label": "billing", "by": "rules" })
    );
    assert_eq!(models.openai.requests().len(), before);
}

#[tokio::test]
async fn the_grant_bounds_calls_and_answer_tokens() {
    let models = models(0, 10_000).await;
    let mut bounded = grant(&["openai-fast"]);
    bounded.max_calls = 1;
    bounded.max_tokens_per_call = 2;
    let execution = run(
        &models,
        bounded.clone(),
        "ask",
        ask("openai-fast", "one two three four"),
    )
    .await;
    let answer = output(&execution);
    assert_eq!(answer["content"], "echo: one");
    assert_eq!(answer["finish_reason"], "length");
    assert_eq!(
        models.openai.requests().last().unwrap().body["max_tokens"],
        2
    );
    // A second call in the same run is past max_calls: refused, recorded, not sent.
    let sent = models.openai.requests().len();
    let twice = json!({ "model": "openai-fast", "repeat": 2,
                        "messages": [{ "role": "user", "content": "a" }] });
    let execution = run(&models, bounded, "ask", twice).await;
    assert_eq!(error_code(&execution), "llm_budget_exhausted");
    assert_eq!(
        (execution.usage.llm.calls, execution.usage.llm.denied),
        (1, 1)
    );
    assert_eq!(models.openai.requests().len(), sent + 1);
}

#[tokio::test]
async fn retries_honour_retry_after_and_a_failure_is_charged_its_estimate() {
    let models = models(2, 10_000).await;
    models.openai.set_retry_after(1);
    let started = Instant::now();
    let execution = run(
        &models,
        grant(&["openai-flaky-2"]),
        "ask",
        ask("openai-flaky-2", "hello"),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(execution.llm_calls[0].attempts, 3);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 1 was honoured twice"
    );

    let failed = run(
        &models,
        grant(&["claude-error-500"]),
        "ask",
        ask("claude-error-500", "hello"),
    )
    .await;
    assert_eq!(error_code(&failed), "llm_provider_error");
    assert!(failed.error.as_ref().unwrap().retryable);
    let call = &failed.llm_calls[0];
    assert_eq!(
        (call.outcome.as_str(), call.attempts),
        ("provider_error", 3)
    );
    assert!(
        call.usage_estimated && call.cost_picodollars > 0,
        "{call:?}"
    );
    assert_eq!(failed.usage.llm.failed, 1);

    // A 404 is not worth a retry.
    let missing = run(
        &models,
        grant(&["openai-not-found"]),
        "ask",
        ask("openai-not-found", "hi"),
    )
    .await;
    assert_eq!(error_code(&missing), "llm_provider_error");
    assert!(!missing.error.as_ref().unwrap().retryable);
    assert_eq!(missing.llm_calls[0].attempts, 1);
}

#[tokio::test]
async fn answers_without_usage_or_cut_short_are_handled() {
    let models = models(1, 10_000).await;
    let execution = run(
        &models,
        grant(&["claude-no-usage"]),
        "ask",
        ask("claude-no-usage", "hello there"),
    )
    .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    let call = &execution.llm_calls[0];
    assert!(call.usage_estimated, "{call:?}");
    // Charged at the reservation: the estimated prompt and the whole max_tokens.
    assert_eq!(
        call.output_tokens,
        u64::from(LlmGrant::DEFAULT_MAX_TOKENS_PER_CALL)
    );

    let cut = run(
        &models,
        grant(&["openai-truncated"]),
        "ask",
        ask("openai-truncated", "hello"),
    )
    .await;
    assert_eq!(error_code(&cut), "llm_provider_error");
    assert_eq!(cut.llm_calls[0].attempts, 2, "a cut answer is retried");
}

#[tokio::test]
async fn a_call_never_outlives_its_time() {
    // The provider's own timeout, well inside the invocation's: the guest gets `timeout`.
    let models = models(0, 500).await;
    let started = Instant::now();
    let execution = run(
        &models,
        grant(&["openai-slow-3000"]),
        "ask",
        ask("openai-slow-3000", "hi"),
    )
    .await;
    assert_eq!(error_code(&execution), "llm_timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(execution.llm_calls[0].outcome, "timeout");

    // The invocation's deadline first: the run times out, its call is kept as interrupted
    // and charged its reservation. Waiting burns no fuel.
    let models = self::models(0, 60_000).await;
    let limits = Limits {
        timeout: Duration::from_millis(800),
        ..Limits::default()
    };
    let execution = run_with(
        &models,
        Some(grant(&["claude-slow-3000"])),
        "ask",
        ask("claude-slow-3000", "hi"),
        limits,
        LlmAllowance::default(),
    )
    .await;
    assert!(
        matches!(execution.outcome, Outcome::TimedOut | Outcome::AgentError),
        "{execution:#?}"
    );
    let call = &execution.llm_calls[0];
    assert!(
        ["interrupted", "timeout"].contains(&call.outcome.as_str()),
        "{call:?}"
    );
    assert!(call.usage_estimated && call.cost_picodollars > 0);
    assert!(
        execution.usage.fuel < 5_000_000,
        "waiting burned fuel: {}",
        execution.usage.fuel
    );
}

#[tokio::test]
async fn tool_calls_and_json_answers_round_trip() {
    let models = models(0, 10_000).await;
    for provider in ["openai", "claude"] {
        let alias = format!("{provider}-tools");
        let input = json!({ "model": alias, "tools": ["lookup"],
                            "messages": [{ "role": "user", "content": "find it" }] });
        let execution = run(&models, grant(&[&alias]), "ask", input).await;
        let answer = output(&execution);
        assert_eq!(answer["finish_reason"], "tool_calls", "{answer:#}");
        assert_eq!(answer["tool_calls"][0]["name"], "lookup");
        assert_eq!(answer["tool_calls"][0]["arguments"], "{}");
    }
    let alias = "openai-json";
    let classified = run(
        &models,
        grant(&[alias]),
        "classify",
        json!({ "text": "hi", "model": alias }),
    )
    .await;
    // The fake answers {"ok":true}, not a label: the agent falls back to its rules.
    assert_eq!(output(&classified)["by"], "rules");
    assert_eq!(
        models.openai.requests().last().unwrap().body["response_format"]["type"],
        "json_object"
    );
}

/// Asks `alias` "hello" with `tokens` and `picodollars` left in the budgets.
async fn hello_within(
    models: &Models,
    alias: &str,
    tokens: Option<u64>,
    picodollars: Option<i64>,
) -> Execution {
    let allowance = LlmAllowance {
        tokens,
        picodollars,
    };
    let input = ask(alias, "hello");
    run_with(
        models,
        Some(grant(&[alias])),
        "ask",
        input,
        Limits::default(),
        allowance,
    )
    .await
}

#[tokio::test]
async fn what_the_budgets_left_bounds_each_call() {
    let models = models(0, 10_000).await;
    let sent_max_tokens =
        |server: &ModelServer| server.requests().last().unwrap().body["max_tokens"].clone();
    // Tokens: the prompt is estimated at 6 tokens (4 a message, 2 for "hello"), which
    // leaves 3 of 9 for the answer.
    let execution = hello_within(&models, "openai-fast", Some(9), None).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(sent_max_tokens(&models.openai), 3);
    // Nothing left after the prompt: refused before the provider, as a denial.
    let before = models.openai.requests().len();
    let execution = hello_within(&models, "openai-fast", Some(6), None).await;
    assert_eq!(error_code(&execution), "llm_budget_exhausted");
    assert_eq!(models.openai.requests().len(), before);
    // Dollars: $15 a million output tokens is 15,000,000 picodollars a token; the
    // 6 tokens' prompt at $3 a million is 18,000,000; the 52,000,000 left buy 3.
    let execution = hello_within(&models, "claude-fast", None, Some(70_000_000)).await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:#?}");
    assert_eq!(sent_max_tokens(&models.anthropic), 3);
}

#[tokio::test]
async fn a_provider_that_refuses_the_key_never_shows_it() {
    let openai = ModelServer::start(Provider::OpenAi, "the-right-key").await;
    let config = json!({
        "providers": { "p": { "kind": "openai", "base_url": openai.url(), "api_key": OPENAI_KEY } },
        "models": { "m": { "provider": "p", "model": "fast", "input_per_million": "1", "output_per_million": "1" } },
    });
    let models = Models {
        catalogue: Arc::new(Catalogue::parse(&config.to_string(), |_| None).unwrap()),
        openai,
        anthropic: ModelServer::start(Provider::Anthropic, ANTHROPIC_KEY).await,
    };
    let execution = run(&models, grant(&["m"]), "ask", ask("m", "hi")).await;
    assert_eq!(error_code(&execution), "llm_provider_error");
    assert!(
        !execution.error.as_ref().unwrap().retryable,
        "a 401 is not retried"
    );
    assert_no_key(&execution);
}

#[tokio::test]
async fn prompts_and_answers_are_kept_only_when_the_grant_opts_in() {
    let models = models(0, 10_000).await;
    let plain = run(
        &models,
        grant(&["openai-fast"]),
        "ask",
        ask("openai-fast", "private words"),
    )
    .await;
    assert_eq!(
        (&plain.llm_calls[0].prompt, &plain.llm_calls[0].answer),
        (&None, &None)
    );
    let mut keeping = grant(&["openai-fast"]);
    keeping.record_prompts = true;
    let kept = run(&models, keeping, "ask", ask("openai-fast", "private words")).await;
    let call = &kept.llm_calls[0];
    let prompt: Value = serde_json::from_str(call.prompt.as_deref().unwrap()).unwrap();
    assert_eq!(prompt[0]["role"], "user");
    assert_eq!(prompt[0]["content"], "private words");
    let answer: Value = serde_json::from_str(call.answer.as_deref().unwrap()).unwrap();
    assert_eq!(answer["content"], "echo: private words");
}
