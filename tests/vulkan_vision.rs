//! The vision side on the Vulkan backend: its own shaders against the CPU reference on random
//! inputs, then every vision fixture through the encoder, the projector and the anyres /
//! OneVision packing on the device, against transformers and against the CPU backend. Runs on
//! any Vulkan device (CI: Mesa's lavapipe); where none exists each test returns after one line
//! saying so, unless LLAVA_EDGE_REQUIRE_VULKAN=1 (CI sets it).
//!
//! Tolerances are derived, not tuned (u = 2^-24, the f32 unit roundoff; a sum of m terms carries
//! at most ~m*u of the sum of their magnitudes), as in tests/vulkan_ops.rs.
#![cfg(feature = "vulkan")]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::bounds::{assert_layer_norm_close, attention_tols, U};
use common::fixtures::{fixture_metas, AnyresCase, VisionFixture, ANYRES_CASES, TEXT_CASES};
use common::hf_vision::{write_mmproj_gguf, write_mmproj_gguf_as};
use common::npy::{fixtures_dir, read};
use common::{pair, rel_err, TempDir};
use llava_edge::backend::vulkan::Vulkan as VkBackend;
use llava_edge::backend::Backend;
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::GgufFile;
use llava_edge::kernels::{KvRef, Visible};
use llava_edge::ops;
use llava_edge::threadpool::ThreadPool;
use llava_edge::vision::anyres::{pack_anyres_on, pack_video_on, plan_tiles, PackSpec};
use llava_edge::vision::VisionEncoder;
use llava_edge::vulkan::{AttentionShape, Mask, PatchShape, Vulkan, VulkanError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The shared device, or None (after one line saying why) where there is no Vulkan at all.
fn device() -> Option<&'static Vulkan> {
    common::vulkan::shared_device("vision ")
}

/// A fixture case and its mmproj written as F32 and as F16.
type Mmprojs = Vec<(String, PathBuf, PathBuf)>;

/// The fixtures' mmproj files, written once for all tests.
fn mmprojs() -> &'static Mmprojs {
    static FILES: OnceLock<(TempDir, Mmprojs)> = OnceLock::new();
    &FILES
        .get_or_init(|| {
            let tmp = TempDir::new("vk-vision");
            let mut out = Vec::new();
            for case in TEXT_CASES.iter().chain(&["llava_ov_mixed"]) {
                let dir = fixtures_dir().join(case);
                let (f32p, f16p) = (
                    tmp.path(&format!("{case}-f32.gguf")),
                    tmp.path(&format!("{case}-f16.gguf")),
                );
                write_mmproj_gguf(&dir, &f32p);
                write_mmproj_gguf_as(&dir, &f16p, GgmlType::F16);
                out.push((case.to_string(), f32p, f16p));
            }
            (tmp, out)
        })
        .1
}

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// `w` stored as `ty` (F32 or F16): the bytes to upload and the values they hold exactly.
fn weights_as(ty: GgmlType, w: &[f32]) -> (Vec<u8>, Vec<f32>) {
    match ty {
        GgmlType::F32 => (bytemuck::cast_slice(w).to_vec(), w.to_vec()),
        _ => {
            let h: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
            (
                bytemuck::cast_slice(&h).to_vec(),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
    }
}

#[test]
fn patch_embedding_matches_f64() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(21);
    // Patches of 3 x 7 x 7 = 147 values (not whole 32-value chunks), a tile side that leaves
    // pixels over (penultimate: 30 / 7 = 4 patches), with and without a class token.
    for (ty, class_token, size, p, d) in [
        (GgmlType::F32, true, 30, 7, 40),
        (GgmlType::F16, false, 28, 7, 33),
        (GgmlType::F16, true, 14, 14, 64),
    ] {
        let s = PatchShape {
            image_size: size,
            patch_size: p,
            n_embd: d,
            class_token,
        };
        let (cols, n) = (3 * p * p, s.n_rows());
        let w = random(&mut rng, d * cols, 0.2);
        let (w_bytes, w_exact) = weights_as(ty, &w);
        let pixels = random(&mut rng, 3 * size * size, 2.0);
        let table = random(&mut rng, (2 + n) * d, 1.0);
        let wb = vk.upload(&w_bytes, "w").unwrap();
        let pb = vk.upload_f32(&pixels, "pixels").unwrap();
        let tb = vk.upload_f32(&table, "table").unwrap();
        let ob = vk.buffer((n * d * 4) as u64, "out").unwrap();
        let mut rec = vk.recorder().unwrap();
        rec.patch_embed(&wb, ty, &pb, &tb, &ob, s).unwrap();
        rec.submit().unwrap();
        let got = ob.read_f32().unwrap();

        let (g, cls) = (size / p, usize::from(class_token));
        for r in 0..n {
            for c in 0..d {
                let pos = table[(2 + r) * d + c] as f64;
                let (want, mag) = if r < cls {
                    let v = table[d + c] as f64;
                    (v + pos, v.abs() + pos.abs())
                } else {
                    let (py, px) = ((r - cls) / g, (r - cls) % g);
                    let (mut acc, mut mag) = (0f64, 0f64);
                    for ch in 0..3 {
                        for y in 0..p {
                            for x in 0..p {
                                let k = (ch * p + y) * p + x;
                                let v = pixels[ch * size * size + (py * p + y) * size + px * p + x];
                                let t = w_exact[c * cols + k] as f64 * v as f64;
                                acc += t;
                                mag += t.abs();
                            }
                        }
                    }
                    let b = table[c] as f64;
                    (acc + b + pos, mag + b.abs() + pos.abs())
                };
                // One f32 sum of `cols` products in order, then the bias and the position:
                // at most cols + 2 roundings of the magnitudes (1% for the bound's own slack).
                let tol = 1.01 * (cols + 2) as f64 * U * mag;
                let gv = got[r * d + c] as f64;
                assert!(
                    (gv - want).abs() <= tol,
                    "{ty} {s:?}: row {r} col {c}: {gv} vs {want} (bound {tol:e})"
                );
            }
        }
    }
}

/// F32 and F16 products whose rows are not whole 32-value chunks: SigLIP-so400m's MLP
/// (4304 wide, the OneVision towers'), a patch-sized 147, and 33 (one chunk and one value).
#[test]
fn float_products_with_a_part_chunk_match_f64() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(24);
    for ty in [GgmlType::F32, GgmlType::F16] {
        for (rows, cols, n_tok) in [(67usize, 4304usize, 9usize), (40, 147, 1), (5, 33, 19)] {
            let w = random(&mut rng, rows * cols, 1.0);
            let x = random(&mut rng, n_tok * cols, 1.0);
            let (bytes, wd) = weights_as(ty, &w);
            let wb = vk.upload(&bytes, "w").unwrap();
            let xb = vk.upload_f32(&x, "x").unwrap();
            let yb = vk.buffer((n_tok * rows * 4) as u64, "y").unwrap();
            let mut rec = vk.recorder().unwrap();
            rec.mul_mat(&wb, ty, rows, cols, &xb, n_tok, &yb).unwrap();
            rec.submit().unwrap();
            let y = yb.read_f32().unwrap();
            // tests/vulkan_ops.rs's bound (32 roundings in a chunk, the chunks an invocation
            // adds, 5 tree levels, 2 of slack) plus one for the part chunk's values, each added
            // to an invocation's sum on its own.
            let m = 32 + (cols / 32).div_ceil(32) + 1 + 5 + 2;
            for t in 0..n_tok {
                for r in 0..rows {
                    let (mut want, mut mag) = (0f64, 0f64);
                    for k in 0..cols {
                        let p = wd[r * cols + k] as f64 * x[t * cols + k] as f64;
                        want += p;
                        mag += p.abs();
                    }
                    let got = y[t * rows + r] as f64;
                    let tol = 1.01 * m as f64 * U * mag;
                    assert!(
                        (got - want).abs() <= tol,
                        "{ty} {rows}x{cols}, {n_tok} tokens: y[{t}][{r}] = {got}, want {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn residual_layer_norm_matches_the_cpu() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(22);
    let pool = ThreadPool::new(2);
    for (width, n_rows, add) in [(1000usize, 3usize, true), (37, 5, false), (64, 26, true)] {
        let x: Vec<f32> = random(&mut rng, width * n_rows, 3.0)
            .iter()
            .map(|v| v + 1.5)
            .collect();
        let h = random(&mut rng, width * n_rows, 1.0);
        let w = random(&mut rng, width, 2.0);
        let b = random(&mut rng, width, 1.0);
        let bufs: Vec<_> = [&x, &h, &w, &b]
            .iter()
            .map(|v| vk.upload_f32(v, "v").unwrap())
            .collect();
        let mut rec = vk.recorder().unwrap();
        rec.residual_layer_norm(
            &bufs[0], &bufs[1], add, &bufs[2], &bufs[3], width, n_rows, 1e-5,
        )
        .unwrap();
        rec.submit().unwrap();
        let (gx, gh) = (bufs[0].read_f32().unwrap(), bufs[1].read_f32().unwrap());
        let (mut wx, mut wh) = (x.clone(), h.clone());
        ops::norm::residual_layer_norm_rows(&pool, &mut wx, &mut wh, add, &w, &b, 1e-5);
        // The residual sum is one correctly rounded f32 addition on both sides.
        assert_eq!(gx, wx, "width {width}: the residual");
        // The norm's bound as for layer_norm (tests/common/bounds.rs).
        assert_layer_norm_close(&wx, &gh, &wh, &w, &b, width);
    }
}

#[test]
fn full_attention_over_f32_keys_matches_the_cpu() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(23);
    let pool = ThreadPool::new(2);
    // The fixtures' 26 tokens of 4 heads of 8; a 577-token CLIP-L-like row count with heads of
    // 64 (more keys than one 64-key tile); heads of 72 (SigLIP's).
    for (n, n_head, hd) in [(26usize, 4usize, 8usize), (577, 2, 64), (50, 3, 72)] {
        let w = n_head * hd;
        let q = random(&mut rng, n * w, 1.5);
        let k = random(&mut rng, n * w, 1.5);
        let v = random(&mut rng, n * w, 2.0);
        let (qb, kb, vb) = (
            vk.upload_f32(&q, "q").unwrap(),
            vk.upload_f32(&k, "k").unwrap(),
            vk.upload_f32(&v, "v").unwrap(),
        );
        let ob = vk.buffer((n * w * 4) as u64, "out").unwrap();
        let s = AttentionShape {
            n_rows: n,
            n_kv: n,
            n_head,
            n_kv_head: n_head,
            head_dim: hd,
            mask: Mask::None,
        };
        let mut rec = vk.recorder().unwrap();
        rec.attention_f32(&qb, &kb, &vb, &ob, s).unwrap();
        rec.submit().unwrap();
        let got = ob.read_f32().unwrap();
        let mut want = vec![0f32; n * w];
        ops::attention::attend_rows(
            &pool,
            &q,
            KvRef::F32(&k),
            KvRef::F32(&v),
            n,
            n,
            Visible::All,
            n_head,
            n_head,
            hd,
            &mut want,
        );
        let scale = 1.0 / (hd as f64).sqrt();
        for r in 0..n {
            for h in 0..n_head {
                let at = |m: &[f32], j: usize, i: usize| m[j * w + h * hd + i] as f64;
                let (mut sc, mut dmag) = (Vec::new(), Vec::new());
                for j in 0..n {
                    let dot: f64 = (0..hd).map(|i| at(&q, r, i) * at(&k, j, i)).sum();
                    let mag: f64 = (0..hd).map(|i| (at(&q, r, i) * at(&k, j, i)).abs()).sum();
                    sc.push(scale * dot);
                    dmag.push(scale * mag);
                }
                // The bound tests/vulkan_ops.rs uses for the F16 cache (tests/common/bounds.rs).
                let tols = attention_tols(&sc, &dmag, hd, |j, i| at(&v, j, i));
                for (i, &tol) in tols.iter().enumerate() {
                    let (gv, wv) = (got[r * w + h * hd + i], want[r * w + h * hd + i]);
                    assert!(
                        ((gv - wv) as f64).abs() <= tol,
                        "{n} rows, heads of {hd}: row {r} head {h} dim {i}: {gv} vs {wv}"
                    );
                }
            }
        }
    }
}

/// Every tile of every vision fixture through the encoder and projector on the device, from
/// the reference's own pixel values, with the F32 mmproj and with the F16 one (as llama.cpp
/// writes mmproj files).
///
/// Bounds. The shaders read F32 and F16 weights exactly and multiply and sum in f32, as the
/// CPU's products do (its F16 path also keeps f32 activations); only the order of the sums
/// differs, from the CPU and from transformers. So the F32 file is held to the CPU test's
/// bound against transformers (tests/vision_fixtures.rs: 1e-4, f32 orders of summation over
/// ~20 products), and so is the device against the CPU on either file. Against transformers
/// the F16 file adds the weights' own rounding (2^-11 relative each): tests/vision_fixtures.rs
/// derives 2^-8 for that, which holds here for the same reason.
#[test]
fn every_vision_fixture_encodes_and_projects_on_the_device() {
    let Some(vk) = device() else { return };
    let pool = ThreadPool::new(2);
    let mut tiles_checked = 0;
    for (case, f32_path, f16_path) in mmprojs() {
        let dir = fixtures_dir().join(case);
        for (path, vs_reference) in [(f32_path, 1e-4f32), (f16_path, 1.0 / 256.0)] {
            let f = GgufFile::open(path).unwrap();
            let enc = VisionEncoder::load(&f).unwrap();
            let mut be = VkBackend::new(vk.clone(), None);
            let t = enc.upload(&be).unwrap();
            let s = enc.config.image_size;
            let (mut worst_ref, mut worst_cpu) = (0f32, 0f32);
            for entry in std::fs::read_dir(&dir).unwrap() {
                let fx = entry.unwrap().path();
                let Some(vf) = VisionFixture::read(&fx) else {
                    continue;
                };
                let n = enc.feature_rows();
                for (tile, want) in vf.tiles(s).iter().enumerate() {
                    assert_eq!(
                        want.features.len(),
                        n * enc.config.n_embd,
                        "{}",
                        fx.display()
                    );
                    let pixels = want.pixels;
                    let fb = enc.features_on(&mut be, &t, pixels).unwrap();
                    let ours_f = be.read(fb).unwrap();
                    let fb = be.upload(ours_f.clone()).unwrap();
                    let pb = enc.project_on(&mut be, &t, fb, n).unwrap();
                    let ours = be.read(pb).unwrap();
                    let cpu_f = enc.features(pixels, &pool).unwrap();
                    let cpu_p = enc.project(&cpu_f, &pool).unwrap();
                    let (want_f, want_p) = (want.features, want.projected);
                    for (e, bound, what) in [
                        (
                            rel_err(&ours_f, want_f),
                            vs_reference,
                            "features vs transformers",
                        ),
                        (
                            rel_err(&ours, want_p),
                            vs_reference,
                            "projected vs transformers",
                        ),
                        (rel_err(&ours_f, &cpu_f), 1e-4, "features vs the CPU"),
                        (rel_err(&ours, &cpu_p), 1e-4, "projected vs the CPU"),
                    ] {
                        if what.ends_with("CPU") {
                            worst_cpu = worst_cpu.max(e);
                        } else {
                            worst_ref = worst_ref.max(e);
                        }
                        assert!(
                            e < bound,
                            "{} ({}): tile {tile}: {what}: relative error {e:e} (bound {bound:e})",
                            fx.display(),
                            path.display()
                        );
                    }
                    tiles_checked += 1;
                }
            }
            println!(
                "{case} {}: worst relative error vs transformers {worst_ref:e}, vs the CPU \
                 {worst_cpu:e}",
                if path == f32_path { "F32" } else { "F16" }
            );
        }
    }
    assert!(tiles_checked > 100, "{tiles_checked} tiles");
}

/// The packing on the device: the reference's projected tiles, uploaded, packed as the model
/// packs them (unpadding, OneVision's shrink, newline rows; video pooling), equal to the
/// reference's image features: exactly where rows only move, within the CPU test's bilinear
/// bound where they are resized (the shader follows the CPU's arithmetic step for step).
#[test]
fn anyres_and_video_packing_on_the_device_equals_the_reference() {
    let Some(vk) = device() else { return };
    let mut checked = 0;
    for case in ANYRES_CASES {
        let dir = fixtures_dir().join(case);
        let AnyresCase {
            pins,
            tile,
            p,
            max_tiles,
            newline,
        } = AnyresCase::read(&dir);
        let d = newline.len();
        let mut be = VkBackend::new(vk.clone(), None);
        let nl = be.upload_vector(&newline).unwrap();
        for (fx, meta) in fixture_metas(&dir) {
            if meta["kind"] != "video" && meta.get("anyres").is_none() {
                continue;
            }
            let tiles = read(&fx.join("projected_tiles.npy"));
            let bound = 4.0 * f32::EPSILON * tiles.f32().iter().fold(0f32, |m, v| m.max(v.abs()));
            let (got, want, tol) = if meta["kind"] == "video" {
                let n = meta["video"]["frames"].as_u64().unwrap() as usize;
                let frames = be.upload(tiles.f32().to_vec()).unwrap();
                let rows = pack_video_on(&mut be, &frames, n, p, d, &nl).unwrap();
                let want = read(&fx.join("video_features.npy"));
                (be.read(rows).unwrap(), want.f32().to_vec(), bound)
            } else if let Some(ar) = meta.get("anyres") {
                let orig = pair(&meta["image_sizes_hw"][0]);
                let plan = plan_tiles(orig, &pins, tile).unwrap();
                let tb = be.upload(tiles.f32().to_vec()).unwrap();
                let spec = PackSpec { p, max_tiles };
                let (rows, grid) =
                    pack_anyres_on(&mut be, &tb, d, plan.grid_hw, orig, &nl, spec).unwrap();
                assert_eq!(grid, pair(&ar["final_hw"]), "{}", fx.display());
                let want = read(&fx.join("image_features.npy"));
                let tol = if ar["shrunk"] == true { bound } else { 0.0 };
                (be.read(rows).unwrap(), want.f32().to_vec(), tol)
            } else {
                continue;
            };
            assert_eq!(got.len(), want.len(), "{}", fx.display());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= tol,
                "{}: packed rows differ by {worst:e} (bound {tol:e})",
                fx.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 16, "only {checked} fixtures checked");
}

/// Whole images from the PNG files through preprocessing, every tile's encoder and projector,
/// and the packing, on the device: the rows equal the CPU's [`VisionEncoder::embed_image`]
/// within the f32-order bound above, for plain, anyres and OneVision models, base-only tiles
/// and video.
#[test]
fn embed_image_and_video_on_the_device_equal_the_cpu() {
    use llava_edge::image::load_image;
    let Some(vk) = device() else { return };
    let pool = ThreadPool::new(2);
    let mut checked = 0;
    for (case, f32_path, _) in mmprojs() {
        let f = GgufFile::open(f32_path).unwrap();
        let enc = VisionEncoder::load(&f).unwrap();
        let mut be = VkBackend::new(vk.clone(), None);
        let t = enc.upload(&be).unwrap();
        let dir = fixtures_dir().join(case);
        let mut images = Vec::new();
        for (_, meta) in fixture_metas(&dir) {
            for i in meta["images"].as_array().into_iter().flatten() {
                images.push(fixtures_dir().join(i.as_str().unwrap()));
            }
        }
        images.sort();
        images.dedup();
        // A few per case keep lavapipe's share of the run short.
        for path in images.iter().take(3) {
            let img = load_image(path).unwrap();
            for base_only in [false, true] {
                if base_only && enc.anyres.is_none() {
                    continue;
                }
                let ours = enc.embed_image_on(&mut be, &t, &img, base_only).unwrap();
                let cpu = enc.embed_image(&img, base_only, &pool).unwrap();
                let e = rel_err(&ours, &cpu);
                assert!(e < 1e-4, "{case} {}: relative error {e:e}", path.display());
                checked += 1;
            }
        }
        if enc.anyres.as_ref().is_some_and(|a| a.max_tiles.is_some()) {
            let frames: Vec<_> = images
                .iter()
                .take(3)
                .map(|p| load_image(p).unwrap())
                .collect();
            let ours = enc.embed_video_on(&mut be, &t, &frames).unwrap();
            let cpu = enc.embed_video(&frames, &pool).unwrap();
            let e = rel_err(&ours, &cpu);
            assert!(e < 1e-4, "{case} video: relative error {e:e}");
            checked += 1;
        }
    }
    assert!(checked >= 18, "only {checked} images checked");
}

/// Quantized mmproj files (`gguf-tools quantize`: the encoder's and projector's matrices in
/// the mix's type; the patch kernel, whose rows are not whole blocks, stays F32) on the device:
/// the integer products there, activations quantized to int8 blocks as on the CPU. Bound as in
/// tests/vulkan_text.rs `quantized_weights_on_vulkan_stay_close`: the rows move by the RMS
/// relative weight error r with the activations' 5.7e-3 in quadrature, over the sqrt(20)
/// products of a fixture tile (3 layers of 6, the projector's 2); twice the prediction allowed.
#[test]
fn quantized_mmproj_on_the_device_stays_close() {
    use gguf_tools::mix::Mix;
    let Some(vk) = device() else { return };
    let tmp = TempDir::new("vk-vision-quant");
    let pool = ThreadPool::new(2);
    let with_act = |r: f32| (r * r + 5.7e-3f32 * 5.7e-3).sqrt();
    for (mix, r) in [(Mix::Q8_0, with_act(5.7e-3)), (Mix::Q5_1, with_act(4.8e-2))] {
        let bound = 2.0 * r * 20f32.sqrt();
        for (case, f32_path, _) in &mmprojs()[1..3] {
            let q_path = tmp.path(&format!("{case}-{mix}.gguf"));
            common::fixtures::quantize(f32_path, &q_path, mix);
            let f = GgufFile::open(&q_path).unwrap();
            let enc = VisionEncoder::load(&f).unwrap();
            let mut be = VkBackend::new(vk.clone(), None);
            let t = enc.upload(&be).unwrap();
            let s = enc.config.image_size;
            let fx = fixtures_dir().join(case).join("sq180");
            let px = read(&fx.join("pixel_values.npy"));
            let proj = read(&fx.join("projected_tiles.npy"));
            let pixels = &px.f32()[..3 * s * s];
            let fb = enc.features_on(&mut be, &t, pixels).unwrap();
            let pb = enc.project_on(&mut be, &t, fb, enc.feature_rows()).unwrap();
            let ours = be.read(pb).unwrap();
            let cpu = enc
                .project(&enc.features(pixels, &pool).unwrap(), &pool)
                .unwrap();
            let e = rel_err(&ours, &proj.f32()[..ours.len()]);
            println!(
                "{case} {mix}: relative error vs transformers {e:e} (bound {bound:e}), vs the \
                 CPU {:e} (the CPU vs transformers {:e})",
                rel_err(&ours, &cpu),
                rel_err(&cpu, &proj.f32()[..ours.len()])
            );
            assert!(e < bound, "{case} {mix}: relative error {e:e}");
        }
    }
}

/// A device budget too small for the tower: `offload` is a typed out-of-memory error naming
/// what did not fit, and the encoder stays on the CPU, where it still answers.
#[test]
fn offload_past_the_memory_budget_is_an_error_and_keeps_the_cpu() {
    use llava_edge::backend::BackendError;
    use llava_edge::image::load_image;
    use llava_edge::vision::VisionError;
    let Some(vk) = device() else { return };
    let pool = ThreadPool::new(2);
    let (_, f32_path, _) = &mmprojs()[1];
    let f = GgufFile::open(f32_path).unwrap();
    let mut enc = VisionEncoder::load(&f).unwrap();
    let img = load_image(&fixtures_dir().join("images/sq180.png")).unwrap();
    let want = enc.embed_image(&img, false, &pool).unwrap();
    let e = enc
        .offload(VkBackend::new(vk.clone(), Some(4096)))
        .unwrap_err();
    assert!(
        matches!(
            e,
            VisionError::Backend(BackendError::Vulkan(VulkanError::OutOfMemory { .. }))
        ),
        "{e}"
    );
    assert!(enc.device().is_none());
    assert_eq!(enc.embed_image(&img, false, &pool).unwrap(), want);
    // With room, the same encoder moves.
    enc.offload(VkBackend::new(vk.clone(), None)).unwrap();
    assert!(enc.device().is_some());
    let e = rel_err(&enc.embed_image(&img, false, &pool).unwrap(), &want);
    assert!(e < 1e-4, "relative error {e:e}");
}

/// The whole pipeline on the device, as `--device vulkan` runs it: every converted fixture
/// checkpoint with its vision encoder, projector, packing and text decoder on Vulkan, from the
/// PNG files: the prompt's token ids and the greedy tokens (up to the first end-of-generation
/// token) equal transformers'. Images, anyres tiles, OneVision's shrink, several images of
/// mixed shapes, and video.
#[test]
fn every_multimodal_fixture_answers_like_transformers_with_everything_on_vulkan() {
    if device().is_none() {
        return;
    }
    let cases: Vec<&str> = TEXT_CASES
        .iter()
        .chain(&["llava_ov_mixed"])
        .copied()
        .collect();
    let checked =
        common::vulkan::pipeline_fixtures_on_vulkan("vk-vision-pipeline", &cases, |meta| {
            meta["kind"] != "text"
        });
    println!("{checked} multimodal fixtures with vision and text on Vulkan: greedy tokens equal");
    assert!(checked >= 25, "{checked} fixtures");
}

/// The released towers' shapes (CLIP ViT-L/14-336: 577 tokens with a class token, heads of
/// 64; SigLIP-so400m-384: 729 tokens, heads of 72, a 4304-wide MLP that is not whole chunks),
/// random F16 weights from `gguf-tools synth`, the first encoder layer and the projector on
/// the device against the CPU on the same file, within the f32-order bound above. Ignored by
/// default: lavapipe takes tens of seconds a layer (`cargo test --release --test vulkan_vision
/// -- --ignored --nocapture`; on a real GPU set LLAVA_EDGE_VISION_LAYERS to run more).
#[test]
#[ignore]
fn released_tower_shapes_on_the_device_equal_the_cpu() {
    let Some(vk) = device() else { return };
    let tmp = TempDir::new("vk-vision-real");
    let pool = ThreadPool::new(2);
    let layers: usize = std::env::var("LLAVA_EDGE_VISION_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for shape in ["siglip-so400m-384", "clip-vit-l-336"] {
        let path = tmp.path(&format!("{shape}.gguf"));
        gguf_tools::synth::synth(shape, GgmlType::F16, None, &path, 7).unwrap();
        let f = GgufFile::open(&path).unwrap();
        let mut config = llava_edge::vision::VisionConfig::from_gguf(&f).unwrap();
        config.n_layer_run = config.n_layer_run.min(layers);
        let enc = VisionEncoder::with_config(&f, config).unwrap();
        let s = enc.config.image_size;
        let mut rng = StdRng::seed_from_u64(25);
        let pixels = random(&mut rng, 3 * s * s, 2.0);
        let mut be = VkBackend::new(vk.clone(), None);
        let t = enc.upload(&be).unwrap();
        let start = std::time::Instant::now();
        let fb = enc.features_on(&mut be, &t, &pixels).unwrap();
        let pb = enc.project_on(&mut be, &t, fb, enc.feature_rows()).unwrap();
        let ours = be.read(pb).unwrap();
        let device_time = start.elapsed();
        let start = std::time::Instant::now();
        let cpu = enc
            .project(&enc.features(&pixels, &pool).unwrap(), &pool)
            .unwrap();
        let cpu_time = start.elapsed();
        let e = rel_err(&ours, &cpu);
        println!(
            "{shape}, {layers} layer(s) and the projector: relative error {e:e}; device \
             {device_time:.2?}, CPU {cpu_time:.2?}"
        );
        assert!(e < 1e-4, "{shape}: relative error {e:e}");
    }
}
