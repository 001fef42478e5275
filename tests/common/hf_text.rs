//! A minimal, test-only writer of a fixture checkpoint's text model as an f32 GGUF in
//! llama.cpp's layout (names, hyperparameter keys, Q/K row permutation for `llama`), so the
//! decoder can be checked against transformers independently of `gguf-tools convert`.

use std::path::Path;

use llava_edge::dtype::GgmlType;
use llava_edge::gguf::{GgufWriter, TensorSpec, Value};

use super::safetensors::read_f32;

/// llama.cpp's `permute`: each head's rows go from HF's (2, hd/2) halves to (hd/2, 2) pairs.
fn permute_rows(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..hd / 2 {
                let old = h * hd + i * hd / 2 + j;
                let new = h * hd + 2 * j + i;
                out[new * cols..(new + 1) * cols].copy_from_slice(&w[old * cols..(old + 1) * cols]);
            }
        }
    }
    out
}

/// Writes `case_dir/hf`'s text model to `out`; returns the architecture name.
pub fn write_text_gguf(case_dir: &Path, out: &Path) -> String {
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case_dir.join("case.json")).unwrap())
            .unwrap();
    let t = &case["text"];
    let arch = if case["text_model_type"] == "qwen2" {
        "qwen2"
    } else {
        "llama"
    };
    let u = |k: &str| t[k].as_u64().unwrap() as usize;
    let (d, n_layer, n_head, n_kv, n_ff, vocab) = (
        u("hidden_size"),
        u("num_hidden_layers"),
        u("num_attention_heads"),
        u("num_key_value_heads"),
        u("intermediate_size"),
        u("vocab_size"),
    );
    let st = case_dir.join("hf/model.safetensors");
    let names: Vec<String> = case["safetensors_tensors"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let lm = "language_model.model.";
    let mut tensors: Vec<(String, Vec<u64>, Vec<f32>)> = Vec::new();
    let mut add = |gguf: String, hf: &str, permute: Option<usize>| {
        let (shape, mut data) = read_f32(&st, hf);
        if let Some(heads) = permute.filter(|_| arch == "llama") {
            data = permute_rows(&data, shape[0], shape.get(1).copied().unwrap_or(1), heads);
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&x| x as u64).collect();
        tensors.push((gguf, dims, data));
    };
    add(
        "token_embd.weight".into(),
        &format!("{lm}embed_tokens.weight"),
        None,
    );
    for i in 0..n_layer {
        let p = format!("{lm}layers.{i}.");
        add(
            format!("blk.{i}.attn_norm.weight"),
            &format!("{p}input_layernorm.weight"),
            None,
        );
        add(
            format!("blk.{i}.attn_q.weight"),
            &format!("{p}self_attn.q_proj.weight"),
            Some(n_head),
        );
        add(
            format!("blk.{i}.attn_k.weight"),
            &format!("{p}self_attn.k_proj.weight"),
            Some(n_kv),
        );
        add(
            format!("blk.{i}.attn_v.weight"),
            &format!("{p}self_attn.v_proj.weight"),
            None,
        );
        for b in ["q", "k", "v"] {
            let name = format!("{p}self_attn.{b}_proj.bias");
            if names.contains(&name) {
                add(format!("blk.{i}.attn_{b}.bias"), &name, None);
            }
        }
        add(
            format!("blk.{i}.attn_output.weight"),
            &format!("{p}self_attn.o_proj.weight"),
            None,
        );
        add(
            format!("blk.{i}.ffn_norm.weight"),
            &format!("{p}post_attention_layernorm.weight"),
            None,
        );
        add(
            format!("blk.{i}.ffn_gate.weight"),
            &format!("{p}mlp.gate_proj.weight"),
            None,
        );
        add(
            format!("blk.{i}.ffn_up.weight"),
            &format!("{p}mlp.up_proj.weight"),
            None,
        );
        add(
            format!("blk.{i}.ffn_down.weight"),
            &format!("{p}mlp.down_proj.weight"),
            None,
        );
    }
    add(
        "output_norm.weight".into(),
        &format!("{lm}norm.weight"),
        None,
    );
    if names.iter().any(|n| n == "language_model.lm_head.weight") {
        add(
            "output.weight".into(),
            "language_model.lm_head.weight",
            None,
        );
    }
    let k = |s: &str| format!("{arch}.{s}");
    let md = vec![
        ("general.architecture".to_string(), Value::string(arch)),
        (k("block_count"), Value::U32(n_layer as u32)),
        (k("embedding_length"), Value::U32(d as u32)),
        (k("feed_forward_length"), Value::U32(n_ff as u32)),
        (k("attention.head_count"), Value::U32(n_head as u32)),
        (k("attention.head_count_kv"), Value::U32(n_kv as u32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(t["rms_norm_eps"].as_f64().unwrap() as f32),
        ),
        (
            k("rope.freq_base"),
            Value::F32(t["rope_theta"].as_f64().unwrap() as f32),
        ),
        (k("context_length"), Value::U32(4096)),
        (k("vocab_size"), Value::U32(vocab as u32)),
    ];
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(n, d, _)| TensorSpec::new(n.clone(), d, GgmlType::F32))
        .collect();
    let mut w = GgufWriter::create(out, &md, &specs).unwrap();
    for (n, _, data) in &tensors {
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.write_tensor(n, &bytes).unwrap();
    }
    w.finish().unwrap();
    arch.to_string()
}
