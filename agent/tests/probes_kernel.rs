//! The probes in the real kernel, driven through the agent's library: a process added after
//! the programs are attached is traced from then on, removed it is not, and a per-connection
//! capture cap limits what is copied, and a connect whose address ends a readable page is
//! still seen. Needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN);
//! without it the test fails and says so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zerotrace::discovery::Discovery;
use zerotrace::events::{Event, from_record};
use zerotrace::probes::{Probes, Settings};

const CHUNK: usize = 3000;

/// A data record: (egress, bytes captured, bytes moved).
type Data = (bool, usize, u64);
/// A connection: its fd, peer and generation.
type Opened = (u32, Option<std::net::SocketAddr>, u8);

/// Data records of `pid` seen until `deadline`, and its connections.
fn drain(ring: &mut aya::maps::RingBuf<aya::maps::MapData>, pid: u32, wait: Duration) -> (Vec<Data>, Vec<Opened>) {
    let deadline = Instant::now() + wait;
    let (mut data, mut fds) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        while let Some(item) = ring.next() {
            match from_record(&item) {
                Ok(Event::Data { tgid, ingress, payload, total, .. }) if tgid == pid => data.push((!ingress, payload.len(), total)),
                Ok(Event::ConnOpen { tgid, fd, remote, generation, .. }) if tgid == pid => fds.push((fd, remote, generation)),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (data, fds)
}

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    assert!(uid == 0, "this test loads eBPF programs and needs root (run the suite as root, as CI does): it cannot run as uid {uid}");
}

/// A Python client driven line by line: it prints a line, then waits for one on stdin.
struct Client {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Client {
    fn start(script: &str) -> Client {
        let mut child = Command::new("python3").args(["-c", script]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python3 runs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Client { child, stdin, stdout }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the client prints.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("the client answers");
        line.trim().to_string()
    }

    /// Lets the client go one step; returns what it prints then.
    fn step(&mut self) -> String {
        self.stdin.write_all(b"go\n").expect("tell the client");
        self.line()
    }

    /// Closes its stdin (the scripts end there) and waits for it.
    fn finish(self) {
        let Client { mut child, stdin, .. } = self;
        drop(stdin);
        let _ = child.wait();
    }
}

/// The probes loaded and attached (as root), copying up to 1024 bytes per call (and
/// `client_first_cap` on a connected socket until the agent sets its cap; 0: none).
fn attached(wakeup_bytes: u64, client_first_cap: u32) -> (Probes, aya::maps::RingBuf<aya::maps::MapData>) {
    require_root();
    let loop_gather = zerotrace::probes::kernel_has_bpf_loop();
    let settings =
        Settings { payload_cap: 1024, client_first_cap, cgroup_filter: false, wakeup_bytes, hooks_only: false, go_goroutines: false, loop_gather, discover_execs: false };
    let (mut probes, ring) = Probes::load(&settings).expect("the probes load");
    probes.attach().expect("the probes attach");
    (probes, ring)
}

/// A local server that takes one connection and reads it to the end: its port and thread.
fn sink_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 65536];
        while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    (port, server)
}

#[test]
fn processes_are_added_and_removed_after_attach_and_a_connection_capture_cap_holds() {
    let (mut probes, mut ring) = attached(1 << 20, 0);

    let (port, server) = sink_server();
    // A client that sends CHUNK bytes each time it reads a line, on one connection.
    let script = format!(
        "import socket, sys\ns = socket.create_connection(('127.0.0.1', {port}))\nprint('connected', flush=True)\nfor line in sys.stdin:\n    s.sendall(b'x' * {CHUNK})\n    print('sent', flush=True)\n"
    );
    let mut client = Client::start(&script);
    let pid = client.pid();
    assert_eq!(client.line(), "connected");

    // Not traced yet: bytes sent before the add are not seen.
    client.step();
    let (before, _) = drain(&mut ring, pid, Duration::from_millis(200));
    assert!(before.is_empty(), "nothing of an untraced process: {before:?}");

    let mut discovery = Discovery::default();
    discovery.add(&mut probes, pid).expect("added after attach");
    // Its socket predates the add: the agent marks the open sockets, as for any target.
    probes.adopt_open_sockets(pid, 0);
    client.step();
    let (seen, _) = drain(&mut ring, pid, Duration::from_millis(300));
    let sends: Vec<_> = seen.iter().filter(|(egress, _, total)| *egress && *total == CHUNK as u64).collect();
    assert_eq!(sends.len(), 1, "the send after the add is captured: {seen:?}");
    assert_eq!(sends[0].1, 1024, "up to the global cap");

    // A per-connection cap: the socket's fd is the one the client holds (found in /proc).
    let fd = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, std::fs::read_link(e.path()).ok()?)))
        .find(|(_, target)| target.to_string_lossy().starts_with("socket:"))
        .map(|(fd, _)| fd)
        .expect("the client's socket");
    probes.set_capture_cap(pid, fd, 16).expect("cap set");
    client.step();
    let (capped, _) = drain(&mut ring, pid, Duration::from_millis(300));
    let sends: Vec<_> = capped.iter().filter(|(egress, _, _)| *egress).collect();
    assert_eq!(sends.len(), 1, "{capped:?}");
    assert_eq!((sends[0].1, sends[0].2), (16, CHUNK as u64), "16 bytes copied of {CHUNK} moved");

    discovery.remove(&mut probes, pid).expect("removed");
    client.step();
    let (after, _) = drain(&mut ring, pid, Duration::from_millis(300));
    assert!(after.is_empty(), "nothing once removed: {after:?}");

    client.finish();
    let _ = server.join();
    probes.detach_all();
}

/// A socket the traced process connects copies `client_first_cap` bytes (its first request
/// whole) until the agent sets the connection's cap; 0 is the global cap again.
#[test]
fn a_connected_socket_starts_with_the_first_request_cap() {
    let (mut probes, mut ring) = attached(1 << 20, 4096);
    let (port, server) = sink_server();
    let script = format!(
        "import socket, sys\nprint('ready', flush=True)\nsys.stdin.readline()\ns = socket.create_connection(('127.0.0.1', {port}))\nprint(s.fileno(), flush=True)\nfor line in sys.stdin:\n    s.sendall(b'x' * {CHUNK})\n    print('sent', flush=True)\n"
    );
    let mut client = Client::start(&script);
    let pid = client.pid();
    assert_eq!(client.line(), "ready");
    let mut discovery = Discovery::default();
    discovery.add(&mut probes, pid).expect("added");
    let fd: u32 = client.step().parse().expect("the socket's fd");
    client.step();
    let (first, _) = drain(&mut ring, pid, Duration::from_millis(300));
    let sends: Vec<_> = first.iter().filter(|(egress, _, _)| *egress).collect();
    assert_eq!(sends.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), [(CHUNK, CHUNK as u64)], "the first send whole: {first:?}");
    probes.set_capture_cap(pid, fd, 0).expect("cap set");
    client.step();
    let (next, _) = drain(&mut ring, pid, Duration::from_millis(300));
    let sends: Vec<_> = next.iter().filter(|(egress, _, _)| *egress).collect();
    assert_eq!(sends.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), [(1024, CHUNK as u64)], "then the global cap: {next:?}");
    client.finish();
    let _ = server.join();
    probes.detach_all();
}

/// A connect whose 16-byte sockaddr_in is the last thing readable before an inaccessible
/// page (Go allocates one per connect on its heap, so this happens by chance under load):
/// the probes read only what the family needs, so the connection and its bytes are seen.
/// Reading a whole sockaddr_in6's worth failed here and silently lost the connection.
/// Then the client peeks at the answer (recv and recvmsg with MSG_PEEK, as curl does before
/// reusing a connection) before reading it: the answer is captured once, not three times.
/// Last, one sendmsg of 40 buffers is gathered whole (bpf_loop, Linux ≥ 5.17).
#[test]
fn a_connect_address_at_the_end_of_a_page_is_read_and_peeks_are_not_data() {
    let (mut probes, mut ring) = attached(1, 0);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut hello = [0u8; 5];
        conn.read_exact(&mut hello).expect("the client's hello");
        conn.write_all(b"pong").expect("answer");
        let mut buf = [0u8; 64];
        while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let script = format!(
        r#"
import ctypes, mmap, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.connect.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
page = mmap.PAGESIZE
base = libc.mmap(None, 2 * page, 3, 0x22, -1, 0)  # read/write, private anonymous
assert libc.mprotect(base + page, page, 0) == 0, "the second page made inaccessible"
addr = base + page - 16
raw = struct.pack("=H", socket.AF_INET) + struct.pack(">H", {port}) + socket.inet_aton("127.0.0.1") + bytes(8)
ctypes.memmove(addr, raw, 16)
s = socket.socket()
print("ready", flush=True)
sys.stdin.readline()
assert libc.connect(s.fileno(), addr, 16) == 0, ctypes.get_errno()
s.sendall(b"hello")
assert s.recv(1, socket.MSG_PEEK) == b"p"
assert s.recvmsg(4, 0, socket.MSG_PEEK)[0] == b"pong"
assert s.recv(4) == b"pong"
s.sendmsg([b"%09d," % i for i in range(40)])
print("sent", flush=True)
sys.stdin.readline()
"#
    );
    let mut client = Client::start(&script);
    let pid = client.pid();
    assert_eq!(client.line(), "ready", "the client set its address up");
    Discovery::default().add(&mut probes, pid).expect("traced");
    assert_eq!(client.step(), "sent", "the client connected and sent");
    let (data, conns) = drain(&mut ring, pid, Duration::from_millis(300));
    client.finish();
    let _ = server.join();
    probes.detach_all();
    assert_eq!(conns.len(), 1, "the connect is seen: {conns:?}");
    assert_eq!(conns[0].1.map(|a| a.port()), Some(port), "with its peer");
    assert!(data.iter().any(|&(egress, captured, total)| egress && captured == 5 && total == 5), "and its bytes: {data:?}");
    let reads: Vec<_> = data.iter().filter(|(egress, _, _)| !egress).collect();
    assert_eq!(reads, [&(false, 4, 4)], "the answer once: peeks take nothing");
    // 40 buffers of 10 bytes in one sendmsg: all gathered with bpf_loop, the first 16 without.
    let gathered = if zerotrace::probes::kernel_has_bpf_loop() { 400 } else { 160 };
    assert!(data.iter().any(|&(egress, captured, total)| egress && total == 400 && captured == gathered), "a 40-buffer sendmsg: {data:?}");
}

/// The agent's verdict on a socket (foreign: stop copying its bytes) comes late, when the
/// process may have closed that connection and got a new one with the same fd number. The
/// verdict carries the connection's generation and lands only on that connection; so does
/// taking it back.
#[test]
fn a_verdict_lands_only_on_the_connection_it_was_made_for() {
    let (mut probes, mut ring) = attached(1, 0);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 64];
        while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let script = format!(
        "import socket, sys\nprint('ready', flush=True)\nsys.stdin.readline()\ns = socket.create_connection(('127.0.0.1', {port}))\nprint('connected', flush=True)\nfor line in sys.stdin:\n    s.sendall(b'x' * 10)\n    print('sent', flush=True)\n"
    );
    let mut client = Client::start(&script);
    let pid = client.pid();
    assert_eq!(client.line(), "ready");
    Discovery::default().add(&mut probes, pid).expect("traced");
    client.step(); // connects
    let (_, conns) = drain(&mut ring, pid, Duration::from_millis(200));
    let &[(fd, _, generation)] = &conns[..] else { panic!("one connection: {conns:?}") };
    assert_ne!(generation, 0, "a connection the probes saw open has a generation");
    let ignore = |generation| zerotrace::pipeline::IgnoreFd { tgid: pid, fd, socket: true, generation, tls: false };
    // A verdict made for another connection on this fd number: dropped, bytes still copied.
    assert!(!probes.ignore_fd(ignore(generation ^ 0x80)), "a verdict for another generation is dropped");
    client.step();
    let (kept, _) = drain(&mut ring, pid, Duration::from_millis(200));
    assert!(kept.iter().any(|&(egress, _, total)| egress && total == 10), "still captured: {kept:?}");
    // The verdict for this connection: nothing more is copied.
    assert!(probes.ignore_fd(ignore(generation)));
    client.step();
    let (after, _) = drain(&mut ring, pid, Duration::from_millis(200));
    assert!(after.is_empty(), "nothing once judged foreign: {after:?}");
    // Taken back (a process over its overhead budget stepping up, its connections back in the
    // sampled share), on this connection only: copied again, at the cap given.
    let recapture = |generation| zerotrace::pipeline::Recapture { tgid: pid, fd, generation, cap: 4 };
    assert!(!probes.recapture_fd(recapture(generation ^ 0x80)), "not for another generation");
    assert!(probes.recapture_fd(recapture(generation)));
    client.step();
    let (again, _) = drain(&mut ring, pid, Duration::from_millis(200));
    assert!(again.iter().any(|&(egress, captured, total)| egress && captured == 4 && total == 10), "captured again, 4 bytes of 10: {again:?}");
    client.finish();
    let _ = server.join();
    probes.detach_all();
}

/// Waits on an epoll set holding the ring buffer, on a thread of its own: `Some(elapsed)` on
/// the channel when a wakeup came, `None` when `limit` passed without one.
fn wait_for_wakeup(epoll: i32, limit: Duration) -> std::sync::mpsc::Receiver<Option<Duration>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `event` is a valid buffer for one event; `epoll` is an epoll fd the test keeps
        // open until the thread has answered.
        let n = unsafe { libc::epoll_wait(epoll, &mut event, 1, limit.as_millis() as i32) };
        let _ = tx.send((n > 0).then(|| start.elapsed()));
    });
    rx
}

/// Records wake a reader blocked on the ring only when they take its unread bytes across a
/// multiple of the threshold. Small records below it wake nobody (the agent drains on its
/// timer), the record that crosses it does, and once past it further records do not, each
/// one (they did, and every wakeup is a self-interrupt on the traced thread's core), until the
/// next multiple is crossed.
#[test]
fn records_wake_a_blocked_reader_only_when_they_cross_the_threshold() {
    use std::os::fd::AsRawFd;
    const THRESHOLD: u64 = 64 * 1024;
    let (mut probes, mut ring) = attached(THRESHOLD, 0);
    let (port, server) = sink_server();
    let script = format!(
        "import socket, sys\nprint('ready', flush=True)\nsys.stdin.readline()\ns = socket.create_connection(('127.0.0.1', {port}))\nprint('connected', flush=True)\nfor line in sys.stdin:\n    n = int(line)\n    for _ in range(n):\n        s.send(b'x' * 1000)\n    print('sent', flush=True)\n"
    );
    let mut client = Client::start(&script);
    let pid = client.pid();
    assert_eq!(client.line(), "ready");
    Discovery::default().add(&mut probes, pid).expect("traced");
    assert_eq!(client.step(), "connected");
    let _ = drain(&mut ring, pid, Duration::from_millis(100));
    while ring.next().is_some() {}
    // SAFETY: plain syscalls on fds this test owns; `ring` outlives the epoll set.
    let epoll = unsafe { libc::epoll_create1(0) };
    assert!(epoll >= 0, "epoll_create1");
    // Edge-triggered, as the agent's reader (tokio) waits: only a wakeup reports the ring again.
    let mut interest = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET) as u32, u64: 0 };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, ring.as_raw_fd(), &mut interest) }, 0, "the ring joins the epoll set");
    let mut send = |n: u32| {
        client.stdin.write_all(format!("{n}\n").as_bytes()).expect("tell the client");
        assert_eq!(client.line(), "sent");
    };
    let quiet = Duration::from_millis(400);

    // ~1 KiB records: 10 stay far below the threshold.
    let waiter = wait_for_wakeup(epoll, Duration::from_secs(5));
    send(10);
    assert!(waiter.recv_timeout(quiet).is_err(), "10 records under the threshold woke the reader");
    // 70 more take the unread bytes past 64 KiB: the crossing record wakes it.
    send(70);
    let woke = waiter.recv_timeout(Duration::from_secs(3)).expect("the waiter answers");
    assert!(woke.is_some(), "crossing the threshold did not wake the reader");
    // Unread bytes stay past the threshold (nothing was read): 10 more records wake nobody.
    let waiter = wait_for_wakeup(epoll, Duration::from_secs(5));
    send(10);
    assert!(waiter.recv_timeout(quiet).is_err(), "records past the threshold woke the reader each time");
    // The next multiple (128 KiB) does.
    send(70);
    let woke = waiter.recv_timeout(Duration::from_secs(3)).expect("the waiter answers");
    assert!(woke.is_some(), "crossing twice the threshold did not wake the reader");
    let (data, _) = drain(&mut ring, pid, Duration::from_millis(50));
    assert_eq!(data.iter().filter(|(egress, captured, _)| *egress && *captured == 1000).count(), 160, "every send recorded");
    // SAFETY: closing the epoll fd made above.
    unsafe { libc::close(epoll) };
    client.finish();
    let _ = server.join();
    probes.detach_all();
}
