//! Real database and cache servers for the tests, each in its own temporary directory on a
//! free loopback port, started from the Debian packages that `cargo xtask setup` installs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::procs::{Proc, TempDir, spawn, spawn_until, wait_port};
use crate::{free_port, require_program};

/// A server process with its data directory; both go away on drop.
pub struct Server {
    pub port: u16,
    pub proc: Proc,
    pub dir: TempDir,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// PostgreSQL 15: a fresh cluster (trust auth, user `postgres`) with database `shop`.
pub fn postgres() -> Server {
    let initdb = PathBuf::from(PG_BIN).join("initdb");
    assert!(initdb.exists(), "PostgreSQL 15 is not installed; run `cargo xtask setup` (apt-get install postgresql)");
    let dir = TempDir::new("pg");
    let data = dir.path().join("data");
    // PostgreSQL refuses to run as root: the cluster belongs to the `postgres` user.
    run_ok(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()), "chown");
    run_ok(Command::new("chmod").arg("755").arg(dir.path()), "chmod");
    run_ok(Command::new("runuser").args(["-u", "postgres", "--"]).arg(&initdb).args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"]).arg(&data), "initdb");
    let port = free_port();
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(PathBuf::from(PG_BIN).join("postgres")).arg("-D").arg(&data);
    cmd.args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "logging_collector=off"]);
    cmd.arg("-k").arg(dir.path());
    let proc = spawn(cmd, "postgres");
    wait_port(port, Duration::from_secs(30));
    let server = Server { port, proc, dir };
    // Ready for queries, not only listening.
    for _ in 0..100 {
        if Command::new(PathBuf::from(PG_BIN).join("pg_isready")).args(["-h", "127.0.0.1", "-p", &port.to_string()]).output().is_ok_and(|o| o.status.success()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    run_ok(Command::new("psql").args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-q", "-c", "CREATE DATABASE shop"]), "createdb");
    server
}

/// Redis 7 without persistence.
pub fn redis() -> Server {
    let bin = require_program("redis-server", "apt-get install redis-server");
    let dir = TempDir::new("redis");
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]).arg("--dir").arg(dir.path());
    let proc = spawn_until(cmd, "redis-server", "Ready to accept connections", Duration::from_secs(20));
    Server { port, proc, dir }
}

/// memcached, UDP off.
pub fn memcached() -> Server {
    let bin = require_program("memcached", "apt-get install memcached");
    let dir = TempDir::new("memcached");
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["-u", "root", "-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"]);
    let proc = spawn(cmd, "memcached");
    wait_port(port, Duration::from_secs(20));
    Server { port, proc, dir }
}

/// MariaDB: a fresh data directory, root without a password over TCP, database `shop`.
pub fn mariadb() -> Server {
    let install = require_program("mariadb-install-db", "apt-get install mariadb-server");
    let mariadbd = require_program("mariadbd", "apt-get install mariadb-server");
    let dir = TempDir::new("mariadb");
    let data = dir.path().join("data");
    run_ok(
        Command::new(install).args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"]).arg(format!("--datadir={}", data.display())),
        "mariadb-install-db",
    );
    let port = free_port();
    let mut cmd = Command::new(mariadbd);
    cmd.args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1", "--skip-name-resolve", "--innodb-flush-log-at-trx-commit=0"])
        .arg(format!("--port={port}"))
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.path().join("sock").display()))
        .arg(format!("--pid-file={}", dir.path().join("pid").display()));
    let proc = spawn(cmd, "mariadbd");
    wait_port(port, Duration::from_secs(60));
    run_ok(Command::new("mariadb").args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", "root", "-e", "CREATE DATABASE shop"]), "create database");
    Server { port, proc, dir }
}

/// A private RabbitMQ node (Debian's rabbitmq-server) on a free port, its state in `dir`.
pub fn rabbitmq(dir: &TempDir) -> (Proc, u16) {
    require_program("rabbitmq-server", "Debian's rabbitmq-server (cargo xtask setup)");
    // Debian's `rabbitmq-server` switches to the `rabbitmq` user, whose node then outlives
    // the test's process group; the script behind it runs the node as we are.
    let server = std::path::Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    assert!(server.exists(), "{} is missing: Debian's rabbitmq-server layout changed", server.display());
    let (port, dist) = (free_port(), free_port());
    let mut cmd = Command::new(server);
    cmd.env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist.to_string())
        .env("RABBITMQ_NODENAME", format!("zerotrace-{port}@localhost"))
        .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.path().join("enabled_plugins"))
        .env("RABBITMQ_CONFIG_FILE", dir.path().join("none"));
    let proc = spawn(cmd, "rabbitmq-server");
    // The node takes about 10 s to boot here.
    wait_port(port, Duration::from_secs(90));
    (proc, port)
}
