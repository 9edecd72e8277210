//! Logging and tracing: a `tracing` subscriber writing JSON or pretty log
//! lines, plus, when an OTLP endpoint is configured, an OpenTelemetry layer
//! exporting spans over OTLP/HTTP (protobuf) in batches from a background
//! thread, so the hot path never waits on the collector. An `https`
//! endpoint is verified with rustls against the system roots, or only
//! against `SSL_CERT_FILE` / `SSL_CERT_DIR` when one of them is set (see
//! docs/DEPLOYMENT.md, "Traces").
//!
//! Span helpers used by sessions and routing live here too, so attribute
//! names (OpenTelemetry semantic conventions where one exists) are spelled
//! in one place.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, Settings};
use crate::metrics::Metrics;
use crate::protocol::ErrorCode;

/// Whether spans are exported. Message spans are only created when they
/// are, so a node without a collector pays nothing for them.
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// Probability (as `f64` bits) that a root span (a CONNECT, a signal's
/// route) is sampled. Decided before the span exists, so unsampled
/// messages cost nothing; children follow their parent.
static ROOT_RATIO: AtomicU64 = AtomicU64::new(0);

/// Whether this process exports spans.
pub fn tracing_enabled() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Whether to trace a new root (head sampling with the configured ratio).
pub fn sample_root() -> bool {
    if !tracing_enabled() {
        return false;
    }
    let ratio = f64::from_bits(ROOT_RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio)
}

/// A root message span (`tracing::info_span!` arguments), created only
/// when this message is sampled; otherwise a disabled span.
#[macro_export]
macro_rules! root_span {
    ($($arg:tt)*) => {
        if $crate::telemetry::sample_root() {
            ::tracing::info_span!($($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// A child message span, created only when its parent was sampled
/// (`$sampled`), e.g. a local parent span that is enabled or a remote
/// `traceparent` that is present.
#[macro_export]
macro_rules! child_span {
    ($sampled:expr, $($arg:tt)*) => {
        if $crate::telemetry::tracing_enabled() && $sampled {
            ::tracing::info_span!($($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// Keeps the tracer provider alive; flush it with [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (blocking: call off the async runtime).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
    }
}

/// The OTLP traces URL: `telemetry.otlp_endpoint` or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` as a base plus `/v1/traces`, or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is.
pub fn traces_endpoint(settings: &Settings) -> Option<String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(base) = settings
        .telemetry
        .otlp_endpoint
        .clone()
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    {
        return Some(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
}

/// The head-sampling ratio for roots: `OTEL_TRACES_SAMPLER` (+ `_ARG`) when
/// set, else `telemetry.sample_ratio`.
pub fn root_ratio(settings: &Settings) -> f64 {
    let env = |name: &str| std::env::var(name).ok();
    ratio_from(
        env("OTEL_TRACES_SAMPLER").as_deref(),
        env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        settings.telemetry.sample_ratio,
    )
}

/// The root ratio for an `OTEL_TRACES_SAMPLER` value and its argument; an
/// unknown name or a bad argument falls back to `ratio`. Every sampler is
/// parent-based here: a child always follows its parent's decision.
pub fn ratio_from(name: Option<&str>, arg: Option<&str>, ratio: f64) -> f64 {
    let ratio = arg
        .and_then(|a| a.trim().parse::<f64>().ok())
        .filter(|r| (0.0..=1.0).contains(r))
        .unwrap_or(ratio);
    match name.map(str::trim) {
        Some("always_on" | "parentbased_always_on") => 1.0,
        Some("always_off" | "parentbased_always_off") => 0.0,
        _ => ratio,
    }
}

/// Spans ended but not yet exported (queued or being exported), shared by
/// the counting processor and exporter below.
#[derive(Debug, Default)]
struct InFlight(std::sync::atomic::AtomicUsize);

/// Most spans waiting for export before new ones are dropped (and counted).
const EXPORT_QUEUE: usize = 8192;

/// Counts spans whose export failed (collector down, certificate not
/// trusted), then drops them. Logs the first failure of an outage and the
/// recovery, one line each, never one per batch or span.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    endpoint: String,
    dropped: prometheus_client::metrics::counter::Counter,
    in_flight: Arc<InFlight>,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.in_flight.0.fetch_sub(n, Ordering::AcqRel);
        match &result {
            Err(e) => {
                self.dropped.inc_by(n as u64);
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        error = %e,
                        "OTLP span export failed; spans are dropped and counted in \
                         spans_dropped_total until it recovers (collector down or \
                         unreachable, or for https a certificate not trusted: see \
                         SSL_CERT_FILE)"
                    );
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(endpoint = %self.endpoint, "OTLP span export recovered");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// In front of the batch processor: drops (and counts) a span when the
/// export queue is full, instead of letting the processor drop it
/// silently. Never blocks the hot path.
#[derive(Debug)]
struct BoundedProcessor<P> {
    inner: P,
    dropped: prometheus_client::metrics::counter::Counter,
    in_flight: Arc<InFlight>,
}

impl<P: SpanProcessor> SpanProcessor for BoundedProcessor<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.in_flight.0.fetch_add(1, Ordering::AcqRel) >= EXPORT_QUEUE {
            self.in_flight.0.fetch_sub(1, Ordering::AcqRel);
            self.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn tracer_provider(
    settings: &Settings,
    node_id: &str,
    endpoint: String,
    metrics: &Metrics,
) -> Option<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint.clone())
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| eprintln!("signal-manager-service: cannot build the OTLP exporter: {e}"))
        .ok()?;
    let in_flight = Arc::new(InFlight::default());
    let exporter = CountingExporter {
        inner: exporter,
        endpoint,
        dropped: metrics.spans_dropped.clone(),
        in_flight: Arc::clone(&in_flight),
        failing: AtomicBool::new(false),
    };
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                // One more than the bound in front of it: the processor
                // itself never has to drop.
                .with_max_queue_size(EXPORT_QUEUE + 1)
                .with_max_export_batch_size(512)
                .with_scheduled_delay(std::time::Duration::from_millis(500))
                .build(),
        )
        .build();
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", settings.telemetry.service_name.clone()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", node_id.to_owned()),
        ])
        .build();
    Some(
        SdkTracerProvider::builder()
            .with_span_processor(BoundedProcessor {
                inner: batch,
                dropped: metrics.spans_dropped.clone(),
                in_flight,
            })
            // Roots are sampled before their span exists (see
            // `sample_root`); whatever reaches the SDK is recorded.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource)
            .build(),
    )
}

/// Installs logging (and tracing when an OTLP endpoint is configured).
///
/// Log level: a `--log-level` flag (`flag_level`) beats `RUST_LOG`, which
/// beats `logging.level` (it is an environment variable, like
/// `SIGNAL_MANAGER_LOGGING_LEVEL`). A second call (tests) is a no-op.
pub fn init(
    settings: &Settings,
    node_id: &str,
    flag_level: Option<&str>,
    metrics: &Arc<Metrics>,
) -> Telemetry {
    let from_env = || {
        std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.is_empty())
            .and_then(|v| EnvFilter::try_new(v).ok())
    };
    let filter = flag_level
        .and_then(|l| EnvFilter::try_new(l).ok())
        .or_else(from_env)
        .or_else(|| EnvFilter::try_new(&settings.logging.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match settings.logging.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let provider = traces_endpoint(settings)
        .and_then(|endpoint| tracer_provider(settings, node_id, endpoint, metrics));
    let otel = provider.as_ref().map(|p| {
        let tracer = p.tracer("signal-manager-service");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && meta.target().starts_with("signal_manager_service")
            }))
    });
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    ROOT_RATIO.store(root_ratio(settings).to_bits(), Ordering::Relaxed);
    EXPORTING.store(installed && provider.is_some(), Ordering::Relaxed);
    Telemetry { provider }
}

/// Records the OpenTelemetry trace and span ids on a span (fields
/// `trace_id`, `span_id`), so log lines inside it carry them.
pub fn record_ids(span: &tracing::Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// Marks a span failed with a protocol error code: status error and an
/// `exception`-style event carrying the code.
pub fn record_error(span: &tracing::Span, code: ErrorCode, message: &str) {
    span.set_status(Status::error(code.as_str()));
    span.add_event(
        "signal_manager.error",
        vec![
            KeyValue::new("signal_manager.error.code", code.as_str()),
            KeyValue::new("signal_manager.error.message", message.to_owned()),
        ],
    );
}

/// The W3C `traceparent` of a span (for the envelope); `None` when
/// tracing is off. The sampled flag travels with it, so the receiving node
/// follows the origin's sampling decision.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span named by `traceparent`.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// Displays an error with its causes, `outer: inner: root`, so the
/// operator sees the cause in one log line.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'a));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_otel_variables_then_the_ratio() {
        assert_eq!(ratio_from(None, None, 0.25), 0.25);
        assert_eq!(ratio_from(Some("always_off"), None, 1.0), 0.0);
        assert_eq!(ratio_from(Some("parentbased_always_on"), None, 0.0), 1.0);
        assert_eq!(ratio_from(Some("traceidratio"), Some("0.5"), 1.0), 0.5);
        assert_eq!(
            ratio_from(Some("parentbased_traceidratio"), Some("7"), 0.1),
            0.1,
            "an out-of-range argument is ignored"
        );
    }

    #[derive(Debug, Default)]
    struct Recording(std::sync::atomic::AtomicUsize);

    impl SpanProcessor for Recording {
        fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
        fn on_end(&self, _: SpanData) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: std::time::Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn span() -> SpanData {
        use opentelemetry::trace::{SpanContext, SpanId, SpanKind};
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "test".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn a_full_export_queue_drops_and_counts() {
        let dropped = prometheus_client::metrics::counter::Counter::default();
        let in_flight = Arc::new(InFlight::default());
        let p = BoundedProcessor {
            inner: Recording::default(),
            dropped: dropped.clone(),
            in_flight: Arc::clone(&in_flight),
        };
        for _ in 0..EXPORT_QUEUE + 5 {
            p.on_end(span());
        }
        assert_eq!(p.inner.0.load(Ordering::SeqCst), EXPORT_QUEUE);
        assert_eq!(dropped.get(), 5);
        // An export frees room again.
        in_flight.0.fetch_sub(10, Ordering::SeqCst);
        p.on_end(span());
        assert_eq!(p.inner.0.load(Ordering::SeqCst), EXPORT_QUEUE + 1);
        assert_eq!(dropped.get(), 5);
    }

    #[test]
    fn endpoint_gets_the_traces_path() {
        let mut settings = Settings::default();
        settings.telemetry.otlp_endpoint = Some("http://jaeger:4318/".into());
        assert_eq!(
            traces_endpoint(&settings).as_deref(),
            Some("http://jaeger:4318/v1/traces")
        );
    }
}
