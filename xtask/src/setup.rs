//! `cargo xtask setup`: install what building and testing need. Idempotent: everything is
//! checked first and only what is missing is installed.

use std::process::Command;

use anyhow::{Context, Result};

use crate::build::which;
use crate::util::{output, run, succeeds};

const BPF_LINKER_VERSION: &str = "0.10.3";
/// The Kafka-compatible broker of the messaging tests (no Kafka in Debian; tansu is on
/// crates.io). `dynostore` brings its in-memory storage engine.
const TANSU_VERSION: &str = "0.6.0";
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
    // The NATS broker of the messaging tests (tests/tests/messaging.rs).
    ("nats-server", "/usr/sbin/nats-server"),
    // The RabbitMQ broker of the messaging tests (a private node per test).
    ("rabbitmq-server", "/usr/sbin/rabbitmq-server"),
    // The MQTT broker of the messaging tests.
    ("mosquitto", "/usr/sbin/mosquitto"),
    // h2load, for the HTTP/2 bench (`cargo xtask bench --suite http2`).
    ("nghttp2-client", "/usr/bin/h2load"),
    // Go programs for the Go crypto/tls work (symbols tests build them).
    ("golang-go", "/usr/bin/go"),
    // Go libraries for the Go concurrency fidelity app (tests/apps/go_chain, GOPATH mode).
    ("golang-github-lib-pq-dev", "/usr/share/gocode/src/github.com/lib/pq"),
    ("golang-gopkg-redis.v5-dev", "/usr/share/gocode/src/gopkg.in/redis.v5"),
    // Go gRPC and h2c for the HTTP/2 peers (tests/apps/go_h2).
    ("golang-google-grpc-dev", "/usr/share/gocode/src/google.golang.org/grpc/server.go"),
    ("golang-golang-x-net-dev", "/usr/share/gocode/src/golang.org/x/net/http2/h2c/h2c.go"),
    // The Helm chart's renderer (tests/apps/helm_render): the template engine Helm is built on.
    ("golang-github-masterminds-sprig-dev", "/usr/share/gocode/src/github.com/Masterminds/sprig/functions.go"),
    ("golang-gopkg-yaml.v3-dev", "/usr/share/gocode/src/gopkg.in/yaml.v3/yaml.go"),
];
/// Python modules the test services import, with their PyPI names.
const PYTHON: &[(&str, &str)] = &[
    ("requests", "requests"),
    ("psycopg2", "psycopg2-binary"),
    ("pymysql", "pymysql"),
    ("redis", "redis"),
    ("pymemcache", "pymemcache"),
    ("mysql.connector", "mysql-connector-python"),
    // The asyncio concurrency fidelity app (tests/apps/async_chain.py).
    ("aiohttp", "aiohttp"),
    ("fastapi", "fastapi"),
    ("uvicorn", "uvicorn"),
    ("uvloop", "uvloop"),
    ("httpx", "httpx"),
    ("asyncpg", "asyncpg"),
    // gRPC over HTTP/2 (tests/apps/grpc_demo.py).
    ("grpc", "grpcio"),
    // The NATS client of the messaging tests (tests/apps/nats_demo.py).
    ("nats", "nats-py"),
    // The RabbitMQ client of the messaging tests (tests/apps/amqp_demo.py).
    ("pika", "pika"),
    // Celery with its Redis transport (tests/apps/celery_demo.py); py-amqp comes with it.
    ("celery", "celery[redis]==5.7.0"),
    // The Kafka client of the messaging tests (tests/apps/kafka_demo.py).
    ("kafka", "kafka-python==3.0.12"),
    // Greenlets sharing one thread, for the consumer-loop tests (tests/apps/queue_workers.py).
    ("gevent", "gevent==24.11.1"),
    // The MQTT client of the messaging tests (tests/apps/mqtt_demo.py).
    ("paho.mqtt", "paho-mqtt==2.1.0"),
    // The metrics page parsed by Prometheus's own client library (tests/tests/red_metrics.rs).
    ("prometheus_client", "prometheus-client==0.26.0"),
    // The Helm chart's and deploy/'s manifests, checked against the Kubernetes schemas.
    ("kubernetes_validate", "kubernetes-validate==1.37.0"),
];
/// The OpenTelemetry Python agent and Flask, for the `compare` reference app: (module, pinned
/// package). Pinned so the comparison figures the tests assert do not move under us.
const PYTHON_AGENT: &[(&str, &str)] = &[
    ("flask", "flask==3.1.3"),
    ("opentelemetry.distro", "opentelemetry-distro==0.66b1"),
    ("opentelemetry.exporter.otlp.proto.grpc", "opentelemetry-exporter-otlp==1.45.1"),
    ("opentelemetry.instrumentation.flask", "opentelemetry-instrumentation-flask==0.66b1"),
    ("opentelemetry.instrumentation.requests", "opentelemetry-instrumentation-requests==0.66b1"),
    ("opentelemetry.instrumentation.psycopg2", "opentelemetry-instrumentation-psycopg2==0.66b1"),
    ("opentelemetry.instrumentation.redis", "opentelemetry-instrumentation-redis==0.66b1"),
    ("opentelemetry.instrumentation.celery", "opentelemetry-instrumentation-celery==0.66b1"),
    // One side of the messaging tests' header cases (tests/tests/messaging.rs, kafka.rs).
    ("opentelemetry.instrumentation.pika", "opentelemetry-instrumentation-pika==0.66b1"),
    ("opentelemetry.instrumentation.kafka", "opentelemetry-instrumentation-kafka-python==0.66b1"),
];
/// Node apps, installed from their lock files: the Express reference app (and the
/// OpenTelemetry Node agent), and the @grpc/grpc-js peer of the HTTP/2 tests.
const NODE_APPS: &[&str] = &["tests/apps/express", "tests/apps/grpc_node"];
/// Services the packages start on install: the tests start their own instances.
const STOP_SERVICES: &str = "for s in nginx postgresql redis-server mariadb memcached nats-server rabbitmq-server mosquitto; do service $s stop >/dev/null 2>&1; done; pkill -x nginx; pkill -x memcached; pkill -x mariadbd; pkill -x redis-server; pkill -x nats-server; pkill -x mosquitto; true";

pub fn install() -> Result<()> {
    // nightly rust-src for -Z build-std=core.
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        println!("xtask setup: installing the nightly toolchain");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let components = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))?;
    // rust-src for the probes' build-std; clippy to lint the probes (`cargo xtask test`).
    for component in ["rust-src", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            println!("xtask setup: adding {component} to nightly");
            run(Command::new("rustup").args(["component", "add", component, "--toolchain", "nightly"]))?;
        }
    }
    let linker_ok =
        which("bpf-linker").and_then(|p| Command::new(p).arg("--version").output().ok()).is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if !linker_ok {
        println!("xtask setup: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
        run(Command::new("cargo").args(["+stable", "install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked", "--force"]).env_remove("RUSTUP_TOOLCHAIN"))?;
    }
    let tansu_ok = which("tansu").and_then(|p| Command::new(p).arg("--version").output().ok()).is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(TANSU_VERSION));
    if !tansu_ok {
        println!("xtask setup: building tansu {TANSU_VERSION}, the Kafka broker of the tests (about 13 minutes on 2 cores)");
        run(Command::new("cargo")
            .args(["+stable", "install", &format!("tansu@{TANSU_VERSION}"), "--locked", "--force", "--features", "dynostore"])
            .env_remove("RUSTUP_TOOLCHAIN"))?;
    }
    let missing: Vec<&str> = DEBIAN.iter().filter(|(_, bin)| !std::path::Path::new(bin).exists()).map(|(p, _)| *p).collect();
    if !missing.is_empty() {
        println!("xtask setup: installing Debian packages: {}", missing.join(" "));
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))?;
        let _ = Command::new("sh").args(["-c", STOP_SERVICES]).status();
    }
    let py_missing: Vec<&str> =
        PYTHON.iter().chain(PYTHON_AGENT).filter(|(module, _)| !succeeds(Command::new("python3").args(["-c", &format!("import {module}")]))).map(|(_, pkg)| *pkg).collect();
    if !py_missing.is_empty() {
        println!("xtask setup: installing Python packages: {}", py_missing.join(" "));
        run(Command::new("python3").args(["-m", "pip", "install", "-q"]).args(&py_missing)).context("pip install")?;
    }
    for app in NODE_APPS {
        install_node_app(app)?;
    }
    println!("xtask setup: everything is in place");
    Ok(())
}

/// `npm ci` in a Node app when its packages are missing or older than its lock file.
fn install_node_app(app: &str) -> Result<()> {
    let dir = crate::util::root().join(app);
    let installed = dir.join("node_modules/.package-lock.json");
    let lock = dir.join("package-lock.json");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&installed).is_some_and(|i| modified(&lock).is_some_and(|l| i >= l)) {
        return Ok(());
    }
    let npm = which("npm").context("npm is missing: install Node.js 20 with npm (Debian: apt-get install nodejs npm)")?;
    println!("xtask setup: installing {app}'s packages (npm ci)");
    run(Command::new(npm).args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&dir)).with_context(|| format!("npm ci in {app}"))
}
