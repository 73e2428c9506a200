//! The Go reader on real Go executables that the test builds with the machine's Go (Debian's
//! golang-go): unstripped, linked with `-s -w`, and run through `strip`. Each answer is
//! checked against an independent source: the symbol table, the bytes at the offsets, and
//! DWARF against the built-in table.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use zerotrace_symbols::elf::ElfSymbols;
use zerotrace_symbols::go::{self, BUILT_IN_OFFSETS};
use zerotrace_symbols::site::{self, Site};

const READ: &str = "crypto/tls.(*Conn).Read";
const WRITE: &str = "crypto/tls.(*Conn).Write";
const ROUND_TRIP: &str = "net/http.(*persistConn).roundTrip";
const REQUEST_WRITE: &str = "net/http.(*Request).write";
const MEMMOVE: &str = "runtime.memmove";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Builds tests/apps/go_tls three ways; returns (unstripped, -s -w, strip(1)).
fn build() -> (PathBuf, PathBuf, PathBuf) {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("go-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let go = |args: &[&str]| {
        let status = Command::new("go")
            .args(args)
            .current_dir(repo_root().join("tests/apps/go_tls"))
            .env("GOCACHE", Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"))
            .env("GO111MODULE", "off")
            .status()
            .expect("Go is needed to build the test binaries: cargo xtask setup installs golang-go");
        assert!(status.success(), "go {args:?} failed");
    };
    let plain = out.join("go_tls");
    let small = out.join("go_tls_sw");
    let stripped = out.join("go_tls_stripped");
    go(&["build", "-o", plain.to_str().unwrap(), "main.go"]);
    go(&["build", "-ldflags=-s -w", "-o", small.to_str().unwrap(), "main.go"]);
    std::fs::copy(&plain, &stripped).unwrap();
    assert!(Command::new("strip").arg(&stripped).status().unwrap().success());
    (plain, small, stripped)
}

fn go_version() -> String {
    let out = Command::new("go").arg("version").output().unwrap();
    // "go version go1.19.8 linux/amd64"
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn go_executables_stripped_or_not() {
    let (plain, small, stripped) = build();
    let toolchain = go_version();
    let mut entries = Vec::new();
    for path in [&plain, &small, &stripped] {
        let elf = ElfSymbols::read(path).unwrap();
        let binary = go::read(&elf, &[READ, WRITE, ROUND_TRIP, REQUEST_WRITE, MEMMOVE, "main.main"]).unwrap().unwrap_or_else(|| panic!("{} is a Go executable", path.display()));
        assert_eq!(binary.version, toolchain, "{}", path.display());
        assert_eq!(binary.functions.len(), 6, "{}: {:?}", path.display(), binary.functions);
        let (entry, end) = binary.functions[READ];
        assert!(end > entry && end - entry < 64 * 1024, "{READ} spans {entry:#x}..{end:#x}");
        // Return instructions: each really is `ret` in the file, inside the function.
        let rets = go::return_sites(&elf, entry, end);
        assert!(!rets.is_empty(), "{READ} has return instructions");
        let bytes = std::fs::read(path).unwrap();
        for ret in &rets {
            assert!(*ret > entry && *ret < end);
            let offset = elf.file_offset(*ret).unwrap() as usize;
            assert_eq!(bytes[offset], 0xc3, "{ret:#x} in {} is a ret", path.display());
        }
        // Read copies the plaintext out with one call to runtime.memmove (bytes.Reader.Read,
        // inlined): a `call rel32` (e8) there.
        let (memmove, _) = binary.functions[MEMMOVE];
        let copies = go::call_sites(&elf, entry, end, memmove);
        assert_eq!(copies.len(), 1, "{READ} calls {MEMMOVE} once: {copies:x?}");
        assert_eq!(bytes[elf.file_offset(copies[0]).unwrap() as usize], 0xe8);
        // The entry probe goes on the stack check's conditional jump: no single-step.
        let site = site::site(&elf, entry, &site::GO_ARGS, false);
        assert!(matches!(site, Site::Emulated { .. }), "{}", path.display());
        let jump = go::stack_check_jump(&elf, entry).unwrap_or_else(|| panic!("{READ} starts with the stack check"));
        assert_eq!(jump, site.address(), "the first emulated instruction is the stack check's jbe");
        // Functions with a large frame compare through R12; net/http's are such.
        for function in [WRITE, ROUND_TRIP, REQUEST_WRITE] {
            let (start, _) = binary.functions[function];
            let jump = go::stack_check_jump(&elf, start).unwrap_or_else(|| panic!("{function} starts with the stack check"));
            let offset = elf.file_offset(jump).unwrap() as usize;
            assert!(bytes[offset] == 0x76 || bytes[offset..offset + 2] == [0x0f, 0x86], "{function}: jbe at {jump:#x}");
        }
        entries.push(entry);
    }
    // The symbol table, where it survives, agrees with pclntab.
    let symtab = ElfSymbols::read(&plain).unwrap();
    assert_eq!(symtab.address(READ).unwrap(), entries[0]);
    assert_eq!(entries[0], entries[2], "strip(1) does not move code");
    assert!(!ElfSymbols::read(&stripped).unwrap().defines(READ), "strip removed the symbol table");

    // Field offsets: DWARF where present, and the built-in table agrees with it.
    let from_dwarf = go::tls_conn_offsets(&symtab);
    assert!(from_dwarf.from_dwarf, "the unstripped build has DWARF");
    assert_eq!(from_dwarf, zerotrace_symbols::go::TlsConnOffsets { from_dwarf: true, ..BUILT_IN_OFFSETS });
    let table = go::tls_conn_offsets(&ElfSymbols::read(&small).unwrap());
    assert_eq!(table, BUILT_IN_OFFSETS, "-s -w drops DWARF: the table answers");
}

#[test]
fn other_executables_are_not_go() {
    let elf = ElfSymbols::read(Path::new("/bin/sh")).unwrap();
    assert!(go::read(&elf, &[READ]).unwrap().is_none());
}
