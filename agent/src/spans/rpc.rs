//! RPC spans with the RPC semantic conventions: named `service/method`, status from the
//! system's own code.

use super::record::{Domain, RpcFields, SpanKind, SpanRecord, Status};
use super::{ends, record};
use crate::conn::ConnInfo;
use crate::protocols::message::RpcRequest;

/// gRPC codes a server's span counts as errors (the gRPC semantic conventions): the others
/// (NOT_FOUND, INVALID_ARGUMENT…) are the caller's mistakes, errors only on the client's side.
const GRPC_SERVER_ERRORS: &[u32] = &[2, 4, 12, 13, 14, 15];

/// `answered`: a response came (without one, the caller marks the span).
pub(super) fn span(conn: &ConnInfo, kind: SpanKind, req: &RpcRequest, status_code: Option<u32>, error: Option<String>, answered: bool) -> SpanRecord {
    let name = match (&req.service, &req.method) {
        (Some(s), Some(m)) => format!("{s}/{m}"),
        _ => req.system.to_string(),
    };
    let net = ends(conn, kind);
    let fields = RpcFields { system: req.system, service: req.service.clone(), method: req.method.clone(), grpc_status_code: status_code };
    let mut record = record(name, kind, net, Domain::Rpc(fields));
    let status_error = match (req.system, status_code) {
        ("grpc", Some(code)) if code != 0 && (kind != SpanKind::Server || GRPC_SERVER_ERRORS.contains(&code)) => Some(code.to_string()),
        _ => None,
    };
    if let Some(e) = error.or(status_error).filter(|_| answered) {
        record.error_type = Some(e);
        record.status = Status::Error { message: None };
    }
    record
}
