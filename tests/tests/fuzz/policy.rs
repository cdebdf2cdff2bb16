//! Agent and tenant policies as the API receives them (`host/src/policy.rs`): limits,
//! quotas with rates and decimal-dollar budgets, plan caps, retention, and the grants
//! (HTTP rules, key-value, agents, secrets).
//!
//! For any bytes: parsing never panics. For a policy that parses: it serializes and
//! parses back to itself. For one that validates: it still does after that round trip;
//! its limits tighten the ceiling to exactly the values it sets and never loosen any
//! limits; its dollar budgets convert to picodollars exactly; its rules print back to
//! themselves. A refusal names the field it refuses.

use std::time::Duration;

use corral_host::costs::{format_dollars, picodollars};
use corral_host::limits::Limits;
use corral_host::policy::{AgentPolicy, LimitOverrides, Quotas, Retention, TenantPolicy};
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use rust_decimal::Decimal;

use super::json::{document, object};
use super::{Target, Verdict, mutate};

pub const TARGET: Target = Target {
    name: "policy",
    inputs,
    check,
};

/// The host ceiling policies are validated against, and the upload limit and audit
/// floor of a tenant's.
const MAX_UPLOAD_BYTES: u64 = 64 << 20;
const AUDIT_FLOOR: Duration = Duration::from_secs(30 * 86_400);

fn inputs() -> BoxedStrategy<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = super::corpus("policy")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    prop_oneof![
        4 => agent_policy().prop_map(String::into_bytes),
        3 => tenant_policy().prop_map(String::into_bytes),
        2 => document().prop_map(String::into_bytes),
        2 => mutate::mutated(seeds),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (1u64..2_000_000).prop_map(|n| n.to_string()),
        2 => prop::sample::select(&[
            "0", "-1", "1", "5000", "60000", "60001", "1000", "1001", "100000", "100001",
            "1048576", "1048577", "18446744073709551615", "18446744073709551616", "1.5",
            "\"5\"", "null",
        ][..]).prop_map(str::to_string),
        1 => any::<u64>().prop_map(|n| n.to_string()),
    ]
    .boxed()
}

fn dollars() -> BoxedStrategy<String> {
    let digits = (0u64..2_000_000, 0u32..15, any::<bool>()).prop_map(|(whole, scale, quoted)| {
        let text = Decimal::new(whole as i64, scale).to_string();
        if quoted { format!("\"{text}\"") } else { text }
    });
    prop_oneof![
        3 => digits,
        2 => prop::sample::select(&[
            "\"2.50\"", "2.50", "\"1e-3\"", "1E-3", "\"-1\"", "0", "\"0.000000000001\"",
            "\"0.0000000000001\"", "1000000", "1000000.000000000001", "\"1e400\"", "1e400",
            "\"-0\"", "\"nan\"", "\" 1\"", "\"1e-4294967296\"", "\"1e4294967295\"", "true",
        ][..]).prop_map(str::to_string),
    ]
    .boxed()
}

fn rule() -> BoxedStrategy<String> {
    let host = prop_oneof![
        prop::sample::select(
            &[
                "api.example.com",
                "*.example.com",
                "127.0.0.1",
                "[::1]",
                "[::ffff:10.0.0.1]",
                "10.0.0.5",
                "169.254.169.254",
                "localhost",
                "*.localhost",
                "EXAMPLE.COM.",
                "[2001:db8::1]",
                "xn--nxasmq6b.example",
                "a-b.c",
                "*",
                "*.*.x",
                "127.1",
            ][..]
        )
        .prop_map(str::to_string),
        "[a-z0-9.*:\\[\\]-]{1,20}",
    ];
    let port = prop_oneof![
        Just(String::new()),
        prop::sample::select(
            &[
                ":80", ":443", ":8080", ":0", ":65535", ":65536", ":", ":+80"
            ][..]
        )
        .prop_map(str::to_string),
    ];
    let tail = prop::sample::select(&["", "", "/", "/v1", "?x", "#f"][..]);
    let scheme = prop::sample::select(&["https", "http", "HTTP", "ftp"][..]);
    (scheme, host, port, tail)
        .prop_map(|(s, h, p, t)| serde_json::to_string(&format!("{s}://{h}{p}{t}")).unwrap())
        .boxed()
}

/// Some of `fields` (encoded key, encoded value), as an object; now and then with an
/// unknown field.
fn some_of(fields: Vec<(&'static str, BoxedStrategy<String>)>) -> BoxedStrategy<String> {
    let parts: Vec<BoxedStrategy<Option<(String, String)>>> = fields
        .into_iter()
        .map(|(k, v)| {
            prop::option::weighted(0.5, v.prop_map(move |v| (format!("\"{k}\""), v))).boxed()
        })
        .collect();
    (
        parts,
        prop::option::weighted(0.05, Just(("\"unknown\"".to_string(), "1".to_string()))),
    )
        .prop_map(|(parts, extra)| {
            let fields: Vec<(String, String)> = parts.into_iter().flatten().chain(extra).collect();
            object(&fields)
        })
        .boxed()
}

fn list(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(item, 0..max)
        .prop_map(|items| format!("[{}]", items.join(",")))
        .boxed()
}

fn limits() -> BoxedStrategy<String> {
    some_of(vec![
        ("fuel", number()),
        ("memory_bytes", number()),
        ("timeout_ms", number()),
        ("output_bytes", number()),
        ("log_bytes", number()),
    ])
}

fn quotas() -> BoxedStrategy<String> {
    let per = prop::sample::select(&["\"second\"", "\"minute\"", "\"hour\"", "\"day\""][..])
        .prop_map(str::to_string)
        .boxed();
    let rate = some_of(vec![
        ("requests", number()),
        ("per", per),
        ("burst", number()),
    ]);
    let budgets = some_of(vec![
        ("fuel_per_day", number()),
        ("fuel_per_month", number()),
        ("dollars_per_day", dollars()),
        ("dollars_per_month", dollars()),
    ]);
    some_of(vec![
        ("max_concurrency", number()),
        ("rate", rate),
        ("budgets", budgets),
    ])
}

fn grants() -> BoxedStrategy<String> {
    let http = some_of(vec![
        ("allow", list(rule(), 4)),
        ("timeout_ms", number()),
        ("max_response_bytes", number()),
        ("max_requests", number()),
    ]);
    let kv = some_of(vec![
        ("max_value_bytes", number()),
        ("max_keys", number()),
        ("max_total_bytes", number()),
    ]);
    let agent_name = prop_oneof![
        prop::sample::select(&["\"*\"", "\"echo\"", "\"text-stats\"", "\"Echo\"", "\"\""][..])
            .prop_map(str::to_string),
        "[a-z][a-z0-9_-]{0,70}".prop_map(|s| format!("\"{s}\"")),
    ]
    .boxed();
    let agents = some_of(vec![
        ("allow", list(agent_name, 4)),
        ("max_calls", number()),
    ]);
    let secret = prop_oneof![
        "[A-Za-z_][A-Za-z0-9_]{0,70}".prop_map(|s| format!("\"{s}\"")),
        prop::sample::select(&["\"9LIVES\"", "\"A-B\"", "\"\"", "\"\\u0000\""][..])
            .prop_map(str::to_string),
    ]
    .boxed();
    some_of(vec![
        ("http", http),
        ("kv", kv),
        ("agents", agents),
        ("secrets", list(secret, 4)),
    ])
}

fn agent_policy() -> BoxedStrategy<String> {
    let flag = prop::sample::select(&["true", "false", "1"][..])
        .prop_map(str::to_string)
        .boxed();
    some_of(vec![
        ("limits", limits()),
        ("quotas", quotas()),
        ("grants", grants()),
        ("record_input", flag),
    ])
}

fn tenant_policy() -> BoxedStrategy<String> {
    let caps = some_of(vec![
        ("max_agents", number()),
        ("max_versions", number()),
        ("max_total_component_bytes", number()),
        ("max_component_bytes", number()),
        ("max_queued_tasks", number()),
    ]);
    let retention = some_of(vec![
        ("executions_days", number()),
        ("logs_days", number()),
        ("audit_days", number()),
    ]);
    some_of(vec![
        ("limits", limits()),
        ("quotas", quotas()),
        ("caps", caps),
        ("retention", retention),
    ])
}

/// Field prefixes a refusal may name.
const FIELDS: &[&str] = &["limits.", "quotas.", "grants.", "caps.", "retention."];

fn check(bytes: &[u8]) -> Verdict {
    check_agent(bytes)?;
    check_tenant(bytes)
}

fn check_agent(bytes: &[u8]) -> Verdict {
    let Ok(policy) = serde_json::from_slice::<AgentPolicy>(bytes) else {
        return Ok(());
    };
    let text = serde_json::to_string(&policy).expect("a policy serializes");
    let back: AgentPolicy = serde_json::from_str(&text)
        .map_err(|e| TestCaseError::fail(format!("{text} does not parse back: {e}")))?;
    prop_assert_eq!(&back, &policy, "the agent policy changed through {}", text);

    let ceiling = Limits::default();
    let verdict = policy.validate(&ceiling);
    let Ok(()) = verdict else {
        let why = verdict.unwrap_err();
        prop_assert!(
            FIELDS.iter().any(|f| why.starts_with(f)),
            "the refusal names no field: {why}"
        );
        return Ok(());
    };
    check_limits(&policy.limits, &ceiling)?;
    check_quotas(&policy.quotas)?;
    if let Some(http) = &policy.grants.http {
        prop_assert!(!http.allow.is_empty() && http.allow.len() <= 100);
        for rule in &http.allow {
            let reparsed = rule.to_string().parse::<corral_host::policy::HostRule>();
            prop_assert_eq!(
                reparsed.as_ref(),
                Ok(rule),
                "rule {} prints differently",
                rule
            );
        }
    }
    if let Some(agents) = &policy.grants.agents {
        for name in &agents.allow {
            prop_assert!(agents.allows(name));
        }
    }
    for name in &policy.grants.secrets {
        prop_assert!(policy.grants.grants_secret(name));
        prop_assert!(corral_host::policy::check_config_name(name).is_ok());
    }
    Ok(())
}

fn check_tenant(bytes: &[u8]) -> Verdict {
    let Ok(policy) = serde_json::from_slice::<TenantPolicy>(bytes) else {
        return Ok(());
    };
    let text = serde_json::to_string(&policy).expect("a policy serializes");
    let back: TenantPolicy = serde_json::from_str(&text)
        .map_err(|e| TestCaseError::fail(format!("{text} does not parse back: {e}")))?;
    prop_assert_eq!(&back, &policy, "the tenant policy changed through {}", text);

    let ceiling = Limits::default();
    let verdict = policy
        .validate(&ceiling, MAX_UPLOAD_BYTES)
        .and_then(|()| policy.retention.validate(AUDIT_FLOOR));
    let Ok(()) = verdict else {
        let why = verdict.unwrap_err();
        prop_assert!(
            FIELDS.iter().any(|f| why.starts_with(f)),
            "the refusal names no field: {why}"
        );
        return Ok(());
    };
    prop_assert!(back.validate(&ceiling, MAX_UPLOAD_BYTES).is_ok());
    check_limits(&policy.limits, &ceiling)?;
    check_quotas(&policy.quotas)?;
    if let Some(bytes) = policy.caps.max_component_bytes {
        prop_assert!((1..=MAX_UPLOAD_BYTES).contains(&bytes));
    }
    if let Some(days) = policy.retention.audit_days {
        prop_assert!(u64::from(days) * 86_400 >= AUDIT_FLOOR.as_secs());
    }
    let host = Duration::from_secs(90 * 86_400);
    for days in [
        policy.retention.executions_days,
        policy.retention.logs_days,
        policy.retention.audit_days,
    ] {
        let effective = Retention::effective(days, host);
        prop_assert!(effective <= host && effective > Duration::ZERO);
    }
    Ok(())
}

/// Limits as ordered tuples, to compare field by field.
fn fields(l: &Limits) -> [u128; 5] {
    [
        l.fuel.into(),
        l.memory_bytes.into(),
        l.timeout.as_millis(),
        l.output_bytes.into(),
        l.log_bytes.into(),
    ]
}

/// Validated overrides tighten the ceiling to exactly what they set, and never loosen
/// any limits; host → tenant → agent tightening does not depend on the order.
fn check_limits(overrides: &LimitOverrides, ceiling: &Limits) -> Verdict {
    let set = [
        overrides.fuel,
        overrides.memory_bytes,
        overrides.timeout_ms,
        overrides.output_bytes,
        overrides.log_bytes,
    ];
    let tightened = fields(&overrides.tighten(*ceiling));
    for ((value, limit), got) in set.iter().zip(fields(ceiling)).zip(tightened) {
        let expected = value.map_or(limit, u128::from);
        prop_assert_eq!(got, expected, "{:?} tightened {:?}", overrides, ceiling);
    }
    let tiny = Limits {
        fuel: 1,
        memory_bytes: 1,
        timeout: Duration::from_millis(1),
        output_bytes: 1,
        log_bytes: 1,
    };
    let huge = Limits {
        fuel: u64::MAX,
        memory_bytes: u64::MAX,
        timeout: Duration::from_millis(u64::MAX),
        output_bytes: u64::MAX,
        log_bytes: u64::MAX,
    };
    for base in [*ceiling, tiny, huge] {
        let after = fields(&overrides.tighten(base));
        for (a, b) in after.iter().zip(fields(&base)) {
            prop_assert!(a <= &b, "{:?} loosened {:?}", overrides, base);
        }
        // A second tightening by the same overrides changes nothing.
        prop_assert_eq!(
            overrides.tighten(overrides.tighten(base)),
            overrides.tighten(base)
        );
    }
    let other = LimitOverrides {
        fuel: Some(1_000),
        timeout_ms: Some(10),
        ..LimitOverrides::default()
    };
    prop_assert_eq!(
        other.tighten(overrides.tighten(*ceiling)),
        overrides.tighten(other.tighten(*ceiling))
    );
    Ok(())
}

/// Validated quotas: rates that fill a bucket, budgets that convert to picodollars
/// exactly and print back to themselves.
fn check_quotas(quotas: &Quotas) -> Verdict {
    if let Some(rate) = &quotas.rate {
        let per_second = rate.per_second();
        prop_assert!(per_second.is_finite() && per_second > 0.0, "{:?}", rate);
        prop_assert!((1..=1_000_000).contains(&rate.burst()), "{:?}", rate);
    }
    let pico = Decimal::from(1_000_000_000_000u64);
    for dollars in [
        quotas.budgets.dollars_per_day,
        quotas.budgets.dollars_per_month,
    ]
    .into_iter()
    .flatten()
    {
        let p = picodollars(dollars);
        prop_assert!(
            p > 0 && p < i64::MAX,
            "{} dollars is {} picodollars",
            dollars,
            p
        );
        prop_assert_eq!(
            Decimal::from(p),
            dollars * pico,
            "{} dollars lost precision",
            dollars
        );
        let printed: Decimal = format_dollars(p).parse().expect("printed dollars parse");
        prop_assert_eq!(printed, dollars);
    }
    Ok(())
}
