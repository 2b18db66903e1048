//! A real nginx in a temp prefix proxying `/` to one upstream, for the differential
//! tests (included by those that use it).

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::common::{eventually, free_port};

/// A running nginx in a temp prefix.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx proxying `/` to `upstream { <upstream> }`; returns once it accepts.
    pub fn start(bin: &PathBuf, upstream: &str) -> Nginx {
        let port = free_port();
        let http = format!(
            r#"    upstream backend {{
{upstream}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"#
        );
        Nginx::run(bin, &http, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Starts nginx in a fresh prefix with `http` inside its `http` block (access log
    /// off, temp paths in the prefix); returns once `addr` accepts.
    pub fn run(bin: &PathBuf, http: &str, addr: SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let conf = format!(
            r#"worker_processes 1;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{http}}}
"#
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-g")
            // One process that is also the worker: killing it leaves no orphan
            // worker behind (a killed master would), and the balancer state is
            // that one process's, as with `worker_processes 1`.
            .arg("daemon off; master_process off;")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx { child, addr, dir };
        let up = eventually(20, || {
            if let Ok(Some(st)) = n.child.try_wait() {
                panic!("nginx exited: {st}\n{}", n.error_log());
            }
            TcpStream::connect(addr).is_ok()
        });
        assert!(up, "nginx did not start listening:\n{}", n.error_log());
        n
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
