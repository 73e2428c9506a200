//! `cargo xtask setup`: install what building and testing need. Idempotent: everything is
//! checked first and only what is missing is installed.

use std::process::Command;

use anyhow::{Context, Result};

use crate::build::which;
use crate::util::{output, run, succeeds};

const BPF_LINKER_VERSION: &str = "0.10.3";
/// Debian packages the tests and benchmarks drive (real peers).
const DEBIAN: &[(&str, &str)] = &[
    ("nginx", "/usr/sbin/nginx"),
    ("curl", "/usr/bin/curl"),
    ("wrk", "/usr/bin/wrk"),
    ("openssl", "/usr/bin/openssl"),
    ("libssl3", "/usr/lib/x86_64-linux-gnu/libssl.so.3"),
    ("postgresql-15", "/usr/lib/postgresql/15/bin/postgres"),
    ("postgresql-client-15", "/usr/lib/postgresql/15/bin/psql"),
    ("redis-server", "/usr/bin/redis-server"),
    ("redis-tools", "/usr/bin/redis-benchmark"),
    ("mariadb-server", "/usr/sbin/mariadbd"),
    ("mariadb-client", "/usr/bin/mariadb"),
    ("memcached", "/usr/bin/memcached"),
];
/// Python modules the test services import, with their PyPI names.
const PYTHON: &[(&str, &str)] = &[("requests", "requests"), ("psycopg2", "psycopg2-binary"), ("pymysql", "pymysql"), ("redis", "redis"), ("pymemcache", "pymemcache"), ("mysql.connector", "mysql-connector-python")];
/// Services the packages start on install: the tests start their own instances.
const STOP_SERVICES: &str = "for s in nginx postgresql redis-server mariadb memcached; do service $s stop >/dev/null 2>&1; done; pkill -x nginx; pkill -x memcached; pkill -x mariadbd; pkill -x redis-server; true";

pub fn install() -> Result<()> {
    // nightly rust-src for -Z build-std=core.
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        println!("xtask setup: installing the nightly toolchain");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let components = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        println!("xtask setup: adding rust-src to nightly");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    let linker_ok = which("bpf-linker")
        .and_then(|p| Command::new(p).arg("--version").output().ok())
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if !linker_ok {
        println!("xtask setup: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
        run(Command::new("cargo").args(["+stable", "install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked", "--force"]).env_remove("RUSTUP_TOOLCHAIN"))?;
    }
    let missing: Vec<&str> = DEBIAN.iter().filter(|(_, bin)| !std::path::Path::new(bin).exists()).map(|(p, _)| *p).collect();
    if !missing.is_empty() {
        println!("xtask setup: installing Debian packages: {}", missing.join(" "));
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))?;
        let _ = Command::new("sh").args(["-c", STOP_SERVICES]).status();
    }
    let py_missing: Vec<&str> = PYTHON.iter().filter(|(module, _)| !succeeds(Command::new("python3").args(["-c", &format!("import {module}")]))).map(|(_, pkg)| *pkg).collect();
    if !py_missing.is_empty() {
        println!("xtask setup: installing Python packages: {}", py_missing.join(" "));
        run(Command::new("python3").args(["-m", "pip", "install", "-q"]).args(&py_missing)).context("pip install")?;
    }
    println!("xtask setup: everything is in place");
    Ok(())
}
