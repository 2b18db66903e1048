//! Conversion tests: each carried directive, each guard failing closed, and the
//! output validated by fulcrum's own config check (inside `convert`).

use super::*;

fn run(nginx: &str) -> Output {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("nginx.conf");
    std::fs::write(&p, nginx).expect("write");
    match convert(&p) {
        Ok(o) => o,
        Err(e) => panic!("{e}\n--- nginx:\n{nginx}"),
    }
}

pub(super) fn warned(o: &Output, name: &str) -> Vec<String> {
    o.warnings
        .iter()
        .filter(|w| w.name == name)
        .map(|w| w.to_string())
        .collect()
}

pub(super) fn config(o: &Output) -> crate::config::Config {
    crate::config::parse(Path::new("t.toml"), &o.toml).expect("validates")
}

#[test]
fn upstream_with_every_server_parameter_and_algorithm() {
    let o = run("http {
  upstream backend {
    zone backend 64k;
    least_conn;
    server 127.0.0.1:8081 weight=5 max_fails=3 fail_timeout=30 max_conns=10;
    server 127.0.0.1:8082 backup;
    server 127.0.0.1:8083 down slow_start=10s;
    keepalive 16;
    keepalive_timeout 1m;
  }
  upstream h { hash $request_uri consistent; server 127.0.0.1:9001; }
  upstream i { ip_hash; server 127.0.0.1:9002; }
  upstream r { random two least_conn; server 127.0.0.1:9003; }
  upstream r1 { random; server 127.0.0.1:9004; }
  server { location / { proxy_pass http://backend; } }
}");
    let t = &o.toml;
    assert!(
        t.contains("# nginx.conf:2 upstream backend\n[upstream.backend]"),
        "{t}"
    );
    assert!(
        t.contains("\"127.0.0.1:8081 weight=5 max_fails=3 fail_timeout=30s max_conns=10\""),
        "{t}"
    );
    assert!(t.contains("\"127.0.0.1:8082 backup\""));
    assert!(t.contains("\"127.0.0.1:8083 down\""));
    assert!(t.contains("balance = \"least_conn\"\n"));
    assert!(t.contains("keepalive = 16\nkeepalive_timeout = \"60s\""));
    assert!(t.contains("balance = \"hash\"\nhash_key = \"$request_uri\"\nconsistent = true"));
    assert!(t.contains("balance = \"ip_hash\""));
    assert!(t.contains("balance = \"random_two_least_conn\""));
    assert!(t.contains("balance = \"random\"\n"));
    assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
    assert!(o.warnings[0].to_string().ends_with("nginx.conf:7: directive \"server\" parameter \"slow_start=10s\" of server 127.0.0.1:8083 is not carried: ignored"), "{}", o.warnings[0]);
    let c = config(&o);
    assert_eq!(c.upstreams[0].servers.len(), 3);
    // nginx's connect timeout default (60s), not fulcrum's (5s).
    assert_eq!(
        c.upstreams[0].pass.connect_timeout,
        std::time::Duration::from_secs(60)
    );
}

#[test]
fn servers_listen_names_and_default_server_order() {
    let o = run("http {
  server { listen 127.0.0.1:8080; server_name a.example.com; return 200 a; }
  server { listen 127.0.0.1:8080 default_server; server_name .b.example.com ~^c\\d+$; return 200 b; }
  server { server_name \"\" _; return 204; }
  server { listen 8443 ssl; server_name tls.example.com; return 200; }
  server { listen [::1]:8081 http2 reuseport; return 200; }
}");
    let c = config(&o);
    // The default_server moves first; the ssl-only server is dropped, warned.
    assert_eq!(c.servers.len(), 4, "{}", o.toml);
    assert_eq!(
        c.servers[0].server_names,
        ["b.example.com", "*.b.example.com", "~^c\\d+$"]
    );
    assert_eq!(c.servers[1].server_names, ["a.example.com"]);
    assert_eq!(c.servers[2].listen[0].to_string(), "0.0.0.0:80");
    assert!(c.servers[3].http2);
    assert_eq!(warned(&o, "listen").len(), 2, "{:?}", o.warnings);
    assert_eq!(warned(&o, "server").len(), 1);
    assert!(
        o.toml
            .contains("# nginx.conf:3 server\n[[server]]\nlisten = [\"127.0.0.1:8080\"]"),
        "{}",
        o.toml
    );
}

#[test]
fn locations_of_every_modifier_and_proxy_pass_forms() {
    let o = run("http {
  upstream api { server 127.0.0.1:9001; }
  server {
    listen 127.0.0.1:8080;
    location = /exact { proxy_pass http://api; }
    location ^~ /static/ { proxy_pass http://127.0.0.1:9002/files/; }
    location ~ \\.php$ { proxy_pass http://api; }
    location ~* \\.(png|jpg)$ { return 404; }
    location /v1/ { proxy_pass http://api/v2/; }
    location =/glued { return 301 https://$host$request_uri; }
    location @named { proxy_pass http://api; }
    location /files { root /srv; }
  }
}");
    let c = config(&o);
    let paths: Vec<&str> = c.servers[0]
        .locations
        .iter()
        .map(|l| l.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "= /exact",
            "^~ /static/",
            "~ \\.php$",
            "~* \\.(png|jpg)$",
            "/v1/",
            "= /glued",
            "/files"
        ]
    );
    let t = &o.toml;
    assert!(t.contains("proxy_pass = \"http://127.0.0.1:9002/files/\""));
    assert!(t.contains("proxy_pass = \"http://api/v2/\""));
    assert!(
        t.contains("return = { status = 301, location = \"https://$host$request_uri\" }"),
        "{t}"
    );
    assert!(t.contains("return = { status = 404 }"));
    assert_eq!(warned(&o, "location").len(), 2, "{:?}", o.warnings);
    assert_eq!(warned(&o, "root").len(), 1);
}

#[test]
fn proxy_set_header_inherits_only_into_levels_without_their_own() {
    let o = run("http {
  proxy_set_header X-From http;
  server {
    listen 127.0.0.1:8080;
    location /a { proxy_pass http://127.0.0.1:9001; }
    location /b { proxy_set_header X-Real-IP $remote_addr; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade; proxy_pass http://127.0.0.1:9001; }
  }
  server {
    listen 127.0.0.1:8081;
    proxy_set_header Host $host;
    location / { proxy_pass http://127.0.0.1:9001; }
  }
}");
    let t = &o.toml;
    assert!(t.contains("path = \"/a\"\nproxy_pass = \"http://127.0.0.1:9001\"\nproxy_set_header = { X-From = \"http\" }"), "{t}");
    assert!(
        t.contains("proxy_set_header = { X-Real-IP = \"$remote_addr\" }"),
        "{t}"
    );
    assert!(t.contains("proxy_set_header = { Host = \"$host\" }"), "{t}");
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    config(&o);
}

/// The `proxy_pass` settings of location `i` of the first server.
fn opts(c: &crate::config::Config, i: usize) -> crate::config::PassOpts {
    match &c.servers[0].locations[i].action {
        crate::config::Action::Proxy(pp) => pp.opts,
        crate::config::Action::Return(_) => panic!("location {i} proxies"),
    }
}

#[test]
fn timeouts_and_limits_per_location() {
    let o = run("http {
  client_max_body_size 10m;
  upstream p { server 127.0.0.1:9001; }
  server {
    listen 127.0.0.1:8080;
    client_header_timeout 20;
    client_body_timeout 30;
    proxy_read_timeout 90;
    location / { proxy_connect_timeout 2s; proxy_pass http://p; }
    location /slow { proxy_connect_timeout 3s; client_max_body_size 1k; proxy_pass http://p; }
    location /lit { proxy_send_timeout 5; proxy_pass http://127.0.0.1:9002; }
    location /plain { proxy_pass http://p; }
  }
}");
    let c = config(&o);
    let secs = std::time::Duration::from_secs;
    // The pool has nginx's defaults (connect 60s, not fulcrum's 5s) ...
    assert_eq!(c.upstreams[0].pass.connect_timeout, secs(60));
    // ... and each location what nginx gives it there.
    assert_eq!(opts(&c, 0).connect_timeout, secs(2));
    assert_eq!(opts(&c, 0).read_timeout, secs(90));
    assert_eq!(opts(&c, 1).connect_timeout, secs(3));
    assert_eq!(opts(&c, 3).connect_timeout, secs(60));
    assert_eq!(opts(&c, 3).read_timeout, secs(90));
    // A literal address's implicit pool has fulcrum's defaults: nginx's are written.
    assert_eq!(opts(&c, 2).send_timeout, secs(5));
    assert_eq!(opts(&c, 2).connect_timeout, secs(60));
    let s = &c.servers[0];
    assert_eq!(s.client_max_body_size, 10 << 20);
    assert_eq!(s.locations[0].client_max_body_size, 10 << 20);
    assert_eq!(s.locations[1].client_max_body_size, 1024);
    assert_eq!(s.client_header_timeout, secs(20));
    assert_eq!(s.client_body_timeout, secs(30));
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
}

#[test]
fn add_header_with_nginx_inheritance() {
    let o = run("http {
  upstream p { server 127.0.0.1:9001; }
  add_header X-Http h;
  server {
    listen 127.0.0.1:8080;
    add_header X-Frame-Options DENY;
    add_header Strict-Transport-Security \"max-age=63072000\" always;
    location / { proxy_pass http://p; }
    location /api/ { add_header X-Api $host; add_header X-Api twice; proxy_pass http://p; }
    location = /gone { return 444; }
  }
}");
    let c = config(&o);
    let s = &c.servers[0];
    let names = |list: &[crate::config::AddHeader]| {
        list.iter()
            .map(|h| format!("{}{}", h.name, if h.always { "!" } else { "" }))
            .collect::<Vec<_>>()
    };
    // The server's own list replaces the http level's.
    assert_eq!(
        names(&s.add_headers),
        ["x-frame-options", "strict-transport-security!"]
    );
    assert_eq!(names(&s.locations[0].add_headers), names(&s.add_headers));
    // A location with its own inherits none; a repeated name is warned.
    assert_eq!(names(&s.locations[1].add_headers), ["x-api"]);
    assert_eq!(warned(&o, "add_header").len(), 1, "{:?}", o.warnings);
    match &s.locations[2].action {
        crate::config::Action::Return(r) => assert_eq!(r.status, 444),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_guard_fails_closed() {
    for guard in [
        "auth_basic \"x\"; auth_basic_user_file /etc/htpasswd;",
        "auth_request /auth;",
        "allow 10.0.0.0/8; deny all;",
        "deny all;",
        "satisfy any;",
        "limit_except GET { deny all; }",
        "if ($http_x_token != \"s3cret\") { return 401; }",
    ] {
        let o = run(&format!(
            "http {{ server {{ listen 127.0.0.1:8080;
  location /admin {{ {guard} proxy_pass http://127.0.0.1:9001; }}
  location /open {{ proxy_pass http://127.0.0.1:9001; }}
}} }}"
        ));
        let t = &o.toml;
        assert!(
            t.contains("path = \"/admin\"\nreturn = { status = 403 }"),
            "{guard}: {t}"
        );
        assert!(t.contains("# guarded by"), "{t}");
        assert!(t.contains("path = \"/open\"\nproxy_pass"), "{t}");
        assert!(
            o.warnings.iter().any(|w| w.message.contains("fail closed")),
            "{guard}"
        );
        config(&o);
    }
}

#[test]
fn guards_inherit_and_off_clears_them() {
    let o = run("http { server { listen 127.0.0.1:8080; auth_basic \"x\";
  location / { proxy_pass http://127.0.0.1:9001; location /pub/ { auth_basic off; proxy_pass http://127.0.0.1:9001; } }
  location /allowed { allow all; auth_basic off; proxy_pass http://127.0.0.1:9001; }
} }");
    let t = &o.toml;
    assert!(t.contains("path = \"/\"\nreturn = { status = 403 }"), "{t}");
    // The nested location is flattened, with its own `off`.
    assert!(t.contains("path = \"/pub/\"\nproxy_pass"), "{t}");
    assert!(t.contains("path = \"/allowed\"\nproxy_pass"), "{t}");
    config(&o);
}

#[test]
fn what_cannot_be_carried_is_warned_with_its_line() {
    let o = run("user nginx;
events { worker_connections 1024; }
http {
  gzip on;
  upstream sock { server unix:/run/app.sock; }
  server {
    listen 127.0.0.1:8080;
    location / { proxy_pass http://sock; }
    location /s { proxy_pass unix:/run/other.sock; }
    location /v { proxy_pass http://$host; }
    location /r { rewrite ^/r/(.*)$ /$1 break; try_files $uri =404; proxy_pass http://127.0.0.1:9001; }
  }
}");
    let lines: Vec<String> = o.warnings.iter().map(|w| w.to_string()).collect();
    let all = lines.join("\n");
    for (line, name) in [
        (1, "user"),
        (2, "events"),
        (4, "gzip"),
        (5, "server"),
        (5, "upstream"),
        (8, "proxy_pass"),
        (9, "proxy_pass"),
        (10, "proxy_pass"),
        (11, "rewrite"),
        (11, "try_files"),
    ] {
        assert!(
            all.contains(&format!("nginx.conf:{line}: directive \"{name}\"")),
            "{line} {name}:\n{all}"
        );
    }
    assert!(
        o.toml.contains("path = \"/\"\nreturn = { status = 502 }"),
        "{}",
        o.toml
    );
    config(&o);
}

#[test]
fn an_if_that_cannot_refuse_is_only_warned() {
    let o = run("http { server { listen 127.0.0.1:8080;
  location / { if ($request_method = OPTIONS) { return 204; } proxy_pass http://127.0.0.1:9001; }
} }");
    assert!(o.toml.contains("path = \"/\"\nproxy_pass"), "{}", o.toml);
    assert_eq!(warned(&o, "if").len(), 1);
}

#[test]
fn a_repeated_server_is_dropped_with_a_warning() {
    let o = run("http { upstream u { server 127.0.0.1:9001; server 127.0.0.1:9001 weight=2; server 127.0.0.1:9001 backup; }
  server { listen 127.0.0.1:8080; location / { proxy_pass http://u; } } }");
    assert_eq!(config(&o).upstreams[0].servers.len(), 2);
    assert_eq!(warned(&o, "server").len(), 1, "{:?}", o.warnings);
}

#[test]
fn an_include_that_is_not_there_is_warned_and_fails_closed_below_http() {
    let o = run("include modules/*.conf;
include main-extra.conf;
http { include mime.types;
  server { listen 127.0.0.1:8080;
    location / { include proxy_params; proxy_pass http://127.0.0.1:9001; }
    location /b { proxy_pass http://127.0.0.1:9001; }
  }
}");
    let w = warned(&o, "include");
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].contains("nginx.conf:2:"), "{w:?}");
    assert!(
        w[2].contains("nginx.conf:5:") && w[2].contains("fail closed"),
        "{w:?}"
    );
    assert!(
        o.toml.contains("path = \"/\"\nreturn = { status = 403 }"),
        "{}",
        o.toml
    );
    assert!(o.toml.contains("path = \"/b\"\nproxy_pass"), "{}", o.toml);
    config(&o);
}

#[test]
fn the_rewrite_break_idiom_is_a_uri_part() {
    let o = run("http { server { listen 127.0.0.1:8080;
  location /api/ { rewrite ^/api/(.*)$ /$1 break; proxy_pass http://127.0.0.1:9001; }
  location /v1/ { rewrite ^/v1/(.*) /v2/$1 break; proxy_pass http://127.0.0.1:9001; }
  location /x/ { rewrite ^/y/(.*)$ /$1 break; proxy_pass http://127.0.0.1:9001; }
  location /z/ { rewrite ^/z/(.*)$ /$1 last; proxy_pass http://127.0.0.1:9001; }
} }");
    let t = &o.toml;
    assert!(
        t.contains("path = \"/api/\"\nproxy_pass = \"http://127.0.0.1:9001/\"\n"),
        "{t}"
    );
    assert!(
        t.contains("path = \"/v1/\"\nproxy_pass = \"http://127.0.0.1:9001/v2/\"\n"),
        "{t}"
    );
    assert!(
        t.contains("path = \"/x/\"\nproxy_pass = \"http://127.0.0.1:9001\"\n"),
        "{t}"
    );
    let w = warned(&o, "rewrite");
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("nginx.conf:4:") && w[1].contains("nginx.conf:5:"),
        "{w:?}"
    );
    config(&o);
}

#[test]
fn next_upstream_settings_per_location() {
    let o = run("http { upstream p { server 127.0.0.1:9001; server 127.0.0.1:9002; }
  proxy_next_upstream error timeout http_502 denied;
  server { listen 127.0.0.1:8080;
    location / { proxy_next_upstream_tries 2; proxy_next_upstream_timeout 10s; proxy_pass http://p; }
    location /other/ { proxy_pass http://p; }
} }");
    let c = config(&o);
    for i in 0..2 {
        let n = opts(&c, i).next_upstream;
        assert!(n.error && n.timeout && n.statuses.contains(502), "{n:?}");
    }
    assert_eq!(opts(&c, 0).next_upstream_tries, 2);
    assert_eq!(
        opts(&c, 0).next_upstream_timeout,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(opts(&c, 1).next_upstream_tries, 0);
    assert!(
        o.toml
            .contains("next_upstream = [\"error\", \"timeout\", \"http_502\"]"),
        "{}",
        o.toml
    );
    assert_eq!(
        warned(&o, "proxy_next_upstream").len(),
        1,
        "{:?}",
        o.warnings
    );
}

#[test]
fn realip_directives_become_the_server_keys_inherited_as_nginx_merges_them() {
    let o = run("http {
  set_real_ip_from 10.0.0.0/8;
  set_real_ip_from 2001:db8::/32;
  real_ip_header X-Forwarded-For;
  server { listen 8080; location / { return 200; } }
  server {
    listen 8081;
    set_real_ip_from 192.0.2.1;
    real_ip_recursive on;
    location / { real_ip_header X-Real-IP; return 200; }
  }
  server { listen 8082; set_real_ip_from unix:; real_ip_header CF-Connecting-IP; return 200; }
}");
    let t = &o.toml;
    assert!(
        t.contains("real_ip_from = [\"10.0.0.0/8\", \"2001:db8::/32\"]\nreal_ip_header = \"X-Forwarded-For\"\n"),
        "{t}"
    );
    // Its own list replaces the http one; the header is inherited.
    assert!(
        t.contains("real_ip_from = [\"192.0.2.1\"]\nreal_ip_header = \"X-Forwarded-For\"\nreal_ip_recursive = true\n"),
        "{t}"
    );
    assert_eq!(warned(&o, "real_ip_header").len(), 2, "{:?}", o.warnings);
    assert_eq!(warned(&o, "set_real_ip_from").len(), 1, "{:?}", o.warnings);
    let c = config(&o);
    assert!(c.servers[0].real_ip.is_some());
    assert_eq!(
        c.servers[1].real_ip.as_ref().map(|r| r.recursive),
        Some(true)
    );
    // A server's own list replaces http's even when none of it is carried: the third
    // server trusts nothing, as nginx (which trusts only unix sockets there).
    assert!(c.servers[2].real_ip.is_none(), "{t}");
}

#[test]
fn https_upstreams_get_tls_without_verification_as_nginx() {
    let o = run("http { upstream secure { server 127.0.0.1:9443; }
  server { listen 127.0.0.1:8080;
    location / { proxy_pass https://secure; }
    location /lit/ { proxy_pass https://127.0.0.1:9444; }
} }");
    let c = config(&o);
    let tls = c.upstreams[0].tls.as_ref().expect("the pool speaks TLS");
    assert!(!tls.verify);
    assert!(o.toml.contains("tls = { verify = false }"), "{}", o.toml);
    assert!(
        o.toml.contains("proxy_pass = \"https://secure\""),
        "{}",
        o.toml
    );
    // The literal address is an implicit TLS pool.
    assert!(c
        .upstreams
        .iter()
        .any(|u| u.name == "127.0.0.1:9444" && u.tls.is_some()));
    let w = warned(&o, "proxy_pass");
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("proxy_ssl_verify off"), "{w:?}");
}

#[test]
fn a_default_server_that_cannot_come_first_is_warned() {
    let o = run("http {
  server { listen 127.0.0.1:8080 default_server; listen 127.0.0.1:8081; server_name a.test; return 200 a; }
  server { listen 127.0.0.1:8080; listen 127.0.0.1:8081 default_server; server_name b.test; return 200 b; }
}");
    let w = warned(&o, "listen");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("nginx.conf:3: directive \"listen\" 127.0.0.1:8081 default_server"),
        "{w:?}"
    );
    assert!(w[0].contains("nginx.conf:2"), "{w:?}");
    config(&o);
}
