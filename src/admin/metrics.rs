//! `GET /metrics`: the process-wide families of [`crate::metrics`] plus the ones read
//! from live state at scrape time (server up, requests in flight, reloads), so
//! nothing is counted per request for them and a removed server disappears with the
//! snapshot that held it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, IntCounterVec, IntGaugeVec, Opts};

use crate::runtime::Shared;
use crate::upstream::now_secs;

/// The text exposition of every family.
pub fn render(shared: &Shared) -> Result<Vec<u8>, prometheus::Error> {
    crate::metrics::render(live_families(shared))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> Option<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(name, help), labels).ok()
}

/// The families computed from live state at scrape time.
fn live_families(shared: &Shared) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let snap = shared.snapshot.load();
    let now = now_secs();
    if let (Some(up_g), Some(active_g)) = (
        gauge_vec(
            "fulcrum_upstream_server_up",
            "1 if the server is up (not down, draining, unhealthy or failed), else 0.",
            &["upstream", "server", "backup"],
        ),
        gauge_vec(
            "fulcrum_upstream_active_requests",
            "Tries in flight on the server.",
            &["upstream", "server"],
        ),
    ) {
        // A server listed twice in a pool shares one state: one series.
        let mut seen: HashSet<(&str, SocketAddr, bool)> = HashSet::new();
        for up in &snap.upstreams {
            for p in up.peers() {
                if !seen.insert((&up.conf.name, p.conf.addr, p.conf.backup)) {
                    continue;
                }
                let addr = p.conf.addr.to_string();
                let backup = if p.conf.backup { "true" } else { "false" };
                up_g.with_label_values(&[&up.conf.name, &addr, backup])
                    .set(i64::from(p.state_name(now) == "up"));
                active_g
                    .with_label_values(&[&up.conf.name, &addr])
                    .set(i64::from(p.state.conns.load(Ordering::Relaxed)));
            }
        }
        out.extend(up_g.collect());
        out.extend(active_g.collect());
    }
    out.extend(certificate_expiry(&snap));
    let r = &shared.reloads;
    if let Ok(reloads) = IntCounterVec::new(
        Opts::new(
            "fulcrum_config_reloads_total",
            "Configuration reloads, by result (failure: the old config kept serving).",
        ),
        &["result"],
    ) {
        reloads
            .with_label_values(&["success"])
            .inc_by(r.success.load(Ordering::Relaxed));
        reloads
            .with_label_values(&["failure"])
            .inc_by(r.failure.load(Ordering::Relaxed));
        out.extend(reloads.collect());
    }
    if let Ok(ts) = Gauge::new(
        "fulcrum_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration load (start or reload).",
    ) {
        ts.set(r.last_success_unix.load(Ordering::Relaxed) as f64);
        out.extend(ts.collect());
    }
    out
}

/// `fulcrum_tls_certificate_not_after_timestamp_seconds`: each TLS listener's
/// certificates, read from the snapshot, so a rotated one shows its new date after
/// the reload that loaded it.
fn certificate_expiry(snap: &crate::state::Snapshot) -> Vec<MetricFamily> {
    let Some(g) = gauge_vec(
        "fulcrum_tls_certificate_not_after_timestamp_seconds",
        "End of validity (Unix time) of each served certificate, by listener and the certificate's first name.",
        &["listener", "server_name"],
    ) else {
        return Vec::new();
    };
    let mut any = false;
    for (addr, routes) in snap.listeners.iter() {
        let listener = addr.to_string();
        for &i in &routes.servers {
            if let Some(t) = &snap.servers[i].conf.tls {
                g.with_label_values(&[&listener, &t.loaded.cert.name])
                    .set(t.loaded.cert.not_after);
                any = true;
            }
        }
    }
    // A family without samples is an encoding error: none without TLS.
    if any {
        g.collect()
    } else {
        Vec::new()
    }
}
