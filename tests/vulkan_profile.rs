//! The per-shader profile (`LLAVA_EDGE_VULKAN_PROFILE`): every dispatch and copy a recorder
//! submits is counted under its shader's name, across query pools, and the device time it
//! reports fits inside the host's wall time of the submit. Skips with one line where no Vulkan
//! device exists; LLAVA_EDGE_REQUIRE_VULKAN=1 makes that a failure (CI).

#![cfg(feature = "vulkan")]

use std::time::Instant;

use llava_edge::vulkan::{profile, Vulkan, VulkanError};

#[test]
fn the_profile_counts_every_dispatch_and_copy_by_shader() {
    // One test in this binary: set before anything reads the flag.
    std::env::set_var(profile::ENV, "1");
    assert!(profile::enabled());
    let vk = match Vulkan::new(None) {
        Ok(v) => v,
        Err(e @ (VulkanError::Loader { .. } | VulkanError::NoDevice { .. })) => {
            if std::env::var("LLAVA_EDGE_REQUIRE_VULKAN").as_deref() == Ok("1") {
                panic!("LLAVA_EDGE_REQUIRE_VULKAN=1 but {e}");
            }
            eprintln!("skipping the Vulkan profile test: no Vulkan device on this machine");
            return;
        }
        Err(e) => panic!("opening Vulkan: {e}"),
    };
    if vk.info().timestamp_period.is_none() {
        eprintln!(
            "skipping: {} writes no timestamps on compute queues",
            vk.info().name
        );
        return;
    }
    let n = 4096;
    let x = vk.upload_f32(&vec![1.0; n], "x").unwrap();
    let y = vk.upload_f32(&vec![0.5; n], "y").unwrap();
    let z = vk.upload_f32(&vec![0.0; n], "z").unwrap();
    // More ops than one query pool holds (512 stamps), so the pools roll over.
    let (adds, silus, copies) = (700, 3, 5);
    let _ = profile::take();
    let mut rec = vk.recorder().unwrap();
    for i in 0..adds {
        rec.add(&x, &y, n).unwrap();
        if i < copies {
            rec.copy(&x, 0, &z, 0, 4 * n as u64);
        }
        if i < silus {
            rec.silu_mul(&z, &y, n).unwrap();
        }
    }
    let start = Instant::now();
    rec.submit().unwrap();
    let wall = start.elapsed().as_secs_f64();
    // The work ran: x grew by 0.5 each add.
    assert_eq!(x.read_f32().unwrap()[n - 1], 1.0 + 0.5 * adds as f32);

    let times = profile::take();
    let count = |name: &str| times.iter().find(|t| t.name == name).map(|t| t.dispatches);
    assert_eq!(count("Add"), Some(adds), "{times:?}");
    assert_eq!(count("SiluMul"), Some(silus), "{times:?}");
    assert_eq!(count("copy"), Some(copies), "{times:?}");
    assert_eq!(times.len(), 3, "{times:?}");
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    assert!(
        total > 0.0 && total <= wall,
        "device {total} s, submit {wall} s"
    );
    assert!(times.windows(2).all(|w| w[0].seconds >= w[1].seconds));
    let text = profile::report(&times);
    assert!(text.contains("Add") && text.contains("copy"), "{text}");
    // Taken: the table starts again empty.
    assert!(profile::take().is_empty());
}
