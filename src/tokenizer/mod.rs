//! Tokenizers read from GGUF `tokenizer.ggml.*` metadata, reproducing llama.cpp's token ids:
//! SentencePiece for LLaMA/Vicuna/Mistral and byte-level BPE for Qwen2 and Llama-3.
//!
//! Encoding first cuts special tokens out of the text as whole strings (user-defined ones
//! always, control ones only with `parse_special`), then runs the family's algorithm on the
//! text between them. Decoding follows llama.cpp's `llama_detokenize`.
//!
//! Where llama.cpp would abort or depends on something a GGUF file cannot say, this module
//! chooses, and says so:
//! - a SentencePiece byte with neither a `<0xXX>` nor a one-byte token becomes the unknown
//!   token (llama.cpp throws); ids out of range decode to nothing (llama.cpp throws);
//! - duplicate token texts are an error (llama.cpp asserts);
//! - an end-of-turn id found by text, when several candidates exist, is the lowest id
//!   (llama.cpp takes whichever its hash map yields first); all of them end generation anyway;
//! - like llama.cpp, any token whose text is an end-of-generation marker (`</s>`,
//!   `<|endoftext|>`, ...) is made a control token, so `</s>` in Qwen2's vocabulary (a plain
//!   text token there) ends generation and is parsed as special;
//! - llama.cpp's per-model fix-ups keyed on model names (LSTRIP/RSTRIP for Phi-3 and some
//!   BERTs, gpt-oss's and Gemma 4's token re-typing) are not applied: none of them concerns a
//!   LLaVA text model;
//! - special-token texts that are not UTF-8 are never matched in input text.

mod bpe;
mod error;
pub mod pretokenize;
mod spm;
mod stream;
mod unicode;
mod unicode_data;
pub mod vocab;

pub use error::TokenizerError;
pub use pretokenize::PreTokenizer;
pub use stream::{StreamDecoder, Utf8Stream};
pub use vocab::{SpecialIds, TokenAttr, Vocab, VocabKind};

use crate::gguf::keys::tokenizer as keys;
use crate::gguf::GgufFile;
use bpe::Bpe;
use error::malformed;
use vocab::Defaults;

enum Model {
    Spm,
    Bpe(Box<Bpe>),
}

/// A text tokenizer for one model's vocabulary.
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    /// Each token's rendering with control tokens shown, built once as llama.cpp caches it.
    pieces: Vec<Vec<u8>>,
    /// Hugging Face's `clean_up_tokenization_spaces`, applied by [`Tokenizer::decode`].
    clean_spaces: bool,
}

/// A piece of the input once special tokens are cut out.
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

impl Tokenizer {
    /// Build the tokenizer that `tokenizer.ggml.model` (and, for BPE, `tokenizer.ggml.pre`)
    /// name, with llama.cpp's defaults for absent keys.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let model = match f.get(keys::MODEL) {
            None => return Err(TokenizerError::MissingKey { key: keys::MODEL }),
            Some(v) => v
                .as_str()
                .ok_or_else(|| malformed(keys::MODEL, format!("expected a string, got {v}")))?,
        };
        match model {
            "llama" => {
                let defaults = Defaults {
                    bos: Some(1),
                    eos: Some(2),
                    unk: Some(0),
                    add_bos: true,
                    add_eos: false,
                    add_space_prefix: true,
                };
                let vocab = Vocab::load(f, VocabKind::Spm, defaults)?;
                Ok(Tokenizer::assemble(vocab, Model::Spm, false))
            }
            "gpt2" => {
                let pre_name = match f.get(keys::PRE) {
                    None => "",
                    Some(v) => v.as_str().ok_or_else(|| {
                        malformed(keys::PRE, format!("expected a string, got {v}"))
                    })?,
                };
                let pre = PreTokenizer::from_name(pre_name)
                    .ok_or_else(|| TokenizerError::UnknownPre(pre_name.to_string()))?;
                let llama3 = pre == PreTokenizer::Llama3;
                let defaults = Defaults {
                    bos: Some(11),
                    eos: Some(11),
                    unk: None,
                    add_bos: llama3,
                    add_eos: false,
                    add_space_prefix: false,
                };
                let merges = vocab::opt_array(f, keys::MERGES)?
                    .ok_or(TokenizerError::MissingKey { key: keys::MERGES })?;
                let bpe = Bpe::new(merges, pre, llama3)?;
                let vocab = Vocab::load(f, VocabKind::Bpe, defaults)?;
                let clean_spaces = pre != PreTokenizer::Qwen2;
                Ok(Tokenizer::assemble(
                    vocab,
                    Model::Bpe(Box::new(bpe)),
                    clean_spaces,
                ))
            }
            other => Err(TokenizerError::UnknownModel(other.to_string())),
        }
    }

    fn assemble(vocab: Vocab, model: Model, clean_spaces: bool) -> Tokenizer {
        let mut t = Tokenizer {
            vocab,
            model,
            pieces: Vec::new(),
            clean_spaces,
        };
        t.pieces = (0..t.vocab.len() as u32).map(|id| t.render(id)).collect();
        t
    }

    /// A token's bytes with control tokens shown (llama.cpp's `token_to_piece(special=true)`).
    fn render(&self, id: u32) -> Vec<u8> {
        let i = id as usize;
        let attr = self.vocab.attrs[i];
        let text = &self.vocab.texts[i];
        if attr.has(TokenAttr::UNKNOWN | TokenAttr::CONTROL | TokenAttr::USER_DEFINED) {
            return text.clone();
        }
        if attr.has(TokenAttr::NORMAL) {
            return match &self.model {
                Model::Spm => unescape_spaces(text),
                Model::Bpe(bpe) => {
                    let mut out = Vec::with_capacity(text.len());
                    for c in String::from_utf8_lossy(text).chars() {
                        match bpe.alphabet.byte_of(c) {
                            Some(b) => out.push(b),
                            None => {
                                // llama.cpp's marker for a character outside the alphabet.
                                out.extend_from_slice(b"[UNK_BYTE_0x");
                                let mut buf = [0u8; 4];
                                for b in c.encode_utf8(&mut buf).bytes() {
                                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                                }
                                out.extend_from_slice(text);
                                out.push(b']');
                            }
                        }
                    }
                    out
                }
            };
        }
        if attr.has(TokenAttr::BYTE) {
            return byte_of_token(text).map(|b| vec![b]).unwrap_or_default();
        }
        Vec::new()
    }

    /// Token ids for `text`. `add_special` adds BOS (and EOS) where the vocabulary asks for
    /// them; `parse_special` lets control tokens such as `<|im_start|>` or `<s>` written in
    /// the text become their ids (user-defined tokens always do).
    ///
    /// SentencePiece vocabularies prefix a space to the text and after every special token,
    /// as llama.cpp does, so `"Hello"` encodes as `"▁Hello"`.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.encode_inner(text, add_special, parse_special, true)
    }

    /// Token ids for `text` that continues a sequence (text after an image in a multimodal
    /// prompt): no BOS, and no SentencePiece space prefix at its start or after special tokens.
    /// This is transformers' Metaspace `prepend_scheme: "first"` (llava-hf's tokenizers, with
    /// `legacy: false`), where only the very start of the prompt is prefixed; llama.cpp's rule
    /// (a prefix after every special token) adds a `▁` token after `<image>` that the reference
    /// does not have.
    pub fn encode_continuation(&self, text: &str, parse_special: bool) -> Vec<u32> {
        self.encode_inner(text, false, parse_special, false)
    }

    fn encode_inner(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        prefix: bool,
    ) -> Vec<u32> {
        let fragments = self.fragments(text, parse_special);
        let mut out = Vec::new();
        let v = &self.vocab;
        if add_special && v.add_bos {
            out.extend(v.special.bos);
        }
        match &self.model {
            Model::Spm => {
                let mut after_special = true;
                let mut buf = Vec::new();
                for frag in fragments {
                    match frag {
                        Fragment::Text(s) => {
                            buf.clear();
                            if v.add_space_prefix && after_special && prefix {
                                buf.extend_from_slice("▁".as_bytes());
                            }
                            escape_spaces(s, &mut buf);
                            spm::encode(v, &buf, &mut out);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
            Model::Bpe(bpe) => {
                for frag in fragments {
                    match frag {
                        Fragment::Text(s) => bpe.encode(v, s, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.extend(v.special.eos);
        }
        out
    }

    /// Cut special tokens out of `text`, longest token text first, every occurrence.
    fn fragments<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut frags = vec![Fragment::Text(text)];
        for &id in &self.vocab.special_by_len {
            let attr = self.vocab.attrs[id as usize];
            if !parse_special && attr.has(TokenAttr::CONTROL | TokenAttr::UNKNOWN) {
                continue;
            }
            // special_by_len holds only UTF-8 texts.
            let Ok(needle) = std::str::from_utf8(&self.vocab.texts[id as usize]) else {
                continue;
            };
            if !frags
                .iter()
                .any(|f| matches!(f, Fragment::Text(s) if s.contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Fragment::Text(mut s) => {
                        while let Some(at) = s.find(needle) {
                            if at > 0 {
                                next.push(Fragment::Text(&s[..at]));
                            }
                            next.push(Fragment::Token(id));
                            s = &s[at + needle.len()..];
                        }
                        if !s.is_empty() {
                            next.push(Fragment::Text(s));
                        }
                    }
                    tok => next.push(tok),
                }
            }
            frags = next;
        }
        frags
    }

    /// The bytes a token stands for, control tokens shown as their text. Empty for an id out
    /// of range. A token may hold part of a UTF-8 character; see [`StreamDecoder`].
    pub fn token_to_bytes(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], |p| p.as_slice())
    }

    /// The bytes a token stands for; with `special` false, control and unknown tokens render
    /// as nothing (llama.cpp's `token_to_piece`).
    pub fn piece(&self, id: u32, special: bool) -> &[u8] {
        match self.vocab.attr(id) {
            Some(a) if !special && a.has(TokenAttr::UNKNOWN | TokenAttr::CONTROL) => &[],
            _ => self.token_to_bytes(id),
        }
    }

    /// Bytes for a token sequence, as llama.cpp's `llama_detokenize`: `remove_special` drops a
    /// leading BOS and trailing EOS that the vocabulary adds itself, `unparse_special` renders
    /// control tokens. The SentencePiece space prefix is removed from the first token, and
    /// BPE vocabularies that ask for it get Hugging Face's space clean-up (` ,` -> `,`).
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        let v = &self.vocab;
        let mut ids = ids;
        let mut remove_space = v.add_space_prefix;
        if remove_special && v.add_bos {
            if let (Some(&first), Some(bos)) = (ids.first(), v.special.bos) {
                if first == bos {
                    remove_space = false;
                    ids = &ids[1..];
                }
            }
        }
        if remove_special && v.add_eos {
            if let (Some(&last), Some(eos)) = (ids.last(), v.special.eos) {
                if last == eos {
                    ids = &ids[..ids.len() - 1];
                }
            }
        }
        let mut text = Vec::new();
        for &id in ids {
            let mut p = self.piece(id, unparse_special);
            if remove_space {
                p = p.strip_prefix(b" ").unwrap_or(p);
            }
            remove_space = false;
            text.extend_from_slice(p);
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        text
    }

    /// Text for a token sequence: [`Tokenizer::detokenize`] without control tokens, with any
    /// invalid UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.detokenize(ids, false, false)).into_owned()
    }

    /// A decoder for generated tokens that only ever emits whole characters.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// Beginning-of-sequence id.
    pub fn bos(&self) -> Option<u32> {
        self.vocab.special.bos
    }

    /// End-of-sequence id.
    pub fn eos(&self) -> Option<u32> {
        self.vocab.special.eos
    }

    /// Whether generating `id` ends the turn (EOS, EOT, `<|im_end|>`, `<|endoftext|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.contains(&id)
    }

    /// The id of the token whose text is exactly `text` (e.g. `<image>`, `<|im_start|>`).
    /// BPE texts are stored in GPT-2's byte alphabet, so plain words need `Ġ` for a space.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text.as_bytes())
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    /// The underlying token table.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The BPE pre-tokenizer; `None` for SentencePiece.
    pub fn pre_tokenizer(&self) -> Option<PreTokenizer> {
        match &self.model {
            Model::Spm => None,
            Model::Bpe(b) => Some(b.pre),
        }
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.vocab.kind)
            .field("pre", &self.pre_tokenizer())
            .field("n_vocab", &self.n_vocab())
            .finish()
    }
}

/// SentencePiece writes spaces as U+2581 `▁`.
fn escape_spaces(s: &str, out: &mut Vec<u8>) {
    for b in s.bytes() {
        if b == b' ' {
            out.extend_from_slice("▁".as_bytes());
        } else {
            out.push(b);
        }
    }
}

fn unescape_spaces(text: &[u8]) -> Vec<u8> {
    let mark = "▁".as_bytes();
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(mark) {
            out.push(b' ');
            i += mark.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

/// The byte of a `<0xXX>` token: hex digits read from the fourth byte on, as llama.cpp's
/// `strtol(text.substr(3, 2))`; `None` for a text too short to hold any.
fn byte_of_token(text: &[u8]) -> Option<u8> {
    let digits = text.get(3..)?;
    let mut v = 0u8;
    for &d in digits.iter().take(2) {
        match (d as char).to_digit(16) {
            Some(x) => v = v * 16 + x as u8,
            None => break,
        }
    }
    Some(v)
}

/// Hugging Face's `clean_up_tokenization_spaces`, in llama.cpp's three passes: drop the
/// space before `?!.,`, squeeze ` ' ` to `'`, and drop the space before `'s 'm 're 've`.
/// Each pass compacts in place, reading the original byte before the cursor, exactly as
/// llama.cpp does so that odd inputs come out the same.
fn clean_up_spaces(text: &mut Vec<u8>) {
    if text.is_empty() {
        return;
    }
    // Pass 1: " ?", " !", " .", " ,".
    let n = text.len();
    let mut total = 1;
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);

    // Pass 2: " ' " -> "'".
    let n = text.len();
    let mut total = 1;
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);

    // Pass 3: " 's", " 'm", " 're", " 've".
    let n = text.len();
    let mut total = 1;
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            let squeeze = match x1 {
                b't' | b'd' => false,
                b's' | b'm' => true,
                _ => i + 2 < n && matches!((x1, text[i + 2]), (b'r', b'e') | (b'v', b'e')),
            };
            if squeeze {
                total -= 1;
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        clean_up_spaces(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn space_cleanup_matches_llama_cpp() {
        assert_eq!(clean("Hello , world !"), "Hello, world!");
        assert_eq!(clean("a ' b"), "a'b");
        assert_eq!(
            clean("it 's I 'm we 're you 've don 't"),
            "it's I'm we're you've don 't"
        );
        assert_eq!(clean(" ?"), "?");
        assert_eq!(clean(""), "");
    }

    #[test]
    fn byte_token_text() {
        assert_eq!(byte_of_token(b"<0x0A>"), Some(10));
        assert_eq!(byte_of_token(b"<0xff>"), Some(255));
        assert_eq!(byte_of_token(b"<0"), None);
    }
}
