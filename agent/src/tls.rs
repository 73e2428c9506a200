//! Finding the TLS libraries to probe: libssl and executables with OpenSSL linked in, as the
//! traced processes map them, plus the system libssl for children started later.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::probes::Probes;

/// Where Debian-like and Red Hat-like systems keep libssl; probing the file covers every
/// process that maps it later (a curl forked after the agent started).
const SYSTEM_LIBSSL: &[&str] = &["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib64/libssl.so.3", "/usr/lib/libssl.so.3", "/usr/lib/aarch64-linux-gnu/libssl.so.3"];

/// Objects of a process worth looking into: its executable (OpenSSL may be linked in, as in
/// node) and libraries named like libssl. Paths go through /proc/PID/root so a process in
/// another mount namespace (a container) is read as it sees its files.
fn candidates(pid: u32) -> Vec<PathBuf> {
    let Ok(objects) = zerotrace_symbols::maps::process_objects(pid) else { return Vec::new() };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    objects
        .into_iter()
        .filter(|p| Some(p) == exe.as_ref() || p.file_name().is_some_and(|n| n.to_string_lossy().contains("libssl")))
        .map(|p| Path::new(&format!("/proc/{pid}/root")).join(p.strip_prefix("/").unwrap_or(&p)))
        .collect()
}

/// Attaches the TLS probes wherever OpenSSL is found. Never fails the run: an object that
/// cannot be probed gets one warning line and plaintext tracing goes on.
pub fn attach(probes: &mut Probes, pids: &[u32]) {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut try_object = |path: &Path, owner: Option<u32>, probes: &mut Probes| {
        let Ok(meta) = std::fs::metadata(path) else { return };
        if !seen.insert((meta.dev(), meta.ino())) {
            return; // the same file through another path (/lib → /usr/lib, /proc/PID/root)
        }
        match probes.attach_tls(path) {
            Ok(functions) => eprintln!("zerotrace: TLS probes on {} ({})", path.display(), functions.join(", ")),
            Err(err) => {
                // An executable without OpenSSL is the common case, not worth a line.
                let no_openssl = err.to_string().contains("does not provide the OpenSSL API");
                if let (Some(pid), false) = (owner, no_openssl) {
                    eprintln!("zerotrace: warning: no TLS probes in {} (pid {pid}): {err:#}; plaintext tracing continues", path.display());
                }
            }
        }
    };
    for lib in SYSTEM_LIBSSL {
        try_object(Path::new(lib), None, probes);
    }
    for &pid in pids {
        for object in candidates(pid) {
            try_object(&object, Some(pid), probes);
        }
    }
}
