//! Counters for `GET /metrics`, in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// What the server counts; shared by the handlers and the scheduler thread.
#[derive(Default)]
pub struct Metrics {
    responses: Mutex<BTreeMap<u16, u64>>,
    /// Prompt tokens evaluated or reused.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens whose cached keys and values were reused.
    pub cached_prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub completion_tokens: AtomicU64,
    /// Requests waiting for a slot.
    pub queued: AtomicUsize,
    /// Slots answering a request.
    pub busy_slots: AtomicUsize,
    /// Images encoded, and images whose embeddings came from the cache.
    pub images_encoded: AtomicU64,
    pub image_cache_hits: AtomicU64,
    /// Replies dropped because their client went away.
    pub disconnects: AtomicU64,
    encode_us: AtomicU64,
    prefill_us: AtomicU64,
    decode_us: AtomicU64,
    /// Batched decode steps, and the rows (sequences) they carried in all.
    pub decode_steps: AtomicU64,
    pub decode_rows: AtomicU64,
    /// Speculative decoding: tokens proposed, and those the model kept.
    pub draft_proposed: AtomicU64,
    pub draft_accepted: AtomicU64,
}

/// Where model time goes.
#[derive(Clone, Copy)]
pub enum Phase {
    Encode,
    Prefill,
    Decode,
}

impl Metrics {
    /// Counts a response by its status.
    pub fn response(&self, status: u16) {
        if let Ok(mut m) = self.responses.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    /// Adds model time to `phase`.
    pub fn time(&self, phase: Phase, d: Duration) {
        let c = match phase {
            Phase::Encode => &self.encode_us,
            Phase::Prefill => &self.prefill_us,
            Phase::Decode => &self.decode_us,
        };
        c.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus exposition.
    pub fn render(&self, slots: usize) -> String {
        let mut s = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let secs = |c: &AtomicU64| get(c) as f64 / 1e6;
        let _ = writeln!(
            s,
            "# HELP llava_edge_requests_total HTTP responses by status."
        );
        let _ = writeln!(s, "# TYPE llava_edge_requests_total counter");
        if let Ok(m) = self.responses.lock() {
            for (status, n) in m.iter() {
                let _ = writeln!(s, "llava_edge_requests_total{{status=\"{status}\"}} {n}");
            }
        }
        let counters = [
            (
                "prompt_tokens_total",
                "Prompt tokens (evaluated or reused).",
                get(&self.prompt_tokens) as f64,
            ),
            (
                "cached_prompt_tokens_total",
                "Prompt tokens reused from a slot's cache.",
                get(&self.cached_prompt_tokens) as f64,
            ),
            (
                "completion_tokens_total",
                "Tokens generated.",
                get(&self.completion_tokens) as f64,
            ),
            (
                "images_encoded_total",
                "Images run through the vision encoder.",
                get(&self.images_encoded) as f64,
            ),
            (
                "image_cache_hits_total",
                "Images whose embeddings were cached.",
                get(&self.image_cache_hits) as f64,
            ),
            (
                "disconnects_total",
                "Replies dropped because the client went away.",
                get(&self.disconnects) as f64,
            ),
            (
                "decode_steps_total",
                "Decode steps (batched, or one slot's verify pass).",
                get(&self.decode_steps) as f64,
            ),
            (
                "decode_rows_total",
                "Sequences decoded in all steps together.",
                get(&self.decode_rows) as f64,
            ),
            (
                "draft_tokens_total",
                "Tokens proposed by the drafter (speculative decoding).",
                get(&self.draft_proposed) as f64,
            ),
            (
                "draft_accepted_tokens_total",
                "Proposed tokens the model kept.",
                get(&self.draft_accepted) as f64,
            ),
            (
                "encode_seconds_total",
                "Image encoding time.",
                secs(&self.encode_us),
            ),
            (
                "prefill_seconds_total",
                "Prompt evaluation time.",
                secs(&self.prefill_us),
            ),
            (
                "decode_seconds_total",
                "Decode step time.",
                secs(&self.decode_us),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(s, "# HELP llava_edge_{name} {help}");
            let _ = writeln!(s, "# TYPE llava_edge_{name} counter");
            let _ = writeln!(s, "llava_edge_{name} {v}");
        }
        let gauges = [
            (
                "queue_length",
                "Requests waiting for a slot.",
                self.queued.load(Ordering::Relaxed),
            ),
            (
                "busy_slots",
                "Slots answering a request.",
                self.busy_slots.load(Ordering::Relaxed),
            ),
            ("slots", "Slots in all.", slots),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(s, "# HELP llava_edge_{name} {help}");
            let _ = writeln!(s, "# TYPE llava_edge_{name} gauge");
            let _ = writeln!(s, "llava_edge_{name} {v}");
        }
        s
    }
}
