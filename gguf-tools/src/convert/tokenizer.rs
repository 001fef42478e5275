//! A checkpoint's tokenizer as llama.cpp's `tokenizer.ggml.*` keys: SentencePiece models
//! (LLaMA, Vicuna, Mistral) from `tokenizer.model`, or from `tokenizer.json` when that is all
//! the checkpoint holds (transformers 5 saves LLaMA tokenizers so: BPE with `byte_fallback`),
//! byte-level BPE (Qwen2, Llama-3) from `tokenizer.json`, plus the added tokens (`<image>`,
//! `<|im_start|>`) and special ids.

use std::path::Path;

use llava_edge::gguf::keys::tokenizer as keys;
use llava_edge::gguf::{Array, Value};

use super::ConvertError;

// llama.cpp's token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

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

/// `<0xXX>`: a SentencePiece byte-fallback piece.
fn is_byte_piece(p: &[u8]) -> bool {
    p.len() == 6
        && p.starts_with(b"<0x")
        && p[5] == b'>'
        && p[3..5].iter().all(u8::is_ascii_hexdigit)
}

/// The token texts of a `tokenizer.json` BPE vocabulary, by id. Ids must be below `limit`
/// (the larger of the embedding's rows and the vocabulary's size) and unique.
fn vocab_by_id(
    path: &Path,
    vocab: &serde_json::Map<String, serde_json::Value>,
    limit: usize,
) -> Result<Vec<Vec<u8>>, ConvertError> {
    let mut ids = Vec::with_capacity(vocab.len());
    for (t, id) in vocab {
        let id = id
            .as_u64()
            .filter(|&i| (i as usize) < limit.max(vocab.len()))
            .ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "vocab id of '{t}' is {id}, not a number below {}",
                        limit.max(vocab.len())
                    ),
                )
            })? as usize;
        ids.push((id, t));
    }
    let size = ids.iter().map(|&(i, _)| i + 1).max().unwrap_or(0);
    let mut tokens: Vec<Option<Vec<u8>>> = vec![None; size];
    for (id, t) in ids {
        if tokens[id].replace(t.as_bytes().to_vec()).is_some() {
            return Err(bad(path, format!("vocab id {id} is given to two tokens")));
        }
    }
    // A gap (rare: ids held by added tokens) is filled the way llama.cpp pads.
    Ok(tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]").into_bytes()))
        .collect())
}

/// The merges of a `tokenizer.json` BPE model as (left, right) pairs: either `"a b"` strings
/// or, since tokenizers 0.20, `["a", "b"]` arrays.
fn merge_pairs(
    path: &Path,
    model: &serde_json::Value,
) -> Result<Vec<(String, String)>, ConvertError> {
    model["merges"]
        .as_array()
        .ok_or_else(|| bad(path, "the BPE model has no merges list"))?
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let pair = match m {
                serde_json::Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string())),
                serde_json::Value::Array(p) if p.len() == 2 => p[0]
                    .as_str()
                    .zip(p[1].as_str())
                    .map(|(a, b)| (a.to_string(), b.to_string())),
                _ => None,
            };
            pair.ok_or_else(|| bad(path, format!("merge {i} is not a pair of strings: {m}")))
        })
        .collect()
}

/// Whether a SentencePiece-style `tokenizer.json` puts "▁" before the text: a Metaspace
/// pre-tokenizer that prepends (`prepend_scheme` first or always, or the older
/// `add_prefix_space`), or the legacy normalizer's `Prepend("▁")`.
fn json_adds_space_prefix(tj: &serde_json::Value) -> bool {
    fn walk(v: &serde_json::Value, list: &str, f: &dyn Fn(&serde_json::Value) -> bool) -> bool {
        f(v) || v[list]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| walk(x, list, f)))
    }
    let metaspace = |p: &serde_json::Value| {
        p["type"] == "Metaspace"
            && match p["prepend_scheme"].as_str() {
                Some(s) => s != "never",
                None => p["add_prefix_space"].as_bool().unwrap_or(true),
            }
    };
    let prepend = |n: &serde_json::Value| n["type"] == "Prepend" && n["prepend"] == "\u{2581}";
    walk(&tj["pre_tokenizer"], "pretokenizers", &metaspace)
        || walk(&tj["normalizer"], "normalizers", &prepend)
}

/// A SentencePiece vocabulary rebuilt from a `tokenizer.json` BPE model with `byte_fallback`
/// (what transformers writes for a LLaMA tokenizer, whose ids are the SentencePiece ids), as
/// the `tokenizer.model` of the same tokenizer gives it: `<0xXX>` pieces BYTE, the unknown
/// token UNKNOWN, added tokens inside the vocabulary meta pieces (score 0; typed later with
/// the other added tokens), the rest NORMAL. A SentencePiece BPE model scores its i-th learned
/// piece -i, merged pieces in merge order, then single characters; transformers' converter
/// writes the merges sorted by that score, so the first merge making a piece gives its place.
/// (llama.cpp's `LlamaHfVocab` writes -1000 for every piece, which its score-ordered merging
/// cannot tell apart: prompts would tokenize differently from transformers.)
fn sentencepiece_from_json(
    path: &Path,
    tj: &serde_json::Value,
    unk: Option<&str>,
    limit: usize,
) -> Result<SentencePieces, ConvertError> {
    let model = &tj["model"];
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad(path, "the BPE model has no vocab object"))?;
    let pieces = vocab_by_id(path, vocab, limit)?;
    let index: std::collections::HashMap<&[u8], usize> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_slice(), i))
        .collect();
    let unk = model["unk_token"].as_str().or(unk);
    let mut types: Vec<i32> = pieces
        .iter()
        .map(|p| {
            if is_byte_piece(p) {
                BYTE
            } else if Some(p.as_slice()) == unk.map(str::as_bytes) {
                UNKNOWN
            } else {
                NORMAL
            }
        })
        .collect();
    for a in tj["added_tokens"].as_array().into_iter().flatten() {
        if let Some(id) = a["id"].as_u64().map(|i| i as usize) {
            if id < types.len() && types[id] == NORMAL {
                types[id] = USER_DEFINED;
            }
        }
    }
    let mut first_merge = vec![usize::MAX; pieces.len()];
    for (rank, (a, b)) in merge_pairs(path, model)?.into_iter().enumerate() {
        if let Some(&id) = index.get(format!("{a}{b}").as_bytes()) {
            first_merge[id] = first_merge[id].min(rank);
        }
    }
    let mut normal: Vec<usize> = (0..pieces.len()).filter(|&i| types[i] == NORMAL).collect();
    normal.sort_by_key(|&i| (first_merge[i], i));
    let mut scores = vec![0f32; pieces.len()];
    for (place, &i) in normal.iter().enumerate() {
        scores[i] = -(place as f32);
    }
    Ok((pieces, scores, types, json_adds_space_prefix(tj)))
}

fn json(path: &Path) -> Result<serde_json::Value, ConvertError> {
    let text =
        std::fs::read_to_string(path).map_err(|_| ConvertError::MissingFile(path.to_path_buf()))?;
    serde_json::from_str(&text).map_err(|e| bad(path, e.to_string()))
}

/// Token texts, scores and types, in id order.
struct Table {
    tokens: Vec<Vec<u8>>,
    scores: Vec<f32>,
    types: Vec<i32>,
}

impl Table {
    /// Pads with unused `[PADi]` tokens up to `n` (as llama.cpp's converter does).
    fn pad_to(&mut self, n: usize) {
        while self.tokens.len() < n {
            let i = self.tokens.len();
            self.tokens.push(format!("[PAD{i}]").into_bytes());
            self.scores.push(-1000.0);
            self.types.push(UNUSED);
        }
    }
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
    let (mut table, mut md) = base_vocabulary(dir, &tj_path, &tj, &cfg, n_vocab, qwen2)?;
    add_tokens(&tj_path, &tj, n_vocab, &mut table)?;
    // Pad to the embedding's rows, as llama.cpp does, so token ids and rows agree.
    table.pad_to(n_vocab);
    md.extend(special_ids(&tj, &cfg, &table.tokens, qwen2));
    if let Some(t) = chat_template(dir, &cfg)? {
        md.push((keys::CHAT_TEMPLATE.into(), Value::string(t)));
    }
    let Table {
        tokens,
        scores,
        types,
    } = table;
    md.insert(
        0,
        (keys::TOKENS.into(), Value::Array(Array::String(tokens))),
    );
    md.insert(1, (keys::SCORES.into(), Value::Array(Array::F32(scores))));
    md.insert(
        2,
        (keys::TOKEN_TYPE.into(), Value::Array(Array::I32(types))),
    );
    Ok(md)
}

/// The model's own vocabulary: SentencePiece (`tokenizer.model`, or a byte-fallback BPE in
/// `tokenizer.json`) or byte-level BPE with its merges; and the keys that name its kind.
fn base_vocabulary(
    dir: &Path,
    tj_path: &Path,
    tj: &serde_json::Value,
    cfg: &serde_json::Value,
    n_vocab: usize,
    qwen2: bool,
) -> Result<(Table, Vec<(String, Value)>), ConvertError> {
    let mut md: Vec<(String, Value)> = Vec::new();
    let sp = dir.join("tokenizer.model");
    let byte_fallback = tj["model"]["type"] == "BPE" && tj["model"]["byte_fallback"] == true;
    if !qwen2 && (sp.exists() || byte_fallback) {
        let (tokens, scores, types, add_prefix) = if sp.exists() {
            read_sentencepiece(&sp)?
        } else {
            let unk = cfg["unk_token"]
                .as_str()
                .or_else(|| cfg["unk_token"]["content"].as_str());
            sentencepiece_from_json(tj_path, tj, unk, n_vocab)?
        };
        md.push((keys::MODEL.into(), Value::string("llama")));
        md.push((keys::PRE.into(), Value::string("default")));
        md.push((keys::ADD_SPACE_PREFIX.into(), Value::Bool(add_prefix)));
        return Ok((
            Table {
                tokens,
                scores,
                types,
            },
            md,
        ));
    }
    let model = &tj["model"];
    if model["type"] != "BPE" {
        return Err(bad(
            tj_path,
            format!(
                "tokenizer model {} is not supported (BPE or a SentencePiece tokenizer.model)",
                model["type"]
            ),
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad(tj_path, "no vocab"))?;
    let tokens = vocab_by_id(tj_path, vocab, n_vocab)?;
    let size = tokens.len();
    let merges: Vec<Vec<u8>> = merge_pairs(tj_path, model)?
        .into_iter()
        .map(|(a, b)| format!("{a} {b}").into_bytes())
        .collect();
    md.push((keys::MODEL.into(), Value::string("gpt2")));
    md.push((
        keys::PRE.into(),
        Value::string(if qwen2 { "qwen2" } else { "llama-bpe" }),
    ));
    md.push((keys::MERGES.into(), Value::Array(Array::String(merges))));
    let table = Table {
        tokens,
        scores: vec![0f32; size],
        types: vec![NORMAL; size],
    };
    Ok((table, md))
}

/// `tokenizer.json`'s added tokens into the table: special ones are control tokens, as
/// llama.cpp's converter marks them.
fn add_tokens(
    tj_path: &Path,
    tj: &serde_json::Value,
    n_vocab: usize,
    table: &mut Table,
) -> Result<(), ConvertError> {
    for a in tj["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else {
            continue;
        };
        let id = id as usize;
        if id >= n_vocab.max(table.tokens.len()) {
            return Err(bad(
                tj_path,
                format!(
                    "added token '{content}' has id {id}, past the model's {n_vocab} embedding rows"
                ),
            ));
        }
        table.pad_to(id + 1);
        table.tokens[id] = content.as_bytes().to_vec();
        let types = &mut table.types;
        if a["special"].as_bool() == Some(true) {
            // The unknown token stays UNKNOWN, as llama.cpp's SentencePiece path types it.
            if types[id] != UNKNOWN {
                types[id] = CONTROL;
            }
        } else if types[id] != CONTROL {
            types[id] = USER_DEFINED;
        }
    }
    Ok(())
}

/// The special-token ids `tokenizer_config.json` names, and whether encoding adds BOS / EOS.
fn special_ids(
    tj: &serde_json::Value,
    cfg: &serde_json::Value,
    tokens: &[Vec<u8>],
    qwen2: bool,
) -> Vec<(String, Value)> {
    let mut md = Vec::new();
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
            md.push((keys::token_id(name), Value::U32(id)));
        }
    }
    // transformers 5 does not write add_bos_token / add_eos_token: the post-processor's
    // template says what it adds, as llama.cpp's SpecialVocab reads it.
    let template_adds = |key: &str, first: bool| -> Option<bool> {
        let single = tj["post_processor"]["single"].as_array()?;
        let end = if first { single.first() } else { single.last() }?;
        let special = end["SpecialToken"]["id"].as_str();
        let token = cfg[key].as_str().or_else(|| cfg[key]["content"].as_str());
        Some(special.is_some() && special == token)
    };
    let add_bos = cfg["add_bos_token"]
        .as_bool()
        .or_else(|| template_adds("bos_token", true))
        .unwrap_or(!qwen2);
    md.push((
        keys::ADD_BOS.into(),
        Value::Bool(add_bos && id_of("bos_token").is_some()),
    ));
    let add_eos = cfg["add_eos_token"]
        .as_bool()
        .or_else(|| template_adds("eos_token", false))
        .unwrap_or(false);
    md.push((
        keys::ADD_EOS.into(),
        Value::Bool(add_eos && id_of("eos_token").is_some()),
    ));
    md
}

/// The chat template: `chat_template.jinja`, else the processor's (`chat_template.json`, what
/// apply_chat_template renders for a multimodal model, where older llava-hf checkpoints keep
/// it), else the tokenizer's.
fn chat_template(dir: &Path, cfg: &serde_json::Value) -> Result<Option<String>, ConvertError> {
    let template_json = dir.join("chat_template.json");
    let processor_template = if template_json.exists() {
        json(&template_json)?["chat_template"]
            .as_str()
            .map(String::from)
    } else {
        None
    };
    Ok(std::fs::read_to_string(dir.join("chat_template.jinja"))
        .ok()
        .or(processor_template)
        .or_else(|| cfg["chat_template"].as_str().map(String::from)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn space_prefix_from_metaspace_or_the_legacy_normalizer() {
        let meta = |scheme: &str| json!({"pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": scheme}});
        assert!(json_adds_space_prefix(&meta("first")));
        assert!(json_adds_space_prefix(&meta("always")));
        assert!(!json_adds_space_prefix(&meta("never")));
        let legacy = json!({"pre_tokenizer": null, "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]}});
        assert!(json_adds_space_prefix(&legacy));
        assert!(!json_adds_space_prefix(&json!({})));
    }

    #[test]
    fn scores_follow_the_first_merge_that_makes_each_piece() {
        // "abc" is made by the second merge and again by the fourth: the first one counts.
        let tj = json!({
            "model": {"type": "BPE", "byte_fallback": true,
                "vocab": {"<unk>": 0, "<s>": 1, "<0x41>": 2, "a": 3, "b": 4, "c": 5, "ab": 6, "abc": 7, "bc": 8},
                "merges": [["a", "b"], ["ab", "c"], ["b", "c"], "a bc"]},
            "added_tokens": [{"id": 1, "content": "<s>", "special": true}],
        });
        let (pieces, scores, types, _) =
            sentencepiece_from_json(Path::new("tokenizer.json"), &tj, Some("<unk>"), 9).unwrap();
        assert_eq!(pieces[7], b"abc");
        assert_eq!(
            types,
            [
                UNKNOWN,
                USER_DEFINED,
                BYTE,
                NORMAL,
                NORMAL,
                NORMAL,
                NORMAL,
                NORMAL,
                NORMAL
            ]
        );
        // Merged pieces in merge order (ab, abc, bc), then single characters by id.
        assert_eq!(scores, [0.0, 0.0, 0.0, -3.0, -4.0, -5.0, -0.0, -1.0, -2.0]);
        assert_eq!(scores[6].to_bits(), (-0.0f32).to_bits());
    }
}
