//! What the user sees: the progress bar, the summary line and the `--json` object.

use super::size::human;
use crate::engine::error::Error;
use crate::engine::stats::Stats;
use crate::transport::tcp::KernelLimits;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A progress bar on stderr, refreshed from the live counters.
pub(crate) struct Progress {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Progress {
    pub(crate) fn start(stats: Arc<Stats>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(5));
            pb.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template"),
            );
            while !s2.load(Ordering::SeqCst) {
                pb.set_length(Stats::get(&stats.bytes_total));
                let moved =
                    Stats::get(&stats.bytes_sent) + Stats::get(&stats.bytes_unchanged) + Stats::get(&stats.bytes_holes);
                pb.set_position(moved.min(Stats::get(&stats.bytes_total)));
                pb.set_message(format!("{}/{} files", Stats::get(&stats.files_done), Stats::get(&stats.files_total)));
                std::thread::sleep(Duration::from_millis(100));
            }
            pb.finish_and_clear();
        });
        Progress { stop, handle }
    }

    pub(crate) fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
    }
}

/// One line of advice when a kernel buffer limit held the lanes back for a good
/// part of the time (from TCP_INFO), naming what to raise.
pub(crate) fn limit_advice(stats: &Stats, k: &KernelLimits, explicit_buffer: bool) -> Option<String> {
    let t = stats.lane_tcp.lock().expect("stats");
    let busy: u64 = t.iter().map(|x| x.busy_us).sum();
    if busy < 1_000_000 {
        return None;
    }
    let pct = |v: u64| v * 100 / busy;
    let snd = pct(t.iter().map(|x| x.sndbuf_limited_us).sum());
    let rwnd = pct(t.iter().map(|x| x.rwnd_limited_us).sum());
    if snd >= 25 {
        let what = if explicit_buffer {
            format!("net.core.wmem_max (now {})", human(k.wmem_max))
        } else {
            format!("the maximum of net.ipv4.tcp_wmem (now {})", human(k.tcp_wmem_max))
        };
        return Some(format!("the send buffers held the streams back {snd}% of the time: raise {what} on this host"));
    }
    if rwnd >= 25 {
        let what = if explicit_buffer { "net.core.rmem_max" } else { "the maximum of net.ipv4.tcp_rmem" };
        return Some(format!(
            "the receiver's window held the streams back {rwnd}% of the time: raise {what} on the receiving host"
        ));
    }
    None
}

/// One line for the end of a successful push.
pub(crate) fn summary_line(stats: &Stats, files: u64, discard: bool) -> String {
    let streams = Stats::get(&stats.lanes);
    let secs = stats.start.elapsed().as_secs_f64();
    let bytes = Stats::get(&stats.bytes_sent);
    let rate = bytes as f64 / secs.max(1e-9);
    let note = if discard { " (server in --discard mode: nothing was written)" } else { "" };
    format!(
        "gfast: {files} entries, {} in {secs:.2} s ({}/s) over {streams} streams, every chunk verified{note}",
        human(bytes),
        human(rate as u64)
    )
}

/// The line that sums up a copy between local directories.
pub(crate) fn local_summary_line(stats: &Stats, files: u64) -> String {
    let workers = Stats::get(&stats.lanes);
    let secs = stats.start.elapsed().as_secs_f64();
    let bytes = Stats::get(&stats.bytes_sent);
    let rate = bytes as f64 / secs.max(1e-9);
    format!(
        "gfast: {files} entries, {} copied in {secs:.2} s ({}/s) by {workers} workers",
        human(bytes),
        human(rate as u64)
    )
}

/// The `--json` object (keys documented in README "Machine-readable output").
pub(crate) fn json(job_id: &[u8; 16], stats: &Stats, err: Option<&Error>, k: &KernelLimits) -> serde_json::Value {
    let secs = stats.start.elapsed().as_secs_f64();
    let first_byte = Stats::get(&stats.first_byte_us) as f64 / 1e6;
    let sent = Stats::get(&stats.bytes_sent);
    let [p50, p90, p99, max] = stats.rtt_ms();
    let id: String = job_id.iter().map(|b| format!("{b:02x}")).collect();
    let lanes = (Stats::get(&stats.lanes) as usize).min(stats.lane_bytes.len());
    let quic = *stats.quic.lock().expect("stats");
    let mut v = json!({
        "job_id": id,
        "files": Stats::get(&stats.files_done),
        "files_total": Stats::get(&stats.files_total),
        "bytes_total": Stats::get(&stats.bytes_total),
        "bytes_sent": sent,
        "seconds": secs,
        "bytes_per_second": sent as f64 / secs.max(1e-9),
        "streams": lanes,
        "per_stream_bytes": stats.lane_bytes.iter().take(lanes).map(Stats::get).collect::<Vec<_>>(),
        "handshake_rtt_ms": Stats::get(&stats.handshake_rtt_us) as f64 / 1000.0,
        "setup_seconds": Stats::get(&stats.setup_us) as f64 / 1e6,
        "first_byte_seconds": (first_byte > 0.0).then_some(first_byte),
        "data_bytes_per_second": (first_byte > 0.0).then(|| sent as f64 / (secs - first_byte).max(1e-9)),
        "tcp": stats.lane_tcp.lock().expect("stats").iter().map(|t| json!({
            "rtt_ms": t.rtt_us as f64 / 1000.0,
            "retransmits": t.total_retrans,
            "busy_ms": t.busy_us / 1000,
            "rwnd_limited_ms": t.rwnd_limited_us / 1000,
            "sndbuf_limited_ms": t.sndbuf_limited_us / 1000,
            "max_pacing_rate": (t.max_pacing_rate != u64::MAX).then_some(t.max_pacing_rate),
        })).collect::<Vec<_>>(),
        "transport": if quic.is_some() { "quic" } else { "tcp" },
        "quic": quic.map(|q| json!({
            "rtt_ms": q.rtt_us as f64 / 1000.0,
            "cwnd": q.cwnd,
            "lost_packets": q.lost_packets,
            "sent_packets": q.sent_packets,
            "mtu": q.mtu,
        })),
        "retransmitted_chunks": Stats::get(&stats.retransmitted),
        "bytes_compressed": match Stats::get(&stats.bytes_compressed) { 0 => serde_json::Value::Null, n => n.into() },
        "bytes_resumed": Stats::get(&stats.bytes_resumed),
        "bytes_unchanged": Stats::get(&stats.bytes_unchanged),
        "bytes_holes": Stats::get(&stats.bytes_holes),
        "files_in_place": Stats::get(&stats.files_in_place),
        "chunk_rtt_ms": { "p50": p50, "p90": p90, "p99": p99, "max": max },
        "encrypted": stats.server_key.lock().expect("stats").is_some(),
        "server_key": *stats.server_key.lock().expect("stats"),
        "kernel_limits": {
            "rmem_max": k.rmem_max, "wmem_max": k.wmem_max,
            "tcp_rmem_max": k.tcp_rmem_max, "tcp_wmem_max": k.tcp_wmem_max,
        },
    });
    let c = &stats.sync;
    if c.on.load(Ordering::Relaxed) {
        v["sync"] = json!({
            "considered": Stats::get(&c.considered),
            "created": Stats::get(&c.created),
            "updated": Stats::get(&c.updated),
            "deleted": Stats::get(&c.deleted),
            "not_deleted": Stats::get(&c.not_deleted),
            "unchanged": Stats::get(&c.unchanged),
            "bytes_to_send": Stats::get(&c.bytes_to_send),
            "bytes_unchanged": Stats::get(&c.bytes_unchanged),
        });
    }
    if let Some(e) = err {
        v["error"] = json!(e.to_string());
        v["exit_code"] = json!(super::exit::code(e));
    }
    v
}
