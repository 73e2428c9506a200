//! The resolver on real binaries of this machine: the system libssl, and executables the
//! test compiles itself (PIE and non-PIE), checked against the bytes at the computed offset.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use zerotrace_symbols::elf::ElfSymbols;

fn system_libssl() -> PathBuf {
    for dir in ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu"] {
        let p = Path::new(dir).join("libssl.so.3");
        if p.exists() {
            return p;
        }
    }
    panic!("libssl.so.3 not found: install libssl3 (cargo xtask setup)");
}

#[test]
fn libssl_exports_the_tls_functions_at_sane_offsets() {
    let path = system_libssl();
    let syms = ElfSymbols::read(&path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    for f in ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_get_fd"] {
        let off = syms.uprobe_offset(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(off > 0 && off < size, "{f} at {off:#x} outside the file ({size} bytes)");
    }
    assert!(!syms.defines("definitely_not_a_symbol"));
}

/// Compiles a tiny C program and checks that the function's code is at the offset we compute.
fn check_c_program(pie: bool) {
    let dir = std::env::temp_dir().join(format!("zt-sym-{}-{pie}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("prog.c");
    // The function body holds a recognisable 64-bit constant.
    std::fs::write(&src, "unsigned long long zt_probe_me(void) { return 0x1122334455667788ULL; }\nint main(void) { return (int)zt_probe_me(); }\n").unwrap();
    let exe = dir.join("prog");
    let (flag_link, flag_cc) = if pie { ("-pie", "-fPIE") } else { ("-no-pie", "-fno-pie") };
    let status =
        Command::new("cc").args(["-O1", "-fno-inline", flag_link, flag_cc, "-o"]).arg(&exe).arg(&src).status().expect("a C compiler (gcc) is needed to build test binaries");
    assert!(status.success());
    let syms = ElfSymbols::read(&exe).unwrap();
    let off = syms.uprobe_offset("zt_probe_me").unwrap() as usize;
    let bytes = std::fs::read(&exe).unwrap();
    let code = &bytes[off..off + 16];
    let needle = 0x1122_3344_5566_7788u64.to_le_bytes();
    assert!(code.windows(8).any(|w| w == needle), "pie={pie}: code at {off:#x} is not zt_probe_me: {code:02x?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pie_executable_offsets() {
    check_c_program(true);
}

#[test]
fn non_pie_executable_offsets() {
    check_c_program(false);
}

#[test]
fn current_process_maps_include_our_own_executable() {
    let objects = zerotrace_symbols::maps::process_objects(std::process::id()).unwrap();
    let me = std::fs::read_link("/proc/self/exe").unwrap();
    assert!(objects.contains(&me), "{objects:?} should contain {me:?}");
}
