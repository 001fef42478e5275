//! Where the device's time goes, shader by shader: with `LLAVA_EDGE_VULKAN_PROFILE` set, every
//! recorder brackets each dispatch and copy with timestamps and adds the elapsed device time to
//! one table for the process (as llama.cpp's `GGML_VK_PERF_LOGGER`). Off, it costs a load of a
//! flag per recorder. Timestamps serialise nothing that the recorder's barriers do not already.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// The variable that turns profiling on (any value).
pub const ENV: &str = "LLAVA_EDGE_VULKAN_PROFILE";

/// One shader's (or the copies') share of the device time.
#[derive(Clone, Debug, PartialEq)]
pub struct ShaderTime {
    /// The shader variant, as `Shader`'s Debug names it, or "copy".
    pub name: String,
    /// Dispatches (or copies) timed.
    pub dispatches: u64,
    /// Device time they took, in seconds.
    pub seconds: f64,
}

fn table() -> &'static Mutex<BTreeMap<String, (u64, f64)>> {
    static TABLE: OnceLock<Mutex<BTreeMap<String, (u64, f64)>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Whether recorders time their work (read once a process).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(ENV).is_some())
}

pub(super) fn add(name: &str, seconds: f64) {
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    let e = t.entry(name.to_string()).or_insert((0, 0.0));
    e.0 += 1;
    e.1 += seconds;
}

/// The times gathered since the last call, most time first; the table starts again empty.
pub fn take() -> Vec<ShaderTime> {
    let drained = std::mem::take(&mut *table().lock().unwrap_or_else(|e| e.into_inner()));
    let mut out: Vec<ShaderTime> = drained
        .into_iter()
        .map(|(name, (dispatches, seconds))| ShaderTime {
            name,
            dispatches,
            seconds,
        })
        .collect();
    out.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    out
}

/// The table as text: one line a shader with its share of the total.
pub fn report(times: &[ShaderTime]) -> String {
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    let mut s = format!(
        "device time by shader ({:.1} ms in {} dispatches)\n",
        total * 1e3,
        times.iter().map(|t| t.dispatches).sum::<u64>()
    );
    for t in times {
        s += &format!(
            "  {:>5.1}%  {:>9.2} ms  {:>6} x  {}\n",
            100.0 * t.seconds / total.max(f64::MIN_POSITIVE),
            t.seconds * 1e3,
            t.dispatches,
            t.name
        );
    }
    s
}
