//! W3C trace context (`traceparent`, `tracestate`): the trace a request belongs to, and
//! the span each execution is in it.
//!
//! Every execution gets a span context whether or not traces are exported: its record
//! stores the trace and span ids, and its calls to other agents, its outbound HTTP
//! requests and its model calls carry them on. When the OTLP exporter is on (see
//! [`super`]), the ids are those of the exported `execution` span, so a stored id finds
//! the span; when it is off they are made here, in the same trace as the caller's.

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The span context in `traceparent` (and `tracestate`) of `headers`, if it is valid.
pub fn extract(headers: &http::HeaderMap) -> Option<SpanContext> {
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Parses a stored `traceparent` (a task's).
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", traceparent.parse().ok()?);
    extract(&headers)
}

/// `00-<trace id>-<span id>-<flags>`.
pub fn traceparent(span: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span.trace_id(),
        span.span_id(),
        span.trace_flags().to_u8()
    )
}

/// Sets `traceparent` (and `tracestate`, if any) on `headers` to `span`, replacing
/// what was there.
pub fn inject(span: &SpanContext, headers: &mut http::HeaderMap) {
    let context = Context::new().with_remote_span_context(span.clone());
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// `parent` as the remote parent of a span.
pub fn remote(parent: &SpanContext) -> Context {
    Context::new().with_remote_span_context(parent.clone())
}

/// The context of `span`, a new span under `parent`: the exported span's own ids
/// when traces are exported; otherwise a fresh span id in `parent`'s trace (or in a
/// new trace, without a parent), sampled as the parent was.
pub fn of_span(span: &tracing::Span, parent: Option<&SpanContext>) -> SpanContext {
    let exported = span.context().span().span_context().clone();
    if exported.is_valid() {
        return exported;
    }
    let (trace_id, flags, state) = match parent {
        Some(parent) => (
            parent.trace_id(),
            parent.trace_flags(),
            parent.trace_state().clone(),
        ),
        None => (new_trace_id(), TraceFlags::SAMPLED, TraceState::default()),
    };
    SpanContext::new(trace_id, new_span_id(), flags, false, state)
}

fn new_trace_id() -> TraceId {
    loop {
        let id = TraceId::from_bytes(rand::random());
        if id != TraceId::INVALID {
            return id;
        }
    }
}

fn new_span_id() -> SpanId {
    loop {
        let id = SpanId::from_bytes(rand::random());
        if id != SpanId::INVALID {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let span = parse(PARENT).unwrap();
        assert_eq!(
            span.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(span.is_sampled());
        assert_eq!(traceparent(&span), PARENT);
    }

    #[test]
    fn malformed_or_all_zero_traceparents_are_ignored() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01x",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn without_an_exporter_a_span_continues_its_parents_trace_with_a_new_span_id() {
        let parent = parse(PARENT).unwrap();
        let child = of_span(&tracing::Span::none(), Some(&parent));
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
        assert!(child.is_sampled());
        let root = of_span(&tracing::Span::none(), None);
        assert!(root.is_valid());
        assert_ne!(root.trace_id(), parent.trace_id());
    }

    #[test]
    fn injected_headers_carry_the_span() {
        let span = parse(PARENT).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "garbage".parse().unwrap());
        inject(&span, &mut headers);
        assert_eq!(headers["traceparent"], PARENT);
    }
}
