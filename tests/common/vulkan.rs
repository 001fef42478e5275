//! Opening the Vulkan device for the device tests: where none exists each test returns after
//! one line saying so, unless LLAVA_EDGE_REQUIRE_VULKAN=1 (CI sets it: a missing driver must
//! fail there, not skip).

use std::io::Write;
use std::sync::{Once, OnceLock};

use llava_edge::vulkan::{Vulkan, VulkanError};

/// A fresh handle on the loader's first device, or None (after one line saying the `what`
/// tests are skipped, once per test binary) where there is no Vulkan at all.
pub fn open_or_skip(what: &str) -> Option<Vulkan> {
    static SAID: Once = Once::new();
    match Vulkan::new(None) {
        Ok(v) => Some(v),
        Err(e @ (VulkanError::Loader { .. } | VulkanError::NoDevice { .. })) => {
            if std::env::var("LLAVA_EDGE_REQUIRE_VULKAN").as_deref() == Ok("1") {
                panic!("LLAVA_EDGE_REQUIRE_VULKAN=1 but {e}");
            }
            // Straight to stderr, past the harness's capture of eprintln!, so it shows once.
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping the Vulkan {what}tests: no Vulkan device on this machine"
                );
            });
            None
        }
        Err(e) => panic!("opening Vulkan: {e}"),
    }
}

/// [`open_or_skip`]'s device, opened once and shared by a test binary's tests.
pub fn shared_device(what: &str) -> Option<&'static Vulkan> {
    static DEVICE: OnceLock<Option<Vulkan>> = OnceLock::new();
    DEVICE.get_or_init(|| open_or_skip(what)).as_ref()
}
