//! Building the probes (nightly, bpfel-unknown-none) and the agent.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, root, run};

/// Where the agent's build.rs expects the probe object.
pub const PROBES_OBJECT: &str = "target/bpf/zerotrace-probes.o";

/// `cargo SUBCOMMAND --release` on the probes with the nightly toolchain (build-std).
fn probes_cargo(subcommand: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", subcommand, "--release"]).current_dir(root().join("ebpf-probes/probes")).env("CARGO_TARGET_DIR", root().join("target/ebpf"));
    // The outer cargo (stable) exports these; they must not leak into the nightly build.
    for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "CARGO", "RUSTC_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    cmd
}

/// The habits CI keeps: rustfmt-clean sources (workspace, probes, fuzz targets) and no clippy
/// warning in the user crates or the probes.
pub fn checks() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"])).context("the sources are not rustfmt-clean: run `cargo fmt --all`")?;
    let mut others = Command::new("rustfmt");
    others.args(["--check", "--edition", "2024"]).arg(root().join("ebpf-probes/probes/src/main.rs"));
    for entry in std::fs::read_dir(root().join("fuzz/fuzz_targets"))? {
        others.arg(entry?.path());
    }
    run(&mut others).context("the probes or the fuzz targets are not rustfmt-clean: run rustfmt on them")?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])).context("clippy warnings in the user crates")?;
    run(probes_cargo("clippy").args(["--", "-D", "warnings"])).context("clippy warnings in the probes")?;
    Ok(())
}

pub fn ebpf() -> Result<()> {
    let mut cmd = probes_cargo("build");
    if which("bpf-linker").is_none() {
        bail!("bpf-linker is not installed; run `cargo xtask setup` (it installs bpf-linker 0.10.3)");
    }
    run(&mut cmd).context("building the eBPF probes (is the nightly toolchain with rust-src installed? `cargo xtask setup`)")?;
    let built = root().join("target/ebpf/bpfel-unknown-none/release/zerotrace-probes");
    let dest = root().join(PROBES_OBJECT);
    std::fs::create_dir_all(dest.parent().context("object path has a parent")?)?;
    std::fs::copy(&built, &dest).with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
    println!("xtask: probes built: {}", dest.display());
    Ok(())
}

pub fn agent(release: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "zerotrace"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let home_bin = std::env::var("HOME").map(|h| format!("{h}/.cargo/bin")).unwrap_or_default();
    path.split(':').chain([home_bin.as_str(), "/usr/sbin", "/sbin"]).map(|d| std::path::Path::new(d).join(program)).find(|p| p.exists())
}
