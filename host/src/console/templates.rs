//! The console's HTML: minijinja templates compiled into the binary with
//! `include_str!` (nothing to install or build; no files read at run time), escaped by
//! default, plus the filters they use to show times, money and sizes.

use std::sync::LazyLock;

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

/// Every template, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("error.html", include_str!("templates/error.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("agents.html", include_str!("templates/agents.html")),
    ("agent.html", include_str!("templates/agent.html")),
    (
        "execution_rows.html",
        include_str!("templates/execution_rows.html"),
    ),
    ("executions.html", include_str!("templates/executions.html")),
    ("execution.html", include_str!("templates/execution.html")),
    ("costs.html", include_str!("templates/costs.html")),
    ("usage.html", include_str!("templates/usage.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("keys.html", include_str!("templates/keys.html")),
    ("tasks.html", include_str!("templates/tasks.html")),
    ("task.html", include_str!("templates/task.html")),
    ("workflows.html", include_str!("templates/workflows.html")),
    ("workflow.html", include_str!("templates/workflow.html")),
];

static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Absent fields of an API answer (a root execution has no parent) read as empty.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    // `.html` templates escape every value unless a template says otherwise (none does).
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("console template {name}: {e}"));
    }
    env.add_filter("dollars", dollars);
    env.add_filter("bytes", bytes);
    env.add_filter("micros", micros);
    env.add_filter("when", when);
    env.add_filter("num", num);
    env.add_filter("pretty", pretty);
    env.add_filter("compact", compact);
    env
});

/// Renders `name` with `context`. A template that fails is a bug: logged, and a fixed
/// message shown with `500`.
pub fn render(name: &str, context: &impl Serialize) -> Result<Html<String>, Response> {
    let rendered = ENVIRONMENT
        .get_template(name)
        .and_then(|t| t.render(minijinja::Value::from_serialize(context)));
    match rendered {
        Ok(html) => Ok(Html(html)),
        Err(e) => {
            tracing::error!(template = name, error = %e, "a console template failed");
            let page = "<!doctype html><title>Error</title><p>This page could not be shown.";
            Err((StatusCode::INTERNAL_SERVER_ERROR, Html(page)).into_response())
        }
    }
}

/// `GET /console/console.css`.
pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("static/console.css"),
    )
}

/// `0.000000121919` (the API's 12 places) as `$0.000000121919`, `1.500000000000` as
/// `$1.50`: trailing zeros dropped, at least two places kept.
fn dollars(amount: String) -> String {
    let Some((whole, fraction)) = amount.split_once('.') else {
        return format!("${amount}.00");
    };
    let fraction = fraction.trim_end_matches('0');
    format!("${whole}.{fraction:0<2}")
}

/// Bytes in binary units: `1.1 MiB`.
fn bytes(n: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n.abs() < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for next in UNITS {
        if value.abs() < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// Microseconds as `379 µs`, `12.4 ms` or `1.20 s`.
fn micros(us: i64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// An RFC 3339 time as `2026-12-05 09:18:04 UTC` (to the second).
fn when(time: String) -> String {
    match chrono::DateTime::parse_from_rfc3339(&time) {
        Ok(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        Err(_) => time,
    }
}

/// An integer with thousands separated: `21,912`.
fn num(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Any value as indented JSON.
fn pretty(value: minijinja::Value) -> String {
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// Any value as JSON on one line.
fn compact(value: minijinja::Value) -> String {
    serde_json::to_string(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        for (name, _) in TEMPLATES {
            assert!(ENVIRONMENT.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn values_are_escaped() {
        let html = render(
            "error.html",
            &serde_json::json!({ "status": 400, "code": "x", "message": "<script>alert(1)</script>" }),
        )
        .unwrap();
        assert!(!html.0.contains("<script>"), "{}", html.0);
        assert!(html.0.contains("&lt;script&gt;"), "{}", html.0);
    }

    #[test]
    fn amounts_sizes_and_times_read_well() {
        assert_eq!(dollars("0.000000121919".into()), "$0.000000121919");
        assert_eq!(dollars("1.500000000000".into()), "$1.50");
        assert_eq!(dollars("0.000000000000".into()), "$0.00");
        assert_eq!(bytes(1_114_112), "1.1 MiB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(micros(379), "379 µs");
        assert_eq!(micros(12_400), "12.4 ms");
        assert_eq!(micros(1_200_000), "1.20 s");
        assert_eq!(num(21912), "21,912");
        assert_eq!(num(-1_000_000), "-1,000,000");
        assert_eq!(
            when("2026-12-05T09:18:04.123456Z".into()),
            "2026-12-05 09:18:04 UTC"
        );
    }
}
