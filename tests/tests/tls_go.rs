//! Go crypto/tls: plaintext from uprobes on `(*tls.Conn).Read`/`Write` in Go executables built
//! here with Debian's Go (tests/apps/go_tls), with and without a symbol table. A Go HTTPS
//! service calling another over HTTPS gives one trace per request, linked per goroutine: the
//! request is written on net/http's writeLoop goroutine, not the handler's.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use zerotrace_integration_tests::procs::{JsonlAgent, Proc, TempDir, curl, spawn_until};
use zerotrace_integration_tests::spans::{assert_https_call_per_request, find};
use zerotrace_integration_tests::{free_port, repo_root, require_program, require_root, self_signed_cert};

#[derive(Clone, Copy)]
enum Build {
    /// Symbol table and DWARF: offsets from DWARF.
    Plain,
    /// strip(1): functions from pclntab only, offsets from the built-in table.
    Stripped,
    /// The section header of `.gopclntab` renamed: the program runs (the runtime finds its
    /// table through its own symbols), but a reader going by sections finds none, as with a
    /// packed executable.
    NoPclntabSection,
}

/// Builds tests/apps/go_tls once per variant (per test process; the tests run in parallel).
fn go_tls(build: Build) -> PathBuf {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    require_program("go", "cargo xtask setup installs golang-go");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("go-tls-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let plain = out.join("go_tls");
    if !plain.exists() {
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&plain)
            .arg("main.go")
            .current_dir(repo_root().join("tests/apps/go_tls"))
            .env("GOCACHE", Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"))
            .env("GO111MODULE", "off")
            .status()
            .expect("running go build");
        assert!(status.success(), "go build of tests/apps/go_tls failed");
    }
    let variant = match build {
        Build::Plain => return plain,
        Build::Stripped => out.join("go_tls_stripped"),
        Build::NoPclntabSection => out.join("go_tls_no_pclntab"),
    };
    if !variant.exists() {
        std::fs::copy(&plain, &variant).unwrap();
        match build {
            Build::Stripped => assert!(Command::new("strip").arg(&variant).status().unwrap().success()),
            _ => rename_section(&variant, ".gopclntab", ".gopclntaX"),
        }
    }
    variant
}

/// Renames a section in place in the section-header string table (same length).
fn rename_section(path: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut elf = std::fs::read(path).unwrap();
    let u16_at = |b: &[u8], at: usize| usize::from(u16::from_le_bytes(b[at..at + 2].try_into().unwrap()));
    let u64_at = |b: &[u8], at: usize| usize::try_from(u64::from_le_bytes(b[at..at + 8].try_into().unwrap())).unwrap();
    let (shoff, shentsize, shstrndx) = (u64_at(&elf, 0x28), u16_at(&elf, 0x3a), u16_at(&elf, 0x3e));
    let header = shoff + shstrndx * shentsize;
    let (start, size) = (u64_at(&elf, header + 0x18), u64_at(&elf, header + 0x20));
    let needle = format!("{from}\0");
    let table = &mut elf[start..start + size];
    let at = table.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap_or_else(|| panic!("{from} in .shstrtab"));
    table[at..at + from.len()].copy_from_slice(to.as_bytes());
    std::fs::write(path, elf).unwrap();
}

fn go_service(binary: &Path, port: u16, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(binary);
    cmd.args(["-port", &port.to_string()]).args(extra);
    spawn_until(cmd, "go_tls", "ready", Duration::from_secs(20))
}

/// Go HTTPS front → Go HTTPS back, driven by curl over HTTP/1.1 (the Go server offers h2).
fn go_https_front_and_back(build: Build, offsets_from: &str) {
    require_root();
    let binary = go_tls(build);
    let dir = TempDir::new("tls-go");
    let cert = self_signed_cert(dir.path());
    let cert_arg = cert.display().to_string();
    let (front_port, back_port) = (free_port(), free_port());
    let back = go_service(&binary, back_port, &["-cert", &cert_arg]);
    let downstream = format!("https://127.0.0.1:{back_port}");
    let front = go_service(&binary, front_port, &["-cert", &cert_arg, "-downstream", &downstream]);
    let agent = JsonlAgent::start(&[front.pid(), back.pid()]);
    for i in 0..5 {
        assert_eq!(curl(&format!("https://127.0.0.1:{front_port}/work/{i}"), &["-k", "--http1.1"]), 200);
    }
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0));
    let probes = exit.stderr.iter().find(|l| l.contains("TLS probes on") && l.contains("go_tls")).unwrap_or_else(|| panic!("{:?}", exit.stderr));
    assert!(probes.contains(offsets_from) && probes.contains("writeLoop"), "{probes}");
    let fronts = find(&spans, "SERVER", |s| s.attr("server.port") == Some(front_port.to_string().as_str()));
    assert!(fronts.iter().all(|f| f.attr("url.scheme") == Some("https") && f.attr("url.path").is_some_and(|p| p.starts_with("/work/"))), "{fronts:#?}");
    assert_https_call_per_request(&spans, &fronts, back_port);
    assert_eq!(spans.len(), 15, "no span from ciphertext or from a probe firing twice: {spans:#?}");
}

#[test]
fn go_https_server_and_client_form_one_trace() {
    go_https_front_and_back(Build::Plain, "fd offsets from DWARF");
}

#[test]
fn stripped_go_https_server_and_client_form_one_trace() {
    go_https_front_and_back(Build::Stripped, "fd offsets from the built-in table");
}

/// A Go executable whose function table cannot be read gets one warning naming the process and
/// the reason; its plaintext HTTP is still traced.
#[test]
fn go_binary_without_readable_pclntab_is_warned_about_and_traced_in_plaintext() {
    require_root();
    let binary = go_tls(Build::NoPclntabSection);
    let port = free_port();
    let server = go_service(&binary, port, &[]);
    let agent = JsonlAgent::start(&[server.pid()]);
    for i in 0..3 {
        assert_eq!(curl(&format!("http://127.0.0.1:{port}/plain/{i}"), &[]), 200);
    }
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0));
    let warnings: Vec<&String> = exit.stderr.iter().filter(|l| l.contains("warning: no TLS probes in") && l.contains("go_tls_no_pclntab")).collect();
    assert_eq!(warnings.len(), 1, "one warning line: {:?}", exit.stderr);
    assert!(warnings[0].contains(&format!("pid {}", server.pid())) && warnings[0].contains(".gopclntab"), "{}", warnings[0]);
    let servers = find(&spans, "SERVER", |s| s.attr("url.scheme") == Some("http"));
    assert_eq!(servers.len(), 3, "{spans:#?}");
}
