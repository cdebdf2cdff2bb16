//! Invocation input and limits, and the input schemas agents publish.
//!
//! `invocation_input`: a task or invoke body as the API receives it (`ApiJson` over
//! `TaskSpec`, whose `input`, `limits` and `backoff` are the invoke body's too), then
//! the checks the pipeline makes before a guest runs: per-call limits against the
//! agent's, the retry backoff, and `LoadedAgent::check_input` on the real `text-stats`
//! agent (which publishes input schemas). A body is refused with a typed error; one
//! accepted holds JSON input without NUL; validated limits tighten to exactly what they
//! set; a validated backoff's delays stay within it; an input is refused as an unknown
//! action exactly when the agent does not list the action, and otherwise exactly when
//! the action's published schema refuses it.
//!
//! `agent_schema`: what a guest's `describe` returns is untrusted too. An input is
//! three lines: a version, an input schema (the JSON text a guest would return) and an
//! input. `AgentMetadata::from_describe` never panics and refuses with `BadMetadata`;
//! a schema it accepts compiles, and validating any input against it does not panic.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{Request, StatusCode};
use corral_host::api::ErrorCode;
use corral_host::api::extract::ApiJson;
use corral_host::limits::Limits;
use corral_host::runtime::bindings::{ActionInfo, AgentInfo};
use corral_host::runtime::{
    AgentMetadata, InputRefusal, LoadError, LoadedAgent, Runtime, RuntimeConfig,
};
use corral_host::tasks::Backoff;
use corral_host::tasks::submit::TaskSpec;
use corral_tests::plugins::TEXT_STATS;
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use serde_json::Value;

use super::json::{document, has_nul, object};
use super::{Target, Verdict, mutate};

pub const BODY: Target = Target {
    name: "invocation_input",
    inputs: body_inputs,
    check: check_body,
};

pub const SCHEMA: Target = Target {
    name: "agent_schema",
    inputs: schema_inputs,
    check: check_schema,
};

/// The real `text-stats` agent, loaded once (compiled in-process).
fn text_stats() -> &'static (tokio::runtime::Runtime, Runtime, Arc<LoadedAgent>) {
    static AGENT: OnceLock<(tokio::runtime::Runtime, Runtime, Arc<LoadedAgent>)> = OnceLock::new();
    AGENT.get_or_init(|| {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let runtime = Runtime::new(RuntimeConfig::in_memory()).expect("a runtime");
        let bytes = std::fs::read(TEXT_STATS).expect("the text-stats plugin");
        let agent = tokio
            .block_on(runtime.load(bytes))
            .unwrap_or_else(|e| panic!("loading text-stats: {e}"));
        (tokio, runtime, agent)
    })
}

/// The ceiling task limits are checked against: the host defaults, under a task
/// timeout of 15 minutes.
fn task_ceiling() -> Limits {
    Limits {
        timeout: Duration::from_secs(15 * 60),
        ..Limits::default()
    }
}

fn text_stats_input() -> BoxedStrategy<String> {
    let text = prop_oneof![
        ".{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        prop::sample::select(&["1", "null", "[]", "{}", "\"\\u0000\"", "\"\\\\u0000\""][..])
            .prop_map(str::to_string),
    ];
    let field = prop_oneof![
        3 => text.prop_map(|t| ("\"text\"".to_string(), t)),
        1 => prop::sample::select(&["0", "-1", "10", "1.5", "1e3", "18446744073709551616", "\"3\""][..])
            .prop_map(|n| ("\"limit\"".to_string(), n.to_string())),
        1 => prop::sample::select(&["true", "false", "0"][..])
            .prop_map(|b| ("\"ignore_stopwords\"".to_string(), b.to_string())),
        1 => Just(("\"extra\"".to_string(), "1".to_string())),
    ];
    prop_oneof![
        4 => prop::collection::vec(field, 0..4).prop_map(|f| object(&f)),
        1 => document(),
        1 => prop::sample::select(&["[]", "\"text\"", "1", "null"][..]).prop_map(str::to_string),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<String> {
    prop_oneof![
        (0u64..100_000_000_000).prop_map(|n| n.to_string()),
        prop::sample::select(
            &[
                "0",
                "1",
                "-1",
                "86400000",
                "86400001",
                "900000",
                "900001",
                "1000000000",
                "1000000001",
                "18446744073709551615",
                "1.5",
                "null",
            ][..]
        )
        .prop_map(str::to_string),
    ]
    .boxed()
}

fn task_spec() -> BoxedStrategy<String> {
    let action = prop::sample::select(&["stats", "top_words", "classify", "nope", "", "STATS"][..])
        .prop_map(|a| serde_json::to_string(a).unwrap());
    let limit_field = (
        prop::sample::select(
            &[
                "fuel",
                "memory_bytes",
                "timeout_ms",
                "output_bytes",
                "log_bytes",
            ][..],
        ),
        number(),
    )
        .prop_map(|(k, v)| (format!("\"{k}\""), v));
    let limits = prop::collection::vec(limit_field, 0..4).prop_map(|f| object(&f));
    let backoff_field = (prop::sample::select(&["base_ms", "cap_ms"][..]), number())
        .prop_map(|(k, v)| (format!("\"{k}\""), v));
    let backoff = prop::collection::vec(backoff_field, 0..3).prop_map(|f| object(&f));
    let fields = (
        action,
        prop::option::weighted(0.9, text_stats_input()),
        prop::option::weighted(0.4, limits),
        prop::option::weighted(0.3, backoff),
        prop::option::weighted(0.1, Just(("\"sneaky\"".to_string(), "1".to_string()))),
    );
    fields
        .prop_map(|(action, input, limits, backoff, extra)| {
            let mut f = vec![("\"action\"".to_string(), action)];
            f.extend(input.map(|v| ("\"input\"".to_string(), v)));
            f.extend(limits.map(|v| ("\"limits\"".to_string(), v)));
            f.extend(backoff.map(|v| ("\"backoff\"".to_string(), v)));
            f.extend(extra);
            object(&f)
        })
        .boxed()
}

fn body_inputs() -> BoxedStrategy<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = super::corpus("invocation_input")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    prop_oneof![
        5 => task_spec().prop_map(String::into_bytes),
        1 => document().prop_map(String::into_bytes),
        2 => mutate::mutated(seeds),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
    .boxed()
}

fn check_body(bytes: &[u8]) -> Verdict {
    let (tokio, _, agent) = text_stats();
    let request = Request::post("/")
        .header("content-type", "application/json")
        .body(Body::from(bytes.to_vec()))
        .expect("a request");
    let spec = match tokio.block_on(ApiJson::<TaskSpec>::from_request(request, &())) {
        Ok(ApiJson(spec)) => spec,
        Err(error) => {
            prop_assert_eq!(error.status, StatusCode::BAD_REQUEST);
            prop_assert!(
                [ErrorCode::InvalidJson, ErrorCode::InvalidText].contains(&error.code),
                "{:?}",
                error
            );
            return Ok(());
        }
    };
    // The input reaches the guest as sent, numbers beyond f64 included: only those
    // keep it from being a `Value`.
    let input = match serde_json::from_str::<Value>(spec.input.get()) {
        Ok(input) => Some(input),
        Err(e) => {
            prop_assert_eq!(e.classify(), serde_json::error::Category::Syntax, "{}", e);
            let again = serde_json::from_str::<Box<serde_json::value::RawValue>>(spec.input.get());
            prop_assert!(again.is_ok_and(|raw| raw.get() == spec.input.get()));
            None
        }
    };
    prop_assert!(
        !input.as_ref().is_some_and(has_nul),
        "a NUL got in: {:?}",
        input
    );

    let ceiling = task_ceiling();
    match spec.limits.validate(&ceiling) {
        Ok(()) => {
            let limits = spec.limits.tighten(ceiling);
            let expect = |set: Option<u64>, limit: u64| set.unwrap_or(limit);
            prop_assert_eq!(limits.fuel, expect(spec.limits.fuel, ceiling.fuel));
            prop_assert_eq!(
                limits.memory_bytes,
                expect(spec.limits.memory_bytes, ceiling.memory_bytes)
            );
            prop_assert_eq!(
                limits.timeout.as_millis(),
                u128::from(expect(
                    spec.limits.timeout_ms,
                    ceiling.timeout.as_millis() as u64
                ))
            );
            prop_assert_eq!(
                limits.output_bytes,
                expect(spec.limits.output_bytes, ceiling.output_bytes)
            );
            prop_assert_eq!(
                limits.log_bytes,
                expect(spec.limits.log_bytes, ceiling.log_bytes)
            );
        }
        Err(why) => prop_assert!(why.starts_with("limits."), "{}", why),
    }

    if let Some(backoff) = &spec.backoff {
        match backoff.validate() {
            Ok(()) => check_backoff(backoff)?,
            Err(why) => prop_assert!(why.starts_with("backoff."), "{}", why),
        }
    }

    let verdict = agent.check_input(&spec.action, spec.input.get());
    let action = agent
        .metadata
        .actions
        .iter()
        .find(|a| a.name == spec.action);
    match (action, verdict) {
        (None, Err(InputRefusal::UnknownAction { action, .. })) => {
            prop_assert_eq!(action, spec.action);
        }
        (None, verdict) => {
            return Err(TestCaseError::fail(format!(
                "action {:?} is not listed but got {verdict:?}",
                spec.action
            )));
        }
        (Some(action), verdict) => {
            let schema = action
                .input_schema
                .as_ref()
                .expect("text-stats publishes schemas");
            // An input the schema cannot read is refused as invalid, never let through.
            let valid = input.as_ref().is_some_and(|input| {
                jsonschema::validator_for(schema)
                    .expect("the schema compiles")
                    .is_valid(input)
            });
            match verdict {
                Ok(()) => prop_assert!(valid, "{:?} passed {}", input, action.name),
                Err(InputRefusal::Invalid { .. }) => {
                    prop_assert!(!valid, "{:?} refused for {}", input, action.name)
                }
                Err(other) => {
                    return Err(TestCaseError::fail(format!(
                        "{other:?} for a listed action"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Each retry waits between half and all of `min(base × 2^(retry-1), cap)`.
fn check_backoff(backoff: &Backoff) -> Verdict {
    for retry in [0, 1, 2, 3, 10, 40, 63, 64, 65, 1000, u32::MAX] {
        let delay = backoff.delay(retry).as_millis();
        let doubling = 1u128 << retry.saturating_sub(1).min(100);
        let ceiling = (u128::from(backoff.base_ms) * doubling).min(u128::from(backoff.cap_ms));
        prop_assert!(
            ceiling / 2 <= delay && delay <= ceiling,
            "retry {} of {:?} waits {} ms",
            retry,
            backoff,
            delay
        );
    }
    Ok(())
}

fn schema() -> BoxedStrategy<String> {
    let leaf =
        prop_oneof![
        prop::sample::select(&[
            r#"{"type":"string"}"#, r#"{"type":"integer","minimum":0}"#,
            r#"{"type":["string","null"]}"#, r#"{"type":"strange"}"#, r#"{"pattern":"^(a+)+$"}"#,
            r#"{"pattern":"("}"#, r#"{"pattern":"a{1000}{1000}"}"#, r#"{"pattern":"\\p{L}+"}"#,
            r#"{"pattern":"(?<=a)b"}"#, r#"{"format":"email"}"#, r#"{"format":"date-time"}"#,
            r#"{"format":"regex"}"#, r#"{"multipleOf":1e-300}"#, r#"{"multipleOf":0}"#,
            r#"{"multipleOf":0.1}"#, r#"{"maximum":1e308}"#, r#"{"minLength":-1}"#,
            r#"{"maxLength":18446744073709551616}"#, r#"{"enum":[]}"#, r#"{"const":{"a":[1]}}"#,
            r##"{"$ref":"#"}"##, r##"{"$ref":"#/$defs/a"}"##, r#"{"$ref":"http://example.com/s"}"#,
            r#"{"$ref":"file:///etc/passwd"}"#, r##"{"$dynamicRef":"#a"}"##, "true", "false",
            r#"{"uniqueItems":true}"#, r#"{"contains":{"type":"null"},"minContains":2}"#,
            r#"{"dependentRequired":{"a":["b"]}}"#, r#"{"propertyNames":{"maxLength":1}}"#,
            r#"{"$schema":"http://json-schema.org/draft-04/schema#","exclusiveMinimum":true}"#,
            r#"{"$schema":"https://example.com/unknown"}"#, "{}", "[]", "1", "\"\"",
        ][..])
        .prop_map(str::to_string),
        document(),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        let keyword = prop::sample::select(
            &[
                "not",
                "items",
                "additionalProperties",
                "if",
                "then",
                "else",
                "contains",
            ][..],
        );
        let list = prop::sample::select(&["anyOf", "allOf", "oneOf", "prefixItems"][..]);
        let map = prop::sample::select(&["properties", "$defs", "patternProperties"][..]);
        prop_oneof![
            (keyword, inner.clone()).prop_map(|(k, s)| format!("{{\"{k}\":{s}}}")),
            (list, prop::collection::vec(inner.clone(), 0..3))
                .prop_map(|(k, s)| format!("{{\"{k}\":[{}]}}", s.join(","))),
            (map, prop::collection::vec(("[a-z^.*]{1,3}", inner), 0..3)).prop_map(|(k, s)| {
                let fields: Vec<String> = s
                    .iter()
                    .map(|(n, v)| format!("{}:{v}", serde_json::to_string(n).unwrap()))
                    .collect();
                format!("{{\"{k}\":{{{}}},\"required\":[\"a\"]}}", fields.join(","))
            }),
        ]
    })
    .boxed()
}

fn schema_inputs() -> BoxedStrategy<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = super::corpus("agent_schema")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let version = prop::sample::select(&["1.0.0", "0.1.0-alpha.1+build", "1.0", "v1.0.0", ""][..]);
    let input = prop_oneof![
        document(),
        prop::sample::select(
            &[
                "\"aaaaaaaaaaaaaaaaaaaaaaaa!\"",
                "1e308",
                "[null,null]",
                "{\"a\":1}"
            ][..]
        )
        .prop_map(str::to_string),
    ];
    prop_oneof![
        5 => (version, schema(), input)
            .prop_map(|(v, s, i)| format!("{v}\n{s}\n{i}").into_bytes()),
        2 => mutate::mutated(seeds),
    ]
    .boxed()
}

fn check_schema(bytes: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.splitn(3, '\n');
    let version = lines.next().unwrap_or_default().to_string();
    let schema = lines.next().unwrap_or_default().to_string();
    let input = lines.next().unwrap_or_default();
    let info = AgentInfo {
        name: "fuzz".into(),
        version: version.clone(),
        description: String::new(),
        actions: vec![ActionInfo {
            name: "act".into(),
            description: String::new(),
            input_schema: Some(schema.clone()),
        }],
    };
    let metadata = match AgentMetadata::from_describe(info) {
        Ok(metadata) => metadata,
        Err(LoadError::BadMetadata(_)) => return Ok(()),
        Err(other) => return Err(TestCaseError::fail(format!("not BadMetadata: {other:?}"))),
    };
    prop_assert_eq!(&metadata.version, &version);
    let published = metadata.actions[0].input_schema.as_ref().expect("a schema");
    prop_assert_eq!(
        Some(published.clone()),
        serde_json::from_str::<Value>(&schema).ok()
    );
    let validator = jsonschema::validator_for(published)
        .map_err(|e| TestCaseError::fail(format!("an accepted schema does not compile: {e}")))?;
    if let Ok(input) = serde_json::from_str::<Value>(input) {
        let valid = validator.is_valid(&input);
        // The first error agrees with the yes-or-no answer.
        prop_assert_eq!(validator.validate(&input).is_ok(), valid);
    }
    Ok(())
}
