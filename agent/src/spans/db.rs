//! Database and cache spans with the stable database semantic conventions: operation and
//! collection from the statement, query text with literals masked unless the user opts in,
//! status from SQLSTATE / error numbers / error prefixes.

use super::record::{DbFields, Domain, SpanRecord, Status};
use super::{Clock, assemble, network, no_answer};
use crate::conn::{ConnInfo, Role};
use crate::protocols::db::{DbCommand, DbOutcome, DbRequest, DbResponse, DbSystem};
use crate::protocols::sql::{Dialect, mask_literals, summarize};

#[derive(Clone, Copy, Debug, Default)]
pub struct DbSpanOptions {
    /// Put SQL on spans as sent, literals included (opt-in: they can hold personal data).
    pub keep_literals: bool,
}

/// Builds the span for one statement or command (ids are filled in by the linker later).
/// None for a statement the server never ran.
pub fn db_span(conn: &ConnInfo, req: &DbRequest, resp: Option<&DbResponse>, options: DbSpanOptions, clock: &Clock) -> Option<SpanRecord> {
    if resp.is_some_and(|r| r.outcome == DbOutcome::NotExecuted) {
        return None;
    }
    let mut fields = DbFields { system: req.system.name(), namespace: req.namespace.clone(), ..Default::default() };
    match &req.command {
        DbCommand::Sql(sql) => {
            let dialect = if matches!(req.system, DbSystem::Mysql | DbSystem::MariaDb) { Dialect::Mysql } else { Dialect::Postgres };
            let text = if options.keep_literals { sql.chars().take(2048).collect() } else { mask_literals(sql, dialect) };
            let summary = summarize(&text);
            fields.query_text = Some(text);
            fields.operation = summary.operation;
            fields.collection = summary.collection;
        }
        DbCommand::Named(name) => fields.operation = Some(name.clone()),
        DbCommand::Unrecognised => {}
    }
    let name = match (&fields.operation, &fields.collection) {
        (Some(op), Some(c)) => format!("{op} {c}"),
        (Some(op), None) => op.clone(),
        _ => fields.system.to_string(),
    };
    let server = conn.role == Role::Server;
    let mut net = network(conn);
    if server {
        net.client_address = conn.remote_ip.clone();
        net.server_port = conn.local.map(|l| l.port());
    } else if let (Some(ip), Some(remote)) = (&conn.remote_ip, conn.remote) {
        net.server_address = Some(ip.clone());
        net.server_port = Some(remote.port());
    }
    let mut error = None;
    if let Some(r) = resp {
        fields.returned_rows = r.rows;
        if let DbOutcome::Error { code } = &r.outcome {
            fields.status_code = Some(code.clone());
            error = Some(code.clone());
        }
    }
    let answer = resp.map(|r| (r.end_enter_ns, r.end_exit_ns));
    let mut record = assemble(name, server, (req.start_enter_ns, req.start_exit_ns, req.end_exit_ns), answer, net, Domain::Db(fields), clock);
    match (resp, error) {
        (None, _) => no_answer(&mut record),
        (Some(_), Some(code)) => {
            record.error_type = Some(code);
            record.status = Status::Error { message: None };
        }
        (Some(_), None) => {}
    }
    Some(record)
}
