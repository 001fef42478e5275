//! The token table read from `tokenizer.ggml.*`: texts, scores, attributes, special ids and the
//! flags that steer encoding, with llama.cpp's defaults wherever a key is absent.

use std::collections::{BTreeSet, HashMap};

use super::error::{malformed, TokenizerError};
use crate::gguf::keys::tokenizer as keys;
use crate::gguf::{Array, GgufFile, Value};

/// Token attributes as llama.cpp keeps them: a bit set, since the auto-detection passes add
/// bits (a text that looks like an end-of-turn marker gains CONTROL) on top of the file's type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenAttr(pub u16);

impl TokenAttr {
    /// No known type (also the type of ids the file marks with an unknown number).
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    /// The unknown-text token.
    pub const UNKNOWN: TokenAttr = TokenAttr(1 << 0);
    /// Reserved, never produced.
    pub const UNUSED: TokenAttr = TokenAttr(1 << 1);
    /// Ordinary text.
    pub const NORMAL: TokenAttr = TokenAttr(1 << 2);
    /// Control tokens (BOS, EOS, chat markers): not rendered unless asked.
    pub const CONTROL: TokenAttr = TokenAttr(1 << 3);
    /// Added tokens matched as whole strings before tokenizing, even without `parse_special`.
    pub const USER_DEFINED: TokenAttr = TokenAttr(1 << 4);
    /// SentencePiece byte-fallback tokens `<0xXX>`.
    pub const BYTE: TokenAttr = TokenAttr(1 << 5);

    /// Whether any bit of `other` is set.
    pub fn has(self, other: TokenAttr) -> bool {
        self.0 & other.0 != 0
    }

    fn from_type(t: i64) -> TokenAttr {
        match t {
            1 => TokenAttr::NORMAL,
            2 => TokenAttr::UNKNOWN,
            3 => TokenAttr::CONTROL,
            4 => TokenAttr::USER_DEFINED,
            5 => TokenAttr::UNUSED,
            6 => TokenAttr::BYTE,
            _ => TokenAttr::UNDEFINED,
        }
    }
}

impl std::ops::BitOr for TokenAttr {
    type Output = TokenAttr;
    fn bitor(self, rhs: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | rhs.0)
    }
}

/// Which tokenizer family the vocabulary belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece (`tokenizer.ggml.model = llama`): LLaMA, Vicuna, Mistral.
    Spm,
    /// Byte-level BPE (`tokenizer.ggml.model = gpt2`): Qwen2, Llama-3.
    Bpe,
}

/// Special token ids; `None` where the vocabulary has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// End of turn (from the key, else found by text such as `<|im_end|>`).
    pub eot: Option<u32>,
    /// End of message.
    pub eom: Option<u32>,
    /// Unknown text.
    pub unk: Option<u32>,
    /// Separator.
    pub sep: Option<u32>,
    /// Padding.
    pub pad: Option<u32>,
    /// Mask.
    pub mask: Option<u32>,
    /// Fill-in-the-middle prefix.
    pub fim_pre: Option<u32>,
    /// Fill-in-the-middle suffix.
    pub fim_suf: Option<u32>,
    /// Fill-in-the-middle middle.
    pub fim_mid: Option<u32>,
    /// Fill-in-the-middle padding.
    pub fim_pad: Option<u32>,
    /// Fill-in-the-middle repository name.
    pub fim_rep: Option<u32>,
    /// Fill-in-the-middle file separator.
    pub fim_sep: Option<u32>,
}

/// Per-family defaults that the metadata may override, as llama.cpp sets them before reading.
#[derive(Clone, Debug)]
pub(crate) struct Defaults {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
}

/// The loaded token table.
#[derive(Clone, Debug)]
pub struct Vocab {
    pub(crate) kind: VocabKind,
    pub(crate) texts: Vec<Vec<u8>>,
    pub(crate) scores: Vec<f32>,
    pub(crate) attrs: Vec<TokenAttr>,
    pub(crate) text_to_id: HashMap<Vec<u8>, u32>,
    pub(crate) special: SpecialIds,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
    pub(crate) add_space_prefix: bool,
    pub(crate) eog: BTreeSet<u32>,
    /// Ids matched as whole strings before tokenizing, longest text first.
    pub(crate) special_by_len: Vec<u32>,
}

// Texts llama.cpp recognises by name when the converter did not write an id key.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Texts that end generation whatever their id keys say.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Picks one field of [`SpecialIds`], so keys and text lists can be tabled.
type Slot = fn(&mut SpecialIds) -> &mut Option<u32>;

fn opt_id(f: &GgufFile, key: &'static str) -> Result<Option<u64>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| malformed(key, format!("expected a non-negative integer, got {v}"))),
    }
}

fn opt_bool(f: &GgufFile, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| malformed(key, format!("expected a bool, got {v}"))),
    }
}

pub(crate) fn opt_array<'a>(
    f: &'a GgufFile,
    key: &'static str,
) -> Result<Option<&'a Array>, TokenizerError> {
    match f.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(v) => Err(malformed(key, format!("expected an array, got {v}"))),
    }
}

/// The token texts, between 1 and `i32::MAX` of them.
fn read_tokens(f: &GgufFile) -> Result<&[Vec<u8>], TokenizerError> {
    let tokens = opt_array(f, keys::TOKENS)?
        .ok_or(TokenizerError::MissingKey { key: keys::TOKENS })?
        .as_strings()
        .ok_or_else(|| malformed(keys::TOKENS, "expected an array of strings"))?;
    let n = tokens.len();
    if n == 0 {
        return Err(malformed(keys::TOKENS, "the vocabulary is empty"));
    }
    if n > i32::MAX as usize {
        return Err(malformed(keys::TOKENS, format!("{n} tokens is too many")));
    }
    Ok(tokens)
}

/// Token texts with their lookup table; empty texts are renamed `[EMPTY_i]` as llama.cpp
/// does, so that every id stays reachable by text.
type TextTable = (Vec<Vec<u8>>, HashMap<Vec<u8>, u32>);
fn index_texts(tokens: &[Vec<u8>]) -> Result<TextTable, TokenizerError> {
    let n = tokens.len();
    let mut texts = Vec::with_capacity(n);
    let mut text_to_id = HashMap::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        let text = if t.is_empty() {
            format!("[EMPTY_{i}]").into_bytes()
        } else {
            t.clone()
        };
        if let Some(prev) = text_to_id.insert(text.clone(), i as u32) {
            return Err(malformed(
                keys::TOKENS,
                format!(
                    "ids {prev} and {i} share the text {:?}",
                    String::from_utf8_lossy(&text)
                ),
            ));
        }
        texts.push(text);
    }
    Ok((texts, text_to_id))
}

/// One score per token (0 where the file has none).
fn read_scores(f: &GgufFile, n: usize) -> Result<Vec<f32>, TokenizerError> {
    let Some(a) = opt_array(f, keys::SCORES)? else {
        return Ok(vec![0.0; n]);
    };
    let v: Vec<f32> = match a {
        Array::F32(v) => v.clone(),
        Array::I32(v) => v.iter().map(|&x| x as f32).collect(),
        _ => return Err(malformed(keys::SCORES, "expected f32 or i32 elements")),
    };
    if v.len() < n {
        return Err(malformed(
            keys::SCORES,
            format!("{} scores for {n} tokens", v.len()),
        ));
    }
    Ok(v[..n].to_vec())
}

/// One attribute per token, from the file's types (NORMAL where the file has none).
fn read_attrs(f: &GgufFile, n: usize) -> Result<Vec<TokenAttr>, TokenizerError> {
    let Some(a) = opt_array(f, keys::TOKEN_TYPE)? else {
        return Ok(vec![TokenAttr::NORMAL; n]);
    };
    let v = a
        .to_i64_vec()
        .ok_or_else(|| malformed(keys::TOKEN_TYPE, "expected integer elements"))?;
    if v.len() < n {
        return Err(malformed(
            keys::TOKEN_TYPE,
            format!("{} types for {n} tokens", v.len()),
        ));
    }
    Ok(v[..n].iter().map(|&t| TokenAttr::from_type(t)).collect())
}

/// Special ids from the family defaults and the id keys. A default outside the table is
/// dropped; a key outside it is ignored (both as llama.cpp).
fn read_special(f: &GgufFile, n: usize, defaults: &Defaults) -> Result<SpecialIds, TokenizerError> {
    let in_range = |d: Option<u32>| d.filter(|&id| (id as usize) < n);
    let mut special = SpecialIds {
        bos: in_range(defaults.bos),
        eos: in_range(defaults.eos),
        unk: in_range(defaults.unk),
        ..SpecialIds::default()
    };
    let slots: [(&'static str, Slot); 17] = [
        (keys::BOS_ID, |s| &mut s.bos),
        (keys::EOS_ID, |s| &mut s.eos),
        (keys::EOT_ID, |s| &mut s.eot),
        (keys::EOM_ID, |s| &mut s.eom),
        (keys::UNK_ID, |s| &mut s.unk),
        (keys::SEP_ID, |s| &mut s.sep),
        (keys::PAD_ID, |s| &mut s.pad),
        (keys::MASK_ID, |s| &mut s.mask),
        (keys::FIM_PRE_ID, |s| &mut s.fim_pre),
        (keys::FIM_SUF_ID, |s| &mut s.fim_suf),
        (keys::FIM_MID_ID, |s| &mut s.fim_mid),
        (keys::FIM_PAD_ID, |s| &mut s.fim_pad),
        (keys::FIM_REP_ID, |s| &mut s.fim_rep),
        (keys::FIM_SEP_ID, |s| &mut s.fim_sep),
        (keys::PREFIX_ID, |s| &mut s.fim_pre),
        (keys::SUFFIX_ID, |s| &mut s.fim_suf),
        (keys::MIDDLE_ID, |s| &mut s.fim_mid),
    ];
    for (key, slot) in slots {
        if let Some(id) = opt_id(f, key)? {
            if id < n as u64 {
                *slot(&mut special) = Some(id as u32);
            }
        }
    }
    Ok(special)
}

/// Ids no key named, found by text and marked CONTROL as llama.cpp does. Scanning ids in
/// ascending order makes the pick deterministic where llama.cpp's hash-map order is not (it
/// only matters when one vocabulary holds two candidates).
fn detect_special(
    special: &mut SpecialIds,
    attrs: &mut [TokenAttr],
    text_to_id: &HashMap<Vec<u8>, u32>,
) {
    let find = |list: &[&str]| -> Option<u32> {
        list.iter()
            .filter_map(|t| text_to_id.get(t.as_bytes()).copied())
            .min()
    };
    let detect: [(Slot, &[&str]); 8] = [
        (|s| &mut s.eot, EOT_TEXTS),
        (|s| &mut s.eom, EOM_TEXTS),
        (|s| &mut s.fim_pre, FIM_PRE_TEXTS),
        (|s| &mut s.fim_suf, FIM_SUF_TEXTS),
        (|s| &mut s.fim_mid, FIM_MID_TEXTS),
        (|s| &mut s.fim_pad, FIM_PAD_TEXTS),
        (|s| &mut s.fim_rep, FIM_REP_TEXTS),
        (|s| &mut s.fim_sep, FIM_SEP_TEXTS),
    ];
    for (slot, list) in detect {
        if slot(special).is_none() {
            if let Some(id) = find(list) {
                *slot(special) = Some(id);
                attrs[id as usize] = attrs[id as usize] | TokenAttr::CONTROL;
            }
        }
    }
}

/// The ids that end generation: the special end ids and the known end texts (marked CONTROL).
fn end_of_generation(
    special: &SpecialIds,
    attrs: &mut [TokenAttr],
    text_to_id: &HashMap<Vec<u8>, u32>,
) -> BTreeSet<u32> {
    let mut eog = BTreeSet::new();
    eog.extend(special.fim_pad);
    eog.extend(special.fim_rep);
    eog.extend(special.fim_sep);
    for t in EOG_TEXTS {
        if let Some(&id) = text_to_id.get(t.as_bytes()) {
            eog.insert(id);
            attrs[id as usize] = attrs[id as usize] | TokenAttr::CONTROL;
        }
    }
    eog.extend(special.eos);
    eog.extend(special.eot);
    eog.extend(special.eom);
    eog
}

impl Vocab {
    pub(crate) fn load(
        f: &GgufFile,
        kind: VocabKind,
        defaults: Defaults,
    ) -> Result<Vocab, TokenizerError> {
        let tokens = read_tokens(f)?;
        let n = tokens.len();
        let scores = read_scores(f, n)?;
        let mut attrs = read_attrs(f, n)?;
        let (texts, text_to_id) = index_texts(tokens)?;
        let mut special = read_special(f, n, &defaults)?;
        let add_bos = opt_bool(f, keys::ADD_BOS)?.unwrap_or(defaults.add_bos);
        let add_eos = opt_bool(f, keys::ADD_EOS)?.unwrap_or(defaults.add_eos);
        let add_space_prefix =
            opt_bool(f, keys::ADD_SPACE_PREFIX)?.unwrap_or(defaults.add_space_prefix);

        detect_special(&mut special, &mut attrs, &text_to_id);
        for (i, text) in texts.iter().enumerate() {
            if attrs[i].has(TokenAttr::CONTROL) && text.windows(6).any(|w| w == b"unused") {
                attrs[i] = attrs[i] | TokenAttr::UNUSED;
            }
        }
        let eog = end_of_generation(&special, &mut attrs, &text_to_id);

        // Texts are matched longest first so that `<|im_start|>` wins over any shorter
        // marker it contains; ties keep id order. Texts that are not UTF-8 can never match
        // inside a `&str` at a character boundary, so they are left out.
        let mut special_by_len: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                attrs[id as usize]
                    .has(TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN)
                    && std::str::from_utf8(&texts[id as usize]).is_ok()
            })
            .collect();
        special_by_len.sort_by_key(|&id| std::cmp::Reverse(texts[id as usize].len()));

        Ok(Vocab {
            kind,
            texts,
            scores,
            attrs,
            text_to_id,
            special,
            add_bos,
            add_eos,
            add_space_prefix,
            eog,
            special_by_len,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether the table is empty (never, for a loaded vocabulary).
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The token's stored text (for BPE, in the GPT-2 byte-to-unicode alphabet).
    pub fn text(&self, id: u32) -> Option<&[u8]> {
        self.texts.get(id as usize).map(|t| t.as_slice())
    }

    /// The token's score (SentencePiece merge priority; 0 where the file has none).
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// The token's attributes.
    pub fn attr(&self, id: u32) -> Option<TokenAttr> {
        self.attrs.get(id as usize).copied()
    }

    /// The id whose stored text is exactly `text`.
    pub fn id(&self, text: &[u8]) -> Option<u32> {
        self.text_to_id.get(text).copied()
    }

    /// Special ids.
    pub fn special(&self) -> &SpecialIds {
        &self.special
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Tokenizer family.
    pub fn kind(&self) -> VocabKind {
        self.kind
    }
}
