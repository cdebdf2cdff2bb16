//! Logging and tracing setup.
//!
//! - **Logs**: `tracing` to stderr, filtered by `RUST_LOG` (default `warn`); as text, in
//!   colour only for a person at a terminal, or as one JSON object per line
//!   ([`LogFormat::Json`], `CORRAL_LOG_FORMAT=json`).
//! - **Traces**: off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; then the `request` and `execution`
//!   spans (and the host's other spans at `info`) are exported by OTLP over HTTP, in
//!   batches. The OpenTelemetry SDK reads the other standard variables itself:
//!   `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or `http/json`),
//!   `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`
//!   (default `corral`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and its
//!   argument, and `OTEL_BSP_*` for the batches. `OTEL_SDK_DISABLED=true` turns it off.
//!
//! [`context`] holds the W3C trace context each execution carries, exported or not.

pub mod context;

use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The exporting tracer provider, when traces are exported: flushed at shutdown.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with
    /// `message`) and the current `span`.
    Json,
}

/// Installs the global subscriber, writing the log in `format`. Safe to call once per
/// process. `runtime` sends the exported spans (the exporter's batches are made on a
/// thread of their own).
pub fn init(format: LogFormat, runtime: tokio::runtime::Handle) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour())
            .with_filter(filter)
            .boxed(),
    };
    let traces = match tracer_provider(runtime) {
        Ok(Some(provider)) => {
            let tracer = provider.tracer("corral");
            let _ = PROVIDER.set(provider);
            // The host's own spans, whatever RUST_LOG says about the log.
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(tracing_subscriber::EnvFilter::new("corral_host=info")),
            )
        }
        Ok(None) => None,
        Err(e) => {
            eprintln!("corral: traces are not exported: {e}");
            None
        }
    };
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
}

/// Sends the spans still queued for export, if traces are exported; returns once they
/// are sent (or the exporter gave up).
pub async fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        // The batch processor blocks until its thread has exported.
        let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    }
}

/// Flushes and stops the exporter, if traces are exported. Call once, at exit, while
/// the runtime given to [`init`] still runs.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

/// The exporting provider when an OTLP endpoint is configured (and the SDK is not
/// disabled); `None` otherwise.
fn tracer_provider(runtime: tokio::runtime::Handle) -> anyhow::Result<Option<SdkTracerProvider>> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if disabled
        || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    {
        return Ok(None);
    }
    let client = ExportClient {
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?,
        runtime,
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client);
    // The specification's default; the crate defaults to JSON when both are built in.
    // A protocol set in code would override the variables, so only when neither is set.
    if !set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") && !set("OTEL_EXPORTER_OTLP_PROTOCOL") {
        exporter = exporter.with_protocol(Protocol::HttpBinary);
    }
    let exporter = exporter.build()?;
    let mut resource = Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("corral");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(Some(provider))
}

/// The exporter's HTTP client: the workspace's reqwest (with its TLS), driven on the
/// server's runtime, since the batch processor's thread has none.
#[derive(Debug)]
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let response = client.execute(reqwest::Request::try_from(request)?).await?;
            let mut answer = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                answer = answer.header(name, value);
            }
            let body = response.bytes().await?;
            Ok::<_, opentelemetry_http::HttpError>(answer.body(body)?)
        });
        sent.await?
    }
}

/// Whether to colour the log. The fmt layer colours by default wherever it writes, so
/// files, pipes and log collectors got escape codes; colour only when stderr is a
/// terminal, and never when `NO_COLOR` is set to anything but the empty string (as
/// <https://no-color.org> asks).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
