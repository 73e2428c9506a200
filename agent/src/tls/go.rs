//! Where to probe a Go executable's `crypto/tls` (and net/http's client hand-over, see the
//! probes' `go_tls.rs`): the entry probes on each function's stack-check `jbe`, the read's
//! result on each of its `ret` instructions, and the fd offsets in the probes' cookie.

use std::collections::HashMap;
use zerotrace_abi::names::program;

use anyhow::{Context, Result, bail};
use zerotrace_abi::go_cookie;
use zerotrace_symbols::elf::ElfSymbols;
use zerotrace_symbols::go::{self, TlsConnOffsets};

use super::{Plan, Uprobe};

const READ: &str = "crypto/tls.(*Conn).Read";
const WRITE: &str = "crypto/tls.(*Conn).Write";
const ROUND_TRIP: &str = "net/http.(*persistConn).roundTrip";
const REQUEST_WRITE: &str = "net/http.(*Request).write";
const MEMMOVE: &str = "runtime.memmove";
const GRPC_PUT: &str = "google.golang.org/grpc/internal/transport.(*controlBuffer).executeAndPut";
const GRPC_HEADER: &str = "google.golang.org/grpc/internal/transport.(*loopyWriter).headerHandler";
/// The itab of `*headerFrame` as a `cbItem`: the items `GRPC_PUT` follows.
const GRPC_HEADER_ITAB: &str = "go.itab.*google.golang.org/grpc/internal/transport.headerFrame,google.golang.org/grpc/internal/transport.cbItem";

/// The probes of a Go executable that uses crypto/tls; `Ok(None)` for anything else (not Go,
/// or Go without TLS). An error says why a Go TLS program cannot be probed.
pub(super) fn plan(symbols: &ElfSymbols) -> Result<Option<Plan>> {
    let Some(binary) = go::read(symbols, &[READ, WRITE, ROUND_TRIP, REQUEST_WRITE, MEMMOVE, GRPC_PUT, GRPC_HEADER])? else { return Ok(None) };
    let (Some(&(read, read_end)), Some(&(write, _))) = (binary.functions.get(READ), binary.functions.get(WRITE)) else {
        return Ok(None);
    };
    if !register_abi(&binary.version) {
        bail!("built with {}: the Go TLS probes read Go's register ABI (Go 1.17 and later)", binary.version);
    }
    let offsets = go::tls_conn_offsets(symbols);
    let cookie = cookie(&offsets)?;
    let mut plan = Plan::default();
    plan.uprobes.push(Uprobe { program: program::GO_TLS_WRITE, offset: entry(symbols, WRITE, write)?, cookie: Some(cookie) });
    plan.uprobes.push(Uprobe { program: program::GO_TLS_READ, offset: entry(symbols, READ, read)?, cookie: Some(cookie) });
    let read_how = read_result(symbols, &binary.functions, read, read_end, &mut plan)?;
    plan.described.push(format!("{}: crypto/tls Conn.Write, Conn.Read {read_how}", binary.version));
    plan.described.push(format!("fd offsets from {}", if offsets.from_dwarf { "DWARF" } else { "the built-in table" }));
    // The client hand-over is optional: without it Go HTTPS calls are still traced, only not
    // linked under the request their caller serves.
    let hand_over = [(ROUND_TRIP, program::GO_HTTP_ROUND_TRIP), (REQUEST_WRITE, program::GO_HTTP_REQUEST_WRITE)]
        .map(|(function, program)| binary.functions.get(function).and_then(|&(start, _)| entry(symbols, function, start).ok()).map(|offset| (program, offset)));
    if let [Some((trip, trip_at)), Some((write, write_at))] = hand_over {
        plan.uprobes.push(Uprobe { program: trip, offset: trip_at, cookie: None });
        plan.uprobes.push(Uprobe { program: write, offset: write_at, cookie: None });
        plan.described.push("net/http client requests followed to their writeLoop".to_string());
    }
    grpc_hand_over(symbols, &binary.functions, &mut plan);
    Ok(Some(plan))
}

/// grpc-go's calls followed from the goroutine that makes them to the loopy goroutine that
/// writes them (see the probes' `go_tls.rs`). Optional, and only where the `*headerFrame` itab
/// has a fixed address: a Go executable that is not position-independent (the default), with
/// its symbol table.
fn grpc_hand_over(symbols: &ElfSymbols, functions: &HashMap<String, (u64, u64)>, plan: &mut Plan) {
    let fixed = symbols.fixed_addresses();
    let Some(itab) = symbols.data_address(GRPC_HEADER_ITAB) else { return };
    let probes = [(GRPC_PUT, program::GO_GRPC_PUT), (GRPC_HEADER, program::GO_GRPC_HEADER)]
        .map(|(function, program)| functions.get(function).and_then(|&(start, _)| entry(symbols, function, start).ok()).map(|offset| (program, offset)));
    if let ([Some((put, put_at)), Some((header, header_at))], true) = (probes, fixed) {
        plan.uprobes.push(Uprobe { program: put, offset: put_at, cookie: Some(itab) });
        plan.uprobes.push(Uprobe { program: header, offset: header_at, cookie: None });
        plan.described.push("grpc-go calls followed to their loopy writer".to_string());
    }
}

/// Where the Read's plaintext is seen: its one copy into the caller's buffer (Go 1.19's
/// bytes.Reader.Read, inlined, calls runtime.memmove once), else each `ret`. Returns how, for
/// the log.
fn read_result(symbols: &ElfSymbols, functions: &HashMap<String, (u64, u64)>, read: u64, read_end: u64, plan: &mut Plan) -> Result<String> {
    let copies = functions.get(MEMMOVE).map(|&(memmove, _)| go::call_sites(symbols, read, read_end, memmove)).unwrap_or_default();
    let (program, sites, how) = match copies[..] {
        [copy] => (program::GO_TLS_READ_COPY, vec![copy], "at its copy".to_string()),
        _ => {
            let returns = go::return_sites(symbols, read, read_end);
            let how = format!("at its {} returns (single-stepped)", returns.len());
            (program::GO_TLS_READ_RET, returns, how)
        }
    };
    if sites.is_empty() {
        bail!("{READ} has no return instruction that could be found");
    }
    for site in sites {
        let offset = symbols.file_offset(site).with_context(|| format!("{READ}: {site:#x} outside the file's segments"))?;
        plan.uprobes.push(Uprobe { program, offset, cookie: None });
    }
    Ok(how)
}

/// Go 1.17 moved amd64 to the register ABI; "devel" builds are newer than any release.
fn register_abi(version: &str) -> bool {
    let Some(rest) = version.strip_prefix("go1.") else { return version.contains("devel") };
    rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|minor| minor.parse::<u32>().ok()).is_some_and(|minor| minor >= 17)
}

/// The file offset of a function's entry probe: its stack check's `jbe`, which the programs
/// rely on (they skip the pass that grows the stack by its flags).
pub(crate) fn entry(symbols: &ElfSymbols, function: &str, start: u64) -> Result<u64> {
    let jump = go::stack_check_jump(symbols, start).with_context(|| format!("{function} does not start with Go's stack check"))?;
    symbols.file_offset(jump).with_context(|| format!("{function}: {jump:#x} outside the file's segments"))
}

fn cookie(offsets: &TlsConnOffsets) -> Result<u64> {
    let field = |value: u64| u16::try_from(value).context("a tls.Conn → fd field offset above 64 KiB");
    Ok(go_cookie::pack(field(offsets.conn_in_tls_conn)?, field(offsets.fd_in_net_conn)?, field(offsets.pfd_in_net_fd)?, field(offsets.sysfd_in_poll_fd)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_abi_versions() {
        assert!(register_abi("go1.19.8"));
        assert!(register_abi("go1.17"));
        assert!(register_abi("go1.22rc1"));
        assert!(!register_abi("go1.16.15"));
        assert!(!register_abi("go1.9"));
        assert!(register_abi("devel go1.23-abcdef"));
        assert!(!register_abi("weird"));
    }

    #[test]
    fn cookies_pack_the_offsets() {
        let offsets = TlsConnOffsets { conn_in_tls_conn: 0, fd_in_net_conn: 0, pfd_in_net_fd: 8, sysfd_in_poll_fd: 16, from_dwarf: false };
        assert_eq!(go_cookie::unpack(cookie(&offsets).expect("offsets fit")), (0, 0, 8, 16));
        assert!(cookie(&TlsConnOffsets { conn_in_tls_conn: 1 << 20, ..offsets }).is_err());
    }
}
