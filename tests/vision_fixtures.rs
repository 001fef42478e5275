//! The vision encoder and projector against transformers: for every image fixture, each tile's
//! selected-layer features and projected features, from the reference's own pixel values.

mod common;

use common::hf_vision::write_mmproj_gguf;
use common::npy::{fixtures_dir, read};
use common::rel_err;
use common::TempDir;
use llava_edge::gguf::GgufFile;
use llava_edge::threadpool::ThreadPool;
use llava_edge::vision::VisionEncoder;

#[test]
fn encoders_and_projectors_match_transformers() {
    let tmp = TempDir::new("vision");
    let pool = ThreadPool::new(2);
    let mut tiles_checked = 0;
    for case in [
        "llava_v1",
        "llava15",
        "llava_next_mistral",
        "llava_next_vicuna",
        "llava_ov",
    ] {
        let dir = fixtures_dir().join(case);
        let path = tmp.path(&format!("{case}-mmproj.gguf"));
        write_mmproj_gguf(&dir, &path);
        let f = GgufFile::open(&path).unwrap();
        let enc = VisionEncoder::load(&f).unwrap();
        let (s, d) = (enc.config.image_size, enc.config.n_embd);
        let (mut worst_f, mut worst_p) = (0f32, 0f32);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let fx = entry.unwrap().path();
            if !fx.join("vision_features.npy").exists() {
                continue;
            }
            let px = match fx.join("pixel_values.npy") {
                p if p.exists() => read(&p),
                _ => read(&fx.join("pixel_values_videos.npy")),
            };
            let feats = read(&fx.join("vision_features.npy"));
            let proj = read(&fx.join("projected_tiles.npy"));
            let n_tiles = px.f32().len() / (3 * s * s);
            let per_tile = feats.f32().len() / n_tiles;
            for t in 0..n_tiles {
                let ours = enc
                    .features(&px.f32()[t * 3 * s * s..(t + 1) * 3 * s * s], &pool)
                    .unwrap();
                let want = &feats.f32()[t * per_tile..(t + 1) * per_tile];
                let e = rel_err(&ours, want);
                worst_f = worst_f.max(e);
                assert!(
                    e < 1e-4,
                    "{}: tile {t}: features relative error {e:e}",
                    fx.display()
                );
                let p = enc.project(&ours, &pool);
                let pw = &proj.f32()[t * p.len()..(t + 1) * p.len()];
                let e = rel_err(&p, pw);
                worst_p = worst_p.max(e);
                assert!(
                    e < 1e-4,
                    "{}: tile {t}: projected relative error {e:e}",
                    fx.display()
                );
                tiles_checked += 1;
            }
            assert_eq!(feats.f32().len(), n_tiles * per_tile);
            assert_eq!(per_tile % d, 0);
        }
        println!("{case}: worst relative error: features {worst_f:e}, projected {worst_p:e}");
    }
    assert!(tiles_checked > 50, "{tiles_checked} tiles");
}
