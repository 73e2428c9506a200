//! Ring-buffer records to typed events (payload borrowed, nothing copied).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use zerotrace_abi::{SockAddr, decode, direction, header_flags, role};

use crate::conn::Role;
use crate::protocols::parser::LibraryField;

/// What the thread was running when it made the call (`zerotrace_abi::cause`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Cause {
    /// No runtime probe on this thread: it serves one request at a time, as far as we know.
    #[default]
    Thread,
    /// An event-loop thread between socket callbacks (a timer, an immediate, a thread-pool
    /// completion): nothing ties the call to a request.
    Outside,
    /// Inside libuv's callback of socket `fd`; `seq` numbers the thread's callbacks.
    Callback { fd: u32, seq: u32 },
    /// Inside a step of the asyncio task at this address.
    Task(u64),
}

impl Cause {
    pub fn from_abi(kind: u32, id: u64) -> Self {
        use zerotrace_abi::cause;
        match kind {
            cause::OUTSIDE => Cause::Outside,
            cause::LIBUV_CALLBACK => Cause::Callback { fd: id as u32, seq: (id >> 32) as u32 },
            cause::ASYNCIO_TASK => Cause::Task(id),
            // cause::NONE, and kinds of a newer probe object.
            _ => Cause::Thread,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `listen_fd`: for accepted connections, the listening socket (whose address is our end).
    ConnOpen {
        tgid: u32,
        tid: u32,
        fd: u32,
        role: Role,
        listen_fd: Option<u32>,
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
        ts_ns: u64,
        comm: String,
        cause: Cause,
        /// The connection's generation in the probes' fd state (`FdState::generation`).
        generation: u8,
    },
    Data {
        tgid: u32,
        tid: u32,
        fd: u32,
        ingress: bool,
        ts_enter_ns: u64,
        ts_exit_ns: u64,
        total: u64,
        payload: &'a [u8],
        tls: bool,
        cause: Cause,
    },
    /// Bytes a traced thread read from a pipe (their first `PIPE_CAPTURE`).
    PipeRead {
        tgid: u32,
        tid: u32,
        fd: u32,
        ts_ns: u64,
        payload: &'a [u8],
    },
    Close {
        tgid: u32,
        tid: u32,
        fd: u32,
        ts_ns: u64,
    },
    /// `child` (a process, or a new thread of `parent_tgid`) holds a copy of socket `fd`.
    Inherit {
        parent_tgid: u32,
        child: u32,
        fd: u32,
    },
    /// A traced process forked `pid` (perhaps a thread), or `pid` ran exec (`parent_tgid` 0).
    /// `traced` is false for an exec reported only for discovery by selectors.
    Process {
        pid: u32,
        parent_tgid: u32,
        traced: bool,
    },
    /// Thread `tid` sent its last TLS write's ciphertext on `fd` (memory BIO).
    TlsSocket {
        tgid: u32,
        tid: u32,
        fd: u32,
    },
    /// An asyncio task `child` was created while the thread ran `parent`.
    UnitSpawn {
        tgid: u32,
        parent: Cause,
        child: u64,
        ts_ns: u64,
    },
    /// Traced process `tgid` ended: by itself with an exit code, or killed (`code` None).
    Exit {
        tgid: u32,
        ts_ns: u64,
        code: Option<i32>,
    },
    /// Stream `stream`'s request will be written for `caller` (a record tid) running `cause`.
    StreamCaller {
        tgid: u32,
        stream: u32,
        caller: u32,
        cause: Cause,
        ts_ns: u64,
    },
    /// One field of stream `stream`'s request as the process's HTTP/2 library saw it, on
    /// thread `tid` running `cause` (see `zerotrace_abi::HeaderFieldEvent`).
    HeaderField {
        tgid: u32,
        tid: u32,
        stream: u32,
        cause: Cause,
        ts_ns: u64,
        /// Decoded from the peer (a server's library), else handed over to send (a client's).
        decoded: bool,
        field: LibraryField,
    },
    /// Thread `tid`'s list of fields for `stream` (decoded, or handed over) is whole.
    HeaderFieldsEnd {
        tgid: u32,
        tid: u32,
        stream: u32,
        decoded: bool,
    },
    /// Thread `tid` put `item` on a watched queue while running `cause`, or (`take`) took it.
    HandOff {
        tgid: u32,
        tid: u32,
        take: bool,
        item: u64,
        cause: Cause,
    },
}

pub fn socket_addr(a: &SockAddr) -> Option<SocketAddr> {
    let ip = match a.family {
        2 => IpAddr::V4(Ipv4Addr::new(a.addr[0], a.addr[1], a.addr[2], a.addr[3])),
        10 => IpAddr::V6(Ipv6Addr::from(a.addr)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, a.port))
}

fn data<'a>(h: &zerotrace_abi::DataHeader, payload: &'a [u8]) -> Event<'a> {
    if h.flags & zerotrace_abi::data_flags::PIPE != 0 {
        return Event::PipeRead { tgid: h.header.tgid, tid: h.tid, fd: h.fd, ts_ns: h.ts_exit_ns, payload };
    }
    Event::Data {
        tgid: h.header.tgid,
        tid: h.tid,
        fd: h.fd,
        ingress: h.direction == direction::INGRESS,
        ts_enter_ns: h.ts_enter_ns,
        ts_exit_ns: h.ts_exit_ns,
        total: h.total_len,
        payload,
        tls: h.flags & zerotrace_abi::data_flags::TLS != 0,
        cause: Cause::from_abi(h.cause_kind, h.cause_id),
    }
}

pub fn from_record(bytes: &[u8]) -> Result<Event<'_>, decode::DecodeError> {
    Ok(match decode::record(bytes)? {
        decode::Record::ConnOpen(e) => Event::ConnOpen {
            tgid: e.header.tgid,
            tid: e.tid,
            fd: e.fd,
            role: match e.role {
                role::SERVER => Role::Server,
                role::CLIENT => Role::Client,
                _ => Role::Unknown,
            },
            listen_fd: (e.listen_fd != zerotrace_abi::FD_UNKNOWN).then_some(e.listen_fd),
            local: socket_addr(&e.local).filter(|a| a.port() != 0),
            remote: socket_addr(&e.remote),
            ts_ns: e.ts_ns,
            generation: e.generation as u8,
            comm: String::from_utf8_lossy(e.comm.split(|b| *b == 0).next().unwrap_or(&[])).into_owned(),
            cause: Cause::from_abi(e.cause_kind, e.cause_id),
        },
        decode::Record::Data(h, payload) => data(&h, payload),
        // No probe sends datagrams yet; their peer is for the datagram protocols (DNS) to come.
        decode::Record::Datagram(h, _peer, payload) => data(&h, payload),
        decode::Record::Close(c) => Event::Close { tgid: c.header.tgid, tid: c.tid, fd: c.fd, ts_ns: c.ts_ns },
        decode::Record::Inherit(i) => Event::Inherit { parent_tgid: i.header.tgid, child: i.child, fd: i.fd },
        decode::Record::Process(p) => Event::Process { pid: p.header.tgid, parent_tgid: p.parent_tgid, traced: p.traced != 0 },
        decode::Record::TlsSocket(t) => Event::TlsSocket { tgid: t.header.tgid, tid: t.tid, fd: t.fd },
        decode::Record::HandOff(h) => Event::HandOff { tgid: h.header.tgid, tid: h.tid, take: h.take != 0, item: h.item, cause: Cause::from_abi(h.cause_kind, h.cause_id) },
        decode::Record::StreamCaller(s) => {
            Event::StreamCaller { tgid: s.header.tgid, stream: s.stream, caller: s.caller, cause: Cause::from_abi(s.cause_kind, s.cause_id), ts_ns: s.ts_ns }
        }
        decode::Record::HeaderField(h) if h.flags & header_flags::END != 0 => {
            Event::HeaderFieldsEnd { tgid: h.header.tgid, tid: h.tid, stream: h.stream, decoded: h.flags & header_flags::DECODED != 0 }
        }
        decode::Record::HeaderField(h) => Event::HeaderField {
            tgid: h.header.tgid,
            tid: h.tid,
            stream: h.stream,
            cause: Cause::from_abi(h.cause_kind, h.cause_id),
            ts_ns: h.ts_ns,
            decoded: h.flags & header_flags::DECODED != 0,
            field: library_field(&h),
        },
        decode::Record::Exit(e) => Event::Exit { tgid: e.header.tgid, ts_ns: e.ts_ns, code: (e.voluntary != 0).then_some(e.code) },
        decode::Record::UnitSpawn(u) => Event::UnitSpawn { tgid: u.header.tgid, parent: Cause::from_abi(u.parent_kind, u.parent_id), child: u.child_id, ts_ns: u.ts_ns },
    })
}

/// A field's name and value as copied: a name longer than the record holds is left empty
/// (names nothing, matches anything), a value cut or unreadable is None.
fn library_field(h: &zerotrace_abi::HeaderFieldEvent) -> LibraryField {
    let name = h.name.get(..usize::from(h.name_len)).map(<[u8]>::to_vec).unwrap_or_default();
    let value = h.value.get(..usize::from(h.value_len)).map(<[u8]>::to_vec);
    LibraryField { name, value }
}
