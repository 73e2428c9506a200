//! Semantic-conventions conformance of everything zerotrace exports, checked on every span and
//! metric the suite receives from it (`spans::from_proto`, `receiver::Received`): attribute
//! keys, span kinds and names, metric names.
//!
//! The keys are spelled by the `opentelemetry-semantic-conventions` crate, so a misspelt or
//! invented key fails to compile here, and one that later versions deprecate warns (and fails
//! clippy) until it is listed under `OLDER` with its reason. What the conventions do not define
//! is in `EXTRAS`, each with why.

use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use opentelemetry_semantic_conventions::{attribute as a, metric as m, resource as r};

use crate::spans::{TestSpan, kv_map};

/// Span and metric attribute keys of the conventions that zerotrace emits.
const KEYS: &[&str] = &[
    a::HTTP_REQUEST_METHOD,
    a::HTTP_REQUEST_METHOD_ORIGINAL,
    a::HTTP_RESPONSE_STATUS_CODE,
    a::URL_PATH,
    a::URL_FULL,
    a::URL_SCHEME,
    a::URL_TEMPLATE,
    a::USER_AGENT_ORIGINAL,
    a::SERVER_ADDRESS,
    a::SERVER_PORT,
    a::CLIENT_ADDRESS,
    a::NETWORK_PEER_ADDRESS,
    a::NETWORK_PEER_PORT,
    a::NETWORK_PROTOCOL_VERSION,
    a::ERROR_TYPE,
    a::DB_SYSTEM_NAME,
    a::DB_OPERATION_NAME,
    a::DB_NAMESPACE,
    a::DB_COLLECTION_NAME,
    a::DB_QUERY_TEXT,
    a::DB_RESPONSE_STATUS_CODE,
    a::DB_RESPONSE_RETURNED_ROWS,
    a::RPC_SYSTEM_NAME,
    a::RPC_METHOD,
    a::MESSAGING_SYSTEM,
    a::MESSAGING_OPERATION_TYPE,
    a::MESSAGING_OPERATION_NAME,
    a::MESSAGING_DESTINATION_NAME,
    a::MESSAGING_DESTINATION_PARTITION_ID,
    a::MESSAGING_MESSAGE_ID,
    a::MESSAGING_MESSAGE_CONVERSATION_ID,
    a::MESSAGING_MESSAGE_BODY_SIZE,
    a::MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY,
    a::MESSAGING_KAFKA_OFFSET,
];

/// Current in the conventions the spans declare (schema 1.33.0, `export::proto`), deprecated in
/// the crate's later ones: the RPC conventions since moved the service into a fully qualified
/// `rpc.method` and the gRPC code into a string `rpc.response.status_code`. Issue 16 asks for
/// these, and changing `rpc.method`'s meaning waits for a schema bump.
#[allow(deprecated)]
const OLDER: &[&str] = &[a::RPC_SYSTEM, a::RPC_SERVICE, a::RPC_GRPC_STATUS_CODE];

/// Not in the conventions, under zerotrace's own namespace as the specification asks.
const EXTRAS: &[&str] = &[
    // The request's head was longer than the capture: values past it are missing.
    "zerotrace.capture.truncated",
    // Made while its process was over its --overhead-budget: heads only were captured.
    "zerotrace.capture.head_only",
    // Made while its process captured one connection in this many (--overhead-budget).
    "zerotrace.capture.one_in",
    // The broker said this delivery is a redelivery (AMQP's flag; no convention has one).
    "zerotrace.messaging.redelivered",
];

/// Metric attributes beyond the span keys.
const METRIC_EXTRAS: &[&str] = &[
    // The metrics SDK specification's overflow series, past the cardinality limit.
    "otel.metric.overflow",
    // The agent's own metrics: why a span or record was lost, and which kernel program ran.
    "reason",
    "zerotrace.hook",
];

/// Resource keys zerotrace sets.
const RESOURCE_KEYS: &[&str] = &[
    // Not a convention: says `service.name` is zerotrace's guess (the process named none), so
    // a collector may name the service better (deploy/otel-collector.yaml).
    "zerotrace.service.name.inferred",
    r::SERVICE_NAME,
    r::SERVICE_VERSION,
    r::PROCESS_PID,
    r::PROCESS_EXECUTABLE_NAME,
    r::HOST_NAME,
    r::TELEMETRY_DISTRO_NAME,
    r::TELEMETRY_DISTRO_VERSION,
    r::CONTAINER_ID,
    r::K8S_POD_UID,
    r::K8S_POD_NAME,
    r::K8S_NAMESPACE_NAME,
];

/// Metric names: the conventions' RED histograms and process metrics.
const METRICS: &[&str] = &[m::HTTP_SERVER_REQUEST_DURATION, m::HTTP_CLIENT_REQUEST_DURATION, m::DB_CLIENT_OPERATION_DURATION, m::PROCESS_CPU_TIME, m::PROCESS_MEMORY_USAGE];

/// Metric names deprecated after the schema the metrics declare (1.33.0): since replaced by
/// `rpc.{server,client}.call.duration` in seconds, with the RPC attributes above.
#[allow(deprecated)]
const OLDER_METRICS: &[&str] = &[m::RPC_SERVER_DURATION, m::RPC_CLIENT_DURATION];

/// The agent's own metrics are under `zerotrace.`: the conventions have none for an agent.
const OWN_METRIC_PREFIX: &str = "zerotrace.";

fn span_key_known(key: &str) -> bool {
    KEYS.contains(&key) || OLDER.contains(&key) || EXTRAS.contains(&key)
}

/// Whether zerotrace made this resource's telemetry.
pub fn is_zerotrace(resource: &std::collections::HashMap<String, String>) -> bool {
    resource.get(r::TELEMETRY_DISTRO_NAME).map(String::as_str) == Some("zerotrace")
}

/// Panics, naming the span, where a zerotrace span departs from the conventions.
pub fn assert_span_conforms(s: &TestSpan) {
    for key in s.attrs.keys() {
        assert!(span_key_known(key), "span attribute `{key}` is neither in the conventions nor a justified extra (tests/src/semconv.rs): {s:?}");
    }
    for key in s.resource.keys() {
        assert!(RESOURCE_KEYS.contains(&key.as_str()), "resource attribute `{key}` is not one zerotrace sets: {s:?}");
    }
    let attr = |k: &str| s.attr(k);
    let server_or_client = matches!(s.kind.as_str(), "SERVER" | "CLIENT");
    if let Some(system) = attr(a::MESSAGING_SYSTEM) {
        let operation = attr(a::MESSAGING_OPERATION_NAME).unwrap_or_else(|| panic!("messaging span without messaging.operation.name: {s:?}"));
        let kind_ok = match attr(a::MESSAGING_OPERATION_TYPE) {
            Some("send") => s.kind == "PRODUCER",
            Some("process") => s.kind == "CONSUMER",
            // A pull: the client's call to the broker (the generic rule for a synchronous
            // call), or the broker's side of it.
            Some("receive") => server_or_client || s.kind == "CONSUMER",
            _ => false,
        };
        assert!(kind_ok, "{system} span kind {} does not fit its operation type: {s:?}", s.kind);
        let expected = match attr(a::MESSAGING_DESTINATION_NAME) {
            Some(d) => format!("{operation} {d}"),
            None => operation.to_string(),
        };
        assert_eq!(s.name, expected, "messaging spans are named `{{messaging.operation.name}} {{destination}}`: {s:?}");
    } else if let Some(system) = attr(a::RPC_SYSTEM_NAME) {
        assert!(server_or_client, "{s:?}");
        #[allow(deprecated)]
        let expected = match (attr(a::RPC_SERVICE), attr(a::RPC_METHOD)) {
            (Some(service), Some(method)) => format!("{service}/{method}"),
            _ => system.to_string(),
        };
        assert_eq!(s.name, expected, "RPC spans are named `{{rpc.service}}/{{rpc.method}}`: {s:?}");
    } else if let Some(method) = attr(a::HTTP_REQUEST_METHOD) {
        assert!(server_or_client, "{s:?}");
        let method = if method == "_OTHER" { "HTTP" } else { method };
        let expected = match attr(a::URL_TEMPLATE) {
            Some(template) => format!("{method} {template}"),
            None => method.to_string(),
        };
        assert_eq!(s.name, expected, "HTTP spans are named `{{method}} {{target}}`: {s:?}");
    } else if let Some(system) = attr(a::DB_SYSTEM_NAME) {
        assert!(server_or_client, "{s:?}");
        let expected = match (attr(a::DB_OPERATION_NAME), attr(a::DB_COLLECTION_NAME)) {
            (Some(op), Some(collection)) => format!("{op} {collection}"),
            (Some(op), None) => op.to_string(),
            _ => system.to_string(),
        };
        assert_eq!(s.name, expected, "database spans are named `{{db.operation.name}} {{target}}`: {s:?}");
    } else {
        panic!("a span of no convention (no http, db, rpc or messaging attributes): {s:?}");
    }
}

/// Panics where a metric zerotrace pushed departs from the conventions.
pub fn assert_metrics_conform(received: &[ResourceMetrics]) {
    for rm in received {
        let resource = rm.resource.as_ref().map(|r| kv_map(&r.attributes)).unwrap_or_default();
        if !is_zerotrace(&resource) {
            continue;
        }
        for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let name = metric.name.as_str();
            assert!(
                METRICS.contains(&name) || OLDER_METRICS.contains(&name) || name.starts_with(OWN_METRIC_PREFIX),
                "metric `{name}` is neither in the conventions nor under zerotrace's own namespace"
            );
            use opentelemetry_proto::tonic::metrics::v1::metric::Data;
            let attributes: Vec<String> = match &metric.data {
                Some(Data::Histogram(h)) => h.data_points.iter().flat_map(|p| kv_map(&p.attributes).into_keys()).collect(),
                Some(Data::Sum(s)) => s.data_points.iter().flat_map(|p| kv_map(&p.attributes).into_keys()).collect(),
                Some(Data::Gauge(g)) => g.data_points.iter().flat_map(|p| kv_map(&p.attributes).into_keys()).collect(),
                _ => Vec::new(),
            };
            for key in attributes {
                assert!(span_key_known(&key) || METRIC_EXTRAS.contains(&key.as_str()), "metric `{name}` has attribute `{key}`, neither in the conventions nor a justified extra");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(kind: &str, name: &str, attrs: &[(&str, &str)]) -> TestSpan {
        TestSpan {
            trace_id: "1".repeat(32),
            span_id: "2".repeat(16),
            parent_id: String::new(),
            trace_state: String::new(),
            name: name.to_string(),
            kind: kind.to_string(),
            start: 1,
            end: 2,
            error: false,
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            resource: [("service.name", "shop"), ("process.pid", "7"), ("telemetry.distro.name", "zerotrace")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            links: Vec::new(),
        }
    }

    #[test]
    fn conforming_spans_pass() {
        assert_span_conforms(&span("SERVER", "GET /item/{id}", &[("http.request.method", "GET"), ("url.template", "/item/{id}"), ("url.path", "/item/1")]));
        assert_span_conforms(&span(
            "PRODUCER",
            "publish orders",
            &[("messaging.system", "rabbitmq"), ("messaging.operation.type", "send"), ("messaging.operation.name", "publish"), ("messaging.destination.name", "orders")],
        ));
        assert_span_conforms(&span("CLIENT", "SELECT users", &[("db.system.name", "postgresql"), ("db.operation.name", "SELECT"), ("db.collection.name", "users")]));
    }

    #[test]
    #[should_panic(expected = "span attribute `http.method`")]
    fn an_old_http_key_fails() {
        assert_span_conforms(&span("SERVER", "GET", &[("http.request.method", "GET"), ("http.method", "GET")]));
    }

    #[test]
    #[should_panic(expected = "messaging spans are named")]
    fn a_messaging_span_named_by_its_type_fails() {
        assert_span_conforms(&span(
            "PRODUCER",
            "send orders",
            &[("messaging.system", "rabbitmq"), ("messaging.operation.type", "send"), ("messaging.operation.name", "publish"), ("messaging.destination.name", "orders")],
        ));
    }

    #[test]
    #[should_panic(expected = "does not fit its operation type")]
    fn a_send_that_is_not_a_producer_fails() {
        assert_span_conforms(&span(
            "CONSUMER",
            "publish orders",
            &[("messaging.system", "rabbitmq"), ("messaging.operation.type", "send"), ("messaging.operation.name", "publish"), ("messaging.destination.name", "orders")],
        ));
    }
}
