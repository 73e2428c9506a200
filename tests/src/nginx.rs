//! A private nginx instance (Debian's binary) with a generated configuration.

use std::process::Command;
use std::time::Duration;

use crate::procs::{Proc, TempDir, wait_port};

pub struct Nginx {
    pub proc: Proc,
    pub port: u16,
    _dir: TempDir,
}

/// nginx on `port`, proxying everything to 127.0.0.1:`upstream`.
pub fn proxy(port: u16, upstream: u16) -> Nginx {
    start(port, &format!("listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{upstream}; }}"))
}

/// nginx serving HTTPS on `port` with the PEM certificate+key `cert`, answering every path
/// with a small static body.
pub fn https_static(port: u16, cert: &std::path::Path) -> Nginx {
    let c = cert.display();
    start(port, &format!("listen 127.0.0.1:{port} ssl; ssl_certificate {c}; ssl_certificate_key {c}; location / {{ return 200 \"hello over tls\\n\"; }}"))
}

/// nginx speaking HTTP/2: cleartext with prior knowledge (h2c) on `port`, and over TLS with
/// the PEM certificate+key `cert` on `tls_port`; every path answers a small static body.
pub fn http2_static(port: u16, tls_port: u16, cert: &std::path::Path) -> Nginx {
    let c = cert.display();
    start(
        port,
        &format!(
            "listen 127.0.0.1:{port} http2; listen 127.0.0.1:{tls_port} ssl http2; ssl_certificate {c}; ssl_certificate_key {c}; location / {{ return 200 \"ok over h2\\n\"; }}"
        ),
    )
}

/// nginx answering every path with a small static body.
pub fn static_ok(port: u16) -> Nginx {
    start(port, &format!("listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }}"))
}

fn start(port: u16, server_block: &str) -> Nginx {
    use std::os::unix::process::CommandExt;
    crate::require_program("nginx", "apt-get install nginx");
    let dir = TempDir::new("nginx");
    let d = dir.path().display().to_string();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\ndaemon off;\nevents {{ worker_connections 256; }}\n\
         http {{ access_log off; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
         server {{ {server_block} }} }}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new("nginx");
    cmd.args(["-c", &format!("{d}/nginx.conf"), "-e", &format!("{d}/error.log")]).process_group(0);
    let child = cmd.spawn().expect("starting nginx");
    let proc = Proc { child, name: "nginx".into() };
    wait_port(port, Duration::from_secs(10));
    Nginx { proc, port, _dir: dir }
}
