//! Decoding generated tokens one at a time. A token may end partway through a UTF-8
//! character (byte-fallback tokens, byte-level BPE pieces of emoji or CJK), so bytes are held
//! back until the character is complete instead of printing replacement characters.

use super::Tokenizer;

/// Turns a stream of token ids into text, emitting only complete characters.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
    special: bool,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder that renders control tokens as nothing, like [`Tokenizer::decode`].
    pub fn new(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
            special: false,
        }
    }

    /// Render control tokens (`<|im_end|>`, `</s>`) as their text too.
    pub fn with_special(mut self, special: bool) -> StreamDecoder<'a> {
        self.special = special;
        self
    }

    /// Add one token; returns the text that is now complete (possibly empty). Bytes that can
    /// never become valid UTF-8 come out as U+FFFD right away rather than blocking the stream.
    pub fn push(&mut self, id: u32) -> String {
        self.pending
            .extend_from_slice(self.tokenizer.piece(id, self.special));
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // Validated just above.
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete sequence at the end: wait for the next token.
                        None => {
                            rest = bad;
                            break;
                        }
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[n..];
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
        out
    }

    /// Whether bytes of an unfinished character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// End of stream: whatever is still held, with an unfinished character as U+FFFD.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}
