//! Messaging spans with the messaging semantic conventions: PRODUCER for a send, CONSUMER for
//! a delivery, named `{operation} {destination}` with the system's own operation name
//! (`publish orders`, `deliver orders`). Bodies are never kept.

use super::record::{Domain, MessagingFields, SpanKind, SpanRecord, Status};
use super::{ends, record};
use crate::conn::ConnInfo;
use crate::protocols::message::MessagingRequest;

/// `offset`, `message_id`: what the broker's answer gave the message (a Kafka send's offset,
/// a Redis stream entry's id).
pub(super) fn span(conn: &ConnInfo, kind: SpanKind, req: &MessagingRequest, error: Option<String>, offset: Option<i64>, message_id: Option<String>) -> SpanRecord {
    let operation_type = match kind {
        SpanKind::Producer => "send",
        SpanKind::Consumer => "process",
        // A call to the broker (a fetch, a get) or the broker's own side of one.
        SpanKind::Client | SpanKind::Server => "receive",
    };
    // The conventions' span name: `{messaging.operation.name} {destination}`, the system's own
    // name of the operation (`publish orders`, `deliver orders`, `lpush jobs`).
    let verb = req.operation.as_str();
    let name = match &req.destination {
        Some(d) => format!("{verb} {d}"),
        None => verb.to_string(),
    };
    let net = ends(conn, kind);
    let fields = MessagingFields {
        system: req.system,
        destination: req.destination.clone(),
        operation_type,
        operation_name: Some(req.operation.clone()),
        message_id: req.message_id.clone().or(message_id),
        conversation_id: req.conversation_id.clone(),
        body_size: req.body_size,
        routing_key: req.routing_key.clone(),
        partition: req.partition,
        offset: req.offset.or(offset),
        redelivered: req.redelivered,
    };
    let mut record = record(name, kind, net, Domain::Messaging(fields));
    if let Some(e) = error {
        record.error_type = Some(e);
        record.status = Status::Error { message: None };
    }
    record
}
