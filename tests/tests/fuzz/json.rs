//! JSON text for the JSON targets: mostly well-formed, shaped by a vocabulary of the
//! field names and values the host's types know (so generated documents get past
//! `deny_unknown_fields` and reach the checks behind it), with numbers written out as
//! text (so `2.50`, `1e-3`, `-0` and `1e400` arrive as written), and strings with the
//! escapes that matter (`\u0000`, lone surrogates' neighbours, quotes).

use proptest::prelude::*;

/// Numbers as written in a document: boundaries of the host's ranges and of the
/// integer types, exponents, and forms serde's number types treat differently.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "16",
    "100",
    "1000",
    "1001",
    "65535",
    "65536",
    "86400000",
    "86400001",
    "100000",
    "100001",
    "1000000",
    "1000001",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "2.50",
    "0.5",
    "1e3",
    "1E-3",
    "1e-12",
    "1e-13",
    "1e400",
    "-0",
    "0.000000000001",
    "0.0000000000001",
    "999999.999999999999",
    "1000000.000000000001",
    "1.0",
    "3.14159",
    "1e+2",
    "60000",
    "60001",
    "67108864",
    "67108865",
    "1048576",
    "1048577",
    "268435456",
    "268435457",
];

/// Field names of policies, grants, quotas, caps, retention, limits and task specs.
pub const KEYS: &[&str] = &[
    "limits",
    "quotas",
    "grants",
    "record_input",
    "caps",
    "retention",
    "fuel",
    "memory_bytes",
    "timeout_ms",
    "output_bytes",
    "log_bytes",
    "max_concurrency",
    "rate",
    "budgets",
    "requests",
    "per",
    "burst",
    "fuel_per_day",
    "fuel_per_month",
    "dollars_per_day",
    "dollars_per_month",
    "http",
    "kv",
    "agents",
    "secrets",
    "allow",
    "max_response_bytes",
    "max_requests",
    "max_value_bytes",
    "max_keys",
    "max_total_bytes",
    "max_calls",
    "max_agents",
    "max_versions",
    "max_total_component_bytes",
    "max_component_bytes",
    "max_queued_tasks",
    "executions_days",
    "logs_days",
    "audit_days",
    "agent",
    "key",
    "action",
    "input",
    "priority",
    "run_at",
    "max_attempts",
    "backoff",
    "base_ms",
    "cap_ms",
    "retry_timeouts",
    "wait_for_budget",
    "depends_on",
    "correlation_id",
    "text",
    "type",
    "properties",
    "required",
    "items",
    "minimum",
    "maximum",
    "pattern",
    "minLength",
    "maxLength",
    "enum",
    "const",
    "$ref",
    "$defs",
    "anyOf",
    "allOf",
    "oneOf",
    "not",
    "format",
    "multipleOf",
    "additionalProperties",
    "x",
];

/// String values the host's types know, and a few hostile ones.
const WORDS: &[&str] = &[
    "second",
    "minute",
    "hour",
    "fortnight",
    "https://api.example.com",
    "https://*.example.com:8443",
    "http://127.0.0.1:8080",
    "http://[::1]:9",
    "https://example.com/v1",
    "*",
    "echo",
    "text-stats",
    "API_TOKEN",
    "9LIVES",
    "stats",
    "transform",
    "top_words",
    "classify",
    "2.50",
    "1e-3",
    "-1",
    "0",
    "string",
    "object",
    "integer",
    "number",
    "array",
    "boolean",
    "null",
    "#",
    "#/$defs/a",
    "^(a+)+$",
    "date-time",
    "email",
    "uri",
    "2026-01-01T00:00:00Z",
    "\u{0}",
    "a\u{0}b",
    "\u{FFFD}",
    "\\u0000",
    "\u{202E}",
    "",
];

fn string_literal() -> impl Strategy<Value = String> {
    let text = prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_string),
        2 => prop::sample::select(KEYS).prop_map(str::to_string),
        2 => ".{0,24}",
        1 => prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect()),
    ];
    text.prop_map(|s| serde_json::to_string(&s).expect("a string serializes"))
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(NUMBERS).prop_map(str::to_string),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        4 => string_literal(),
        1 => prop::sample::select(&["true", "false", "null"][..]).prop_map(str::to_string),
    ]
}

/// A JSON document (usually an object) of at most a few levels.
pub fn document() -> impl Strategy<Value = String> {
    let value = leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((key(), inner), 0..6).prop_map(|fields| object(&fields)),
        ]
    });
    prop::collection::vec((key(), value), 0..5).prop_map(|fields| object(&fields))
}

/// An object key: the vocabulary mostly, sometimes anything.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(KEYS).prop_map(|k| serde_json::to_string(k).expect("key")),
        1 => string_literal(),
    ]
}

/// `{"k": v, ...}` from already-encoded keys and values.
pub fn object(fields: &[(String, String)]) -> String {
    let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", fields.join(","))
}

/// Whether `value` holds the NUL character in any string or key.
pub fn has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}
