//! Reading the transformers fixtures the way several test binaries need them: the case lists,
//! converted checkpoints, a pipeline fixture's request and its reference tokens, a vision
//! fixture's tiles, an anyres case's packing facts. The checks stay in the tests.

use std::path::{Path, PathBuf};

use gguf_tools::convert::{convert, Converted, OutType};
use llava_edge::pipeline::{Pipeline, Request, Tokenize};
use llava_edge::sampling::{Sampler, SamplerConfig};
use llava_edge::text::KvCache;

use super::npy::{fixtures_dir, read, Npy};
use super::safetensors::read_f32;
use super::{json, pair, TempDir};

/// The cases with a text-only fixture and a single-image-shape vision tower.
pub const TEXT_CASES: [&str; 5] = [
    "llava_v1",
    "llava15",
    "llava_next_mistral",
    "llava_next_vicuna",
    "llava_ov",
];

/// The cases whose fixtures need anyres or OneVision packing.
pub const ANYRES_CASES: [&str; 4] = [
    "llava_next_mistral",
    "llava_next_vicuna",
    "llava_ov",
    "llava_ov_mixed",
];

/// The questions the fixture generator asks (tests/reference/make_fixtures.py); a prompt names
/// one of them.
pub const QUESTIONS: [&str; 6] = [
    "Describe a red circle on a blue background.",
    "What is shown in this image?",
    "What is different between these images?",
    "What happens in this video?",
    // The *_tokjson fixtures: byte-fallback pieces and runs of spaces.
    "D\u{e9}cris un caf\u{e9} \u{2615} pr\u{e8}s de \u{6771}\u{4eac}  tower, with  two spaces.",
    "Qu'y a-t-il sur cette image ? \u{65e5}\u{672c}\u{8a9e}  ok",
];

/// `case`'s checkpoint converted by `gguf-tools convert` to `{case}{tag}.gguf` and
/// `{case}{tag}-mmproj.gguf` in `tmp`.
pub fn convert_case(
    tmp: &TempDir,
    case: &str,
    tag: &str,
    out: OutType,
) -> (Converted, PathBuf, PathBuf) {
    let (tp, vp) = (
        tmp.path(&format!("{case}{tag}.gguf")),
        tmp.path(&format!("{case}{tag}-mmproj.gguf")),
    );
    let r = convert(&fixtures_dir().join(case).join("hf"), &tp, &vp, out, false).unwrap();
    (r, tp, vp)
}

/// The fixture folders of a case that carry a meta.json, with it, in directory order.
pub fn fixture_metas(case_dir: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    std::fs::read_dir(case_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|fx| fx.join("meta.json").exists())
        .map(|fx| {
            let meta = json(&fx.join("meta.json"));
            (fx, meta)
        })
        .collect()
}

/// An npy file of token ids as u32.
pub fn ids(path: &Path) -> Vec<u32> {
    read(path).i64().iter().map(|&x| x as u32).collect()
}

/// The request a pipeline fixture asks: its question (named in meta.json, else the one of
/// [`QUESTIONS`] its prompt holds), image files, video frames copied into `frames` (as
/// --video takes them) and the Vicuna system prompt where its prompt starts with it.
pub fn fixture_request(meta: &serde_json::Value, frames: &Path) -> Request {
    let prompt = meta["prompt"].as_str().unwrap();
    let question = meta["question"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            QUESTIONS
                .into_iter()
                .find(|q| prompt.contains(q))
                .unwrap_or_else(|| panic!("no known question in {prompt:?}"))
                .to_string()
        });
    let images = meta["images"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| fixtures_dir().join(i.as_str().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    let system = prompt
        .starts_with(llava_edge::chat::VICUNA_SYSTEM)
        .then(|| llava_edge::chat::VICUNA_SYSTEM.to_string());
    let video = meta["video_frames"].as_array().map(|list| {
        std::fs::create_dir_all(frames).unwrap();
        for (i, f) in list.iter().enumerate() {
            std::fs::copy(
                fixtures_dir().join(f.as_str().unwrap()),
                frames.join(format!("{i:03}.png")),
            )
            .unwrap();
        }
        frames.to_path_buf()
    });
    Request {
        prompt: question,
        images,
        video,
        max_frames: 16,
        system,
        n_predict: 8,
        stop: vec![],
    }
}

/// Greedy generation of `req` through `p` gives fixture `fx`'s prompt token ids and its tokens
/// up to the first end-of-generation token; returns how many of each were compared.
pub fn assert_answers_like_reference<T: Tokenize>(
    p: &Pipeline<'_, T>,
    fx: &Path,
    req: &Request,
    cache: &mut KvCache,
) -> (usize, usize) {
    let mut greedy = Sampler::new(SamplerConfig {
        temp: 0.0,
        ..SamplerConfig::default()
    });
    let (_, t) = p.generate(req, cache, &mut greedy, |_| {}).unwrap();
    let want = ids(&fx.join("input_ids.npy"));
    assert_eq!(t.prompt, want, "{}: prompt token ids", fx.display());
    let until_eog: Vec<u32> = ids(&fx.join("generated_ids.npy"))
        .into_iter()
        .take_while(|&id| !p.tokenizer.is_eog(id))
        .collect();
    assert_eq!(t.tokens, until_eog, "{}: greedy tokens", fx.display());
    (want.len(), until_eog.len())
}

/// A vision fixture's reference tensors: the preprocessed tiles (images' or video frames'),
/// the tower's features and the projected tiles; None for a fixture without vision features.
pub struct VisionFixture {
    pub pixels: Npy,
    pub features: Npy,
    pub projected: Npy,
}

impl VisionFixture {
    pub fn read(fx: &Path) -> Option<VisionFixture> {
        if !fx.join("vision_features.npy").exists() {
            return None;
        }
        let pixels = match fx.join("pixel_values.npy") {
            p if p.exists() => read(&p),
            _ => read(&fx.join("pixel_values_videos.npy")),
        };
        Some(VisionFixture {
            pixels,
            features: read(&fx.join("vision_features.npy")),
            projected: read(&fx.join("projected_tiles.npy")),
        })
    }
}

/// One tile of a [`VisionFixture`]: its pixels, the tower's features, the projected rows.
pub struct VisionTile<'a> {
    pub pixels: &'a [f32],
    pub features: &'a [f32],
    pub projected: &'a [f32],
}

impl VisionFixture {
    /// The fixture's tiles of `image_size` pixels a side, each with its share of the features
    /// and projected rows (which must split evenly).
    pub fn tiles(&self, image_size: usize) -> Vec<VisionTile<'_>> {
        let px = 3 * image_size * image_size;
        let n_tiles = self.pixels.f32().len() / px;
        let (f, p) = (self.features.f32(), self.projected.f32());
        assert_eq!(f.len() % n_tiles, 0, "features of {n_tiles} tiles");
        assert_eq!(p.len() % n_tiles, 0, "projected rows of {n_tiles} tiles");
        let (per_f, per_p) = (f.len() / n_tiles, p.len() / n_tiles);
        (0..n_tiles)
            .map(|t| VisionTile {
                pixels: &self.pixels.f32()[t * px..(t + 1) * px],
                features: &f[t * per_f..(t + 1) * per_f],
                projected: &p[t * per_p..(t + 1) * per_p],
            })
            .collect()
    }
}

/// What anyres / OneVision packing needs from a case: the grid pinpoints, the tile side, the
/// patches per side, OneVision's tile limit and the newline row.
pub struct AnyresCase {
    pub pins: Vec<(usize, usize)>,
    pub tile: usize,
    pub p: usize,
    pub max_tiles: Option<usize>,
    pub newline: Vec<f32>,
}

impl AnyresCase {
    pub fn read(dir: &Path) -> AnyresCase {
        let cj = json(&dir.join("case.json"));
        let pins = cj["image_grid_pinpoints_hw"]
            .as_array()
            .unwrap()
            .iter()
            .map(pair)
            .collect();
        let tile = cj["vision"]["image_size"].as_u64().unwrap() as usize;
        let p = tile / cj["vision"]["patch_size"].as_u64().unwrap() as usize;
        let max_tiles = cj["vision_aspect_ratio"]
            .as_str()
            .and_then(|s| s.strip_prefix("anyres_max_"))
            .map(|n| n.parse().unwrap());
        let (_, newline) = read_f32(&dir.join("hf/model.safetensors"), "image_newline");
        AnyresCase {
            pins,
            tile,
            p,
            max_tiles,
            newline,
        }
    }
}

/// A CPU pipeline over an open text model and mmproj file (two threads).
pub fn cpu_pipeline<'a>(
    tf: &'a llava_edge::gguf::GgufFile,
    vf: &'a llava_edge::gguf::GgufFile,
) -> Pipeline<'a, llava_edge::tokenizer::Tokenizer> {
    Pipeline {
        text: llava_edge::text::TextModel::load(tf).unwrap(),
        vision: Some(llava_edge::vision::VisionEncoder::load(vf).unwrap()),
        tokenizer: llava_edge::tokenizer::Tokenizer::from_gguf(tf).unwrap(),
        template: llava_edge::chat::ChatTemplate::detect(
            tf.get_str("tokenizer.chat_template").unwrap(),
        )
        .unwrap(),
        pool: llava_edge::threadpool::ThreadPool::new(2),
    }
}

/// `src` quantized by `gguf-tools quantize` to `mix` as `dst` (two threads, no requantizing).
pub fn quantize(src: &Path, dst: &Path, mix: gguf_tools::mix::Mix) {
    let opts = gguf_tools::quantize::Options {
        mix,
        threads: 2,
        allow_requantize: false,
        progress: false,
    };
    gguf_tools::quantize::quantize_file(src, dst, &opts).unwrap();
}
