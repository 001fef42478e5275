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

/// Each converted checkpoint of `cases` loaded as `--device vulkan` loads it (every text layer
/// and the vision encoder on the device), answering each of its fixtures that `take` accepts
/// as transformers does (prompt ids, greedy tokens up to end-of-generation); returns how many
/// fixtures were checked.
pub fn pipeline_fixtures_on_vulkan(
    tag: &str,
    cases: &[&str],
    take: impl Fn(&serde_json::Value) -> bool,
) -> usize {
    use super::fixtures::{
        assert_answers_like_reference, convert_case, fixture_metas, fixture_request,
    };
    use llava_edge::load::{Device, LoadOptions, ModelFiles};
    use llava_edge::text::KvType;
    use llava_edge::threadpool::ThreadPool;
    let tmp = super::TempDir::new(tag);
    let mut checked = 0;
    for &case in cases {
        let (_, tp, vp) = convert_case(&tmp, case, "", gguf_tools::convert::OutType::F32);
        let opts = LoadOptions {
            mmproj: Some(vp),
            device: Some(Device::Vulkan),
            ..LoadOptions::new(tp)
        };
        let pool = ThreadPool::new(2);
        let files = ModelFiles::open(&opts, &pool).unwrap();
        let p = files.pipeline(&opts, pool).unwrap().pipeline;
        assert_eq!(
            p.text.placement().device_layers,
            p.text.config.n_layer,
            "{case}"
        );
        assert!(
            p.vision.as_ref().unwrap().device().is_some(),
            "{case}: the vision encoder stayed on the CPU"
        );
        for (fx, meta) in fixture_metas(&super::npy::fixtures_dir().join(case)) {
            if !take(&meta) {
                continue;
            }
            let req = fixture_request(&meta, &tmp.path(&format!("{case}-frames")));
            let mut cache = p.text.try_new_cache(2048, KvType::F16).unwrap();
            assert_answers_like_reference(&p, &fx, &req, &mut cache);
            checked += 1;
        }
    }
    checked
}
