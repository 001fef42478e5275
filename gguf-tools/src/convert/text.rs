//! The text half of a conversion: `text_config` read into the hyperparameters the runtime's
//! `TextConfig` reads back (`{arch}.*` keys), and the decoder's tensors in llama.cpp's names.

use std::path::Path;

use llava_edge::gguf::keys::{general, llm, tensors};
use llava_edge::gguf::Value;

use super::config::{self, Section, MAX_U32};
use super::plan::{lm_names, Finder, Metadata, Out};
use super::{ConvertError, MAX_LAYERS, MAX_WIDTH};

/// The text model's hyperparameters, each checked before it is used.
pub struct TextPlan {
    /// `llama` (also for Mistral) or `qwen2`.
    pub arch: &'static str,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub n_vocab: usize,
    pub n_ff: usize,
    pub n_ctx: usize,
    pub rms_eps: f64,
    /// The output head is the token embedding.
    pub tied: bool,
}

/// The GGUF architecture of `text_config`'s model type: `llama` (also for Mistral) or `qwen2`.
pub fn arch(tc: &Section) -> Result<&'static str, ConvertError> {
    match tc.opt_str("model_type")?.unwrap_or("") {
        "llama" | "mistral" => Ok("llama"),
        "qwen2" => Ok("qwen2"),
        other => Err(ConvertError::Unsupported(format!("text model '{other}'"))),
    }
}

impl TextPlan {
    /// Reads `text_config` (`tc`; `top` for keys transformers may put at the top level) of a
    /// model of architecture `arch` (from [`arch`]).
    pub fn read(
        arch: &'static str,
        cfg_path: &Path,
        top: &Section,
        tc: &Section,
    ) -> Result<TextPlan, ConvertError> {
        let d = tc.count("hidden_size", 1, MAX_WIDTH)?;
        let n_layer = tc.count("num_hidden_layers", 1, MAX_LAYERS)?;
        let n_head = tc.count("num_attention_heads", 1, d)?;
        let n_kv = tc
            .opt_count("num_key_value_heads", 1, n_head)?
            .unwrap_or(n_head);
        if !n_head.is_multiple_of(n_kv) {
            return Err(tc.bad(
                "num_key_value_heads",
                format!("is {n_kv}, which does not divide num_attention_heads {n_head}"),
            ));
        }
        let (head_dim, head_key) = match tc.opt_count("head_dim", 1, MAX_WIDTH)? {
            Some(h) => (h, "head_dim"),
            None => (
                config::head_dim(tc, "num_attention_heads", d, n_head)?,
                "num_attention_heads",
            ),
        };
        if !head_dim.is_multiple_of(2) {
            return Err(tc.bad(
                head_key,
                format!(
                    "gives heads of {head_dim} values; rotary embeddings turn pairs, so it must be even"
                ),
            ));
        }
        let theta = match tc.get("rope_parameters") {
            serde_json::Value::Null => None,
            _ => Section::new(
                cfg_path,
                "text_config.rope_parameters",
                tc.get("rope_parameters"),
            )
            .opt_positive("rope_theta")?,
        };
        let rope_theta = match theta {
            Some(t) => t,
            None => tc.opt_positive("rope_theta")?.unwrap_or(10000.0),
        };
        let n_vocab = tc.count("vocab_size", 1, MAX_U32)?;
        let n_ff = tc.count("intermediate_size", 1, MAX_U32)?;
        let n_ctx = tc
            .opt_count("max_position_embeddings", 1, MAX_U32)?
            .unwrap_or(4096);
        let rms_eps = tc.opt_positive("rms_norm_eps")?.unwrap_or(1e-6);
        let tied = match top.opt_bool("tie_word_embeddings")? {
            Some(t) => t,
            None => tc.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        };
        Ok(TextPlan {
            arch,
            n_embd: d,
            n_layer,
            n_head,
            n_head_kv: n_kv,
            head_dim,
            rope_theta,
            n_vocab,
            n_ff,
            n_ctx,
            rms_eps,
            tied,
        })
    }

    /// The decoder's tensors: Q/K rows permuted for llama as llama.cpp's converter does, biases
    /// where the checkpoint has them, the output head unless tied.
    pub fn tensors(&self, find: &Finder) -> Result<Vec<Out>, ConvertError> {
        let (d, n_ff, vocab) = (self.n_embd, self.n_ff, self.n_vocab);
        let (q_rows, kv_rows) = (self.n_head * self.head_dim, self.n_head_kv * self.head_dim);
        let mut outs: Vec<Out> = Vec::new();
        let mut add = |gguf: &str, candidates: Vec<String>, want: &[usize], permute| {
            find.add(&mut outs, gguf, &candidates, want, true, permute)
        };
        add(
            tensors::TOKEN_EMBD,
            lm_names("embed_tokens.weight"),
            &[vocab, d],
            None,
        )?;
        let perm = |h| (self.arch == "llama").then_some(h);
        for i in 0..self.n_layer {
            let p = |s: &str| lm_names(&format!("layers.{i}.{s}"));
            let blk = |s: &str| tensors::blk(i, s);
            add(
                &blk("attn_norm.weight"),
                p("input_layernorm.weight"),
                &[d],
                None,
            )?;
            add(
                &blk("attn_q.weight"),
                p("self_attn.q_proj.weight"),
                &[q_rows, d],
                perm(self.n_head),
            )?;
            add(
                &blk("attn_k.weight"),
                p("self_attn.k_proj.weight"),
                &[kv_rows, d],
                perm(self.n_head_kv),
            )?;
            add(
                &blk("attn_v.weight"),
                p("self_attn.v_proj.weight"),
                &[kv_rows, d],
                None,
            )?;
            for (b, h, rows) in [
                ("q", self.n_head, q_rows),
                ("k", self.n_head_kv, kv_rows),
                ("v", 0, kv_rows),
            ] {
                let c = p(&format!("self_attn.{b}_proj.bias"));
                if find.resolve(&c).is_some() {
                    add(
                        &blk(&format!("attn_{b}.bias")),
                        c,
                        &[rows],
                        if b == "v" { None } else { perm(h) },
                    )?;
                }
            }
            add(
                &blk("attn_output.weight"),
                p("self_attn.o_proj.weight"),
                &[d, q_rows],
                None,
            )?;
            add(
                &blk("ffn_norm.weight"),
                p("post_attention_layernorm.weight"),
                &[d],
                None,
            )?;
            add(
                &blk("ffn_gate.weight"),
                p("mlp.gate_proj.weight"),
                &[n_ff, d],
                None,
            )?;
            add(
                &blk("ffn_up.weight"),
                p("mlp.up_proj.weight"),
                &[n_ff, d],
                None,
            )?;
            add(
                &blk("ffn_down.weight"),
                p("mlp.down_proj.weight"),
                &[d, n_ff],
                None,
            )?;
        }
        add(tensors::OUTPUT_NORM, lm_names("norm.weight"), &[d], None)?;
        let head = vec![
            "language_model.lm_head.weight".to_string(),
            "lm_head.weight".to_string(),
        ];
        if !self.tied || find.resolve(&head).is_some() {
            add(tensors::OUTPUT, head, &[vocab, d], None)?;
        }
        Ok(outs)
    }

    /// `general.*` and `{arch}.*` keys (the tokenizer's are added by the caller).
    pub fn metadata(&self, name: &str) -> Metadata {
        let k = |s: &str| llm::key(self.arch, s);
        let u = |v: usize| Value::U32(v as u32);
        let mut md: Metadata = vec![
            (general::ARCHITECTURE.into(), Value::string(self.arch)),
            (general::NAME.into(), Value::string(name)),
            (k(llm::CONTEXT_LENGTH), u(self.n_ctx)),
            (k(llm::EMBEDDING_LENGTH), u(self.n_embd)),
            (k(llm::BLOCK_COUNT), u(self.n_layer)),
            (k(llm::FEED_FORWARD_LENGTH), u(self.n_ff)),
            (k(llm::HEAD_COUNT), u(self.n_head)),
            (k(llm::HEAD_COUNT_KV), u(self.n_head_kv)),
            (k(llm::ROPE_FREQ_BASE), Value::F32(self.rope_theta as f32)),
            (k(llm::ROPE_DIMENSION_COUNT), u(self.head_dim)),
            (k(llm::RMS_EPS), Value::F32(self.rms_eps as f32)),
            (k(llm::VOCAB_SIZE), u(self.n_vocab)),
        ];
        // Absent keys mean hidden size / heads; write them only where that is not the size.
        if self.head_dim * self.n_head != self.n_embd {
            md.push((k(llm::KEY_LENGTH), u(self.head_dim)));
            md.push((k(llm::VALUE_LENGTH), u(self.head_dim)));
        }
        md
    }
}
