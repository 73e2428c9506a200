//! What every database and cache parser produces: one request (a statement or command) and,
//! later and in the same order, its outcome. The span stage turns a pair into a DB span.

use super::http1::Segment;

/// A database or cache protocol parser for both directions of one connection.
pub trait DbCodec {
    fn system(&self) -> DbSystem;
    /// Parses what one syscall moved; appends requests and responses in wire order.
    fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<DbMessage>);
    /// The connection closed: answers whose end was cut off end at the last bytes seen.
    fn close(&mut self, out: &mut Vec<DbMessage>);
    /// The client's side lost the framing (not this protocol, or garbage).
    fn is_desynced(&self) -> bool;
    /// The server answered in another protocol: the requests were not this protocol's.
    fn answered_in_another_protocol(&self) -> bool {
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbSystem {
    Postgres,
    Mysql,
    /// MySQL's protocol, spoken by a server whose greeting says MariaDB.
    MariaDb,
    Redis,
    Memcached,
}

impl DbSystem {
    /// `db.system.name` values from the semantic conventions.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Mysql => "mysql",
            Self::MariaDb => "mariadb",
            Self::Redis => "redis",
            Self::Memcached => "memcached",
        }
    }
}

/// The command a request carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbCommand {
    /// SQL text as sent (masked later, when the span is built, unless the user opts in).
    Sql(String),
    /// A named command without the text: Redis `GET`, Memcached `set`, PostgreSQL `Startup`.
    /// Keys and values are never kept.
    Named(String),
    /// A command whose name the protocol does not define: the name is not exported (it may
    /// be anything the client sent); the span is named after the system.
    Unrecognised,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbRequest {
    pub system: DbSystem,
    pub command: DbCommand,
    /// The database (`db.namespace`) in use when the request was sent, if known.
    pub namespace: Option<String>,
    /// A prepared statement's execution (the text came from an earlier Prepare).
    pub prepared: bool,
    pub start_enter_ns: u64,
    pub start_exit_ns: u64,
    pub end_exit_ns: u64,
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
    pub end_enter_ns: u64,
    pub end_exit_ns: u64,
}

/// Output of a database codec, in wire order: responses answer requests first-in first-out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbMessage {
    Request(DbRequest),
    Response(DbResponse),
}
