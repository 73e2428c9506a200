//! OTLP export over gRPC (tonic) and HTTP/protobuf, with the OTEL_EXPORTER_OTLP_* settings,
//! retries with backoff on retryable failures only, and one warning line per outage.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tonic::client::Grpc;
use tonic::transport::Channel;

use super::SpanSink;
use crate::cli::OtlpProtocol;
use crate::pipeline::FinishedSpan;

const MAX_ATTEMPTS: u32 = 5;
/// OTLP's default export timeout (OTEL_EXPORTER_OTLP_TIMEOUT).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What is exported: its settings are read from `OTEL_EXPORTER_OTLP_<SIGNAL>_*` before the
/// general `OTEL_EXPORTER_OTLP_*`, and an HTTP base endpoint gets its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn upper(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }

    fn var(self, what: &str) -> String {
        format!("OTEL_EXPORTER_OTLP_{}_{what}", self.upper())
    }
}

/// Resolved exporter settings (flags first, then OTEL_* environment, then defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    pub protocol: OtlpProtocol,
    /// For HTTP: the full traces URL (…/v1/traces). For gRPC: the base endpoint.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    /// Per export request: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, OTEL_EXPORTER_OTLP_TIMEOUT (ms).
    pub timeout: Duration,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn parse_headers(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

impl OtlpConfig {
    /// Applies the OpenTelemetry exporter environment variables under the command-line flags,
    /// for traces.
    pub fn resolve(flag_endpoint: Option<&str>, flag_protocol: Option<OtlpProtocol>) -> Result<Self> {
        Self::resolve_signal(Signal::Traces, flag_endpoint, flag_protocol)
    }

    /// The same for any signal: the flags name the collector, whatever the signal.
    pub fn resolve_signal(signal: Signal, flag_endpoint: Option<&str>, flag_protocol: Option<OtlpProtocol>) -> Result<Self> {
        let protocol = match flag_protocol {
            Some(p) => p,
            None => match env(&signal.var("PROTOCOL")).or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL")).as_deref() {
                None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
                Some("grpc") => OtlpProtocol::Grpc,
                Some(other) => bail!("OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported; use grpc or http/protobuf"),
            },
        };
        // A signal-specific endpoint is used as-is; a base endpoint gets the signal's path
        // (/v1/traces, /v1/metrics) for HTTP.
        let (endpoint, as_is) = match (flag_endpoint, env(&signal.var("ENDPOINT")), env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(flag), _, _) => (flag.to_string(), false),
            (None, Some(own), _) => (own, true),
            (None, None, Some(base)) => (base, false),
            (None, None, None) => (
                match protocol {
                    OtlpProtocol::Grpc => "http://localhost:4317",
                    OtlpProtocol::HttpProtobuf => "http://localhost:4318",
                }
                .to_string(),
                false,
            ),
        };
        let uri: http_uri::Uri = endpoint
            .parse()
            .ok()
            .filter(|u: &http_uri::Uri| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
            .with_context(|| format!("OTLP endpoint {endpoint:?} is not a valid http:// or https:// URL; pass e.g. --otlp-endpoint http://localhost:4317"))?;
        let endpoint = match protocol {
            OtlpProtocol::HttpProtobuf if !as_is => format!("{}{}", endpoint.trim_end_matches('/'), signal.path()),
            _ => uri.to_string().trim_end_matches('/').to_string(),
        };
        check_port(&uri, &endpoint)?;
        let headers = env(&signal.var("HEADERS")).or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS")).map(|h| parse_headers(&h)).unwrap_or_default();
        let timeout = match [signal.var("TIMEOUT"), "OTEL_EXPORTER_OTLP_TIMEOUT".to_string()].into_iter().find_map(|name| Some((env(&name)?, name))).map(|(v, n)| (n, v)) {
            None => DEFAULT_TIMEOUT,
            Some((name, value)) => match value.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => bail!("{name}={value} is not a timeout; give milliseconds, e.g. {name}=10000"),
            },
        };
        Ok(Self { protocol, endpoint, headers, timeout })
    }
}

/// A port the URI parser let through but no socket can have (e.g. 99999).
fn check_port(uri: &http_uri::Uri, endpoint: &str) -> Result<()> {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    match authority.rsplit_once(':') {
        // "[::1]" has colons but no port.
        Some((_, port)) if !port.ends_with(']') => match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(()),
            _ => bail!("OTLP endpoint {endpoint:?} has port {port:?}, which is not a TCP port (1-65535)"),
        },
        _ => Ok(()),
    }
}

mod http_uri {
    pub use tonic::codegen::http::Uri;
}

/// A lazy gRPC channel to the configured endpoint, with its timeouts (any signal's client).
pub fn grpc_channel(config: &OtlpConfig) -> Result<Channel> {
    Ok(Channel::from_shared(config.endpoint.clone())
        .with_context(|| format!("invalid OTLP gRPC endpoint {}", config.endpoint))?
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .connect_lazy())
}

/// The HTTP client for the configured timeout.
pub fn http_client(config: &OtlpConfig) -> Result<reqwest::Client> {
    reqwest::Client::builder().timeout(config.timeout).build().context("building the HTTP client")
}

/// The configured headers as gRPC metadata.
pub fn with_metadata<T>(mut request: tonic::Request<T>, headers: &[(String, String)]) -> tonic::Request<T> {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (k.parse::<tonic::metadata::MetadataKey<_>>(), v.parse()) {
            request.metadata_mut().insert(k, v);
        }
    }
    request
}

/// POSTs a protobuf body with the configured headers. Err: what went wrong, and whether a
/// retry may help (no answer, or 429/502/503/504).
pub async fn post(client: &reqwest::Client, config: &OtlpConfig, body: impl Into<reqwest::Body>) -> std::result::Result<(), (String, bool)> {
    let mut req = client.post(&config.endpoint).header("content-type", "application/x-protobuf").body(body);
    for (k, v) in &config.headers {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => {
            let code = resp.status().as_u16();
            Err((format!("HTTP {code}"), matches!(code, 429 | 502 | 503 | 504)))
        }
        Err(e) => Err((e.to_string(), true)),
    }
}

/// The trace service's one method; its request goes out as bytes already encoded.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A gRPC codec for a request encoded beforehand (`otlp_wire`): it copies the bytes in, and
/// reads past the answer, whose partial-success counts zerotrace does not use.
#[derive(Clone, Copy, Default)]
struct Encoded;

impl tonic::codec::Codec for Encoded {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = Encoded;
    type Decoder = Encoded;
    fn encoder(&mut self) -> Encoded {
        Encoded
    }
    fn decoder(&mut self) -> Encoded {
        Encoded
    }
}

impl tonic::codec::Encoder for Encoded {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Encoded {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        let rest = bytes::Buf::remaining(src);
        bytes::Buf::advance(src, rest);
        Ok(Some(()))
    }
}

enum Transport {
    Grpc(Grpc<Channel>),
    Http(reqwest::Client),
}

pub struct OtlpSink {
    config: OtlpConfig,
    transport: Transport,
    host_name: String,
    /// True while exports fail; the warning is printed once per outage.
    failing: bool,
}

enum Outcome {
    Done,
    Retry(String),
    Fail(String),
}

impl OtlpSink {
    pub fn new(config: OtlpConfig, host_name: String) -> Result<Self> {
        let transport = match config.protocol {
            OtlpProtocol::Grpc => Transport::Grpc(Grpc::new(grpc_channel(&config)?)),
            OtlpProtocol::HttpProtobuf => Transport::Http(http_client(&config)?),
        };
        Ok(Self { config, transport, host_name, failing: false })
    }

    async fn attempt(&mut self, request: &Bytes) -> Outcome {
        match &mut self.transport {
            Transport::Grpc(client) => {
                let req = with_metadata(tonic::Request::new(request.clone()), &self.config.headers);
                let sent = match client.ready().await {
                    Ok(()) => client.unary::<_, (), _>(req, tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH), Encoded).await,
                    Err(e) => Err(tonic::Status::unavailable(e.to_string())),
                };
                match sent {
                    Ok(_) => Outcome::Done,
                    Err(status) => {
                        use tonic::Code::*;
                        let text = format!("{}: {}", status.code(), status.message());
                        match status.code() {
                            Unavailable | ResourceExhausted | Aborted | Cancelled | DeadlineExceeded | OutOfRange | DataLoss => Outcome::Retry(text),
                            _ => Outcome::Fail(text),
                        }
                    }
                }
            }
            Transport::Http(client) => match post(client, &self.config, request.clone()).await {
                Ok(()) => Outcome::Done,
                Err((text, true)) => Outcome::Retry(text),
                Err((text, false)) => Outcome::Fail(text),
            },
        }
    }

    /// Sends one batch; true when the collector accepted it.
    pub async fn export(&mut self, batch: &[FinishedSpan]) -> bool {
        let request = Bytes::from(super::otlp_wire::export_request(batch, &self.host_name));
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=MAX_ATTEMPTS {
            match self.attempt(&request).await {
                Outcome::Done => {
                    if self.failing {
                        eprintln!("zerotrace: OTLP export to {} works again", self.config.endpoint);
                        self.failing = false;
                    }
                    return true;
                }
                Outcome::Fail(why) => {
                    self.warn(&format!("rejected ({why}); the batch is dropped, check the collector's configuration"));
                    return false;
                }
                Outcome::Retry(why) if attempt == MAX_ATTEMPTS => {
                    self.warn(&format!("failed {MAX_ATTEMPTS} times ({why}); the batch is dropped; is the collector running at this address?"));
                    return false;
                }
                Outcome::Retry(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        false
    }

    fn warn(&mut self, what: &str) {
        if !self.failing {
            eprintln!("zerotrace: OTLP export to {} {what}", self.config.endpoint);
            self.failing = true;
        }
    }
}

impl SpanSink for OtlpSink {
    fn write(&mut self, batch: Vec<FinishedSpan>) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async move { self.export(&batch).await })
    }
}
