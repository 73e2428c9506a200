//! RPC spans with the RPC semantic conventions: named `service/method`, status from the
//! system's own code.

use super::record::{Domain, RpcFields, SpanKind, SpanRecord, Status};
use super::{ends, record};
use crate::conn::ConnInfo;
use crate::protocols::message::RpcRequest;

pub(super) fn span(conn: &ConnInfo, kind: SpanKind, req: &RpcRequest, status_code: Option<u32>, error: Option<String>) -> SpanRecord {
    let name = match (&req.service, &req.method) {
        (Some(s), Some(m)) => format!("{s}/{m}"),
        _ => req.system.to_string(),
    };
    let net = ends(conn, kind);
    let fields = RpcFields { system: req.system, service: req.service.clone(), method: req.method.clone(), grpc_status_code: status_code };
    let mut record = record(name, kind, net, Domain::Rpc(fields));
    if let Some(e) = error {
        record.error_type = Some(e);
        record.status = Status::Error { message: None };
    }
    record
}
