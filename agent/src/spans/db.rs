//! Database and cache spans with the stable database semantic conventions: operation and
//! collection from the statement, query text with literals masked unless the user opts in,
//! status from SQLSTATE / error numbers / error prefixes.

use opentelemetry_proto::tonic::trace::v1::{Span, Status, status::StatusCode};

use super::{Clock, assemble, kv_int, kv_str, no_answer, peer_attrs};
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
pub fn db_span(conn: &ConnInfo, req: &DbRequest, resp: Option<&DbResponse>, options: DbSpanOptions, clock: &Clock) -> Option<Span> {
    if resp.is_some_and(|r| r.outcome == DbOutcome::NotExecuted) {
        return None;
    }
    let mut attrs = Vec::with_capacity(10);
    attrs.push(kv_str("db.system.name", req.system.name()));
    if let Some(ns) = &req.namespace {
        attrs.push(kv_str("db.namespace", ns.clone()));
    }
    let (operation, collection) = match &req.command {
        DbCommand::Sql(sql) => {
            let dialect = if matches!(req.system, DbSystem::Mysql | DbSystem::MariaDb) { Dialect::Mysql } else { Dialect::Postgres };
            let text = if options.keep_literals { sql.chars().take(2048).collect() } else { mask_literals(sql, dialect) };
            let summary = summarize(&text);
            attrs.push(kv_str("db.query.text", text));
            (summary.operation, summary.collection)
        }
        DbCommand::Named(name) => (Some(name.clone()), None),
        DbCommand::Unrecognised => (None, None),
    };
    if let Some(op) = &operation {
        attrs.push(kv_str("db.operation.name", op.clone()));
    }
    if let Some(c) = &collection {
        attrs.push(kv_str("db.collection.name", c.clone()));
    }
    let name = match (&operation, &collection) {
        (Some(op), Some(c)) => format!("{op} {c}"),
        (Some(op), None) => op.clone(),
        _ => req.system.name().to_string(),
    };
    let server = conn.role == Role::Server;
    if server {
        if let Some(ip) = &conn.remote_ip {
            attrs.push(kv_str("client.address", ip.clone()));
        }
        if let Some(local) = conn.local {
            attrs.push(kv_int("server.port", local.port() as i64));
        }
    } else if let (Some(ip), Some(remote)) = (&conn.remote_ip, conn.remote) {
        attrs.push(kv_str("server.address", ip.clone()));
        attrs.push(kv_int("server.port", remote.port() as i64));
    }
    peer_attrs(conn, &mut attrs);
    let mut status = Status::default();
    match resp {
        Some(r) => {
            if let Some(rows) = r.rows {
                attrs.push(kv_int("db.response.returned_rows", rows.min(i64::MAX as u64) as i64));
            }
            if let DbOutcome::Error { code } = &r.outcome {
                attrs.push(kv_str("db.response.status_code", code.clone()));
                attrs.push(kv_str("error.type", code.clone()));
                status.code = StatusCode::Error as i32;
            }
        }
        None => status = no_answer(&mut attrs),
    }
    let answer = resp.map(|r| (r.end_enter_ns, r.end_exit_ns));
    Some(assemble(name, server, (req.start_enter_ns, req.start_exit_ns, req.end_exit_ns), answer, attrs, status, clock))
}
