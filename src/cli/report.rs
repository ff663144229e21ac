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
                pb.set_position(Stats::get(&stats.bytes_sent).min(Stats::get(&stats.bytes_total)));
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

/// One line for the end of a successful push.
pub(crate) fn summary_line(stats: &Stats, files: u64, streams: u16, discard: bool) -> String {
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

/// The `--json` object (keys documented in README "Machine-readable output").
pub(crate) fn json(job_id: &[u8; 16], stats: &Stats, err: Option<&Error>, k: &KernelLimits) -> serde_json::Value {
    let secs = stats.start.elapsed().as_secs_f64();
    let sent = Stats::get(&stats.bytes_sent);
    let [p50, p90, p99, max] = stats.rtt_ms();
    let id: String = job_id.iter().map(|b| format!("{b:02x}")).collect();
    let mut v = json!({
        "job_id": id,
        "files": Stats::get(&stats.files_done),
        "files_total": Stats::get(&stats.files_total),
        "bytes_total": Stats::get(&stats.bytes_total),
        "bytes_sent": sent,
        "seconds": secs,
        "bytes_per_second": sent as f64 / secs.max(1e-9),
        "streams": stats.lane_bytes.len(),
        "per_stream_bytes": stats.lane_bytes.iter().map(Stats::get).collect::<Vec<_>>(),
        "retransmitted_chunks": Stats::get(&stats.retransmitted),
        "bytes_resumed": Stats::get(&stats.bytes_resumed),
        "files_in_place": Stats::get(&stats.files_in_place),
        "chunk_rtt_ms": { "p50": p50, "p90": p90, "p99": p99, "max": max },
        "encrypted": stats.server_key.lock().expect("stats").is_some(),
        "server_key": *stats.server_key.lock().expect("stats"),
        "kernel_limits": {
            "rmem_max": k.rmem_max, "wmem_max": k.wmem_max,
            "tcp_rmem_max": k.tcp_rmem_max, "tcp_wmem_max": k.tcp_wmem_max,
        },
    });
    if let Some(e) = err {
        v["error"] = json!(e.to_string());
        v["exit_code"] = json!(e.exit_code());
    }
    v
}
