//! Database spans in context (issue 4): a Python web service that, per request, calls another
//! service over HTTP, queries PostgreSQL and reads Redis forms one tree per request; and the
//! bad inputs a database port sees: a connection opened before the agent attached, a result
//! too large to capture, and garbage.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use zerotrace_integration_tests::db;
use zerotrace_integration_tests::procs::{Gated, JsonlAgent, TempDir, curl, python_service, python_service_args, spawn_until};
use zerotrace_integration_tests::spans::{assert_child_of, find};
use zerotrace_integration_tests::{free_port, require_program, require_root};

const REQUESTS: usize = 10;

fn psql(port: u16, sql: &str) {
    let out = std::process::Command::new("psql").args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "shop", "-q", "-c", sql]).output().unwrap();
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn http_postgres_and_redis_calls_form_one_tree_per_request() {
    require_root();
    require_program("curl", "apt-get install curl");
    let pg = db::postgres();
    let redis = db::redis();
    psql(pg.port, "CREATE TABLE items (id int primary key, name text, secret text); INSERT INTO items SELECT g, 'item' || g, 'secret' FROM generate_series(0, 20) g");
    let (front_port, back_port) = (free_port(), free_port());
    let back = python_service(back_port, None, "back");
    let front = python_service_args(front_port, Some(back_port), "merchant", &["--pg-port", &pg.port.to_string(), "--redis-port", &redis.port.to_string()]);
    let agent = JsonlAgent::start(&[front.pid(), back.pid()]);
    for i in 0..REQUESTS {
        assert_eq!(curl(&format!("http://127.0.0.1:{front_port}/merchant/{i}/status"), &[]), 200);
    }
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "agent exit: {:?}", exit.stderr);
    let servers = find(&spans, "SERVER", |s| s.service() == "merchant" && s.attr("url.path").is_some_and(|p| p.starts_with("/merchant/")));
    assert_eq!(servers.len(), REQUESTS, "one SERVER span per request");
    for server in servers {
        let children = find(&spans, "CLIENT", |s| s.parent_id == server.span_id);
        // A thread's first request also opens its Redis connection (HELLO, CLIENT SETINFO):
        // those are children too, but only the GET is per request.
        let mut kinds: Vec<String> =
            children.iter().filter(|c| c.attr("db.system.name") != Some("redis") || c.name == "GET").map(|c| c.attr("db.system.name").unwrap_or("http").to_string()).collect();
        kinds.sort();
        assert_eq!(kinds, ["http", "postgresql", "redis"], "children of {:?}: {children:?}", server.attr("url.path"));
        for child in &children {
            assert_child_of(child, server);
        }
        let query = children.iter().find(|c| c.attr("db.system.name") == Some("postgresql")).unwrap();
        assert_eq!(query.name, "SELECT items");
        assert_eq!(query.attr("db.query.text"), Some("SELECT name FROM items WHERE id = ?"));
        let http = children.iter().find(|c| c.attr("db.system.name").is_none()).unwrap();
        let back_server = find(&spans, "SERVER", |s| s.parent_id == http.span_id);
        assert_eq!(back_server.len(), 1, "the downstream SERVER span is the HTTP CLIENT's child");
    }
}

#[test]
fn connection_opened_before_attach_huge_results_and_garbage() {
    require_root();
    let pg = db::postgres();
    // A client that connects first, waits for a file, then queries: the agent attaches in
    // between.
    let dir = TempDir::new("early");
    let (go, done) = (dir.path().join("go"), dir.path().join("done"));
    let script = format!(
        "import os, time, psycopg2\n\
         conn = psycopg2.connect(host='127.0.0.1', port={}, user='postgres', dbname='shop')\n\
         conn.autocommit = True\n\
         cur = conn.cursor()\n\
         print('connected', flush=True)\n\
         while not os.path.exists('{}'): time.sleep(0.05)\n\
         cur.execute('SELECT g, repeat(%s, 100) FROM generate_series(1, 50000) g', ('x',))\n\
         rows = len(cur.fetchall())\n\
         cur.execute('SELECT 42')\n\
         open('{}', 'w').write(f'rows {{rows}} answer {{cur.fetchone()[0]}}')\n\
         time.sleep(60)\n",
        pg.port,
        go.display(),
        done.display()
    );
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c").arg(script);
    let client = spawn_until(cmd, "early client", "connected", Duration::from_secs(20));
    // Garbage on the database port from a traced process.
    let garbage = Gated::new(&format!("exec 3<>/dev/tcp/127.0.0.1/{}; head -c 4096 /dev/urandom >&3; sleep 0.2", pg.port));
    let agent = JsonlAgent::start(&[client.pid(), garbage.pid()]);
    garbage.run(Duration::from_secs(30));
    std::fs::write(&go, "").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&done).is_ok_and(|t| t.contains("answer 42")) {
        assert!(std::time::Instant::now() < deadline, "the early client did not finish its queries");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "agent exit: {:?}", exit.stderr);
    let queries = find(&spans, "CLIENT", |s| s.attr("db.system.name") == Some("postgresql"));
    let names: Vec<&str> = queries.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 2, "the two queries on the early connection, nothing from garbage: {names:?}");
    let big = queries.iter().find(|s| s.attr("db.query.text") == Some("SELECT g, repeat(?, ?) FROM generate_series(?, ?) g")).unwrap_or_else(|| panic!("{queries:?}"));
    assert!(!big.error, "a result too large to capture still ends well");
    assert!(big.end > big.start);
    let small = queries.iter().find(|s| s.attr("db.query.text") == Some("SELECT ?")).unwrap();
    assert!(small.start >= big.end, "the large result ends before the next query starts");
    assert!(!small.error);
}
