//! Live counters of a push, read by the progress bar and the final report.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counters shared by every thread of a push.
pub(crate) struct Stats {
    /// When the push started.
    pub start: Instant,
    /// Payload bytes put on the wire in this run (retransmissions included).
    pub bytes_sent: AtomicU64,
    /// With compression: the bytes those payload bytes took in compressed chunks.
    pub bytes_compressed: AtomicU64,
    /// Payload bytes per lane (room for the most lanes a session may have).
    pub lane_bytes: Vec<AtomicU64>,
    /// Lanes the session actually opened.
    pub lanes: AtomicU64,
    /// What the kernel said about each lane at the end (TCP_INFO).
    pub lane_tcp: Mutex<Vec<crate::transport::tcp::TcpStats>>,
    /// What QUIC's congestion control saw (QUIC transport only).
    pub quic: Mutex<Option<crate::transport::quic::QuicStats>>,
    /// Round trip of the handshake, microseconds.
    pub handshake_rtt_us: AtomicU64,
    /// From the start to an authenticated session (ssh login and the remote's
    /// start included), microseconds.
    pub setup_us: AtomicU64,
    /// From the start to the first payload byte handed to a lane's socket (a
    /// pull: to the lanes joined, when the server starts sending), microseconds;
    /// 0 before.
    pub first_byte_us: AtomicU64,
    /// Sum of the sizes of all files found so far.
    pub bytes_total: AtomicU64,
    /// Entries found so far.
    pub files_total: AtomicU64,
    /// Entries confirmed by the receiver.
    pub files_done: AtomicU64,
    /// Data bytes of confirmed files.
    pub bytes_done: AtomicU64,
    /// Chunks sent again after a hash mismatch.
    pub retransmitted: AtomicU64,
    /// Data bytes not sent because the receiver already had them (resume).
    pub bytes_resumed: AtomicU64,
    /// Data bytes not sent because the receiver's old file held them (delta).
    pub bytes_unchanged: AtomicU64,
    /// Data bytes not sent because they are holes in the source (described by
    /// ZERO blocks, protocol-spec §4.14).
    pub bytes_holes: AtomicU64,
    /// Files not sent because they were already in place (resume).
    pub files_in_place: AtomicU64,
    rtt_us: Mutex<Histogram<u64>>,
    /// What a sync decided (zero for a push or a pull).
    pub sync: SyncCounts,
    /// The server's TLS key once connected (`None` for --no-encrypt).
    pub server_key: Mutex<Option<String>>,
}

/// A sync's decisions, entry by entry (`--json`'s `sync`, `--stats`).
#[derive(Default)]
pub(crate) struct SyncCounts {
    /// The job was a sync.
    pub on: std::sync::atomic::AtomicBool,
    /// Source entries compared.
    pub considered: AtomicU64,
    /// Entries that were not at the destination.
    pub created: AtomicU64,
    /// Entries that differed and were sent again (or a directory's time set).
    pub updated: AtomicU64,
    /// Entries left as they were.
    pub unchanged: AtomicU64,
    /// Entries removed at the destination (for a dry run: to be removed).
    pub deleted: AtomicU64,
    /// Entries that were to be removed and were not (a failure in the run,
    /// or the receiver could not).
    pub not_deleted: AtomicU64,
    /// Data bytes of the files to send.
    pub bytes_to_send: AtomicU64,
    /// Data bytes of the unchanged files.
    pub bytes_unchanged: AtomicU64,
}

impl Stats {
    /// Fresh counters for up to `lanes` lanes.
    pub(crate) fn new(lanes: usize) -> Self {
        Stats {
            start: Instant::now(),
            bytes_sent: AtomicU64::new(0),
            bytes_compressed: AtomicU64::new(0),
            lane_bytes: (0..lanes).map(|_| AtomicU64::new(0)).collect(),
            // Set once the handshake picked them: a job that never connected used none.
            lanes: AtomicU64::new(0),
            lane_tcp: Mutex::new(Vec::new()),
            quic: Mutex::new(None),
            handshake_rtt_us: AtomicU64::new(0),
            setup_us: AtomicU64::new(0),
            first_byte_us: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            retransmitted: AtomicU64::new(0),
            bytes_resumed: AtomicU64::new(0),
            bytes_holes: AtomicU64::new(0),
            bytes_unchanged: AtomicU64::new(0),
            files_in_place: AtomicU64::new(0),
            server_key: Mutex::new(None),
            sync: SyncCounts::default(),
            rtt_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")),
        }
    }

    /// Records the round trip of one chunk: from its first byte out to its ack in.
    pub(crate) fn record_rtt(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        if let Ok(mut h) = self.rtt_us.lock() {
            let _ = h.record(us);
        }
    }

    /// Chunk round-trip percentiles in milliseconds: p50, p90, p99, max.
    pub(crate) fn rtt_ms(&self) -> [f64; 4] {
        let h = self.rtt_us.lock().expect("stats lock");
        if h.is_empty() {
            return [0.0; 4];
        }
        let ms = |v: u64| v as f64 / 1000.0;
        [ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.9)), ms(h.value_at_quantile(0.99)), ms(h.max())]
    }

    /// Adds `n` payload bytes sent on `lane`.
    pub(crate) fn add_sent(&self, lane: usize, n: u64) {
        self.bytes_sent.fetch_add(n, Relaxed);
        self.lane_bytes[lane].fetch_add(n, Relaxed);
    }

    /// Notes now as the first payload byte's time, unless one is noted already.
    pub(crate) fn mark_first_byte(&self) {
        if self.first_byte_us.load(Relaxed) != 0 {
            return;
        }
        let t = (self.start.elapsed().as_micros() as u64).max(1);
        let _ = self.first_byte_us.compare_exchange(0, t, Relaxed, Relaxed);
    }

    /// Reads a counter.
    pub(crate) fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}
