//! The reference applications `zerotrace compare` is measured on, each under its language's
//! OpenTelemetry agent: a Flask service (opentelemetry-instrument) and an Express service
//! (@opentelemetry/auto-instrumentations-node). Both serve GET /merchant/<id>/status by calling
//! a second local HTTP service, querying PostgreSQL and reading Redis.

use std::process::Command;
use std::time::Duration;

use crate::db::{self, Server};
use crate::procs::{Proc, python_service, spawn_until};
use crate::{free_port, repo_root, require_program};

/// What the reference apps talk to: PostgreSQL (database `shop`, table `items`), Redis and a
/// plain downstream HTTP service (tests/apps/http_service.py, no agent in it).
pub struct Backends {
    pub pg: Server,
    pub redis: Server,
    pub downstream_port: u16,
    pub downstream: Proc,
}

pub fn backends() -> Backends {
    let pg = db::postgres();
    let redis = db::redis();
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-d", "shop", "-q", "-c"])
        .arg("CREATE TABLE items (id int primary key, name text); INSERT INTO items SELECT g, 'item' || g FROM generate_series(0, 1000) g")
        .output()
        .expect("running psql");
    assert!(out.status.success(), "creating the items table: {}", String::from_utf8_lossy(&out.stderr));
    let downstream_port = free_port();
    let downstream = python_service(downstream_port, None, "inventory");
    Backends { pg, redis, downstream_port, downstream }
}

/// The language agent's settings: OTLP/gRPC to `grpc_port` (gRPC rather than HTTP so that the
/// agent's own exports are not HTTP requests zerotrace would see), stable semantic
/// conventions, quick batches, traces only.
fn otel_env(cmd: &mut Command, service: &str, grpc_port: u16) {
    cmd.env("OTEL_SERVICE_NAME", service)
        .env("OTEL_TRACES_EXPORTER", "otlp")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{grpc_port}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
        // No cloud metadata probes (GCP, AWS…): there is no network here to ask.
        .env("OTEL_NODE_RESOURCE_DETECTORS", "env,host,os,process");
}

fn app_args(cmd: &mut Command, port: u16, b: &Backends) {
    cmd.args(["--port", &port.to_string(), "--downstream", &format!("http://127.0.0.1:{}", b.downstream_port)]);
    cmd.args(["--pg-port", &b.pg.port.to_string(), "--redis-port", &b.redis.port.to_string()]);
}

/// tests/apps/flask_service.py under `opentelemetry-instrument`, exporting to `grpc_port`.
/// Without `agent`, the same app runs bare (the untraced baseline).
pub fn flask(port: u16, b: &Backends, agent: Option<u16>) -> Proc {
    let python = require_program("python3", "the machine's CPython");
    let mut cmd = match agent {
        Some(grpc_port) => {
            let mut c = Command::new(require_program("opentelemetry-instrument", "pip install opentelemetry-distro"));
            c.arg(python);
            otel_env(&mut c, "merchant-flask", grpc_port);
            c
        }
        None => {
            let mut c = Command::new(python);
            c.env("OTEL_SERVICE_NAME", "merchant-flask");
            c
        }
    };
    cmd.arg(crate::python_app("flask_service.py"));
    app_args(&mut cmd, port, b);
    spawn_until(cmd, "flask service", "ready", Duration::from_secs(30))
}

/// tests/apps/express/server.js under @opentelemetry/auto-instrumentations-node (or bare).
pub fn express(port: u16, b: &Backends, agent: Option<u16>) -> Proc {
    express_with_pool(port, b, agent, None)
}

/// `express` with a pg pool of `pg_pool` clients instead of node-postgres's default (10).
pub fn express_with_pool(port: u16, b: &Backends, agent: Option<u16>, pg_pool: Option<usize>) -> Proc {
    let dir = repo_root().join("tests/apps/express");
    assert!(dir.join("node_modules/express").exists(), "the Express app's packages are not installed; run `cargo xtask setup` (npm ci in tests/apps/express)");
    let mut cmd = Command::new(require_program("node", "Debian's nodejs"));
    cmd.current_dir(&dir);
    match agent {
        Some(grpc_port) => {
            cmd.args(["--require", "@opentelemetry/auto-instrumentations-node/register"]);
            otel_env(&mut cmd, "merchant-express", grpc_port);
        }
        None => {
            cmd.env("OTEL_SERVICE_NAME", "merchant-express");
        }
    }
    cmd.arg("server.js");
    if let Some(n) = pg_pool {
        cmd.args(["--pg-pool", &n.to_string()]);
    }
    app_args(&mut cmd, port, b);
    spawn_until(cmd, "express service", "ready", Duration::from_secs(30))
}

/// tests/apps/express/chain.js (no language agent): the Node concurrency fidelity app, with a
/// pg pool of `pg_pool` clients, and a mysql2 query per request when `mysql_port` is given.
pub fn express_chain(port: u16, b: &Backends, pg_pool: usize, mysql_port: Option<u16>) -> Proc {
    let dir = repo_root().join("tests/apps/express");
    assert!(dir.join("node_modules/express").exists(), "the Express app's packages are not installed; run `cargo xtask setup` (npm ci in tests/apps/express)");
    let mut cmd = Command::new(require_program("node", "Debian's nodejs"));
    cmd.current_dir(&dir).env("OTEL_SERVICE_NAME", "chain-express").arg("chain.js");
    cmd.args(["--pg-pool", &pg_pool.to_string()]);
    if let Some(mysql) = mysql_port {
        cmd.args(["--mysql-port", &mysql.to_string()]);
    }
    app_args(&mut cmd, port, b);
    spawn_until(cmd, "express chain app", "ready", Duration::from_secs(30))
}

/// tests/apps/async_chain.py: the Python asyncio concurrency fidelity app, served by aiohttp
/// or by FastAPI on uvicorn, on asyncio's own loop or uvloop.
pub fn async_chain(port: u16, b: &Backends, framework: &str, uvloop: bool) -> Proc {
    let mut cmd = Command::new(require_program("python3", "the machine's CPython"));
    cmd.env("OTEL_SERVICE_NAME", format!("chain-{framework}")).arg(crate::python_app("async_chain.py")).args(["--framework", framework]);
    if uvloop {
        cmd.arg("--uvloop");
    }
    app_args(&mut cmd, port, b);
    spawn_until(cmd, "python asyncio chain app", "ready", Duration::from_secs(30))
}

/// A Go program of tests/apps/`dir`, built once per test process in GOPATH mode against
/// Debian's packaged libraries (`cargo xtask setup` installs them); its binary's path.
pub fn go_app(dir: &str) -> std::path::PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let go = require_program("go", "cargo xtask setup installs golang-go");
    let binary = std::env::temp_dir().join(format!("zerotrace-{}-{}", dir.replace('_', "-"), std::process::id()));
    if !binary.exists() {
        let out = Command::new(go)
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(repo_root().join("tests/apps").join(dir))
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", std::env::temp_dir().join("zerotrace-go-cache"))
            .output()
            .expect("running go build");
        assert!(out.status.success(), "go build of tests/apps/{dir} failed (cargo xtask setup installs the Go libraries it imports): {}", String::from_utf8_lossy(&out.stderr));
    }
    binary
}

/// tests/apps/go_chain: the Go concurrency fidelity app (lib/pq, redis.v5).
pub fn go_chain(port: u16, b: &Backends) -> Proc {
    let binary = go_app("go_chain");
    let mut cmd = Command::new(&binary);
    cmd.env("OTEL_SERVICE_NAME", "chain-go");
    cmd.args(["-port", &port.to_string(), "-downstream", &format!("http://127.0.0.1:{}", b.downstream_port)]);
    cmd.args(["-pg-port", &b.pg.port.to_string(), "-redis-port", &b.redis.port.to_string()]);
    spawn_until(cmd, "go chain app", "ready", Duration::from_secs(30))
}

/// tests/apps/flask_chain.py: the thread-per-request fidelity app, its calls made by the
/// serving thread or (`pool`) handed to a ThreadPoolExecutor.
pub fn flask_chain(port: u16, b: &Backends, pool: bool) -> Proc {
    let mut cmd = Command::new(require_program("python3", "the machine's CPython"));
    cmd.env("OTEL_SERVICE_NAME", "chain-flask").arg(crate::python_app("flask_chain.py"));
    if pool {
        cmd.arg("--pool");
    }
    app_args(&mut cmd, port, b);
    spawn_until(cmd, "flask chain app", "ready", Duration::from_secs(30))
}
