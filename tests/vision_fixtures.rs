//! The vision encoder and projector against transformers: for every image fixture, each tile's
//! selected-layer features and projected features, from the reference's own pixel values.

mod common;

use common::fixtures::{VisionFixture, TEXT_CASES};
use common::hf_vision::{write_mmproj_gguf, write_mmproj_gguf_as};
use common::npy::{fixtures_dir, read};
use common::rel_err;
use common::TempDir;
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::GgufFile;
use llava_edge::threadpool::ThreadPool;
use llava_edge::vision::VisionEncoder;

#[test]
fn encoders_and_projectors_match_transformers() {
    let tmp = TempDir::new("vision");
    let pool = ThreadPool::new(2);
    let mut tiles_checked = 0;
    for case in TEXT_CASES {
        let dir = fixtures_dir().join(case);
        let path = tmp.path(&format!("{case}-mmproj.gguf"));
        write_mmproj_gguf(&dir, &path);
        let f = GgufFile::open(&path).unwrap();
        let enc = VisionEncoder::load(&f).unwrap();
        let (s, d) = (enc.config.image_size, enc.config.n_embd);
        let (mut worst_f, mut worst_p) = (0f32, 0f32);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let fx = entry.unwrap().path();
            let Some(vf) = VisionFixture::read(&fx) else {
                continue;
            };
            let tiles = vf.tiles(s);
            for (t, tile) in tiles.iter().enumerate() {
                let ours = enc.features(tile.pixels, &pool).unwrap();
                let e = rel_err(&ours, tile.features);
                worst_f = worst_f.max(e);
                assert!(
                    e < 1e-4,
                    "{}: tile {t}: features relative error {e:e}",
                    fx.display()
                );
                let p = enc.project(&ours, &pool).unwrap();
                let e = rel_err(&p, tile.projected);
                worst_p = worst_p.max(e);
                assert!(
                    e < 1e-4,
                    "{}: tile {t}: projected relative error {e:e}",
                    fx.display()
                );
                tiles_checked += 1;
            }
            assert_eq!(tiles[0].features.len() % d, 0);
        }
        println!("{case}: worst relative error: features {worst_f:e}, projected {worst_p:e}");
    }
    assert!(tiles_checked > 50, "{tiles_checked} tiles");
}

/// F16 matrices (as llama.cpp writes an mmproj), run exactly and, where the CPU has a bfloat16
/// dot, in bfloat16 pairs. The bounds come from the roundings, not from a run: one rounding to
/// F16 is at most 2^-11 relative and to bf16 2^-9, a product of two bf16 values 2^-8; over a
/// dot of random-sign terms that is about 2^-8 / sqrt(3) of the output's size each matmul, and
/// the ~20 matmuls of a fixture add in quadrature to about 1%. Bounds: 2^-8 for F16 weights,
/// 2^-5 for bf16 products (3x that estimate; a wrong layout or pair order gives ~100%).
#[test]
fn f16_encoders_match_transformers_exactly_and_in_bf16() {
    let tmp = TempDir::new("vision-f16");
    let pool = ThreadPool::new(2);
    let bf16 = llava_edge::kernels::Cpu::get().bf16().is_some();
    if !bf16 {
        println!("no bfloat16 dot instruction on this CPU: the bf16 half of this test is skipped");
    }
    for case in ["llava15", "llava_next_mistral", "llava_ov"] {
        let dir = fixtures_dir().join(case);
        let path = tmp.path(&format!("{case}-mmproj-f16.gguf"));
        write_mmproj_gguf_as(&dir, &path, GgmlType::F16);
        let f = GgufFile::open(&path).unwrap();
        let mut enc = VisionEncoder::load(&f).unwrap();
        let s = enc.config.image_size;
        let mut worst = [0f32; 2];
        for (mode, bound) in [(0, 1.0 / 256.0), (1, 1.0 / 32.0)] {
            if mode == 1 {
                if !bf16 {
                    break;
                }
                assert!(enc.use_bf16_products());
            }
            let mut checked = 0;
            for entry in std::fs::read_dir(&dir).unwrap() {
                let fx = entry.unwrap().path();
                if !fx.join("pixel_values.npy").exists() || !fx.join("vision_features.npy").exists()
                {
                    continue;
                }
                let px = read(&fx.join("pixel_values.npy"));
                let feats = read(&fx.join("vision_features.npy"));
                let proj = read(&fx.join("projected_tiles.npy"));
                let n_tiles = px.f32().len() / (3 * s * s);
                let per_tile = feats.f32().len() / n_tiles;
                // The first tile of each fixture: enough tokens for the GEMM paths.
                let ours = enc.features(&px.f32()[..3 * s * s], &pool).unwrap();
                let p = enc.project(&ours, &pool).unwrap();
                for (e, what) in [
                    (rel_err(&ours, &feats.f32()[..per_tile]), "features"),
                    (rel_err(&p, &proj.f32()[..p.len()]), "projected"),
                ] {
                    worst[mode] = worst[mode].max(e);
                    assert!(
                        e < bound,
                        "{}: mode {mode}: {what} relative error {e:e}",
                        fx.display()
                    );
                }
                checked += 1;
            }
            assert!(checked > 0, "{case}: no image fixtures");
        }
        println!(
            "{case}: worst relative error: F16 {:e}, bf16 products {:e}",
            worst[0], worst[1]
        );
    }
}

/// An mmproj whose projector gives rows of another width than the text model's embedding is
/// refused, naming both widths and both files: a multiple (here 128 for a 64-wide model, as a
/// OneVision-7B mmproj's 3584 for a 0.5B model's 896) was read as twice the tokens.
#[test]
fn an_mmproj_for_another_text_width_is_refused() {
    use llava_edge::gguf::{GgufWriter, TensorSpec};
    use llava_edge::text::TextModel;
    use llava_edge::vision::VisionError;

    let tmp = TempDir::new("vision-width");
    let dir = fixtures_dir().join("llava15");
    let (text, mmproj, wide) = (
        tmp.path("text.gguf"),
        tmp.path("mmproj.gguf"),
        tmp.path("mmproj-128.gguf"),
    );
    common::hf_text::write_text_gguf(&dir, &text);
    write_mmproj_gguf(&dir, &mmproj);
    // The second projector layer made 128 rows wide (the first 64 rows as they were).
    let f = GgufFile::open(&mmproj).unwrap();
    let widen = |name: &str, dims: &[u64]| -> Vec<u64> {
        match name {
            "mm.2.weight" => vec![dims[0], 128],
            "mm.2.bias" => vec![128],
            _ => dims.to_vec(),
        }
    };
    let specs: Vec<TensorSpec> = f
        .tensors()
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &widen(&t.name, &t.dims), t.ty))
        .collect();
    let mut w = GgufWriter::create(&wide, f.metadata(), &specs).unwrap();
    for (t, s) in f.tensors().iter().zip(&specs) {
        let mut data = f.view(t).data.to_vec();
        data.resize(s.ty.bytes_for(s.dims.iter().product()).unwrap() as usize, 0);
        w.write_tensor(&t.name, &data).unwrap();
    }
    w.finish().unwrap();

    let tf = GgufFile::open(&text).unwrap();
    let m = TextModel::load(&tf).unwrap();
    assert_eq!(m.config.n_embd, 64);
    let matching = VisionEncoder::load(&f).unwrap();
    matching
        .check_text_width(m.config.n_embd, tf.path())
        .unwrap();
    let vf = GgufFile::open(&wide).unwrap();
    let enc = VisionEncoder::load(&vf).unwrap();
    assert_eq!(enc.n_out, 128);
    let e = enc
        .check_text_width(m.config.n_embd, tf.path())
        .unwrap_err();
    assert!(matches!(e, VisionError::WidthMismatch { .. }), "{e}");
    let msg = e.to_string();
    for s in ["128", "64", wide.to_str().unwrap(), text.to_str().unwrap()] {
        assert!(msg.contains(s), "'{msg}' does not name {s}");
    }
}

/// A head count that leaves heads wider than the attention kernels take (SigLIP's 1152 with
/// 2 heads: 576) is refused at load, naming the key; it was a panic in the kernel at the
/// first image.
#[test]
fn heads_wider_than_the_kernels_take_are_refused_at_load() {
    let tmp = TempDir::new("vision-heads");
    let path = tmp.path("mmproj.gguf");
    write_mmproj_gguf(&fixtures_dir().join("llava_ov"), &path);
    let f = GgufFile::open(&path).unwrap();
    let mut config = VisionEncoder::load(&f).unwrap().config;
    config.n_embd = 1152;
    config.n_head = 2;
    let e = config.check(&path).unwrap_err().to_string();
    assert!(
        e.contains("clip.vision.attention.head_count = 2") && e.contains("576"),
        "{e}"
    );
    // An explicit configuration is checked too, before any weight is read.
    let e = VisionEncoder::with_config(&f, config)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("576"), "{e}");
}
