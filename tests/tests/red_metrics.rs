//! RED metrics (issue 18): the stable conventions' duration histograms from every request,
//! served in the Prometheus format (`--prometheus-port`) and pushed as OTLP metrics to a real
//! OTLP receiver. A Python service answers known numbers of 200s and 500s and makes Redis
//! calls; the counts, the status codes and the absence of any path are checked.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use zerotrace_integration_tests::procs::{Agent, Gated, python_service};
use zerotrace_integration_tests::receiver::Receiver;
use zerotrace_integration_tests::{db, free_port, require_root};

fn get(port: u16, path: &str) {
    let _ = Command::new("curl").args(["-s", "-o", "/dev/null", &format!("http://127.0.0.1:{port}{path}")]).status().unwrap();
}

/// The value of the one sample line of `metric` whose labels include every `labels` pair.
fn sample(page: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn scrape(port: u16) -> String {
    let out = Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/metrics")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn red_histograms_on_the_prometheus_page_count_every_request_without_paths() {
    require_root();
    let redis = db::redis();
    let web = free_port();
    let service = python_service(web, None, "red-web");
    let clients = Gated::new(&format!("for i in 1 2 3 4; do redis-cli -p {} SET red:$i v >/dev/null; done; redis-cli -p {} GET red:1 >/dev/null", redis.port, redis.port));
    let metrics = free_port();
    let service_pid = service.pid();
    let agent = Agent::start(&[
        "--pid".into(),
        service_pid.to_string(),
        "--pid".into(),
        clients.pid().to_string(),
        "--exporter".into(),
        "none".into(),
        "--prometheus-port".into(),
        metrics.to_string(),
        "--route".into(),
        "/item/{sku}".into(),
        "--hook-stats".into(),
    ]);
    for i in 0..10 {
        get(web, &format!("/item/{i}"));
    }
    for _ in 0..3 {
        get(web, "/fail");
    }
    clients.run(Duration::from_secs(30));
    // The page is rendered every second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut page = String::new();
    while Instant::now() < deadline {
        page = scrape(metrics);
        if sample(&page, "http_server_request_duration_seconds_count", &[("http_response_status_code", "500")]) == Some(3.0)
            && sample(&page, "db_client_operation_duration_seconds_count", &[("db_operation_name", "GET")]) == Some(1.0)
            && page.contains("zerotrace_processes_traced 1\n")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let exit = agent.stop();
    let report = exit.stderr.join("\n");
    // The user's route names the items; the failing path is its own template.
    let ok = [
        ("service_name", "red-web"),
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
        ("url_scheme", "http"),
        ("network_protocol_version", "1.1"),
        ("url_template", "/item/{sku}"),
    ];
    assert_eq!(sample(&page, "http_server_request_duration_seconds_count", &ok), Some(10.0), "{page}\n{report}");
    assert_eq!(sample(&page, "http_server_request_duration_seconds_bucket", &[ok[2], ("le", "+Inf")]), Some(10.0), "{page}");
    assert_eq!(
        sample(&page, "http_server_request_duration_seconds_count", &[("http_response_status_code", "500"), ("error_type", "500"), ("url_template", "/fail")]),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "db_client_operation_duration_seconds_count", &[("db_system_name", "redis"), ("db_operation_name", "SET"), ("server_port", &redis.port.to_string())]),
        Some(4.0),
        "{page}"
    );
    assert!(page.contains("# TYPE http_server_request_duration_seconds histogram"), "{page}");
    assert!(page.contains("zerotrace_spans_total"), "the agent's own metrics next to them: {page}");
    assert!(!page.contains("/item/1") && !page.contains("red:1"), "no path or key in a label: {page}");
    // The agent's own state and cost: the service is still traced (the clients' shell and its
    // redis-cli children came and went), the agent's CPU and memory, and with --hook-stats
    // what each kernel program ran.
    assert!(page.contains("zerotrace_processes_traced 1\n"), "{page}");
    assert!(page.contains("zerotrace_export_queue_spans "), "{page}");
    let value = |name: &str| page.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.trim().parse::<f64>().ok());
    assert!(value("process_cpu_seconds_total").is_some_and(|v| v > 0.0), "{page}");
    assert!(value("process_resident_memory_bytes").is_some_and(|v| v > 1e6), "{page}");
    let runs: f64 = page.lines().filter(|l| l.starts_with("zerotrace_hook_runs_total{hook=")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum();
    assert!(runs >= 13.0 * 2.0, "at least a read and a write per request: {runs}\n{page}");
    assert!(page.contains("zerotrace_hook_run_seconds_total{hook="), "{page}");
}

#[test]
fn red_histograms_are_pushed_as_otlp_metrics() {
    require_root();
    let receiver = Receiver::grpc();
    let web = free_port();
    let service = python_service(web, None, "red-push");
    let service_pid = service.pid();
    let endpoint = format!("http://{}", receiver.addr);
    let agent = Agent::start_env(
        &["--pid".into(), service_pid.to_string(), "--exporter".into(), "otlp".into(), "--otlp-endpoint".into(), endpoint, "--otlp-protocol".into(), "grpc".into()],
        &[("OTEL_METRIC_EXPORT_INTERVAL", "1000")],
    );
    for i in 0..5 {
        get(web, &format!("/item/{i}"));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let exit = agent.stop();
    let report = exit.stderr.join("\n");
    let series = receiver.received.histogram("http.server.request.duration");
    let ok: Vec<_> = series.iter().filter(|(service, attrs, ..)| service == "red-push" && attrs.contains(&"http.response.status_code=200".to_string())).collect();
    assert_eq!(ok.len(), 1, "{series:?}\n{report}");
    let (_, attrs, count, buckets) = ok[0];
    assert_eq!(*count, 5, "cumulative: every request counted once\n{report}");
    assert_eq!(buckets.iter().sum::<u64>(), 5);
    assert!(attrs.contains(&"http.request.method=GET".to_string()), "{attrs:?}");
    assert!(attrs.contains(&"url.template=/item/{id}".to_string()) && attrs.iter().all(|a| !a.contains("/item/1")), "the template, never the path: {attrs:?}");
    assert!(report.contains("RED metrics pushed to"), "{report}");
    // The agent's own figures, as its own resource.
    let own = |name: &str| receiver.received.number(name).into_iter().filter(|(service, ..)| service == "zerotrace").map(|(_, attrs, v)| (attrs, v)).collect::<Vec<_>>();
    assert!(own("zerotrace.spans").iter().any(|(attrs, v)| attrs.is_empty() && *v >= 5.0), "{:?}", own("zerotrace.spans"));
    assert_eq!(own("zerotrace.processes.traced"), [(vec![], 1.0)]);
    assert!(own("process.memory.usage").iter().any(|(_, v)| *v > 1e6), "{:?}", own("process.memory.usage"));
    assert!(own("process.cpu.time").iter().any(|(_, v)| *v > 0.0));
    assert!(own("zerotrace.events.lost").iter().all(|(attrs, _)| attrs.iter().all(|a| a.starts_with("reason="))));
}

/// A keep-alive client: GETs every path of `paths` on one connection.
fn get_all(port: u16, paths: &[String]) {
    let script = "import http.client, sys\nc = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))\nfor p in sys.stdin.read().split():\n    c.request('GET', p)\n    c.getresponse().read()\n";
    let mut child = Command::new("python3").args(["-c", script, &port.to_string()]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(paths.join("\n").as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// The metrics page as Prometheus's own Python client library reads it (OpenMetrics text):
/// `(labels, value)` of every sample named `sample`.
fn parsed_samples(page: &str, sample: &str) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
    let script = "import json, sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families\nout = [[s.labels, s.value] for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples if s.name == sys.argv[1]]\nprint(json.dumps(out))\n";
    let mut child = Command::new("python3")
        .args(["-c", script, sample])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client refused the page: {}\n{page}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Routes (issue 18): 10,000 requests over 5,000 distinct merchant ids make one template, a
/// user's `--route` wins over inference, and the page parses with Prometheus's own client.
#[test]
fn ten_thousand_requests_over_five_thousand_ids_make_one_route_and_a_user_rule_wins() {
    require_root();
    let port = free_port();
    let server = zerotrace_integration_tests::nginx::static_ok(port);
    let metrics = free_port();
    let agent = Agent::start(&[
        "--pid".into(),
        server.proc.pid().to_string(),
        "--exporter".into(),
        "none".into(),
        "--prometheus-port".into(),
        metrics.to_string(),
        "--route".into(),
        "/users/{name}/orders".into(),
    ]);
    let mut paths: Vec<String> = (0..10_000).map(|i| format!("/merchant/{}/status", 100_000 + i % 5_000)).collect();
    paths.extend((0..20).map(|i| format!("/users/alice{}/orders", ["a", "b"][i % 2])));
    get_all(port, &paths);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut page = String::new();
    let count = |page: &str, template: &str| sample(page, "http_server_request_duration_seconds_count", &[("url_template", template)]);
    while Instant::now() < deadline {
        page = scrape(metrics);
        if count(&page, "/merchant/{id}/status") == Some(10_000.0) && count(&page, "/users/{name}/orders") == Some(20.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let exit = agent.stop();
    let report = exit.stderr.join("\n");
    let series = parsed_samples(&page, "http_server_request_duration_seconds_count");
    let mut templates: Vec<(&str, f64)> = series.iter().map(|(labels, v)| (labels.get("url_template").map_or("", String::as_str), *v)).collect();
    templates.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(templates, [("/merchant/{id}/status", 10_000.0), ("/users/{name}/orders", 20.0)], "one series per template, every request counted\n{report}");
    assert!(series.iter().all(|(labels, _)| labels.get("http_request_method").map(String::as_str) == Some("GET")));
}
