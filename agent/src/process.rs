//! Facts about traced processes read from /proc: resource attributes, socket classification
//! and socket addresses for connections that predate the agent.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The OpenTelemetry resource of one process, as key/value strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessResource {
    pub pid: u32,
    pub service_name: String,
    pub executable_name: String,
    pub container_id: Option<String>,
    /// `service_name` is zerotrace's guess (the program's or executable's name): the process
    /// named no service itself. Exported as `zerotrace.service.name.inferred`, so a collector
    /// can name the service better (deploy/otel-collector.yaml: by the pod's label).
    pub service_name_inferred: bool,
    /// Extra attributes from the process's own OTEL_RESOURCE_ATTRIBUTES.
    pub extra: Vec<(String, String)>,
}

/// The fields of /proc/PID/stat after the command name, space-separated: the state first
/// (field 3 in proc(5)). The name may hold spaces and ')', so fields resume after the last ')'.
pub fn stat_after_name(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_string())
}

pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn environ(pid: u32) -> HashMap<String, String> {
    let Ok(raw) = fs::read(format!("/proc/{pid}/environ")) else { return HashMap::new() };
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Parses OTEL_RESOURCE_ATTRIBUTES (`k=v,k2=v2`, values percent-decoded loosely).
pub fn parse_resource_attributes(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            (!k.is_empty()).then(|| (k.to_string(), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A container id: the first 64-hex-digit component of the process's cgroup path, as
/// docker, containerd and CRI-O name their cgroups (`docker-<id>.scope`, `cri-containerd-<id>`).
pub fn container_id_from_cgroup(cgroup_file: &str) -> Option<String> {
    for line in cgroup_file.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        for part in path.split('/') {
            let part = part.trim_end_matches(".scope");
            let candidate = part.rsplit(['-', ':']).next().unwrap_or(part);
            if candidate.len() == 64 && candidate.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(candidate.to_ascii_lowercase());
            }
        }
    }
    None
}

pub fn executable_name(pid: u32) -> Option<String> {
    if let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe"))
        && let Some(name) = exe.file_name()
    {
        return Some(name.to_string_lossy().trim_end_matches(" (deleted)").to_string());
    }
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_string())
}

/// The program's own name for itself: the base name of argv[0], which a program may rewrite
/// to say what it is (`redis-server *:6379`, whose executable is `redis-check-rdb`).
pub fn program_name(cmdline: &[u8]) -> Option<String> {
    let argv0 = cmdline.split(|b| *b == 0).next()?;
    let first = String::from_utf8_lossy(argv0);
    let word = first.split_whitespace().next()?;
    // `-bash` (a login shell), `nginx: worker process`.
    let name = word.rsplit('/').next()?.trim_start_matches('-').trim_end_matches(':');
    (!name.is_empty()).then(|| name.to_string())
}

/// Reads a process's resource. Returns None when the process is gone.
pub fn resource(pid: u32) -> Option<ProcessResource> {
    let executable_name = executable_name(pid)?;
    let program = fs::read(format!("/proc/{pid}/cmdline")).ok().and_then(|c| program_name(&c));
    let env = environ(pid);
    let mut extra = env.get("OTEL_RESOURCE_ATTRIBUTES").map(|v| parse_resource_attributes(v)).unwrap_or_default();
    let from_attrs = extra.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone());
    extra.retain(|(k, _)| k != "service.name");
    let own = env.get("OTEL_SERVICE_NAME").filter(|s| !s.is_empty()).cloned().or(from_attrs);
    let service_name_inferred = own.is_none();
    let service_name = own.or(program).unwrap_or_else(|| executable_name.clone());
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let container_id = container_id_from_cgroup(&cgroup);
    // The pod, as far as the node tells (the process's own attributes win).
    let pod = crate::kubernetes::PodIdentity::of(pid, &cgroup, env.get("HOSTNAME").map(String::as_str));
    for (key, value) in pod.attributes() {
        if !extra.iter().any(|(k, _)| *k == key) {
            extra.push((key, value));
        }
    }
    Some(ProcessResource { pid, service_name, executable_name, container_id, service_name_inferred, extra })
}

/// What an fd of a process is, from /proc/PID/fd.
pub enum FdKind {
    Socket(u64),
    Other,
    Gone,
}

/// Whether `fd` of `pid` is the read end of a pipe (`pipe:[…]`, opened read-only).
pub fn is_pipe_read_end(pid: u32, fd: u32) -> bool {
    let is_pipe = fs::read_link(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|t| t.to_string_lossy().starts_with("pipe:["));
    // `flags:` is octal; O_ACCMODE (3) is 0 for O_RDONLY.
    is_pipe
        && fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            .ok()
            .and_then(|info| info.lines().find_map(|l| l.strip_prefix("flags:").map(|f| f.trim().to_string())))
            .and_then(|flags| u32::from_str_radix(&flags, 8).ok())
            .is_some_and(|flags| flags & 3 == 0)
}

/// Whether the process runs gevent from its wheels: its compiled `Greenlet` module
/// (`gevent/_gevent_cgreenlet.cpython-311-….so`) is mapped.
pub fn runs_gevent(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| maps.contains("/_gevent_cgreenlet."))
}

pub fn fd_kind(pid: u32, fd: u32) -> FdKind {
    match fs::read_link(format!("/proc/{pid}/fd/{fd}")) {
        Ok(target) => {
            let t = target.to_string_lossy();
            match t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse().ok()) {
                Some(inode) => FdKind::Socket(inode),
                None => FdKind::Other,
            }
        }
        Err(_) => FdKind::Gone,
    }
}

fn parse_hex_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_le_bytes())),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Both ends of socket `fd` of process `pid`, asked of the socket itself: the fd is duplicated
/// into the agent (pidfd_getfd, Linux 5.6; the ptrace access the agent already needs) and
/// named with getsockname/getpeername. That takes a few µs, where searching
/// /proc/PID/net/tcp formats every socket of the network namespace: milliseconds per look-up
/// once a client that opens a connection per call has left thousands in TIME_WAIT (the agent
/// spent most of a core on that under a thread-per-request Python service). `inode` (from the
/// fd's /proc link) guards against the fd number having been reused in between. A peer that
/// is not connected yet (SYN_SENT) is `None`. Falls back to /proc when the fd cannot be had.
pub fn socket_ends(pid: u32, fd: u32, inode: u64) -> Option<(Option<SocketAddr>, Option<SocketAddr>)> {
    let Some(socket) = duplicate_fd(pid, fd) else {
        return tcp_addresses(pid, inode).map(|(local, remote)| (Some(local), Some(remote)));
    };
    // fstat through File: a socket's st_ino is the inode its /proc link shows.
    let file = fs::File::from(socket);
    if !file.metadata().is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == inode) {
        return None;
    }
    let socket = socket2::SockRef::from(&file);
    let local = socket.local_addr().ok().and_then(|a| a.as_socket());
    let remote = socket.peer_addr().ok().and_then(|a| a.as_socket());
    Some((local, remote))
}

/// A copy of another process's fd, or None (gone, no permission, kernel without pidfd_getfd).
fn duplicate_fd(pid: u32, fd: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0 as libc::c_uint) };
    if pidfd < 0 {
        return None;
    }
    // SAFETY: pidfd is a new fd we own; OwnedFd closes it.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd takes a pidfd, the target's fd number and flags, and returns a new
    // fd in this process or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, std::os::fd::AsRawFd::as_raw_fd(&pidfd), fd as libc::c_int, 0 as libc::c_uint) };
    if copy < 0 {
        return None;
    }
    // SAFETY: a new fd we own.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(copy as i32) })
}

/// Finds (local, remote) of a TCP socket inode in /proc/PID/net/tcp{,6}.
pub fn tcp_addresses(pid: u32, inode: u64) -> Option<(SocketAddr, SocketAddr)> {
    for table in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        if let Some(found) = find_inode(&text, inode) {
            return Some(found);
        }
    }
    None
}

/// Looks an inode up in the text of a /proc/net/tcp table.
pub fn find_inode(table: &str, inode: u64) -> Option<(SocketAddr, SocketAddr)> {
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 9 && cols[9].parse::<u64>().ok() == Some(inode) {
            return Some((parse_hex_addr(cols[1])?, parse_hex_addr(cols[2])?));
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn socket_ends_come_from_the_socket_and_check_its_inode() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(format!("/proc/self/fd/{}", client.as_raw_fd())).unwrap());
        let fd = client.as_raw_fd() as u32;
        assert_eq!(socket_ends(std::process::id(), fd, inode), Some((Some(client.local_addr().unwrap()), Some(listener.local_addr().unwrap()))));
        // The fd number now names another socket: nothing rather than the wrong ends.
        assert_eq!(socket_ends(std::process::id(), fd, inode + 1), None);
    }

    #[test]
    fn container_ids() {
        let id = "a".repeat(64);
        assert_eq!(container_id_from_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")), Some(id.clone()));
        assert_eq!(container_id_from_cgroup(&format!("0::/kubepods/pod1/cri-containerd-{id}\n")), Some(id));
        assert_eq!(container_id_from_cgroup("0::/user.slice/session-1.scope\n"), None);
    }

    #[test]
    fn program_names() {
        assert_eq!(program_name(b"/usr/bin/redis-server 127.0.0.1:6379\0\0").as_deref(), Some("redis-server"));
        assert_eq!(program_name(b"python3\0app.py\0").as_deref(), Some("python3"));
        assert_eq!(program_name(b"-bash\0").as_deref(), Some("bash"));
        assert_eq!(program_name(b"nginx: worker process\0").as_deref(), Some("nginx"));
        assert_eq!(program_name(b"\0"), None);
    }

    #[test]
    fn resource_attributes() {
        assert_eq!(
            parse_resource_attributes("service.name=shop,deployment.environment=prod%20eu, bad"),
            vec![("service.name".into(), "shop".into()), ("deployment.environment".into(), "prod eu".into())]
        );
    }

    #[test]
    fn proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 20 4 30 10 -1\n";
        let (l, r) = find_inode(table, 12345).expect("found");
        assert_eq!(l, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(r, "127.0.0.1:40000".parse().expect("addr"));
        assert!(find_inode(table, 1).is_none());
    }
}
