//! The vision half of a conversion: `vision_config` and the LLaVA keys around it read into the
//! settings the runtime's `VisionConfig` reads back (`clip.vision.*` and our `llava_edge.*`
//! keys), the encoder's and projector's tensors in llama.cpp's names, and the image
//! processor's normalisation.

use std::path::Path;

use llava_edge::gguf::keys::{clip, general, llava_edge as ours, tensors};
use llava_edge::gguf::{Array, Value};

use super::config::{self, Section, MAX_U32};
use super::plan::{mm_names, vt_names, Finder, Metadata, Out, Source};
use super::{projector, read_json, ConvertError, MAX_IMAGE, MAX_LAYERS, MAX_WIDTH};

/// The encoder's and projector's settings, each checked before it is used.
pub struct VisionPlan {
    /// SigLIP (patch bias, no class token or pre-norm) rather than CLIP.
    pub siglip: bool,
    /// Anyres models (everything but the original LLaVA) carry an `image_newline` row.
    pub newline: bool,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_ff: usize,
    pub patch: usize,
    pub image: usize,
    /// Encoder layers of the original tower.
    pub n_layer: usize,
    pub eps: f64,
    /// `vision_feature_layer` as the config gives it (negative from the end).
    pub feature_layer: i64,
    /// Layers stored: those that run up to the feature layer.
    pub n_run: usize,
    /// `default` (drop the class token) or `full`.
    pub strategy: &'static str,
    /// A linear projector (folded into one matrix) rather than the two-layer MLP.
    pub linear: bool,
}

/// Whether `vision_config` is SigLIP (else CLIP).
pub fn is_siglip(vc: &Section) -> Result<bool, ConvertError> {
    match vc.opt_str("model_type")?.unwrap_or("") {
        "clip_vision_model" => Ok(false),
        "siglip_vision_model" => Ok(true),
        other => Err(ConvertError::Unsupported(format!("vision model '{other}'"))),
    }
}

impl VisionPlan {
    /// Reads `vision_config` (`vc`) and the top-level LLaVA keys (`top`) of model type `family`.
    pub fn read(
        top: &Section,
        vc: &Section,
        siglip: bool,
        family: &str,
    ) -> Result<VisionPlan, ConvertError> {
        let vd = vc.count("hidden_size", 1, MAX_WIDTH)?;
        let v_heads = vc.count("num_attention_heads", 1, vd)?;
        config::head_dim(vc, "num_attention_heads", vd, v_heads)?;
        let v_ff = vc.count("intermediate_size", 1, MAX_U32)?;
        let patch = vc.count("patch_size", 1, MAX_IMAGE)?;
        let image = vc.count("image_size", patch, MAX_IMAGE)?;
        vc.opt_count("num_channels", 3, 3)?;
        let vl = vc.count("num_hidden_layers", 1, MAX_LAYERS)?;
        let v_eps = vc.opt_positive("layer_norm_eps")?.unwrap_or(1e-5);
        // Store only the layers that run up to the feature layer (-2 for CLIP: 23 of 24), as
        // llama.cpp's converter does: llama.cpp runs every stored layer.
        let feature_layer = top
            .opt_int("vision_feature_layer", -(vl as i64), vl as i64)?
            .unwrap_or(-2);
        let n_run = if feature_layer < 0 {
            vl as i64 + 1 + feature_layer
        } else {
            feature_layer
        };
        let n_run = usize::try_from(n_run)
            .ok()
            .filter(|&n| (1..=vl).contains(&n))
            .ok_or_else(|| {
                top.bad(
                    "vision_feature_layer",
                    format!("is {feature_layer}: no encoder layer of the {vl} gives it"),
                )
            })?;
        let strategy = match top
            .opt_str("vision_feature_select_strategy")?
            .unwrap_or("default")
        {
            "default" => "default",
            "full" => "full",
            other => {
                return Err(top.bad(
                    "vision_feature_select_strategy",
                    format!("is '{other}'; default or full"),
                ))
            }
        };
        let linear = match top.opt_str("projector_hidden_act")?.unwrap_or("gelu") {
            "linear" | "identity" => true,
            "gelu" => false,
            other => {
                return Err(ConvertError::Unsupported(format!(
                    "projector_hidden_act '{other}' (gelu or linear)"
                )))
            }
        };
        Ok(VisionPlan {
            siglip,
            newline: family != "llava",
            n_embd: vd,
            n_head: v_heads,
            n_ff: v_ff,
            patch,
            image,
            n_layer: vl,
            eps: v_eps,
            feature_layer,
            n_run,
            strategy,
            linear,
        })
    }

    /// The encoder's and projector's tensors, the projector feeding a text model `d` wide.
    pub fn tensors(&self, find: &Finder, d: usize) -> Result<Vec<Out>, ConvertError> {
        let (vd, v_ff, patch, siglip) = (self.n_embd, self.n_ff, self.patch, self.siglip);
        let n_pos = (self.image / patch) * (self.image / patch) + usize::from(!siglip);
        let mut vouts: Vec<Out> = Vec::new();
        let mut vadd = |gguf: &str, candidates: Vec<String>, want: &[usize], required: bool| {
            find.add(&mut vouts, gguf, &candidates, want, required, None)
        };
        let suffixed = |base: &str, s: &str| format!("{base}.{s}");
        vadd(
            tensors::V_PATCH_EMBD,
            vt_names("embeddings.patch_embedding.weight"),
            &[vd, 3, patch, patch],
            true,
        )?;
        vadd(
            tensors::V_PATCH_EMBD_BIAS,
            vt_names("embeddings.patch_embedding.bias"),
            &[vd],
            false,
        )?;
        vadd(
            tensors::V_CLASS_EMBD,
            vt_names("embeddings.class_embedding"),
            &[vd],
            !siglip,
        )?;
        vadd(
            tensors::V_POSITION_EMBD,
            vt_names("embeddings.position_embedding.weight"),
            &[n_pos, vd],
            true,
        )?;
        for wb in ["weight", "bias"] {
            vadd(
                &suffixed(tensors::V_PRE_LN, wb),
                vt_names(&format!("pre_layrnorm.{wb}")),
                &[vd],
                !siglip,
            )?;
        }
        for i in 0..self.n_run {
            for (ours, theirs, w, b) in [
                ("attn_q", "self_attn.q_proj", [vd, vd], vd),
                ("attn_k", "self_attn.k_proj", [vd, vd], vd),
                ("attn_v", "self_attn.v_proj", [vd, vd], vd),
                ("attn_out", "self_attn.out_proj", [vd, vd], vd),
                ("ln1", "layer_norm1", [vd, 0], vd),
                ("ln2", "layer_norm2", [vd, 0], vd),
                ("ffn_up", "mlp.fc1", [v_ff, vd], v_ff),
                ("ffn_down", "mlp.fc2", [vd, v_ff], vd),
            ] {
                // Norm weights are vectors: the 0 marks the absent second dimension.
                let w: &[usize] = if w[1] == 0 { &w[..1] } else { &w };
                for (wb, want) in [("weight", w), ("bias", &[b][..])] {
                    vadd(
                        &tensors::v_blk(i, &format!("{ours}.{wb}")),
                        vt_names(&format!("encoder.layers.{i}.{theirs}.{wb}")),
                        want,
                        true,
                    )?;
                }
            }
        }
        for wb in ["weight", "bias"] {
            vadd(
                &suffixed(tensors::V_POST_LN, wb),
                vt_names(&format!("post_layernorm.{wb}")),
                &[vd],
                false,
            )?;
        }
        // The projector's hidden width is whatever linear_1 has.
        let l1 = find
            .resolve(&mm_names("linear_1.weight"))
            .ok_or_else(|| ConvertError::MissingTensor(mm_names("linear_1.weight")[0].clone()))?;
        let hidden = find.ck.tensors[&l1].shape.first().copied().unwrap_or(0);
        if !(1..=MAX_WIDTH).contains(&hidden) {
            return Err(ConvertError::TensorShape {
                shape: find.ck.tensors[&l1].shape.clone(),
                tensor: l1,
                want: vec![d, vd],
            });
        }
        let (mm0, mm2) = (tensors::mm(0), tensors::mm(2));
        if self.linear {
            // One matrix, as llama.cpp's linear projector runs: linear_2 folded into linear_1.
            let part = |rest: &str, want: &[usize]| -> Result<String, ConvertError> {
                Ok(find.find(&mm_names(rest), want, true)?.expect("required").0)
            };
            let names = [
                part("linear_1.weight", &[hidden, vd])?,
                part("linear_1.bias", &[hidden])?,
                part("linear_2.weight", &[d, hidden])?,
                part("linear_2.bias", &[d])?,
            ];
            let [w1, b1, w2, b2] = names.map(|n| find.ck.read_f32(&n).map(|(_, v)| v));
            let (w, b) = projector::fold_linear(&w1?, &b1?, &w2?, &b2?, vd, hidden, d);
            vouts.push(Out {
                name: suffixed(&mm0, "weight"),
                dims: vec![vd as u64, d as u64],
                data: Source::Values(w),
            });
            vouts.push(Out {
                name: suffixed(&mm0, "bias"),
                dims: vec![d as u64],
                data: Source::Values(b),
            });
        } else {
            vadd(
                &suffixed(&mm0, "weight"),
                mm_names("linear_1.weight"),
                &[hidden, vd],
                true,
            )?;
            vadd(
                &suffixed(&mm0, "bias"),
                mm_names("linear_1.bias"),
                &[hidden],
                true,
            )?;
            vadd(
                &suffixed(&mm2, "weight"),
                mm_names("linear_2.weight"),
                &[d, hidden],
                true,
            )?;
            vadd(
                &suffixed(&mm2, "bias"),
                mm_names("linear_2.bias"),
                &[d],
                true,
            )?;
        }
        find.add(
            &mut vouts,
            tensors::IMAGE_NEWLINE,
            &["image_newline".into(), "model.image_newline".into()],
            &[d],
            self.newline,
            None,
        )?;
        Ok(vouts)
    }

    /// The mmproj's keys: the settings, the processor's normalisation (from the checkpoint
    /// directory `hf`), and the anyres pinpoints and tile cap where the config has them.
    pub fn metadata(
        &self,
        hf: &Path,
        top: &Section,
        vc: &Section,
        name: &str,
        d: usize,
    ) -> Result<Metadata, ConvertError> {
        let (pc_path, pc) = read_processor_config(hf)?;
        let floats = |k: &str, nonzero: bool| -> Result<Value, ConvertError> {
            let v: Option<Vec<f32>> = pc[k].as_array().and_then(|a| {
                a.iter()
                    .map(|x| x.as_f64().map(|f| f as f32))
                    .collect::<Option<Vec<f32>>>()
            });
            v.filter(|v| v.len() == 3)
                .filter(|v| v.iter().all(|x| x.is_finite() && (!nonzero || *x != 0.0)))
                .map(|v| Value::Array(Array::F32(v)))
                .ok_or_else(|| ConvertError::Config {
                    path: pc_path.clone(),
                    key: k.into(),
                    problem: format!(
                        "is {}; it must hold 3 finite numbers{}",
                        pc[k],
                        if nonzero { ", none zero" } else { "" }
                    ),
                })
        };
        let act = vc.opt_str("hidden_act")?.unwrap_or(if self.siglip {
            "gelu_pytorch_tanh"
        } else {
            "quick_gelu"
        });
        let u = |v: usize| Value::U32(v as u32);
        let mut vmd: Metadata = vec![
            (general::ARCHITECTURE.into(), Value::string(clip::ARCH)),
            (general::NAME.into(), Value::string(name)),
            (clip::HAS_VISION_ENCODER.into(), Value::Bool(true)),
            (clip::HAS_TEXT_ENCODER.into(), Value::Bool(false)),
            (
                clip::PROJECTOR_TYPE.into(),
                Value::string(if self.linear { "linear" } else { "mlp" }),
            ),
            (clip::USE_GELU.into(), Value::Bool(act != "quick_gelu")),
            (clip::IMAGE_SIZE.into(), u(self.image)),
            (clip::PATCH_SIZE.into(), u(self.patch)),
            (clip::EMBEDDING_LENGTH.into(), u(self.n_embd)),
            (clip::FEED_FORWARD_LENGTH.into(), u(self.n_ff)),
            (clip::BLOCK_COUNT.into(), u(self.n_run)),
            (clip::HEAD_COUNT.into(), u(self.n_head)),
            (clip::LAYER_NORM_EPS.into(), Value::F32(self.eps as f32)),
            (clip::PROJECTION_DIM.into(), u(d)),
            (clip::IMAGE_MEAN.into(), floats("image_mean", false)?),
            (clip::IMAGE_STD.into(), floats("image_std", true)?),
            (
                ours::FEATURE_LAYER.into(),
                Value::I32(self.feature_layer as i32),
            ),
            (ours::SELECT_STRATEGY.into(), Value::string(self.strategy)),
            (ours::ACTIVATION.into(), Value::string(act)),
            (ours::N_LAYER_ORIG.into(), u(self.n_layer)),
        ];
        if let Some(flat) = pinpoints(top)? {
            vmd.push((
                clip::IMAGE_GRID_PINPOINTS.into(),
                Value::Array(Array::I32(flat)),
            ));
            vmd.push((
                clip::MM_PATCH_MERGE_TYPE.into(),
                Value::string("spatial_unpad"),
            ));
        }
        if let Some(ratio) = top.opt_str("vision_aspect_ratio")? {
            if let Some(n) = ratio.strip_prefix("anyres_max_") {
                let n = n
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| top.bad("vision_aspect_ratio", format!("is '{ratio}'")))?;
                vmd.push((ours::ANYRES_MAX.into(), Value::U32(n)));
            }
        }
        Ok(vmd)
    }
}

/// The image processor's settings: `processor_config.json`'s `image_processor`, else
/// `preprocessor_config.json`.
fn read_processor_config(
    hf: &Path,
) -> Result<(std::path::PathBuf, serde_json::Value), ConvertError> {
    let pc_path = hf.join("processor_config.json");
    match read_json(&pc_path) {
        Ok(j) if !j["image_processor"].is_null() => Ok((pc_path, j["image_processor"].clone())),
        _ => {
            let p = hf.join("preprocessor_config.json");
            let j = read_json(&p).map_err(|_| {
                ConvertError::MissingFile(
                    hf.join("processor_config.json or preprocessor_config.json"),
                )
            })?;
            Ok((p, j))
        }
    }
}

/// `image_grid_pinpoints` flattened to (height, width) pairs as the Hugging Face config lists
/// them, as llama.cpp's converter writes them; None where the config has none.
fn pinpoints(top: &Section) -> Result<Option<Vec<i32>>, ConvertError> {
    let pins = top.get("image_grid_pinpoints");
    if pins.is_null() {
        return Ok(None);
    }
    let pair = |p: &serde_json::Value| -> Option<[i32; 2]> {
        let a = p.as_array().filter(|a| a.len() == 2)?;
        let side = |x: &serde_json::Value| {
            x.as_u64()
                .filter(|&v| (1..=MAX_IMAGE as u64).contains(&v))
                .map(|v| v as i32)
        };
        Some([side(&a[0])?, side(&a[1])?])
    };
    pins.as_array()
        .filter(|a| !a.is_empty())
        .and_then(|a| a.iter().map(pair).collect::<Option<Vec<_>>>())
        .map(|v| Some(v.concat()))
        .ok_or_else(|| {
            top.bad(
                "image_grid_pinpoints",
                format!("must list [height, width] pairs of 1 to {MAX_IMAGE} pixels"),
            )
        })
}
