//! Counters for `/metrics`, in the Prometheus text format.
//!
//! Plain atomics: the hot paths bump them without locks, and rendering reads them once.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use hark_protocol::ErrorCode;

/// The server's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open TCP connections (HTTP and WebSocket).
    pub tcp_connections: AtomicI64,
    /// Connections refused because their source had too many open.
    pub refused_connections: AtomicU64,
    /// Open WebSocket connections.
    pub connections: AtomicI64,
    /// Sessions that said hello and are open.
    pub sessions: AtomicI64,
    /// Live calls (set by the hub).
    pub live_calls: AtomicI64,
    /// Invitations placed.
    pub invites: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Writes of call records that failed (and were tried again; their events waited).
    pub record_write_failures: AtomicU64,
    /// When (Unix ms) the records now waiting first failed to be written; 0 while none fail.
    pub records_failing_since_ms: AtomicI64,
    /// Cluster mode: live nodes, as this node's copy of the log counts them (0 on a single server).
    pub cluster_members: AtomicI64,
    /// Cluster mode: servers this node's copy of the log counted dead (silent too long).
    pub cluster_deaths: AtomicU64,
    /// Cluster mode: entries this node published to the log.
    pub log_entries: AtomicU64,
    /// Cluster mode: microseconds, summed, from publishing an entry to NATS' acknowledgement.
    pub log_round_trip_us: AtomicU64,
    /// Cluster mode: publishes NATS refused or did not acknowledge (each was tried again).
    pub log_publish_failures: AtomicU64,
    /// Cluster mode: entries published again that NATS had already stored (the same message id
    /// after a lost acknowledgement): its de-duplication kept them once.
    pub log_duplicates: AtomicU64,
    /// Cluster mode: when (Unix ms) publishing to the log started failing; 0 while it works.
    pub log_failing_since_ms: AtomicI64,
    /// Cluster mode: the log lost entries under this node's copy (a gap, or NATS numbering
    /// anew): the node must be restarted, and `/healthz` says so.
    pub log_broken: std::sync::atomic::AtomicBool,
    errors: [AtomicU64; ErrorCode::ALL.len()],
}

impl Metrics {
    /// Counts an error answer.
    pub fn count_error(&self, code: ErrorCode) {
        let index = ErrorCode::ALL.iter().position(|c| *c == code).expect("ALL lists every code");
        self.errors[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        gauge(&mut out, "hark_tcp_connections", "Open TCP connections (HTTP and WebSocket).", self.tcp_connections.load(Ordering::Relaxed));
        counter(
            &mut out,
            "hark_refused_connections_total",
            "Connections refused because their source address had too many open.",
            self.refused_connections.load(Ordering::Relaxed),
        );
        gauge(&mut out, "hark_connections", "Open WebSocket connections.", self.connections.load(Ordering::Relaxed));
        gauge(&mut out, "hark_sessions", "Signed-in sessions.", self.sessions.load(Ordering::Relaxed));
        gauge(&mut out, "hark_calls_live", "Live calls.", self.live_calls.load(Ordering::Relaxed));
        counter(&mut out, "hark_invites_total", "Calls placed (rate() gives invites/s).", self.invites.load(Ordering::Relaxed));
        counter(&mut out, "hark_frames_in_total", "Frames received.", self.frames_in.load(Ordering::Relaxed));
        counter(&mut out, "hark_frames_out_total", "Frames sent.", self.frames_out.load(Ordering::Relaxed));
        counter(
            &mut out,
            "hark_record_write_failures_total",
            "Failed writes of call records; each was tried again, and its batch's events waited for it.",
            self.record_write_failures.load(Ordering::Relaxed),
        );
        gauge(&mut out, "hark_cluster_members", "Live nodes of the cluster (0 on a single server).", self.cluster_members.load(Ordering::Relaxed));
        counter(
            &mut out,
            "hark_cluster_deaths_total",
            "Servers this node's copy of the log counted dead (silent too long); their people reconnect through another.",
            self.cluster_deaths.load(Ordering::Relaxed),
        );
        counter(&mut out, "hark_log_entries_total", "Entries this node published to the cluster's log.", self.log_entries.load(Ordering::Relaxed));
        counter(
            &mut out,
            "hark_log_round_trip_microseconds_total",
            "Time from publishing a log entry to its acknowledgement, summed (divide by hark_log_entries_total).",
            self.log_round_trip_us.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "hark_log_publish_failures_total",
            "Log entries NATS refused or did not acknowledge; each was published again.",
            self.log_publish_failures.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "hark_log_duplicates_total",
            "Log entries published again that NATS had already stored; they were kept once.",
            self.log_duplicates.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP hark_errors_total Error answers by code.\n# TYPE hark_errors_total counter");
        for (code, count) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(out, "hark_errors_total{{code=\"{code}\"}} {}", count.load(Ordering::Relaxed));
        }
        out
    }
}
