//! What parsers emit: protocol messages with their timing, how they pair, the trace context
//! they carry, and their fields by domain (HTTP, database, messaging). The span stage turns a
//! request and its response, or a one-way message alone, into a span; it knows domains, not
//! protocols, so a new protocol of a known domain needs no span code.

use smol_str::SmolStr;

pub use super::sql::Dialect;
use crate::spans::record::SpanKind;

/// When a message's bytes moved: entry and exit of the syscall that carried its first byte
/// and of the one that carried its last (CLOCK_MONOTONIC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub first_enter_ns: u64,
    pub first_exit_ns: u64,
    pub last_enter_ns: u64,
    pub last_exit_ns: u64,
}

impl Timing {
    /// A message whose first and last bytes came in the same syscall.
    pub fn single(enter_ns: u64, exit_ns: u64) -> Self {
        Self { first_enter_ns: enter_ns, first_exit_ns: exit_ns, last_enter_ns: enter_ns, last_exit_ns: exit_ns }
    }
}

/// How a response finds its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Correlation {
    /// Answers come in the order of the requests (HTTP/1, PostgreSQL, MySQL, Redis, memcached).
    InOrder,
    /// By a key both carry: an HTTP/2 stream id, a Kafka correlation id, a DNS transaction id.
    Key(u64),
}

/// W3C trace context a request carries (HTTP headers, gRPC metadata, message headers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Client to server; answered later by the `Response` with the same correlation.
    Request(Request),
    Response(Response),
    /// Client to server, never answered (a publish, memcached `noreply`): a span of its own.
    OneWay(Request),
    /// Server to client without a request (a delivery to a subscriber): a span of its own on
    /// the receiving side.
    Push(Request),
    /// A consumer went back to its broker: it settled what it was delivered (an AMQP ack,
    /// reject or nack) or asked for its next message (a blocking pop, a stream read, a
    /// `Basic.Get`). The deliveries its thread read on this connection are done with
    /// (`link::consuming`). No span.
    Settle(Timing),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub correlation: Correlation,
    pub timing: Timing,
    pub context: TraceContext,
    /// The span's kind when the traced process is the client (or the receiver of a push):
    /// CLIENT for calls, PRODUCER for sends, CONSUMER for deliveries. The server's side of a
    /// call is always SERVER.
    pub client_kind: SpanKind,
    pub fields: RequestFields,
    /// Who wrote the request on the client's side, as far as the bytes tell.
    pub writer: Writer,
}

/// Whether the task that wrote a request is the one that made it: the thread rule and the
/// runtime linkers take the writer as the caller only when it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Writer {
    /// The caller writes its own requests (every protocol but the cases below).
    #[default]
    Caller,
    /// The client library writes every thread's calls on whichever thread holds its
    /// transport at the time (grpc-core, known by its `user-agent`).
    SharedTransport,
    /// A multiplexed connection whose request does not say which library wrote it (its
    /// header block named table entries the agent never saw).
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub correlation: Correlation,
    pub timing: Timing,
    /// The server reads nothing more on this connection (HTTP `Connection: close`): what was
    /// sent after the request this answers was never handled.
    pub closes_connection: bool,
    pub fields: ResponseFields,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestFields {
    Http(HttpRequest),
    Db(DbRequest),
    Rpc(RpcRequest),
    Messaging(MessagingRequest),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseFields {
    Http(HttpResponse),
    Db(DbResponse),
    /// An RPC's status: the system's own code (gRPC's), and whether it is an error.
    Rpc {
        status_code: Option<u32>,
        error: Option<String>,
    },
    /// An acknowledgement or an error from a broker, and the offset (Kafka) or id (a Redis
    /// stream entry's) it gave the message.
    Messaging {
        error: Option<String>,
        offset: Option<i64>,
        /// The id the broker gave the message (a Redis stream entry's).
        message_id: Option<String>,
    },
    /// The exchange failed below its domain (an HTTP/2 stream reset, a GOAWAY): `error` is
    /// the `error.type`, whatever the request's domain.
    Failed {
        error: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// None when it cannot be known (an HTTP/2 header naming an HPACK entry the agent never
    /// saw): never guessed.
    pub method: Option<SmolStr>,
    /// The request target as sent (origin-form path and query, or absolute-form); None as
    /// for `method`.
    pub target: Option<SmolStr>,
    /// `network.protocol.version`: "1.0", "1.1", "2".
    pub version: &'static str,
    pub host: Option<SmolStr>,
    pub user_agent: Option<SmolStr>,
    /// False when the request was larger than what was captured: only part of it is known.
    pub complete: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// None when it could not be known (an HTTP/2 field naming an unknown table entry).
    pub status: Option<u16>,
}

/// The command a database request carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbCommand {
    /// SQL text as sent (masked when the span is built, unless the user opts in).
    Sql(String, Dialect),
    /// A named command without the text: Redis `GET`, Memcached `set`, PostgreSQL `Startup`.
    /// Keys and values are never kept.
    Named(String),
    /// A command whose name the protocol does not define: the name is not exported (it may
    /// be anything the client sent); the span is named after the system.
    Unrecognised,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbRequest {
    /// `db.system.name`.
    pub system: &'static str,
    pub command: DbCommand,
    /// The database (`db.namespace`) in use when the request was sent, if known.
    pub namespace: Option<String>,
    /// A prepared statement's execution (the text came from an earlier Prepare).
    pub prepared: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DbOutcome {
    #[default]
    Ok,
    /// `code`: SQLSTATE, MySQL error number, Redis error prefix, Memcached error word.
    Error { code: String },
    /// The server skipped it (PostgreSQL after an error earlier in the same pipeline).
    NotExecuted,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbResponse {
    pub outcome: DbOutcome,
    /// Rows returned or affected, when the server says.
    pub rows: Option<u64>,
}

/// A remote procedure call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpcRequest {
    /// `rpc.system`.
    pub system: &'static str,
    pub service: Option<String>,
    pub method: Option<String>,
}

/// A message sent to or delivered from a destination. The body is never kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessagingRequest {
    /// `messaging.system`.
    pub system: &'static str,
    pub destination: Option<String>,
    /// The protocol's operation (`publish`, `deliver`).
    pub operation: String,
    pub message_id: Option<String>,
    /// The id of the conversation it belongs to (AMQP's correlation-id; Celery puts its task
    /// id there): `messaging.message.conversation_id`.
    pub conversation_id: Option<String>,
    pub body_size: Option<u64>,
    /// The message's identity where the protocol can tell one message from another (NATS: a
    /// hash of its subject and whole payload): the same on its send and on every delivery, so
    /// a consumer is linked to its producer. Never exported.
    pub identity: Option<u64>,
    /// AMQP's routing key (`messaging.rabbitmq.destination.routing_key`).
    pub routing_key: Option<String>,
    /// Kafka's partition (`messaging.destination.partition.id`).
    pub partition: Option<u32>,
    /// Kafka's offset of a fetched record (`messaging.kafka.offset`).
    pub offset: Option<i64>,
    /// The broker says it delivered this message before (AMQP's `redelivered`: rejected,
    /// or unacknowledged when its consumer went away).
    pub redelivered: bool,
}

impl Message {
    /// A request answered in order, without trace context (the database protocols).
    pub fn in_order_call(timing: Timing, fields: RequestFields) -> Self {
        Message::Request(Request { correlation: Correlation::InOrder, timing, context: TraceContext::default(), client_kind: SpanKind::Client, fields, writer: Writer::Caller })
    }

    /// The answer to the oldest request waiting.
    pub fn in_order_answer(timing: Timing, fields: ResponseFields) -> Self {
        Message::Response(Response { correlation: Correlation::InOrder, timing, closes_connection: false, fields })
    }

    /// A database request answered in order.
    pub fn db_call(timing: Timing, request: DbRequest) -> Self {
        Self::in_order_call(timing, RequestFields::Db(request))
    }

    /// A database answer, in order.
    pub fn db_answer(enter_ns: u64, exit_ns: u64, outcome: DbOutcome, rows: Option<u64>) -> Self {
        Self::in_order_answer(Timing::single(enter_ns, exit_ns), ResponseFields::Db(DbResponse { outcome, rows }))
    }
}

impl Message {
    pub fn timing(&self) -> &Timing {
        match self {
            Message::Request(r) | Message::OneWay(r) | Message::Push(r) => &r.timing,
            Message::Response(r) => &r.timing,
            Message::Settle(t) => t,
        }
    }

    /// A database request (answered or one-way).
    pub fn db_request(&self) -> Option<&DbRequest> {
        match self {
            Message::Request(Request { fields: RequestFields::Db(r), .. }) | Message::OneWay(Request { fields: RequestFields::Db(r), .. }) => Some(r),
            _ => None,
        }
    }

    pub fn db_response(&self) -> Option<&DbResponse> {
        match self {
            Message::Response(Response { fields: ResponseFields::Db(r), .. }) => Some(r),
            _ => None,
        }
    }
}
