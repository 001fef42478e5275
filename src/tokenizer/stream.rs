//! Decoding generated tokens one at a time. A token may end partway through a UTF-8
//! character (byte-fallback tokens, byte-level BPE pieces of emoji or CJK), so bytes are held
//! back until the character is complete instead of printing replacement characters.

use super::Tokenizer;

/// Bytes in, complete UTF-8 text out: an unfinished character waits for the bytes that
/// complete it, a byte that can never be valid becomes one U+FFFD (the text around it is kept),
/// and [`Utf8Stream::finish`] flushes what is left.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Add bytes; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
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
                        // Incomplete sequence at the end: wait for the next bytes.
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
        let start = self.pending.len() - rest.len();
        self.pending.drain(..start);
        out
    }

    /// Whether bytes of an unfinished character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// End of stream: whatever is still held, an unfinished character as U+FFFD.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// Turns a stream of token ids into text, emitting only complete characters.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    utf8: Utf8Stream,
    special: bool,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder that renders control tokens as nothing, like [`Tokenizer::decode`].
    pub fn new(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tokenizer,
            utf8: Utf8Stream::default(),
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
        self.utf8.push(self.tokenizer.piece(id, self.special))
    }

    /// Whether bytes of an unfinished character are waiting.
    pub fn has_pending(&self) -> bool {
        self.utf8.has_pending()
    }

    /// End of stream: whatever is still held, with an unfinished character as U+FFFD.
    pub fn finish(&mut self) -> String {
        self.utf8.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Utf8Stream;

    #[test]
    fn a_character_split_across_pushes_waits_for_its_end() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(s.push(b"a"), "a");
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..2]), "");
        assert!(s.has_pending());
        assert_eq!(s.push(&euro[2..]), "€");
        assert!(!s.has_pending());
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn an_invalid_byte_in_the_middle_costs_only_itself() {
        let mut s = Utf8Stream::default();
        // A stray byte between valid text, then a character that is still incomplete: the
        // text around the bad byte survives and the unfinished character is held, not lost.
        assert_eq!(s.push(b"ab\xffcd\xe2\x82"), "ab\u{fffd}cd");
        assert_eq!(s.push(b"\xac!"), "\u{20ac}!");
        assert_eq!(s.push(b"\x80\x80x"), "\u{fffd}\u{fffd}x");
    }

    #[test]
    fn an_incomplete_character_at_the_end_is_flushed() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(b"ok\xf0\x9f"), "ok");
        assert_eq!(s.finish(), "\u{fffd}");
        assert!(!s.has_pending());
        assert_eq!(s.push(b"z"), "z");
    }
}
