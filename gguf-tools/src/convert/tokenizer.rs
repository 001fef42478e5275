//! A checkpoint's tokenizer as llama.cpp's `tokenizer.ggml.*` keys: SentencePiece models
//! (LLaMA, Vicuna, Mistral) from `tokenizer.model`, byte-level BPE (Qwen2, Llama-3) from
//! `tokenizer.json`, plus the added tokens (`<image>`, `<|im_start|>`) and special ids.

use std::path::Path;

use llava_edge::gguf::{Array, Value};

use super::ConvertError;

// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

fn bad(path: &Path, problem: impl Into<String>) -> ConvertError {
    ConvertError::Checkpoint {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

struct Proto<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Proto<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// The next (field number, wire type, payload) of a message.
    fn field(&mut self) -> Option<(u64, u8, &'a [u8], u64)> {
        let key = self.varint()?;
        let (num, wire) = (key >> 3, (key & 7) as u8);
        match wire {
            0 => Some((num, 0, &[], self.varint()?)),
            1 => {
                let s = self.b.get(self.pos..self.pos + 8)?;
                self.pos += 8;
                Some((num, 1, s, 0))
            }
            2 => {
                let n = self.varint()? as usize;
                let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
                self.pos += n;
                Some((num, 2, s, 0))
            }
            5 => {
                let s = self.b.get(self.pos..self.pos + 4)?;
                self.pos += 4;
                Some((num, 5, s, 0))
            }
            _ => None,
        }
    }
}

/// Pieces, scores, types and `add_dummy_prefix` of a SentencePiece model.
type SentencePieces = (Vec<Vec<u8>>, Vec<f32>, Vec<i32>, bool);

/// Reads a SentencePiece `ModelProto` (field 1, repeated
/// `SentencePiece { piece = 1; score = 2; type = 3 }`; field 3, the normalizer spec).
fn read_sentencepiece(path: &Path) -> Result<SentencePieces, ConvertError> {
    let bytes = std::fs::read(path).map_err(|_| ConvertError::MissingFile(path.to_path_buf()))?;
    let mut p = Proto { b: &bytes, pos: 0 };
    let (mut pieces, mut scores, mut types) = (Vec::new(), Vec::new(), Vec::new());
    let mut add_prefix = true;
    while p.pos < bytes.len() {
        let (num, wire, payload, _) = p
            .field()
            .ok_or_else(|| bad(path, format!("malformed protobuf at byte {}", p.pos)))?;
        match (num, wire) {
            (1, 2) => {
                let mut q = Proto { b: payload, pos: 0 };
                let (mut piece, mut score, mut ty) = (Vec::new(), 0f32, NORMAL);
                while q.pos < payload.len() {
                    match q
                        .field()
                        .ok_or_else(|| bad(path, "malformed SentencePiece entry"))?
                    {
                        (1, 2, s, _) => piece = s.to_vec(),
                        (2, 5, s, _) => score = f32::from_le_bytes(s.try_into().expect("4 bytes")),
                        (3, 0, _, v) => ty = v as i32,
                        _ => {}
                    }
                }
                pieces.push(piece);
                scores.push(score);
                types.push(ty);
            }
            // normalizer_spec { add_dummy_prefix = 3 }
            (3, 2) => {
                let mut q = Proto { b: payload, pos: 0 };
                while q.pos < payload.len() {
                    match q.field() {
                        Some((3, 0, _, v)) => add_prefix = v != 0,
                        Some(_) => {}
                        None => return Err(bad(path, "malformed normalizer spec")),
                    }
                }
            }
            _ => {}
        }
    }
    if pieces.is_empty() {
        return Err(bad(path, "no pieces"));
    }
    Ok((pieces, scores, types, add_prefix))
}

fn json(path: &Path) -> Result<serde_json::Value, ConvertError> {
    let text =
        std::fs::read_to_string(path).map_err(|_| ConvertError::MissingFile(path.to_path_buf()))?;
    serde_json::from_str(&text).map_err(|e| bad(path, e.to_string()))
}

/// The `tokenizer.ggml.*` keys for the checkpoint in `dir`, padded to `n_vocab` tokens.
pub fn tokenizer_metadata(
    dir: &Path,
    n_vocab: usize,
    qwen2: bool,
) -> Result<Vec<(String, Value)>, ConvertError> {
    let tj_path = dir.join("tokenizer.json");
    let tj = json(&tj_path)?;
    let cfg = json(&dir.join("tokenizer_config.json")).unwrap_or(serde_json::Value::Null);
    let (mut tokens, mut scores, mut types);
    let mut md: Vec<(String, Value)> = Vec::new();
    let sp = dir.join("tokenizer.model");
    if !qwen2 && sp.exists() {
        let (p, s, t, add_prefix) = read_sentencepiece(&sp)?;
        (tokens, scores, types) = (p, s, t);
        md.push(("tokenizer.ggml.model".into(), Value::string("llama")));
        md.push(("tokenizer.ggml.pre".into(), Value::string("default")));
        md.push((
            "tokenizer.ggml.add_space_prefix".into(),
            Value::Bool(add_prefix),
        ));
    } else {
        let model = &tj["model"];
        if model["type"] != "BPE" {
            return Err(bad(
                &tj_path,
                format!(
                    "tokenizer model {} is not supported (BPE or a SentencePiece tokenizer.model)",
                    model["type"]
                ),
            ));
        }
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| bad(&tj_path, "no vocab"))?;
        let size = vocab
            .values()
            .filter_map(|v| v.as_u64())
            .max()
            .map_or(0, |m| m as usize + 1);
        tokens = vec![Vec::new(); size];
        for (t, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| bad(&tj_path, "vocab id is not a number"))?
                as usize;
            tokens[id] = t.as_bytes().to_vec();
        }
        scores = vec![0f32; size];
        types = vec![NORMAL; size];
        let merges: Vec<Vec<u8>> = model["merges"]
            .as_array()
            .ok_or_else(|| bad(&tj_path, "no merges"))?
            .iter()
            .map(|m| match m {
                serde_json::Value::String(s) => s.as_bytes().to_vec(),
                serde_json::Value::Array(p) => format!(
                    "{} {}",
                    p[0].as_str().unwrap_or(""),
                    p[1].as_str().unwrap_or("")
                )
                .into_bytes(),
                _ => Vec::new(),
            })
            .collect();
        md.push(("tokenizer.ggml.model".into(), Value::string("gpt2")));
        md.push((
            "tokenizer.ggml.pre".into(),
            Value::string(if qwen2 { "qwen2" } else { "llama-bpe" }),
        ));
        md.push((
            "tokenizer.ggml.merges".into(),
            Value::Array(Array::String(merges)),
        ));
    }
    // Added tokens: special ones are control tokens, as llama.cpp's converter marks them.
    for a in tj["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else {
            continue;
        };
        let id = id as usize;
        while tokens.len() <= id {
            let i = tokens.len();
            tokens.push(format!("[PAD{i}]").into_bytes());
            scores.push(-1000.0);
            types.push(UNUSED);
        }
        tokens[id] = content.as_bytes().to_vec();
        if a["special"].as_bool() == Some(true) {
            types[id] = CONTROL;
        } else if types[id] != CONTROL {
            types[id] = USER_DEFINED;
        }
    }
    // Pad to the embedding's rows, as llama.cpp does, so token ids and rows agree.
    while tokens.len() < n_vocab {
        let i = tokens.len();
        tokens.push(format!("[PAD{i}]").into_bytes());
        scores.push(-1000.0);
        types.push(UNUSED);
    }
    let id_of = |key: &str| -> Option<u32> {
        let t = cfg[key].as_str().or_else(|| cfg[key]["content"].as_str())?;
        tokens
            .iter()
            .position(|x| x == t.as_bytes())
            .map(|i| i as u32)
    };
    for (key, name) in [
        ("bos_token", "bos"),
        ("eos_token", "eos"),
        ("unk_token", "unknown"),
        ("pad_token", "padding"),
    ] {
        if let Some(id) = id_of(key) {
            md.push((format!("tokenizer.ggml.{name}_token_id"), Value::U32(id)));
        }
    }
    let add_bos = cfg["add_bos_token"].as_bool().unwrap_or(!qwen2);
    md.push((
        "tokenizer.ggml.add_bos_token".into(),
        Value::Bool(add_bos && id_of("bos_token").is_some()),
    ));
    md.push((
        "tokenizer.ggml.add_eos_token".into(),
        Value::Bool(cfg["add_eos_token"].as_bool().unwrap_or(false)),
    ));
    let template = std::fs::read_to_string(dir.join("chat_template.jinja"))
        .ok()
        .or_else(|| cfg["chat_template"].as_str().map(String::from));
    if let Some(t) = template {
        md.push(("tokenizer.chat_template".into(), Value::string(t)));
    }
    md.insert(
        0,
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::String(tokens)),
        ),
    );
    md.insert(
        1,
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(Array::F32(scores)),
        ),
    );
    md.insert(
        2,
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array::I32(types)),
        ),
    );
    Ok(md)
}
