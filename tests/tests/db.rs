//! Database and cache spans from real servers and real clients (issue 4): PostgreSQL, MariaDB,
//! Redis and memcached, driven by their own command-line clients and by Python drivers. The
//! agent traces the clients (a gated shell and everything it forks).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use zerotrace_integration_tests::db;
use zerotrace_integration_tests::procs::{Gated, JsonlAgent, TempDir};
use zerotrace_integration_tests::spans::{TestSpan, find};
use zerotrace_integration_tests::{python_app, require_program, require_root};

/// Runs `script` traced from the start and returns the spans the agent exported.
fn traced(script: &str) -> Vec<TestSpan> {
    let gated = Gated::new(script);
    let agent = JsonlAgent::start(&[gated.pid()]);
    let out = gated.run(Duration::from_secs(120));
    eprintln!("script output:\n{out}");
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "agent exit: {:?}", exit.stderr);
    spans
}

fn client_script(kind: &str, port: u16) -> String {
    format!("python3 {} {kind} {port}", python_app("db_client.py").display())
}

/// No attribute of any span may carry one of these (literals, keys, values).
fn assert_no_secrets(spans: &[TestSpan], secrets: &[&str]) {
    for s in spans {
        for (k, v) in &s.attrs {
            for secret in secrets {
                assert!(!v.contains(secret), "span {:?} leaks {secret:?} in {k}={v}", s.name);
            }
        }
    }
}

/// Spans of one system from one program. Short-lived clients can be gone before the agent reads
/// /proc, and then their service name is the kernel's command name (`python3`, not `python3.11`).
fn db_spans<'a>(spans: &'a [TestSpan], system: &str, service: &str) -> Vec<&'a TestSpan> {
    let mut found = find(spans, "CLIENT", |s| s.attr("db.system.name") == Some(system) && s.service().starts_with(service));
    found.sort_by_key(|s| s.start);
    found
}

fn names(spans: &[&TestSpan]) -> Vec<String> {
    spans.iter().map(|s| s.name.clone()).collect()
}

#[test]
fn postgres_statements_from_psql_psycopg2_and_pipelined_pgbench() {
    require_root();
    require_program("psql", "apt-get install postgresql-client");
    let server = db::postgres();
    let port = server.port;
    let dir = TempDir::new("pgbench");
    let script = dir.path().join("pipeline.sql");
    std::fs::write(&script, "\\startpipeline\nSELECT count(*) FROM items;\nUPDATE items SET name = 'pear' WHERE id = 2;\n\\endpipeline\n").unwrap();
    let psql = format!("psql -h 127.0.0.1 -p {port} -U postgres -d shop -q");
    let spans = traced(&format!(
        "{psql} -c \"CREATE TABLE items (id int primary key, name text, secret text)\" \
         -c \"INSERT INTO items VALUES (1, 'apple', 'topsecret'), (2, 'pear', 'x')\" \
         -c \"SELECT name FROM items WHERE secret = 'topsecret'\"; \
         {psql} -c \"SELEC broken\"; \
         {}; \
         pgbench -n -t 3 -M prepared -f {} -h 127.0.0.1 -p {port} -U postgres shop",
        client_script("postgres", port),
        script.display()
    ));
    assert_no_secrets(&spans, &["topsecret", "apple"]);

    let psql_spans = db_spans(&spans, "postgresql", "psql");
    let ok: Vec<&TestSpan> = psql_spans.iter().copied().filter(|s| !s.error).collect();
    assert!(
        names(&ok).starts_with(&["CREATE items".to_string(), "INSERT items".into(), "SELECT items".into()]),
        "psql spans: {:?}",
        psql_spans.iter().map(|s| (&s.name, s.attr("db.query.text"), s.start)).collect::<Vec<_>>()
    );
    let select = ok[2];
    assert_eq!(select.attr("db.query.text"), Some("SELECT name FROM items WHERE secret = ?"));
    assert_eq!(select.attr("db.operation.name"), Some("SELECT"));
    assert_eq!(select.attr("db.collection.name"), Some("items"));
    assert_eq!(select.attr("db.namespace"), Some("shop"));
    assert_eq!(select.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(select.attr("server.port"), Some(port.to_string().as_str()));
    assert_eq!(select.attr("db.response.returned_rows"), Some("1"));
    assert_eq!(ok[1].attr("db.query.text"), Some("INSERT INTO items VALUES (?, ?, ?), (?, ?, ?)"));
    let errors: Vec<&&TestSpan> = psql_spans.iter().filter(|s| s.error).collect();
    assert_eq!(errors.len(), 1, "one failed statement: {:?}", names(&psql_spans));
    assert_eq!(errors[0].attr("db.response.status_code"), Some("42601"), "syntax error SQLSTATE");
    assert_eq!(errors[0].attr("error.type"), Some("42601"));

    let driver = db_spans(&spans, "postgresql", "python3");
    let select = driver.iter().find(|s| s.name == "SELECT items").unwrap_or_else(|| panic!("psycopg2 SELECT: {:?}", names(&driver)));
    assert_eq!(select.attr("db.query.text"), Some("SELECT name FROM items WHERE id = ? AND secret <> ?"));
    assert!(driver.iter().any(|s| s.name == "INSERT items"), "psycopg2 INSERT: {:?}", names(&driver));
    assert!(driver.iter().any(|s| s.name == "COMMIT"), "psycopg2 COMMIT: {:?}", names(&driver));

    // Extended protocol, named prepared statements, two statements per pipeline, 3 times.
    let bench = db_spans(&spans, "postgresql", "pgbench");
    let selects = bench.iter().filter(|s| s.name == "SELECT items" && !s.error).count();
    let updates: Vec<&&TestSpan> = bench.iter().filter(|s| s.name == "UPDATE items" && !s.error).collect();
    assert_eq!((selects, updates.len()), (3, 3), "pgbench pipelined statements: {:?}", names(&bench));
    assert_eq!(updates[0].attr("db.query.text"), Some("UPDATE items SET name = ? WHERE id = ?"));
}

#[test]
fn redis_commands_from_redis_cli_and_redis_py() {
    require_root();
    let server = db::redis();
    let port = server.port;
    let spans = traced(&format!("redis-cli -p {port} SET user:secretkey secretvalue; redis-cli -p {port} GET user:secretkey; {}", client_script("redis", port)));
    assert_no_secrets(&spans, &["secretkey", "secretvalue"]);
    let cli = db_spans(&spans, "redis", "redis-cli");
    assert!(names(&cli).contains(&"SET".to_string()) && names(&cli).contains(&"GET".to_string()), "redis-cli spans: {:?}", names(&cli));
    let py = db_spans(&spans, "redis", "python3");
    let py_names = names(&py);
    for expected in ["SET", "GET", "MULTI", "INCRBY", "EXEC", "LPUSH"] {
        assert!(py_names.contains(&expected.to_string()), "redis-py {expected}: {py_names:?}");
    }
    let lpush = py.iter().find(|s| s.name == "LPUSH").unwrap();
    assert!(lpush.error);
    assert_eq!(lpush.attr("db.response.status_code"), Some("WRONGTYPE"));
    let get = py.iter().find(|s| s.name == "GET").unwrap();
    assert_eq!(get.attr("db.operation.name"), Some("GET"));
    assert_eq!(get.attr("server.port"), Some(port.to_string().as_str()));
    assert!(!get.error);
}

#[test]
fn memcached_commands_from_pymemcache() {
    require_root();
    let server = db::memcached();
    let spans = traced(&client_script("memcached", server.port));
    assert_no_secrets(&spans, &["secretkey", "secretvalue"]);
    let py = db_spans(&spans, "memcached", "python3");
    // pymemcache sends `set` with noreply by default: a span that ends when it is sent.
    assert_eq!(names(&py), ["set", "get", "get", "delete", "incr"], "pymemcache spans");
    assert!(py.iter().all(|s| !s.error), "misses are not errors");
}

#[test]
fn mariadb_statements_from_the_cli_pymysql_and_prepared_statements() {
    require_root();
    let server = db::mariadb();
    let port = server.port;
    let mariadb = format!("mariadb -h 127.0.0.1 -P {port} -u root");
    let spans = traced(&format!(
        "{mariadb} shop -e \"CREATE TABLE items (id int primary key, name text, secret text); INSERT INTO items VALUES (1, 'apple', 'topsecret'), (2, 'pear', 'x'); SELECT name FROM items WHERE secret = 'topsecret'\"; \
         {mariadb} -e \"USE shop; DELETE FROM items WHERE id = 99\"; \
         {}",
        client_script("mysql", port)
    ));
    assert_no_secrets(&spans, &["topsecret", "apple"]);
    let cli = db_spans(&spans, "mariadb", "mariadb");
    let cli_names = names(&cli);
    for expected in ["CREATE items", "INSERT items", "SELECT items", "DELETE items"] {
        assert!(cli_names.contains(&expected.to_string()), "mariadb CLI {expected}: {cli_names:?}");
    }
    let select = cli.iter().find(|s| s.name == "SELECT items").unwrap();
    assert_eq!(select.attr("db.query.text"), Some("SELECT name FROM items WHERE secret = ?"));
    assert_eq!(select.attr("db.namespace"), Some("shop"));
    assert_eq!(select.attr("db.response.returned_rows"), Some("1"));
    let delete = cli.iter().find(|s| s.name == "DELETE items").unwrap();
    assert_eq!(delete.attr("db.namespace"), Some("shop"), "COM_INIT_DB switched the database");

    let py = db_spans(&spans, "mariadb", "python3");
    let error = py.iter().find(|s| s.error).unwrap_or_else(|| panic!("PyMySQL syntax error span: {:?}", names(&py)));
    assert_eq!(error.attr("db.response.status_code"), Some("1064"));
    assert!(py.iter().any(|s| s.name == "USE"), "select_db sends COM_INIT_DB: {:?}", names(&py));
    let prepared: Vec<&&TestSpan> = py.iter().filter(|s| s.attr("db.query.text") == Some("SELECT name FROM items WHERE id = ?")).collect();
    assert_eq!(prepared.len(), 2, "two executions of one prepared statement: {:?}", names(&py));
}

#[test]
fn postgres_server_spans_are_children_of_the_client_spans() {
    require_root();
    let server = db::postgres();
    let port = server.port;
    // Trace the server (postmaster and the backends it forks per connection) and the client.
    let gated = Gated::new(&format!("psql -h 127.0.0.1 -p {port} -U postgres -d shop -q -c \"SELECT 1 + 1\" -c \"SELECT * FROM nowhere\"; true"));
    let agent = JsonlAgent::start(&[gated.pid(), server.proc.pid()]);
    gated.run(Duration::from_secs(60));
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "agent exit: {:?}", exit.stderr);
    let servers = find(&spans, "SERVER", |s| s.attr("db.system.name") == Some("postgresql"));
    let clients = db_spans(&spans, "postgresql", "psql");
    assert_eq!(servers.len(), 2, "one SERVER span per statement in the backend: {servers:?}");
    assert_eq!(clients.len(), 2, "one CLIENT span per statement in psql");
    for server_span in &servers {
        assert_eq!(server_span.attr("db.namespace"), Some("shop"));
        assert_eq!(server_span.attr("server.port"), Some(port.to_string().as_str()));
        let parent = clients.iter().find(|c| c.span_id == server_span.parent_id).unwrap_or_else(|| panic!("SERVER {:?} is not under a psql CLIENT span", server_span.name));
        assert_eq!(parent.attr("db.query.text"), server_span.attr("db.query.text"));
        assert_eq!(parent.error, server_span.error);
    }
    assert!(servers.iter().any(|s| s.error && s.attr("db.response.status_code") == Some("42P01")), "undefined table SQLSTATE on the server side too");
}
