//! Embeds the probe object built by `cargo xtask build-ebpf`, and refuses, with a message that
//! says what to run, when it is missing or older than the probe sources.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            if path.ends_with("target") {
                continue;
            }
            newest_mtime(&path)
        } else {
            entry.metadata().ok()?.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this")).join("..");
    let object = root.join("target/bpf/zerotrace-probes.o");
    println!("cargo:rerun-if-changed={}", object.display());
    for src in ["ebpf-probes/probes/src", "ebpf-probes/abi/src"] {
        println!("cargo:rerun-if-changed={}", root.join(src).display());
    }
    let Ok(meta) = std::fs::metadata(&object) else {
        panic!(
            "\n\nzerotrace: the eBPF probe object {} is missing.\n\
             Build it first with:  cargo xtask build-ebpf\n\n",
            object.display()
        );
    };
    let built = meta.modified().ok();
    let sources = [root.join("ebpf-probes/probes/src"), root.join("ebpf-probes/abi/src")].iter().filter_map(|d| newest_mtime(d)).max();
    if let (Some(built), Some(sources)) = (built, sources)
        && sources > built
    {
        panic!(
            "\n\nzerotrace: the eBPF probe object {} is older than the probe sources.\n\
                 Rebuild it with:  cargo xtask build-ebpf\n\n",
            object.display()
        );
    }
    println!("cargo:rustc-env=ZEROTRACE_PROBES_OBJECT={}", object.display());
}
