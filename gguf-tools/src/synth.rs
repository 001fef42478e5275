//! `gguf-tools synth`: random-weight GGUF files with the exact shapes of real models, in
//! llama.cpp's layout, with a real vocabulary. Speed does not depend on weight values, so these
//! give honest performance figures where real weights cannot be downloaded.

use std::path::Path;

use half::f16;
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::keys::{clip, general, llava_edge as ours, llm, tensors, tokenizer};
use llava_edge::gguf::{Array, GgufError, GgufFile, GgufWriter, TensorSpec, Value};

/// A text model's shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextShape {
    /// `general.architecture`.
    pub arch: &'static str,
    /// Hidden size.
    pub n_embd: u64,
    /// Blocks.
    pub n_layer: u64,
    /// Query heads.
    pub n_head: u64,
    /// Key/value heads.
    pub n_head_kv: u64,
    /// Feed-forward size.
    pub n_ff: u64,
    /// Vocabulary of the real model.
    pub n_vocab: u64,
    /// RoPE base.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Training context.
    pub n_ctx: u64,
    /// Tied input/output embeddings (no `output.weight`).
    pub tied: bool,
    /// q/k/v biases (Qwen2).
    pub qkv_bias: bool,
}

/// A vision tower's shape, with its projector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VisionShape {
    /// Hidden size.
    pub n_embd: u64,
    /// Encoder layers stored (llama.cpp stores only those that run).
    pub n_layer: u64,
    /// Heads.
    pub n_head: u64,
    /// MLP size.
    pub n_ff: u64,
    /// Patch side.
    pub patch: u64,
    /// Tile side.
    pub image: u64,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// CLIP (class token, pre-LN, quick_gelu) or SigLIP (patch bias, gelu-tanh).
    pub clip: bool,
    /// Width of the text model the projector feeds.
    pub n_text: u64,
    /// LLaVA-NeXT/OneVision pinpoints as (h, w), empty for none.
    pub pinpoints: &'static [(u64, u64)],
    /// OneVision's tile cap.
    pub max_tiles: Option<u64>,
}

/// Every shape `synth` knows.
pub enum Shape {
    /// A language model.
    Text(TextShape),
    /// A vision tower and projector (an mmproj file).
    Vision(VisionShape),
}

const OV_PINPOINTS: [(u64, u64); 36] = {
    let mut p = [(0u64, 0u64); 36];
    let mut i = 0;
    while i < 36 {
        p[i] = (384 * (1 + i as u64 / 6), 384 * (1 + i as u64 % 6));
        i += 1;
    }
    p
};

/// The shape named `name` (`synth --shape`).
pub fn shape(name: &str) -> Option<Shape> {
    let llama = TextShape {
        arch: "llama",
        n_embd: 4096,
        n_layer: 32,
        n_head: 32,
        n_head_kv: 32,
        n_ff: 11008,
        n_vocab: 32000,
        rope_theta: 10000.0,
        eps: 1e-5,
        n_ctx: 4096,
        tied: false,
        qkv_bias: false,
    };
    Some(match name {
        "qwen2-0.5b" => Shape::Text(TextShape {
            arch: "qwen2",
            n_embd: 896,
            n_layer: 24,
            n_head: 14,
            n_head_kv: 2,
            n_ff: 4864,
            n_vocab: 151936,
            rope_theta: 1e6,
            eps: 1e-6,
            n_ctx: 32768,
            tied: true,
            qkv_bias: true,
        }),
        "tinyllama-1.1b" => Shape::Text(TextShape {
            n_embd: 2048,
            n_layer: 22,
            n_head: 32,
            n_head_kv: 4,
            n_ff: 5632,
            n_ctx: 2048,
            ..llama
        }),
        "llama-7b" | "vicuna-7b" => Shape::Text(llama),
        "mistral-7b" => Shape::Text(TextShape {
            n_head_kv: 8,
            n_ff: 14336,
            rope_theta: 1e6,
            n_ctx: 32768,
            ..llama
        }),
        // LLaVA-1.5-7B's tower: CLIP ViT-L/14-336, 23 of 24 layers stored (feature layer -2).
        "clip-vit-l-336" => Shape::Vision(VisionShape {
            n_embd: 1024,
            n_layer: 23,
            n_head: 16,
            n_ff: 4096,
            patch: 14,
            image: 336,
            eps: 1e-5,
            clip: true,
            n_text: 4096,
            pinpoints: &[],
            max_tiles: None,
        }),
        // LLaVA-OneVision-0.5B's tower: SigLIP-so400m-384, all 27 layers (feature layer -1).
        "siglip-so400m-384" => Shape::Vision(VisionShape {
            n_embd: 1152,
            n_layer: 27,
            n_head: 16,
            n_ff: 4304,
            patch: 14,
            image: 384,
            eps: 1e-6,
            clip: false,
            n_text: 896,
            pinpoints: &OV_PINPOINTS,
            max_tiles: Some(9),
        }),
        _ => return None,
    })
}

/// Names accepted by [`shape`].
pub const SHAPES: [&str; 7] = [
    "qwen2-0.5b",
    "tinyllama-1.1b",
    "llama-7b",
    "vicuna-7b",
    "mistral-7b",
    "clip-vit-l-336",
    "siglip-so400m-384",
];

/// What a tensor is filled with.
#[derive(Clone, Copy)]
enum Fill {
    Random(f32),
    Const(f32),
}

struct Rng(u64);

impl Rng {
    fn normal(&mut self) -> f32 {
        // Irwin-Hall (sum of 4 uniforms), scaled to unit variance: cheap and bounded.
        let mut s = 0f32;
        for _ in 0..4 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            s += (self.0 >> 40) as f32 / (1u64 << 24) as f32;
        }
        (s - 2.0) * 1.732_050_8
    }
}

/// Metadata and tensors (name, ggml dims, fill) of a synthetic file.
type Plan = (Vec<(String, Value)>, Vec<(String, Vec<u64>, Fill)>);

/// Writes the model named by `shape_name` to `out` with weights of type `ty` (F32 or F16;
/// quantize the result with `gguf-tools quantize` for other types). Text shapes copy the
/// tokenizer from `vocab` and size the embedding to it.
pub fn synth(
    shape_name: &str,
    ty: GgmlType,
    vocab: Option<&Path>,
    out: &Path,
    seed: u64,
) -> Result<(), String> {
    if !matches!(ty, GgmlType::F32 | GgmlType::F16) {
        return Err(format!(
            "synth writes F32 or F16; got {ty} (quantize the F16 file afterwards)"
        ));
    }
    let sh = shape(shape_name)
        .ok_or_else(|| format!("unknown shape '{shape_name}'; one of {}", SHAPES.join(", ")))?;
    if let Some(v) = vocab.filter(|v| crate::paths::same_file(v, out)) {
        return Err(format!(
            "{}: is the vocabulary source {}; write the synthetic model to another file",
            out.display(),
            v.display()
        ));
    }
    let name = format!("synth {shape_name}");
    let (md, tensors) = match sh {
        Shape::Text(t) => text_plan(&t, &name, ty, vocab)?,
        Shape::Vision(v) => vision_plan(&v, &name),
    };
    write_random(out, ty, &md, &tensors, seed)
}

/// A text model of shape `t` with the tokenizer of the GGUF file `vocab`.
fn text_plan(
    t: &TextShape,
    name: &str,
    ty: GgmlType,
    vocab: Option<&Path>,
) -> Result<Plan, String> {
    let w = Fill::Random(0.02);
    let (one, zero) = (Fill::Const(1.0), Fill::Const(0.0));
    let vf = GgufFile::open(
        vocab.ok_or("text shapes need --vocab (a GGUF with tokenizer.ggml.* keys)")?,
    )
    .map_err(|e| e.to_string())?;
    let n_vocab = vf
        .get_array(tokenizer::TOKENS)
        .map_err(|e: GgufError| e.to_string())?
        .len() as u64;
    let a = t.arch;
    let mut md: Vec<(String, Value)> = vec![
        (general::ARCHITECTURE.into(), Value::string(a)),
        (general::NAME.into(), Value::string(name)),
    ];
    for (k, v) in [
        (llm::CONTEXT_LENGTH, t.n_ctx),
        (llm::EMBEDDING_LENGTH, t.n_embd),
        (llm::BLOCK_COUNT, t.n_layer),
        (llm::FEED_FORWARD_LENGTH, t.n_ff),
        (llm::HEAD_COUNT, t.n_head),
        (llm::HEAD_COUNT_KV, t.n_head_kv),
        (llm::ROPE_DIMENSION_COUNT, t.n_embd / t.n_head),
        (llm::VOCAB_SIZE, n_vocab),
    ] {
        md.push((llm::key(a, k), Value::U32(v as u32)));
    }
    md.push((llm::key(a, llm::ROPE_FREQ_BASE), Value::F32(t.rope_theta)));
    md.push((llm::key(a, llm::RMS_EPS), Value::F32(t.eps)));
    md.push((
        general::FILE_TYPE.into(),
        Value::U32(if ty == GgmlType::F16 { 1 } else { 0 }),
    ));
    for (k, v) in vf.metadata() {
        if k.starts_with("tokenizer.") {
            md.push((k.clone(), v.clone()));
        }
    }
    let (d, hd) = (t.n_embd, t.n_embd / t.n_head);
    let kv = t.n_head_kv * hd;
    let mut ts: Vec<(String, Vec<u64>, Fill)> = Vec::new();
    ts.push((tensors::TOKEN_EMBD.into(), vec![d, n_vocab], w));
    for i in 0..t.n_layer {
        let b = |s: &str| tensors::blk(i as usize, s);
        ts.push((b("attn_norm.weight"), vec![d], one));
        ts.push((b("attn_q.weight"), vec![d, d], w));
        ts.push((b("attn_k.weight"), vec![d, kv], w));
        ts.push((b("attn_v.weight"), vec![d, kv], w));
        if t.qkv_bias {
            ts.push((b("attn_q.bias"), vec![d], zero));
            ts.push((b("attn_k.bias"), vec![kv], zero));
            ts.push((b("attn_v.bias"), vec![kv], zero));
        }
        ts.push((b("attn_output.weight"), vec![d, d], w));
        ts.push((b("ffn_norm.weight"), vec![d], one));
        ts.push((b("ffn_gate.weight"), vec![d, t.n_ff], w));
        ts.push((b("ffn_up.weight"), vec![d, t.n_ff], w));
        ts.push((b("ffn_down.weight"), vec![t.n_ff, d], w));
    }
    ts.push((tensors::OUTPUT_NORM.into(), vec![d], one));
    if !t.tied {
        ts.push((tensors::OUTPUT.into(), vec![d, n_vocab], w));
    }
    Ok((md, ts))
}

/// An mmproj of shape `v`: CLIP-like (class token, pre-norm, quick GELU) or SigLIP-like.
fn vision_plan(v: &VisionShape, name: &str) -> Plan {
    let w = Fill::Random(0.02);
    let (one, zero) = (Fill::Const(1.0), Fill::Const(0.0));
    let (mean, std) = if v.clip {
        (
            [0.481_454_66f32, 0.457_827_5, 0.408_210_73],
            [0.268_629_54f32, 0.261_302_6, 0.275_777_1],
        )
    } else {
        ([0.5f32; 3], [0.5f32; 3])
    };
    let mut md: Vec<(String, Value)> = vec![
        (general::ARCHITECTURE.into(), Value::string(clip::ARCH)),
        (general::NAME.into(), Value::string(name)),
        (clip::HAS_VISION_ENCODER.into(), Value::Bool(true)),
        (clip::PROJECTOR_TYPE.into(), Value::string("mlp")),
        (clip::USE_GELU.into(), Value::Bool(!v.clip)),
    ];
    for (k, x) in [
        (clip::IMAGE_SIZE, v.image),
        (clip::PATCH_SIZE, v.patch),
        (clip::EMBEDDING_LENGTH, v.n_embd),
        (clip::FEED_FORWARD_LENGTH, v.n_ff),
        (clip::BLOCK_COUNT, v.n_layer),
        (clip::HEAD_COUNT, v.n_head),
        (clip::PROJECTION_DIM, v.n_text),
    ] {
        md.push((k.into(), Value::U32(x as u32)));
    }
    md.push((clip::LAYER_NORM_EPS.into(), Value::F32(v.eps)));
    md.push((
        clip::IMAGE_MEAN.into(),
        Value::Array(Array::F32(mean.to_vec())),
    ));
    md.push((
        clip::IMAGE_STD.into(),
        Value::Array(Array::F32(std.to_vec())),
    ));
    if !v.pinpoints.is_empty() {
        let flat: Vec<i32> = v
            .pinpoints
            .iter()
            .flat_map(|&(h, w)| [h as i32, w as i32])
            .collect();
        md.push((
            clip::IMAGE_GRID_PINPOINTS.into(),
            Value::Array(Array::I32(flat)),
        ));
        md.push((
            clip::MM_PATCH_MERGE_TYPE.into(),
            Value::string("spatial_unpad"),
        ));
    }
    if let Some(m) = v.max_tiles {
        md.push((ours::ANYRES_MAX.into(), Value::U32(m as u32)));
    }
    md.push((
        ours::ACTIVATION.into(),
        Value::string(if v.clip {
            "quick_gelu"
        } else {
            "gelu_pytorch_tanh"
        }),
    ));
    md.push((
        ours::SELECT_STRATEGY.into(),
        Value::string(if v.clip { "default" } else { "full" }),
    ));
    let (d, g) = (v.n_embd, v.image / v.patch);
    let suffixed = |base: &str, s: &str| format!("{base}.{s}");
    let mut ts: Vec<(String, Vec<u64>, Fill)> = Vec::new();
    ts.push((
        tensors::V_PATCH_EMBD.into(),
        vec![v.patch, v.patch, 3, d],
        w,
    ));
    if v.clip {
        ts.push((tensors::V_CLASS_EMBD.into(), vec![d], w));
        ts.push((tensors::V_POSITION_EMBD.into(), vec![d, g * g + 1], w));
        ts.push((suffixed(tensors::V_PRE_LN, "weight"), vec![d], one));
        ts.push((suffixed(tensors::V_PRE_LN, "bias"), vec![d], zero));
    } else {
        ts.push((tensors::V_PATCH_EMBD_BIAS.into(), vec![d], zero));
        ts.push((tensors::V_POSITION_EMBD.into(), vec![d, g * g], w));
    }
    for i in 0..v.n_layer {
        let b = |s: &str| tensors::v_blk(i as usize, s);
        for (n, dims) in [
            ("attn_q", vec![d, d]),
            ("attn_k", vec![d, d]),
            ("attn_v", vec![d, d]),
            ("attn_out", vec![d, d]),
            ("ffn_up", vec![d, v.n_ff]),
            ("ffn_down", vec![v.n_ff, d]),
        ] {
            let out_dim = dims[1];
            ts.push((b(&format!("{n}.weight")), dims, w));
            ts.push((b(&format!("{n}.bias")), vec![out_dim], zero));
        }
        for n in ["ln1", "ln2"] {
            ts.push((b(&format!("{n}.weight")), vec![d], one));
            ts.push((b(&format!("{n}.bias")), vec![d], zero));
        }
    }
    let (mm0, mm2) = (tensors::mm(0), tensors::mm(2));
    ts.push((suffixed(&mm0, "weight"), vec![d, v.n_text], w));
    ts.push((suffixed(&mm0, "bias"), vec![v.n_text], zero));
    ts.push((suffixed(&mm2, "weight"), vec![v.n_text, v.n_text], w));
    ts.push((suffixed(&mm2, "bias"), vec![v.n_text], zero));
    if !v.pinpoints.is_empty() {
        ts.push((tensors::IMAGE_NEWLINE.into(), vec![v.n_text], w));
    }
    (md, ts)
}

/// Writes `tensors` filled from one seeded stream, matrices as `ty`.
fn write_random(
    out: &Path,
    ty: GgmlType,
    md: &[(String, Value)],
    tensors: &[(String, Vec<u64>, Fill)],
    seed: u64,
) -> Result<(), String> {
    // Norms, biases and embeddings of vectors stay F32, as llama.cpp's converter keeps them.
    let type_of = |dims: &[u64]| if dims.len() >= 2 { ty } else { GgmlType::F32 };
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(n, d, _)| TensorSpec::new(n.clone(), d, type_of(d)))
        .collect();
    let mut wr = GgufWriter::create(out, md, &specs).map_err(|e| e.to_string())?;
    let mut rng = Rng(seed | 1);
    for ((name, dims, fill), spec) in tensors.iter().zip(&specs) {
        let n: u64 = dims.iter().product();
        let row = dims[0] as usize;
        let mut buf = Vec::with_capacity(row * 4);
        for _ in 0..n as usize / row {
            buf.clear();
            for _ in 0..row {
                let x = match fill {
                    Fill::Random(s) => rng.normal() * s,
                    Fill::Const(c) => *c,
                };
                match spec.ty {
                    GgmlType::F16 => buf.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
                    _ => buf.extend_from_slice(&x.to_le_bytes()),
                }
            }
            wr.write_chunk(name, &buf).map_err(|e| e.to_string())?;
        }
    }
    wr.finish().map_err(|e| e.to_string())
}
