//! The numbers edge users choose a runtime by, measured in this process: load time, image
//! encode time and tokens, prompt processing and generation speed, time to first token for an
//! image plus a short prompt, decode's memory bound, and peak memory; medians over repeats.

use std::time::{Duration, Instant};

use crate::gguf::GgufFile;
use crate::image::RgbImage;
use crate::load::{LoadError, LoadOptions, LoadWarning, ModelFiles, Models};
use crate::text::{KvCache, KvType, Logits, TextError};
use crate::threadpool::ThreadPool;
use crate::vision::VisionError;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Prompt tokens for the prefill measurement (pp).
    pub n_prompt: usize,
    /// Tokens generated for the decode measurement (tg).
    pub n_gen: usize,
    /// Tokens already in the cache when prefill and decode are timed (llama-bench's `-d`):
    /// decode after an image reads thousands of cached positions a token.
    pub depth: usize,
    /// Repeats; medians are reported.
    pub repeat: usize,
    /// Threads.
    pub threads: usize,
    /// Text tokens after the image in the time-to-first-token request.
    pub ttft_prompt: usize,
    /// Interleave the weights that have a decode layout at load ([`LoadOptions::repack`]).
    pub repack: bool,
    /// Vision products in bfloat16 pairs ([`LoadOptions::vision_bf16`]).
    pub vision_bf16: bool,
}

/// Medians of one benchmark run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BenchResult {
    /// Model (and mmproj) load time, ms.
    pub load_ms: f64,
    /// Image encode (preprocess, tiles through the tower, projection, packing), ms.
    pub image_encode_ms: Option<f64>,
    /// Tokens one image becomes.
    pub image_tokens: Option<usize>,
    /// Prefill speed, tokens per second.
    pub prefill_tok_s: f64,
    /// Decode speed, tokens per second.
    pub decode_tok_s: f64,
    /// Image + prompt request to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// Weight bytes one decode step reads (every matrix once), MiB.
    pub decode_mib_per_token: f64,
    /// The rate this run's threads read those weights at, GB/s (best of 3 passes).
    pub read_gbs: f64,
    /// Decode's memory bound: `read_gbs` over the bytes a token reads, tokens per second.
    pub decode_bound_tok_s: f64,
    /// Threads used.
    pub threads: usize,
    /// Prompt and generation lengths measured.
    pub n_prompt: usize,
    /// Tokens generated.
    pub n_gen: usize,
    /// Tokens in the cache before the timed prompt.
    pub depth: usize,
    /// What loading the model gave to warn about.
    #[serde(skip)]
    pub warnings: Vec<LoadWarning>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), 0 where unavailable.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The tensors one decode step reads, as slices of the mapped file: all of them but the token
/// embedding table, which a step reads whole only when it is also the output matrix (tied).
pub fn decode_weights(f: &GgufFile) -> Vec<&[u8]> {
    let tied = f.tensor_info("output.weight").is_none();
    f.tensors()
        .iter()
        .filter(|t| tied || t.name != "token_embd.weight")
        .map(|t| f.view(t).data)
        .collect()
}

/// The rate `pool`'s threads read all of `parts` at, GB/s: the best of `reps` passes, 1 MiB
/// chunks handed out on demand as the decode products are.
pub fn read_rate_gbs(parts: &[&[u8]], pool: &ThreadPool, reps: usize) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    const CHUNK: usize = 1 << 20;
    let chunks: Vec<&[u8]> = parts.iter().flat_map(|p| p.chunks(CHUNK)).collect();
    let total: usize = chunks.iter().map(|c| c.len() / 64 * 64).sum();
    let sink = AtomicU64::new(0);
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        pool.for_chunks(chunks.len(), 4, &|r| {
            let mut acc = [0u64; 8];
            for c in &chunks[r] {
                for line in c.chunks_exact(64) {
                    // The decode kernels prefetch this far ahead: the bound they are held to
                    // is read the same way.
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: a prefetch is a hint; it never faults, even past the mapping.
                    unsafe {
                        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                        _mm_prefetch::<_MM_HINT_T0>(
                            line.as_ptr()
                                .wrapping_add(crate::kernels::PREFETCH_AHEAD)
                                .cast(),
                        );
                    }
                    for (k, a) in acc.iter_mut().enumerate() {
                        let w = u64::from_le_bytes(line[8 * k..8 * k + 8].try_into().unwrap());
                        *a = a.wrapping_add(w);
                    }
                }
            }
            let sum = acc.iter().fold(0u64, |x, &y| x.wrapping_add(y));
            sink.fetch_add(sum, Ordering::Relaxed);
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink.load(Ordering::Relaxed));
    total as f64 / best.max(1e-9) / 1e9
}

/// A deterministic test picture (gradients and a disc) when no image is given.
pub fn test_image(width: usize, height: usize) -> RgbImage {
    let mut data = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let (cx, cy) = (
                x as f32 - width as f32 / 2.0,
                y as f32 - height as f32 / 2.0,
            );
            let disc = cx * cx + cy * cy < (height as f32 / 4.0).powi(2);
            data.extend_from_slice(&[
                (x * 255 / width.max(1)) as u8,
                (y * 255 / height.max(1)) as u8,
                if disc { 230 } else { 40 },
            ]);
        }
    }
    RgbImage {
        width,
        height,
        data,
    }
}

/// `n` token ids spread over a vocabulary of `n_vocab`, varied by `salt`, all inside it. Large
/// vocabularies skip their first 1000 ids (byte and special tokens); small ones their first
/// eighth.
pub fn bench_tokens(n: usize, salt: u64, n_vocab: usize) -> Vec<u32> {
    let n_vocab = n_vocab.max(1) as u64;
    let first = (n_vocab / 8).min(1000);
    let span = n_vocab - first;
    let start = salt.wrapping_mul(104_729) % span;
    (0..n as u64)
        .map(|i| (first + (start + i * 7919) % span) as u32)
        .collect()
}

/// Why a benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The model files did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A text forward pass failed.
    #[error(transparent)]
    Text(#[from] TextError),
    /// An image encode failed.
    #[error(transparent)]
    Vision(#[from] VisionError),
}

/// Runs the benchmark on a text model and optional mmproj file, loaded as
/// [`crate::load`] loads them for requests.
pub fn run(
    model_path: &std::path::Path,
    mmproj_path: Option<&std::path::Path>,
    image: Option<&RgbImage>,
    cfg: &BenchConfig,
) -> Result<BenchResult, BenchError> {
    let opts = LoadOptions {
        mmproj: mmproj_path.map(Into::into),
        repack: cfg.repack,
        vision_bf16: cfg.vision_bf16,
        ..LoadOptions::new(model_path.into())
    };
    let t0 = Instant::now();
    let pool = ThreadPool::new(cfg.threads);
    let files = ModelFiles::open(&opts, &pool)?;
    let Models {
        text,
        vision,
        warnings,
    } = files.models(&opts)?;
    let tf = &files.text;
    let load = t0.elapsed();
    let tokens = |n: usize, salt: u64| bench_tokens(n, salt, text.config.n_vocab);
    let repeat = cfg.repeat.max(1);
    let (mut pp, mut tg, mut enc, mut ttft) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut image_tokens = None;
    let default_image;
    let image = match image {
        Some(i) => Some(i),
        None if vision.is_some() => {
            default_image = test_image(640, 480);
            Some(&default_image)
        }
        None => None,
    };
    for r in 0..repeat {
        // Prefill and decode each from a cache holding `depth` tokens, as llama-bench runs its
        // pp and tg tests (each on a cleared context, after the depth prompt).
        let at_depth = |room: usize| -> Result<KvCache, TextError> {
            let mut cache = text.try_new_cache(cfg.depth + room + 8, KvType::F16)?;
            if cfg.depth > 0 {
                let x = text.embed(&tokens(cfg.depth, 1000 + r as u64))?;
                text.forward(x, &mut cache, Logits::Last, &pool)?;
            }
            Ok(cache)
        };
        let mut cache = at_depth(cfg.n_prompt)?;
        let x = text.embed(&tokens(cfg.n_prompt, r as u64))?;
        let s = Instant::now();
        text.forward(x, &mut cache, Logits::Last, &pool)?;
        pp.push(s.elapsed());
        drop(cache);
        let mut cache = at_depth(cfg.n_gen)?;
        let mut id = tokens(1, 7 + r as u64)[0];
        let s = Instant::now();
        for _ in 0..cfg.n_gen {
            let logits = text.forward(text.embed(&[id])?, &mut cache, Logits::Last, &pool)?;
            id = crate::ops::argmax(&logits) as u32;
        }
        tg.push(s.elapsed());
        if let (Some(v), Some(img)) = (&vision, image) {
            let s = Instant::now();
            let emb = v.embed_image(img, false, &pool)?;
            let e = s.elapsed();
            enc.push(e);
            let n_img = emb.len() / text.config.n_embd;
            image_tokens = Some(n_img);
            // Time to first token: encode, then prefill image rows plus a short prompt.
            let mut cache = text.new_cache(n_img + cfg.ttft_prompt + 8, KvType::F16);
            let mut rows = emb;
            rows.extend(text.embed(&tokens(cfg.ttft_prompt, 99))?);
            let s = Instant::now();
            let logits = text.forward(rows, &mut cache, Logits::Last, &pool)?;
            let _first = crate::ops::argmax(&logits);
            ttft.push(e + s.elapsed());
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pp_m = median(pp);
    let tg_m = median(tg);
    // The weights a decode step streams, read as fast as these threads can: the bound decode
    // approaches when it is memory-bound.
    let weights = decode_weights(tf);
    let bytes: usize = weights.iter().map(|w| w.len()).sum();
    let read_gbs = read_rate_gbs(&weights, &pool, 3);
    Ok(BenchResult {
        load_ms: ms(load),
        image_encode_ms: (!enc.is_empty()).then(|| ms(median(enc))),
        image_tokens,
        prefill_tok_s: cfg.n_prompt as f64 / pp_m.as_secs_f64(),
        decode_tok_s: cfg.n_gen as f64 / tg_m.as_secs_f64().max(1e-9),
        ttft_ms: (!ttft.is_empty()).then(|| ms(median(ttft))),
        peak_rss_mib: peak_rss_mib(),
        decode_mib_per_token: bytes as f64 / (1024.0 * 1024.0),
        read_gbs,
        decode_bound_tok_s: read_gbs * 1e9 / bytes.max(1) as f64,
        threads: pool.threads(),
        n_prompt: cfg.n_prompt,
        n_gen: cfg.n_gen,
        depth: cfg.depth,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_tokens_stay_inside_any_vocabulary() {
        for n_vocab in [1, 2, 7, 100, 999, 1000, 1001, 32000, 151_936] {
            for salt in [0, 1, 7, 99, 1000, 1001, u64::MAX] {
                let t = bench_tokens(300, salt, n_vocab);
                assert_eq!(t.len(), 300);
                assert!(
                    t.iter().all(|&id| (id as usize) < n_vocab),
                    "vocab {n_vocab}, salt {salt}: {:?}",
                    t.iter().max()
                );
            }
        }
        // Large vocabularies keep clear of the special ids at the start.
        assert!(bench_tokens(500, 3, 32000).iter().all(|&id| id >= 1000));
        assert_ne!(bench_tokens(8, 0, 32000), bench_tokens(8, 1, 32000));
    }

    #[test]
    fn the_test_picture_has_its_size() {
        let img = test_image(64, 48);
        assert_eq!(
            (img.width, img.height, img.data.len()),
            (64, 48, 64 * 48 * 3)
        );
    }
}
