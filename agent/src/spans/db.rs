//! Database and cache spans with the stable database semantic conventions: operation and
//! collection from the statement, query text with literals masked unless the user opts in,
//! status from SQLSTATE / error numbers / error prefixes.

use smol_str::{SmolStr, format_smolstr};

use super::record::{DbFields, Domain, SpanKind, SpanRecord, Status};
use super::{ends, record};
use crate::conn::ConnInfo;
use crate::protocols::message::{DbCommand, DbOutcome, DbRequest, DbResponse};
use crate::protocols::sql::{mask_literals, summarize};

#[derive(Clone, Copy, Debug, Default)]
pub struct DbSpanOptions {
    /// Put SQL on spans as sent, literals included (opt-in: they can hold personal data).
    pub keep_literals: bool,
}

/// The span of one statement or command. None for a statement the server never ran.
pub(super) fn span(conn: &ConnInfo, kind: SpanKind, req: &DbRequest, resp: Option<&DbResponse>, options: DbSpanOptions) -> Option<SpanRecord> {
    if resp.is_some_and(|r| r.outcome == DbOutcome::NotExecuted) {
        return None;
    }
    let mut fields = DbFields { system: req.system, namespace: req.namespace.as_deref().map(SmolStr::new), ..Default::default() };
    match &req.command {
        DbCommand::Sql(sql, dialect) => {
            let text = if options.keep_literals { sql.chars().take(2048).collect() } else { mask_literals(sql, *dialect) };
            let summary = summarize(&text);
            fields.query_text = Some(text);
            fields.operation = summary.operation;
            fields.collection = summary.collection;
        }
        DbCommand::Named(name) => fields.operation = Some(SmolStr::new(name)),
        DbCommand::Unrecognised => {}
    }
    let name = match (&fields.operation, &fields.collection) {
        (Some(op), Some(c)) => format_smolstr!("{op} {c}"),
        (Some(op), None) => op.clone(),
        _ => SmolStr::new_static(fields.system),
    };
    let net = ends(conn, kind);
    let mut error = None;
    if let Some(r) = resp {
        fields.returned_rows = r.rows;
        if let DbOutcome::Error { code } = &r.outcome {
            fields.status_code = Some(SmolStr::new(code));
            error = Some(code.clone());
        }
    }
    let mut record = record(name, kind, net, Domain::Db(fields));
    if let Some(code) = error {
        record.error_type = Some(code);
        record.status = Status::Error { message: None };
    }
    Some(record)
}
