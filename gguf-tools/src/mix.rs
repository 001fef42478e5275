//! Quantization mixes: which type each tensor of a text model gets, following llama.cpp's
//! `llama-quantize` (`llama_tensor_get_type`) for the mixes offered here, so a Q4_K_M file
//! written by us has the same per-tensor types as one written by llama.cpp.

use std::fmt;

use llava_edge::dtype::GgmlType;
use llava_edge::gguf::keys::{self, tensors};

/// A quantization mix (llama.cpp's "ftype"), named as `llama-quantize` names it.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

/// Every mix, for help texts.
pub const ALL_MIXES: [Mix; 12] = [
    Mix::F16,
    Mix::BF16,
    Mix::Q8_0,
    Mix::Q4_0,
    Mix::Q4_1,
    Mix::Q5_0,
    Mix::Q5_1,
    Mix::Q4_K_S,
    Mix::Q4_K_M,
    Mix::Q5_K_S,
    Mix::Q5_K_M,
    Mix::Q6_K,
];

impl Mix {
    /// The mix named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Mix> {
        ALL_MIXES
            .iter()
            .copied()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// The mix's name.
    pub fn name(self) -> &'static str {
        match self {
            Mix::F16 => "F16",
            Mix::BF16 => "BF16",
            Mix::Q8_0 => "Q8_0",
            Mix::Q4_0 => "Q4_0",
            Mix::Q4_1 => "Q4_1",
            Mix::Q5_0 => "Q5_0",
            Mix::Q5_1 => "Q5_1",
            Mix::Q4_K_S => "Q4_K_S",
            Mix::Q4_K_M => "Q4_K_M",
            Mix::Q5_K_S => "Q5_K_S",
            Mix::Q5_K_M => "Q5_K_M",
            Mix::Q6_K => "Q6_K",
        }
    }

    /// llama.cpp's `general.file_type` value for the mix.
    pub fn file_type(self) -> u32 {
        match self {
            Mix::F16 => 1,
            Mix::Q4_0 => 2,
            Mix::Q4_1 => 3,
            Mix::Q8_0 => 7,
            Mix::Q5_0 => 8,
            Mix::Q5_1 => 9,
            Mix::Q4_K_S => 14,
            Mix::Q4_K_M => 15,
            Mix::Q5_K_S => 16,
            Mix::Q5_K_M => 17,
            Mix::Q6_K => 18,
            Mix::BF16 => 32,
        }
    }

    /// The type most tensors get.
    pub fn default_type(self) -> GgmlType {
        match self {
            Mix::F16 => GgmlType::F16,
            Mix::BF16 => GgmlType::BF16,
            Mix::Q8_0 => GgmlType::Q8_0,
            Mix::Q4_0 => GgmlType::Q4_0,
            Mix::Q4_1 => GgmlType::Q4_1,
            Mix::Q5_0 => GgmlType::Q5_0,
            Mix::Q5_1 => GgmlType::Q5_1,
            Mix::Q4_K_S | Mix::Q4_K_M => GgmlType::Q4_K,
            Mix::Q5_K_S | Mix::Q5_K_M => GgmlType::Q5_K,
            Mix::Q6_K => GgmlType::Q6_K,
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the planner needs to know about one tensor.
#[derive(Clone, Debug)]
pub struct TensorShape<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Dimensions, ggml order.
    pub dims: &'a [u64],
}

/// Whether llama.cpp would quantize this tensor at all: weight matrices only (trailing
/// 1-sized dimensions do not count), never norms, MoE gates or learned position tables.
pub fn is_quantizable(t: &TensorShape) -> bool {
    let n_dims = t.dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    n_dims >= 2
        && t.name.ends_with("weight")
        && !t.name.contains("_norm.weight")
        && !t.name.contains("ffn_gate_inp.weight")
        && t.name != "position_embd.weight"
        && t.name != "token_types.weight"
}

/// llama.cpp's broad tensor categories, tested in its order (substring matches).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    /// attn_v, and the fused attn_qkv / attn_kv_b that llama.cpp treats the same way.
    AttnV,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    if name == tensors::OUTPUT {
        Category::Output
    } else if name == tensors::TOKEN_EMBD {
        Category::TokenEmbd
    } else if ["attn_qkv.weight", "attn_kv_b.weight", "attn_v.weight"]
        .iter()
        .any(|p| name.contains(p))
    {
        Category::AttnV
    } else if [
        "attn_k.weight",
        "attn_q.weight",
        "attn_output.weight",
        "ffn_up",
        "ffn_gate",
    ]
    .iter()
    .any(|p| name.contains(p))
    {
        Category::Other
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// llama.cpp's rule for spending more bits on a few layers: the first and last eighth, and
/// every third layer in between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The per-tensor type choices of a mix over a whole model.
pub struct Plan {
    /// One entry per input tensor: `None` to copy unchanged, else the target type.
    pub types: Vec<Option<GgmlType>>,
    /// Tensors whose row length did not fit the chosen type, so a fallback type was used.
    pub fallbacks: Vec<String>,
}

/// Chooses each tensor's type the way `llama-quantize` does for `mix` (no importance matrix,
/// not `--pure`). `tensors` must be in file order: the attn_v and ffn_down rules count them in
/// that order. `n_layer` is the model's block count (llama.cpp's layer count for the ffn_down
/// rule); when absent, the ffn_down tensors are counted.
pub fn plan(
    mix: Mix,
    tensors: &[TensorShape],
    current: &[GgmlType],
    n_layer: Option<usize>,
) -> Plan {
    let tied = !tensors.iter().any(|t| t.name == keys::tensors::OUTPUT);
    let cats: Vec<Category> = tensors.iter().map(|t| category(t.name)).collect();
    let n_wv = cats.iter().filter(|&&c| c == Category::AttnV).count();
    let n_down =
        n_layer.unwrap_or_else(|| cats.iter().filter(|&&c| c == Category::FfnDown).count());
    let (mut i_wv, mut i_down) = (0, 0);
    let default = mix.default_type();
    let mut fallbacks = Vec::new();
    let types = tensors
        .iter()
        .zip(&cats)
        .zip(current)
        .map(|((t, &cat), &cur)| {
            if !is_quantizable(t) {
                return None;
            }
            let mut ty = default;
            if default.is_quantized() {
                let nx = t.dims[0];
                ty = match cat {
                    // The output projection is the most sensitive matrix: 6 bits, or 8 where
                    // the mix's blocks do not fit its rows.
                    Category::Output | Category::TokenEmbd if cat == Category::Output || tied => {
                        if nx % default.block_size() as u64 != 0 {
                            GgmlType::Q8_0
                        } else if default != GgmlType::Q8_0 {
                            GgmlType::Q6_K
                        } else {
                            default
                        }
                    }
                    Category::AttnV => {
                        let i = i_wv;
                        i_wv += 1;
                        match mix {
                            Mix::Q4_K_M | Mix::Q5_K_M if use_more_bits(i, n_wv) => GgmlType::Q6_K,
                            Mix::Q4_K_S if i < 4 => GgmlType::Q5_K,
                            _ => default,
                        }
                    }
                    Category::FfnDown => {
                        let i = i_down;
                        i_down += 1;
                        match mix {
                            Mix::Q4_K_M | Mix::Q5_K_M if use_more_bits(i, n_down) => GgmlType::Q6_K,
                            Mix::Q4_K_S if i < n_down / 8 => GgmlType::Q5_K,
                            _ => default,
                        }
                    }
                    _ => default,
                };
                if nx % ty.block_size() as u64 != 0 {
                    ty = fallback(ty);
                    if nx % ty.block_size() as u64 != 0 {
                        ty = GgmlType::F16;
                    }
                    fallbacks.push(t.name.to_string());
                }
            }
            (ty != cur).then_some(ty)
        })
        .collect();
    Plan { types, fallbacks }
}

/// The plan for a vision projector file (`general.architecture` "clip"): the encoder blocks'
/// and the projector's weight matrices take the mix's type; the patch convolution (llama.cpp
/// runs it through im2col, which wants F16/F32), the position table, norms, biases and
/// image_newline stay as they are.
pub fn plan_vision(mix: Mix, tensors: &[TensorShape], current: &[GgmlType]) -> Plan {
    let default = mix.default_type();
    let mut fallbacks = Vec::new();
    let types = tensors
        .iter()
        .zip(current)
        .map(|(t, &cur)| {
            let n_dims = t.dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
            let matrix = n_dims == 2
                && t.name.ends_with(".weight")
                && (t.name.contains(".blk.") || t.name.starts_with("mm."));
            if !matrix || !default.is_quantized() && default == cur {
                return None;
            }
            let mut ty = default;
            if t.dims[0] % ty.block_size() as u64 != 0 {
                ty = fallback(ty);
                if t.dims[0] % ty.block_size() as u64 != 0 {
                    ty = GgmlType::F16;
                }
                fallbacks.push(t.name.to_string());
            }
            (ty != cur).then_some(ty)
        })
        .collect();
    Plan { types, fallbacks }
}

/// llama.cpp's substitute for a type whose blocks do not fit a tensor's rows.
fn fallback(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        // A 32-block type has nothing smaller to drop to; the caller turns it into F16.
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_like(n_layer: usize, hidden: u64, ff: u64, tied: bool) -> Vec<(String, Vec<u64>)> {
        let mut v = vec![("token_embd.weight".to_string(), vec![hidden, 1000])];
        for i in 0..n_layer {
            for (n, d) in [
                ("attn_norm.weight", vec![hidden]),
                ("attn_q.weight", vec![hidden, hidden]),
                ("attn_q.bias", vec![hidden]),
                ("attn_k.weight", vec![hidden, hidden / 4]),
                ("attn_v.weight", vec![hidden, hidden / 4]),
                ("attn_output.weight", vec![hidden, hidden]),
                ("ffn_norm.weight", vec![hidden]),
                ("ffn_gate.weight", vec![hidden, ff]),
                ("ffn_up.weight", vec![hidden, ff]),
                ("ffn_down.weight", vec![ff, hidden]),
            ] {
                v.push((format!("blk.{i}.{n}"), d));
            }
        }
        v.push(("output_norm.weight".into(), vec![hidden]));
        if !tied {
            v.push(("output.weight".into(), vec![hidden, 1000]));
        }
        v
    }

    fn run(mix: Mix, model: &[(String, Vec<u64>)]) -> Vec<(String, Option<GgmlType>)> {
        let shapes: Vec<TensorShape> = model
            .iter()
            .map(|(n, d)| TensorShape { name: n, dims: d })
            .collect();
        let cur = vec![GgmlType::F16; model.len()];
        let p = plan(mix, &shapes, &cur, None);
        model.iter().map(|(n, _)| n.clone()).zip(p.types).collect()
    }

    fn ty_of(r: &[(String, Option<GgmlType>)], name: &str) -> Option<GgmlType> {
        r.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn q4_k_m_follows_llama_cpp() {
        // 8 layers: use_more_bits is true for layers 0, 7 (first/last eighth) and 3, 6.
        let m = llama_like(8, 512, 1024, false);
        let r = run(Mix::Q4_K_M, &m);
        assert_eq!(ty_of(&r, "token_embd.weight"), Some(GgmlType::Q4_K));
        assert_eq!(ty_of(&r, "output.weight"), Some(GgmlType::Q6_K));
        assert_eq!(ty_of(&r, "blk.0.attn_norm.weight"), None);
        assert_eq!(ty_of(&r, "blk.0.attn_q.bias"), None);
        assert_eq!(ty_of(&r, "blk.1.attn_q.weight"), Some(GgmlType::Q4_K));
        let more: Vec<usize> = (0..8).filter(|&i| use_more_bits(i, 8)).collect();
        assert_eq!(more, vec![0, 3, 6, 7]);
        for i in 0..8 {
            let want = if more.contains(&i) {
                GgmlType::Q6_K
            } else {
                GgmlType::Q4_K
            };
            assert_eq!(
                ty_of(&r, &format!("blk.{i}.attn_v.weight")),
                Some(want),
                "layer {i}"
            );
            assert_eq!(
                ty_of(&r, &format!("blk.{i}.ffn_down.weight")),
                Some(want),
                "layer {i}"
            );
            assert_eq!(
                ty_of(&r, &format!("blk.{i}.ffn_up.weight")),
                Some(GgmlType::Q4_K)
            );
        }
    }

    #[test]
    fn rows_not_a_multiple_of_256_fall_back_like_llama_cpp() {
        // Qwen2-0.5B: hidden 896 = 3.5 x 256, tied embeddings.
        let m = llama_like(4, 896, 4864, true);
        let r = run(Mix::Q4_K_M, &m);
        assert_eq!(ty_of(&r, "token_embd.weight"), Some(GgmlType::Q8_0));
        assert_eq!(ty_of(&r, "blk.1.attn_q.weight"), Some(GgmlType::Q5_0));
        // 4 layers: n/8 = 0, so the extra bits go to layers 2 (every third) and 3 (last eighth).
        assert_eq!(ty_of(&r, "blk.0.attn_v.weight"), Some(GgmlType::Q5_0));
        assert_eq!(ty_of(&r, "blk.3.attn_v.weight"), Some(GgmlType::Q8_0));
        // ffn_down rows are 4864 = 19 x 256: K-quants apply.
        assert_eq!(ty_of(&r, "blk.1.ffn_down.weight"), Some(GgmlType::Q4_K));
        assert_eq!(ty_of(&r, "blk.2.ffn_down.weight"), Some(GgmlType::Q6_K));
        // A Q4_0 mix on rows that are not a multiple of 32 ends in F16, as llama.cpp's does
        // (from an F32 input; from F16 there is then nothing to do).
        let odd = [TensorShape {
            name: "blk.0.ffn_up.weight",
            dims: &[48, 8],
        }];
        let p = plan(Mix::Q4_0, &odd, &[GgmlType::F32], None);
        assert_eq!(p.types, vec![Some(GgmlType::F16)]);
        assert_eq!(p.fallbacks, vec!["blk.0.ffn_up.weight".to_string()]);
        assert_eq!(
            plan(Mix::Q4_0, &odd, &[GgmlType::F16], None).types,
            vec![None]
        );
        let r = run(Mix::Q5_K_M, &m);
        assert_eq!(ty_of(&r, "blk.1.attn_q.weight"), Some(GgmlType::Q5_1));
    }

    #[test]
    fn vision_files_quantize_only_block_and_projector_matrices() {
        let model: Vec<(String, Vec<u64>)> = [
            ("v.patch_embd.weight", vec![14, 14, 3, 1152]),
            ("v.position_embd.weight", vec![1152, 729]),
            ("v.blk.0.attn_q.weight", vec![1152, 1152]),
            ("v.blk.0.attn_q.bias", vec![1152]),
            ("v.blk.0.ln1.weight", vec![1152]),
            ("v.blk.0.ffn_up.weight", vec![1152, 4304]),
            ("v.blk.0.ffn_down.weight", vec![4304, 1152]),
            ("mm.0.weight", vec![1152, 896]),
            ("mm.0.bias", vec![896]),
            ("model.image_newline", vec![896]),
            ("v.post_ln.weight", vec![1152]),
        ]
        .into_iter()
        .map(|(n, d)| (n.to_string(), d))
        .collect();
        let shapes: Vec<TensorShape> = model
            .iter()
            .map(|(n, d)| TensorShape { name: n, dims: d })
            .collect();
        let current = vec![GgmlType::F16; model.len()];
        let plan = plan_vision(Mix::Q8_0, &shapes, &current);
        let got: Vec<(&str, Option<GgmlType>)> = model
            .iter()
            .zip(&plan.types)
            .map(|((n, _), t)| (n.as_str(), *t))
            .collect();
        for (name, ty) in got {
            // SigLIP's ffn_down rows (4304 values) fit no 32-value block: they stay F16.
            let want = [
                "v.blk.0.attn_q.weight",
                "v.blk.0.ffn_up.weight",
                "mm.0.weight",
            ]
            .contains(&name)
            .then_some(GgmlType::Q8_0);
            assert_eq!(ty, want, "{name}");
        }
        assert_eq!(plan.fallbacks, vec!["v.blk.0.ffn_down.weight".to_string()]);
        // Rows of 1152 fit 32-value blocks but not 256: Q4_K falls back to Q5_0.
        let plan = plan_vision(Mix::Q4_K_M, &shapes, &current);
        assert_eq!(plan.types[2], Some(GgmlType::Q5_0));
    }

    #[test]
    fn legacy_and_float_mixes() {
        let m = llama_like(2, 512, 1024, false);
        let r = run(Mix::Q4_0, &m);
        assert_eq!(ty_of(&r, "token_embd.weight"), Some(GgmlType::Q4_0));
        assert_eq!(ty_of(&r, "output.weight"), Some(GgmlType::Q6_K));
        assert_eq!(ty_of(&r, "blk.0.ffn_down.weight"), Some(GgmlType::Q4_0));
        let r = run(Mix::Q8_0, &m);
        assert_eq!(ty_of(&r, "output.weight"), Some(GgmlType::Q8_0));
        let r = run(Mix::F16, &m);
        // Already F16: nothing to do; norms stay as they are.
        assert!(r.iter().all(|(_, t)| t.is_none()));
    }
}
