//! Preprocessing against the transformers processors' outputs in the fixtures, within the
//! spread the reference shows between its own two back-ends (torchvision and PIL).

mod common;

use common::npy::{fixtures_dir, read};
use llava_edge::image::load_image;
use llava_edge::image::preprocess::{clip_tile, Normalize};

// The processor's published values, verbatim.
#[allow(clippy::excessive_precision)]
const CLIP: Normalize = Normalize {
    mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
    std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
};

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn clip_tiles_match_the_reference_processors() {
    for (fixture, image) in [
        ("sq180", "sq180"),
        ("wide200x110", "wide200x110"),
        ("tall110x200", "tall110x200"),
    ] {
        let dir = fixtures_dir().join("llava15").join(fixture);
        let img = load_image(&fixtures_dir().join("images").join(format!("{image}.png"))).unwrap();
        let ours = clip_tile(&img, 70, &CLIP);
        let tv = read(&dir.join("pixel_values.npy"));
        assert_eq!(tv.shape(), &[1, 3, 70, 70]);
        let d_tv = max_diff(&ours, tv.f32());
        let pil = dir.join("pixel_values_pil_backend.npy");
        let spread = if pil.exists() {
            max_diff(read(&pil).f32(), tv.f32())
        } else {
            f32::NAN
        };
        println!("{fixture}: ours vs torchvision {d_tv:.4}; the reference's own PIL-vs-torchvision spread {spread:.4}");
        // One 8-bit level is 1/255/std <= 0.01501 after normalisation: the two reference
        // back-ends differ by that much, and so may we, no more.
        let one_level = 1.0 / 255.0 / CLIP.std.iter().cloned().fold(f32::MAX, f32::min);
        assert!(
            d_tv <= one_level * 1.001,
            "{fixture}: {d_tv} vs torchvision"
        );
        if pil.exists() {
            let d_pil = max_diff(&ours, read(&pil).f32());
            assert!(d_pil <= one_level * 1.001, "{fixture}: {d_pil} vs PIL");
        }
    }
}

fn bmp_header(width: i32, height: i32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&(54u32 + 12).to_le_bytes()); // claimed file size
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
    b.extend_from_slice(&40u32.to_le_bytes()); // BITMAPINFOHEADER
    b.extend_from_slice(&width.to_le_bytes());
    b.extend_from_slice(&height.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    b.extend_from_slice(&[0; 12]); // a few pixels, far fewer than claimed
    b
}

#[test]
fn bad_images_are_clear_errors() {
    use llava_edge::image::{load_image_bytes, ImageError};
    use std::path::Path;
    let p = Path::new("x.img");
    // A header claiming 20000 x 20000: refused before any pixel buffer is allocated.
    let e = load_image_bytes(&bmp_header(20000, 20000), p).unwrap_err();
    assert!(
        matches!(
            e,
            ImageError::TooLarge {
                width: 20000,
                height: 20000,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("20000x20000"), "{e}");
    // Zero-size.
    let e = load_image_bytes(&bmp_header(0, 5), p).unwrap_err();
    assert!(
        matches!(e, ImageError::Empty { .. } | ImageError::Decode { .. }),
        "{e}"
    );
    // Not an image.
    let e = load_image_bytes(b"USER: hello, this is text", p).unwrap_err();
    assert!(matches!(e, ImageError::UnknownFormat { .. }), "{e}");
    // Truncated: half of a real PNG.
    let png = std::fs::read(fixtures_dir().join("images/sq180.png")).unwrap();
    let e = load_image_bytes(&png[..png.len() / 2], p).unwrap_err();
    assert!(matches!(e, ImageError::Decode { .. }), "{e}");
    // A claimed size the data cannot hold (small enough to pass the limits).
    let e = load_image_bytes(&bmp_header(300, 300), p).unwrap_err();
    assert!(matches!(e, ImageError::Decode { .. }), "{e}");
    // Missing file.
    let e = llava_edge::image::load_image(Path::new("/nonexistent/cat.jpg")).unwrap_err();
    assert!(matches!(e, ImageError::Io { .. }), "{e}");
}

#[test]
fn anyres_tiles_match_the_reference_processors() {
    use llava_edge::image::preprocess::anyres_tiles;
    use llava_edge::vision::anyres::plan_tiles;
    let mut checked = 0;
    for case in ["llava_next_mistral", "llava_ov"] {
        let dir = fixtures_dir().join(case);
        let cj: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let pins: Vec<(usize, usize)> = cj["image_grid_pinpoints_hw"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v[0].as_u64().unwrap() as usize,
                    v[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        let pc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("hf/processor_config.json")).unwrap(),
        )
        .unwrap();
        let f3 = |k: &str| -> [f32; 3] {
            let a = pc["image_processor"][k].as_array().unwrap();
            [0, 1, 2].map(|i| a[i].as_f64().unwrap() as f32)
        };
        let norm = Normalize {
            mean: f3("image_mean"),
            std: f3("image_std"),
        };
        let one_level = 1.0 / 255.0 / norm.std.iter().cloned().fold(f32::MAX, f32::min);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let fx = entry.unwrap().path();
            let Ok(meta) = std::fs::read_to_string(fx.join("meta.json")) else {
                continue;
            };
            let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
            if meta["kind"] != "image" {
                continue;
            }
            let img =
                load_image(&fixtures_dir().join(meta["images"][0].as_str().unwrap())).unwrap();
            let plan = plan_tiles((img.height, img.width), &pins, 70).unwrap();
            let tiles = anyres_tiles(&img, 70, plan.best_hw, plan.resized_hw, &norm);
            let want = read(&fx.join("pixel_values.npy"));
            assert_eq!(
                want.f32().len(),
                tiles.len() * 3 * 70 * 70,
                "{}: tile count",
                fx.display()
            );
            // The reference's own two back-ends differ by this much on this image (recorded by
            // the generator); we may differ from torchvision's by as much, never by more.
            let spread = meta["pil_backend_vs_torchvision_pixel_max_abs_diff"]
                .as_f64()
                .unwrap() as f32;
            let bound = spread.max(one_level) * 1.001;
            for (i, t) in tiles.iter().enumerate() {
                let d = max_diff(t, &want.f32()[i * 3 * 70 * 70..(i + 1) * 3 * 70 * 70]);
                assert!(
                    d <= bound,
                    "{}: tile {i}: {d} (bound {bound})",
                    fx.display()
                );
            }
            let pil = fx.join("pixel_values_pil_backend.npy");
            if pil.exists() {
                let pil = read(&pil);
                for (i, t) in tiles.iter().enumerate() {
                    let d = max_diff(t, &pil.f32()[i * 3 * 70 * 70..(i + 1) * 3 * 70 * 70]);
                    assert!(
                        d <= one_level * 1.001,
                        "{}: tile {i} vs PIL: {d}",
                        fx.display()
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked}");
}

#[test]
fn animated_gifs_and_frame_directories_give_frames() {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame, RgbaImage};
    use llava_edge::image::video::load_frames;
    let dir = std::env::temp_dir().join(format!("le-gif-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gif = dir.join("clip.gif");
    {
        let mut enc = GifEncoder::new(std::fs::File::create(&gif).unwrap());
        for i in 0..6u8 {
            let img = RgbaImage::from_fn(24, 16, |x, y| {
                image::Rgba([x as u8 * 10, y as u8 * 15, i * 40, 255])
            });
            enc.encode_frame(Frame::from_parts(
                img,
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            ))
            .unwrap();
        }
    }
    let frames = load_frames(&gif, 4).unwrap();
    assert_eq!(frames.len(), 4);
    assert!(frames.iter().all(|f| f.width == 24 && f.height == 16));
    // Uniform sampling keeps the first and last frames: their blue channels differ by 5 steps.
    assert!(frames[3].data[2] > frames[0].data[2]);
    let _ = std::fs::remove_dir_all(&dir);
}
