//! BPE pre-tokenizers: split text into words before merging, as the regex each vocabulary was
//! trained with would. The splitters are hand-written scanners that reproduce llama.cpp's
//! (including how it applies several regexes in sequence, each splitting the previous
//! pieces), so that token ids match it exactly rather than some other regex engine.

use super::unicode::Flags;

/// Which word-splitting rules a BPE vocabulary uses (`tokenizer.ggml.pre`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// llama.cpp's fallback for files without `pre`: punctuation runs, then GPT-2's regex,
    /// then digit runs, then groups of three ASCII digits.
    Default,
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    Gpt2,
    /// Llama-3: case-insensitive contractions, `[^\r\n\p{L}\p{N}]?\p{L}+`, `\p{N}{1,3}`,
    /// ` ?[^\s\p{L}\p{N}]+[\r\n]*`, `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`.
    Llama3,
    /// Qwen2: as Llama-3 but digits split one by one (`\p{N}`).
    Qwen2,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` name, with llama.cpp's aliases.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        Some(match name {
            "" | "default" => PreTokenizer::Default,
            "gpt-2" | "phi-2" => PreTokenizer::Gpt2,
            "llama3" | "llama-v3" | "llama-bpe" => PreTokenizer::Llama3,
            "qwen2" | "deepseek-r1-qwen" => PreTokenizer::Qwen2,
            _ => return None,
        })
    }

    /// Split `text` into words; concatenated, they give `text` back.
    pub fn split(self, text: &str) -> Vec<&str> {
        let cpts: Vec<char> = text.chars().collect();
        let mut offsets = vec![cpts.len()];
        match self {
            PreTokenizer::Default => {
                offsets = split_runs(&cpts, &offsets, is_default_punct);
                offsets = split_gpt2(&cpts, &offsets);
                offsets = split_runs(&cpts, &offsets, is_collapsed_number);
                offsets = split_ascii_digit_triples(&cpts, &offsets);
            }
            PreTokenizer::Gpt2 => offsets = split_gpt2(&cpts, &offsets),
            PreTokenizer::Llama3 => offsets = split_llama3(&cpts, &offsets, 3),
            PreTokenizer::Qwen2 => offsets = split_llama3(&cpts, &offsets, 1),
        }
        let mut words = Vec::with_capacity(offsets.len());
        let mut byte_pos = 0;
        let mut chars = text.char_indices().map(|(_, c)| c.len_utf8());
        for n in offsets {
            let len: usize = chars.by_ref().take(n).sum();
            words.push(&text[byte_pos..byte_pos + len]);
            byte_pos += len;
        }
        words
    }
}

/// `[\p{P}\$\+<=>\^~\|]` as llama.cpp evaluates it: ASCII by a fixed list (which leaves out
/// the backtick), other codepoints by their general category.
fn is_default_punct(c: char) -> bool {
    if c.is_ascii() {
        return matches!(c as u8, 0x21..=0x2F | 0x3A..=0x40 | 0x5B..=0x5F | 0x7B..=0x7E);
    }
    let f = Flags::of(c);
    !f.is_whitespace() && f.category() == Flags::PUNCTUATION
}

/// `\p{N}` as llama.cpp evaluates it: ASCII digits, or non-ASCII numbers by category.
fn is_collapsed_number(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    let f = Flags::of(c);
    !f.is_whitespace() && f.category() == Flags::NUMBER
}

/// Split each piece into maximal runs of `class` and the gaps between them.
fn split_runs(cpts: &[char], offsets: &[usize], class: fn(char) -> bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let piece = &cpts[start..start + len];
        let mut i = 0;
        while i < piece.len() {
            let inside = class(piece[i]);
            let run_start = i;
            while i < piece.len() && class(piece[i]) == inside {
                i += 1;
            }
            out.push(i - run_start);
        }
        start += len;
    }
    out
}

/// `[0-9][0-9][0-9]`: successive triples of ASCII digits, scanning left to right.
fn split_ascii_digit_triples(cpts: &[char], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let piece = &cpts[start..start + len];
        let (mut i, mut gap_start) = (0, 0);
        while i + 3 <= piece.len() {
            if piece[i..i + 3].iter().all(|c| c.is_ascii_digit()) {
                if i > gap_start {
                    out.push(i - gap_start);
                }
                out.push(3);
                i += 3;
                gap_start = i;
            } else {
                i += 1;
            }
        }
        if piece.len() > gap_start {
            out.push(piece.len() - gap_start);
        }
        start += len;
    }
    out
}

/// A view of one piece: codepoints and classes are "none" outside it, which is what ends
/// every run at the piece boundary.
struct Piece<'a> {
    cpts: &'a [char],
    end: usize,
    prev_end: usize,
    out: &'a mut Vec<usize>,
}

impl Piece<'_> {
    fn cpt(&self, pos: usize) -> Option<char> {
        (pos < self.end).then(|| self.cpts[pos])
    }

    fn flags(&self, pos: usize) -> Flags {
        self.cpt(pos).map_or(Flags::NONE, Flags::of)
    }

    /// Close the current word at `end`.
    fn emit(&mut self, end: usize) {
        if end > self.prev_end {
            self.out.push(end - self.prev_end);
        }
        self.prev_end = end;
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` at `pos`; the length matched, if any.
    fn contraction(&self, pos: usize, fold_case: bool) -> Option<usize> {
        if self.cpt(pos) != Some('\'') {
            return None;
        }
        // Only ASCII letters fold to these: no other codepoint lowercases to s, t, r, v, e,
        // m, l or d, so ASCII folding equals llama.cpp's full-table `unicode_tolower` here.
        let fold = |c: Option<char>| c.map(|c| if fold_case { c.to_ascii_lowercase() } else { c });
        let next = fold(self.cpt(pos + 1))?;
        if matches!(next, 's' | 't' | 'm' | 'd') {
            return Some(2);
        }
        let next2 = fold(self.cpt(pos + 2))?;
        matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')).then_some(3)
    }

    /// `\s+(?!\S)|\s+` (and, when `newlines`, `\s*[\r\n]+` before them) at `pos`: the new
    /// position. Leaves one whitespace for the next word when more text follows, so that a
    /// word like ` Hello` keeps its space.
    fn whitespace(&self, pos: usize, newlines: bool) -> Option<usize> {
        let mut n = 0;
        let mut last_newline_end = None;
        while self.flags(pos + n).is_whitespace() {
            if newlines && matches!(self.cpt(pos + n), Some('\r' | '\n')) {
                last_newline_end = Some(pos + n + 1);
            }
            n += 1;
        }
        if let Some(end) = last_newline_end {
            return Some(end);
        }
        if n > 1 && self.cpt(pos + n).is_some() {
            return Some(pos + n - 1);
        }
        (n > 0).then_some(pos + n)
    }
}

fn not_ws_letter_number(f: Flags) -> bool {
    !(f.is_whitespace() || f.is_letter() || f.is_number())
}

fn split_gpt2(cpts: &[char], offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let mut p = Piece {
            cpts,
            end: start + len,
            prev_end: start,
            out: &mut out,
        };
        let mut pos = start;
        while pos < p.end {
            if let Some(n) = p.contraction(pos, false) {
                pos += n;
                p.emit(pos);
                continue;
            }
            let cpt = cpts[pos];
            let space = usize::from(cpt == ' ');
            let mut f2 = if cpt == ' ' {
                p.flags(pos + 1)
            } else {
                p.flags(pos)
            };
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
            let class: Option<fn(Flags) -> bool> = if f2.is_letter() {
                Some(Flags::is_letter)
            } else if f2.is_number() {
                Some(Flags::is_number)
            } else if not_ws_letter_number(f2) && f2.is_some() {
                Some(|f| not_ws_letter_number(f) && f.is_some())
            } else {
                None
            };
            if let Some(class) = class {
                pos += space;
                while class(f2) {
                    pos += 1;
                    f2 = p.flags(pos);
                }
                p.emit(pos);
                continue;
            }
            pos = p.whitespace(pos, false).unwrap_or(pos + 1);
            p.emit(pos);
        }
        start += len;
    }
    out
}

/// Llama-3 and Qwen2 differ only in how many digits one word may hold.
fn split_llama3(cpts: &[char], offsets: &[usize], max_digits: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut start = 0;
    for &len in offsets {
        let mut p = Piece {
            cpts,
            end: start + len,
            prev_end: start,
            out: &mut out,
        };
        let mut pos = start;
        while pos < p.end {
            if let Some(n) = p.contraction(pos, true) {
                pos += n;
                p.emit(pos);
                continue;
            }
            let cpt = cpts[pos];
            let flags = p.flags(pos);

            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(cpt == '\r' || cpt == '\n' || flags.is_number())
                && (flags.is_letter() || p.flags(pos + 1).is_letter())
            {
                pos += 1;
                while p.flags(pos).is_letter() {
                    pos += 1;
                }
                p.emit(pos);
                continue;
            }

            // `\p{N}{1,max_digits}`
            if flags.is_number() {
                let mut group_start = pos;
                while p.flags(pos).is_number() {
                    pos += 1;
                    if pos - group_start >= max_digits {
                        p.emit(pos);
                        group_start = pos;
                    }
                }
                p.emit(pos);
                continue;
            }

            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`; llama.cpp tests the first codepoint's own flags
            // for "inside the piece", which a leading space always is.
            let mut f2 = if cpt == ' ' { p.flags(pos + 1) } else { flags };
            if not_ws_letter_number(f2) && flags.is_some() {
                pos += usize::from(cpt == ' ');
                while not_ws_letter_number(f2) && f2.is_some() {
                    pos += 1;
                    f2 = p.flags(pos);
                }
                while matches!(p.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                p.emit(pos);
                continue;
            }

            pos = p.whitespace(pos, true).unwrap_or(pos + 1);
            p.emit(pos);
        }
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::PreTokenizer::*;

    #[test]
    fn llama3_words() {
        assert_eq!(
            Llama3.split("Hello world 12345 it's\n\n  x"),
            ["Hello", " world", " ", "123", "45", " it", "'s", "\n\n", " ", " x"]
        );
    }

    #[test]
    fn qwen2_digits_one_by_one() {
        assert_eq!(Qwen2.split("a 123"), ["a", " ", "1", "2", "3"]);
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            Gpt2.split("Hello  world!! 42"),
            ["Hello", " ", " world", "!!", " 42"]
        );
    }

    #[test]
    fn default_splits_punctuation_and_digit_triples() {
        assert_eq!(
            Default.split("ab, 12345!"),
            ["ab", ",", " ", "123", "45", "!"]
        );
    }
}
