//! A minimal, test-only writer of a fixture checkpoint's vision tower and projector as an f32
//! mmproj GGUF in llama.cpp's layout plus our `llava_edge.vision.*` keys, so the encoder can be
//! checked against transformers independently of `gguf-tools convert`.

use std::path::Path;

use llava_edge::dtype::GgmlType;
use llava_edge::gguf::{Array, GgufWriter, TensorSpec, Value};
use llava_edge::vision::encoder::keys;

use super::safetensors::read_f32;

/// Writes `case_dir/hf`'s vision tower and projector to `out`.
#[allow(dead_code)]
pub fn write_mmproj_gguf(case_dir: &Path, out: &Path) {
    write_mmproj_gguf_as(case_dir, out, GgmlType::F32)
}

/// [`write_mmproj_gguf`] with the matrices (2-D weights but the position embeddings) as `ty`,
/// F32 or F16, the rest F32 as llama.cpp writes them.
pub fn write_mmproj_gguf_as(case_dir: &Path, out: &Path, ty: GgmlType) {
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case_dir.join("case.json")).unwrap())
            .unwrap();
    let v = &case["vision"];
    let u = |k: &str| v[k].as_u64().unwrap() as u32;
    let st = case_dir.join("hf/model.safetensors");
    let names: Vec<String> = case["safetensors_tensors"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let linear_only = case["projector_kind"]
        .as_str()
        .unwrap()
        .starts_with("linear");
    let vm = "vision_tower.vision_model.";
    let mut tensors: Vec<(String, Vec<u64>, Vec<f32>)> = Vec::new();
    let mut add = |gguf: String, hf: String| {
        if names.contains(&hf) {
            let (shape, data) = read_f32(&st, &hf);
            tensors.push((gguf, shape.iter().rev().map(|&x| x as u64).collect(), data));
        }
    };
    add(
        "v.patch_embd.weight".into(),
        format!("{vm}embeddings.patch_embedding.weight"),
    );
    add(
        "v.patch_embd.bias".into(),
        format!("{vm}embeddings.patch_embedding.bias"),
    );
    add(
        "v.class_embd".into(),
        format!("{vm}embeddings.class_embedding"),
    );
    add(
        "v.position_embd.weight".into(),
        format!("{vm}embeddings.position_embedding.weight"),
    );
    add("v.pre_ln.weight".into(), format!("{vm}pre_layrnorm.weight"));
    add("v.pre_ln.bias".into(), format!("{vm}pre_layrnorm.bias"));
    for i in 0..u("num_hidden_layers") {
        let p = format!("{vm}encoder.layers.{i}.");
        for (ours, theirs) in [
            ("attn_q", "self_attn.q_proj"),
            ("attn_k", "self_attn.k_proj"),
            ("attn_v", "self_attn.v_proj"),
            ("attn_out", "self_attn.out_proj"),
            ("ln1", "layer_norm1"),
            ("ln2", "layer_norm2"),
            ("ffn_up", "mlp.fc1"),
            ("ffn_down", "mlp.fc2"),
        ] {
            for wb in ["weight", "bias"] {
                add(
                    format!("v.blk.{i}.{ours}.{wb}"),
                    format!("{p}{theirs}.{wb}"),
                );
            }
        }
    }
    add(
        "mm.0.weight".into(),
        "multi_modal_projector.linear_1.weight".into(),
    );
    add(
        "mm.0.bias".into(),
        "multi_modal_projector.linear_1.bias".into(),
    );
    if !linear_only {
        add(
            "mm.2.weight".into(),
            "multi_modal_projector.linear_2.weight".into(),
        );
        add(
            "mm.2.bias".into(),
            "multi_modal_projector.linear_2.bias".into(),
        );
    }
    add("model.image_newline".into(), "image_newline".into());

    let act = v["hidden_act"].as_str().unwrap();
    let norm = case_dir.join("hf/processor_config.json");
    let pc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(norm).unwrap()).unwrap();
    let ip = &pc["image_processor"];
    let floats = |k: &str| {
        Value::Array(Array::F32(
            ip[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        ))
    };
    let md = vec![
        ("general.architecture".to_string(), Value::string("clip")),
        ("clip.has_vision_encoder".to_string(), Value::Bool(true)),
        (
            "clip.projector_type".to_string(),
            Value::string(if linear_only { "linear" } else { "mlp" }),
        ),
        (
            "clip.use_gelu".to_string(),
            Value::Bool(act != "quick_gelu"),
        ),
        (
            "clip.vision.image_size".to_string(),
            Value::U32(u("image_size")),
        ),
        (
            "clip.vision.patch_size".to_string(),
            Value::U32(u("patch_size")),
        ),
        (
            "clip.vision.embedding_length".to_string(),
            Value::U32(u("hidden_size")),
        ),
        (
            "clip.vision.feed_forward_length".to_string(),
            Value::U32(u("intermediate_size")),
        ),
        (
            "clip.vision.block_count".to_string(),
            Value::U32(u("num_hidden_layers")),
        ),
        (
            "clip.vision.attention.head_count".to_string(),
            Value::U32(u("num_attention_heads")),
        ),
        (
            "clip.vision.attention.layer_norm_epsilon".to_string(),
            Value::F32(v["layer_norm_eps"].as_f64().unwrap() as f32),
        ),
        ("clip.vision.image_mean".to_string(), floats("image_mean")),
        ("clip.vision.image_std".to_string(), floats("image_std")),
        (
            keys::FEATURE_LAYER.to_string(),
            Value::I32(case["vision_feature_layer"].as_i64().unwrap() as i32),
        ),
        (
            keys::SELECT_STRATEGY.to_string(),
            Value::string(case["vision_feature_select_strategy"].as_str().unwrap()),
        ),
        (keys::ACTIVATION.to_string(), Value::string(act)),
        (
            keys::N_LAYER_ORIG.to_string(),
            Value::U32(u("num_hidden_layers")),
        ),
    ];
    let type_of = |n: &str, d: &[u64]| {
        if d.iter().filter(|&&x| x > 1).count() >= 2
            && n.ends_with(".weight")
            && !n.contains("position")
        {
            ty
        } else {
            GgmlType::F32
        }
    };
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(n, d, _)| TensorSpec::new(n.clone(), d, type_of(n, d)))
        .collect();
    let mut w = GgufWriter::create(out, &md, &specs).unwrap();
    for (n, d, data) in &tensors {
        let bytes: Vec<u8> = match type_of(n, d) {
            GgmlType::F16 => data
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
            _ => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        w.write_tensor(n, &bytes).unwrap();
    }
    w.finish().unwrap();
}
