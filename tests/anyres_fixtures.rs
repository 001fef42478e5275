//! LLaVA-NeXT / OneVision tiling and packing against transformers: for every fixture, the tile
//! plan equals the reference's, and packing the reference's projected tiles reproduces its
//! image features exactly (same rows, same order, newline columns, OneVision's shrink).

mod common;

use common::fixtures::{fixture_metas, AnyresCase, ANYRES_CASES};
use common::npy::{fixtures_dir, read};
use common::pair;
use llava_edge::vision::anyres::{pack_anyres, pack_video, plan_tiles, PackSpec};

/// Equality within `tol`, reported as a count and the worst difference rather than two dumps.
fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let bad = got
        .iter()
        .zip(want)
        .filter(|(a, b)| (*a - *b).abs() > tol)
        .count();
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        bad == 0,
        "{what}: {bad} of {} values differ by more than {tol:e}, worst by {worst:e}",
        got.len()
    );
}

/// A bilinear sample is a sum of four weighted values: its f32 rounding (and whether the
/// reference's kernel fused the multiply-adds) moves it by a few ulps of the largest input.
fn bilinear_tol(x: &[f32]) -> f32 {
    4.0 * f32::EPSILON * x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

#[test]
fn tile_plans_and_packed_features_equal_the_reference() {
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
        for (fx, meta) in fixture_metas(&dir) {
            if meta["kind"] == "video" {
                let frames = read(&fx.join("projected_tiles.npy"));
                let want = read(&fx.join("video_features.npy"));
                let n = meta["video"]["frames"].as_u64().unwrap() as usize;
                let got = pack_video(frames.f32(), n, p, d, &newline).unwrap();
                assert_close(
                    &got,
                    want.f32(),
                    bilinear_tol(frames.f32()),
                    &fx.display().to_string(),
                );
                checked += 1;
                continue;
            }
            let Some(ar) = meta.get("anyres") else {
                continue;
            };
            let orig = pair(&meta["image_sizes_hw"][0]);
            let plan = plan_tiles(orig, &pins, tile).unwrap();
            assert_eq!(
                plan.best_hw,
                pair(&ar["best_resolution_hw"]),
                "{}",
                fx.display()
            );
            assert_eq!(plan.grid_hw, pair(&ar["tile_grid_hw"]), "{}", fx.display());
            let tiles = read(&fx.join("projected_tiles.npy"));
            let packed = pack_anyres(
                tiles.f32(),
                d,
                plan.grid_hw,
                orig,
                &newline,
                PackSpec { p, max_tiles },
            )
            .unwrap();
            assert_eq!(packed.grid_hw, pair(&ar["final_hw"]), "{}", fx.display());
            let want = read(&fx.join("image_features.npy"));
            assert_eq!(
                packed.features.len() / d,
                ar["num_tokens"].as_u64().unwrap() as usize
            );
            // Without the shrink, packing only moves values: exact. With it, a bilinear bound.
            let tol = if ar["shrunk"] == true {
                bilinear_tol(tiles.f32())
            } else {
                0.0
            };
            assert_close(&packed.features, want.f32(), tol, &fx.display().to_string());
            checked += 1;
        }
    }
    assert!(checked >= 16, "only {checked} fixtures checked");
}
