//! What a reload changed: upstreams, their servers, virtual servers and listeners,
//! for the log and `POST /reload`'s answer.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

use crate::config::ServerConf;
use crate::state::Snapshot;
use crate::upstream::Upstream;

/// Names added, removed and changed in one kind of object.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Changes {
    /// New in this config.
    pub added: Vec<String>,
    /// Gone from this config.
    pub removed: Vec<String>,
    /// In both, with different settings.
    pub changed: Vec<String>,
}

impl Changes {
    /// Nothing added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    fn sort(&mut self) {
        self.added.sort();
        self.removed.sort();
        self.changed.sort();
    }
}

/// The outcome of a successful reload.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Pools by name.
    pub upstreams: Changes,
    /// Servers as `POOL/ADDR`.
    pub servers: Changes,
    /// Virtual servers as `LABEL@LISTEN,...`.
    pub virtual_servers: Changes,
    /// Listeners by configured address.
    pub listeners: Changes,
    /// New listeners: configured address and the address actually bound.
    pub bound: Vec<(SocketAddr, SocketAddr)>,
    /// Changes that only take effect after a restart.
    pub restart_needed: Vec<String>,
    /// Time from trigger to swap, in milliseconds.
    pub elapsed_ms: f64,
}

const LOG_NAMES: usize = 10;

fn list(f: &mut fmt::Formatter<'_>, sign: char, names: &[String]) -> fmt::Result {
    if names.is_empty() {
        return Ok(());
    }
    write!(f, " {sign}{}[", names.len())?;
    for (i, n) in names.iter().take(LOG_NAMES).enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        f.write_str(n)?;
    }
    if names.len() > LOG_NAMES {
        write!(f, " …")?;
    }
    f.write_str("]")
}

impl fmt::Display for Summary {
    /// One line: per kind, `+N[names] -N[names] ~N[names]`, long lists cut.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds = [
            ("upstreams", &self.upstreams),
            ("servers", &self.servers),
            ("virtual_servers", &self.virtual_servers),
            ("listeners", &self.listeners),
        ];
        let mut any = false;
        for (name, c) in kinds {
            if c.is_empty() {
                continue;
            }
            if any {
                f.write_str(";")?;
            }
            any = true;
            f.write_str(name)?;
            list(f, '+', &c.added)?;
            list(f, '-', &c.removed)?;
            list(f, '~', &c.changed)?;
        }
        if !any {
            f.write_str("no changes")?;
        }
        for note in &self.restart_needed {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

fn server_eq(a: &ServerConf, b: &ServerConf) -> bool {
    a.name == b.name
        && a.weight == b.weight
        && a.max_fails == b.max_fails
        && a.fail_timeout == b.fail_timeout
        && a.max_conns == b.max_conns
        && a.backup == b.backup
        && a.down == b.down
}

fn servers_of(u: &Upstream) -> impl Iterator<Item = &ServerConf> {
    u.peers().map(|p| &p.conf)
}

/// Compares the running snapshot with the one about to replace it.
pub fn summarize(old: &Snapshot, new: &Snapshot) -> Summary {
    let mut s = Summary::default();
    diff_upstreams(old, new, &mut s);
    diff_virtual_servers(old, new, &mut s.virtual_servers);
    diff_listeners(old, new, &mut s.listeners);
    restart_notes(old, new, &mut s.restart_needed);
    for c in [
        &mut s.upstreams,
        &mut s.servers,
        &mut s.virtual_servers,
        &mut s.listeners,
    ] {
        c.sort();
    }
    s
}

/// Pools into `s.upstreams` and their servers into `s.servers`.
fn diff_upstreams(old: &Snapshot, new: &Snapshot, s: &mut Summary) {
    let old_up: HashMap<&str, &Upstream> = old
        .upstreams
        .iter()
        .map(|u| (u.conf.name.as_str(), u.as_ref()))
        .collect();
    let new_names: std::collections::HashSet<&str> =
        new.upstreams.iter().map(|u| u.conf.name.as_str()).collect();
    for u in &new.upstreams {
        let name = &u.conf.name;
        let Some(o) = old_up.get(name.as_str()) else {
            s.upstreams.added.push(name.clone());
            for c in servers_of(u) {
                s.servers.added.push(format!("{name}/{}", c.addr));
            }
            continue;
        };
        let servers_changed = diff_pool_servers(name, o, u, &mut s.servers);
        // Pool settings have many fields, more to come (health checks, hashing):
        // compare them all through their Debug form, off the serving path.
        if servers_changed || format!("{:?}", o.conf) != format!("{:?}", u.conf) {
            s.upstreams.changed.push(name.clone());
        }
    }
    for u in &old.upstreams {
        if !new_names.contains(u.conf.name.as_str()) {
            s.upstreams.removed.push(u.conf.name.clone());
            for c in servers_of(u) {
                s.servers
                    .removed
                    .push(format!("{}/{}", u.conf.name, c.addr));
            }
        }
    }
}

/// The servers of pool `name`, in both snapshots, into `servers`; true if any differ.
fn diff_pool_servers(name: &str, o: &Upstream, u: &Upstream, servers: &mut Changes) -> bool {
    let before: HashMap<SocketAddr, &ServerConf> = servers_of(o).map(|c| (c.addr, c)).collect();
    let mut seen = 0;
    let mut servers_changed = false;
    for c in servers_of(u) {
        match before.get(&c.addr) {
            Some(b) => {
                seen += 1;
                if !server_eq(b, c) {
                    servers_changed = true;
                    servers.changed.push(format!("{name}/{}", c.addr));
                }
            }
            None => {
                servers_changed = true;
                servers.added.push(format!("{name}/{}", c.addr));
            }
        }
    }
    if seen != before.len() {
        servers_changed = true;
        let now: std::collections::HashSet<SocketAddr> = servers_of(u).map(|c| c.addr).collect();
        for c in servers_of(o) {
            if !now.contains(&c.addr) {
                servers.removed.push(format!("{name}/{}", c.addr));
            }
        }
    }
    servers_changed
}

/// Each virtual server as `LABEL@LISTEN,...` (`#N` for repeats) → its settings.
fn virtual_server_keys(snap: &Snapshot) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for v in snap.servers.iter() {
        let listen: Vec<String> = v.conf.listen.iter().map(|a| a.to_string()).collect();
        let base = format!("{}@{}", v.label, listen.join(","));
        let mut key = base.clone();
        let mut n = 1;
        while out.contains_key(&key) {
            n += 1;
            key = format!("{base}#{n}");
        }
        out.insert(key, format!("{:?}", v.conf));
    }
    out
}

fn diff_virtual_servers(old: &Snapshot, new: &Snapshot, changes: &mut Changes) {
    let (ov, nv) = (virtual_server_keys(old), virtual_server_keys(new));
    for (k, conf) in &nv {
        match ov.get(k) {
            None => changes.added.push(k.clone()),
            Some(o) if o != conf => changes.changed.push(k.clone()),
            Some(_) => {}
        }
    }
    for k in ov.keys() {
        if !nv.contains_key(k) {
            changes.removed.push(k.clone());
        }
    }
}

fn diff_listeners(old: &Snapshot, new: &Snapshot, changes: &mut Changes) {
    for k in new.listeners.keys() {
        if !old.listeners.contains_key(k) {
            changes.added.push(k.to_string());
        }
    }
    for k in old.listeners.keys() {
        if !new.listeners.contains_key(k) {
            changes.removed.push(k.to_string());
        }
    }
}

/// Global settings that a reload cannot apply to the running process.
fn restart_notes(old: &Snapshot, new: &Snapshot, notes: &mut Vec<String>) {
    if old.global.worker_threads != new.global.worker_threads {
        notes.push("worker_threads changes need a restart".into());
    }
    if old.global.max_connections != new.global.max_connections {
        notes.push("max_connections changes need a restart".into());
    }
    if old.global.log_level != new.global.log_level {
        notes.push("log_level changes need a restart".into());
    }
}
