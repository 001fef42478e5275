//! Byte-level BPE (Qwen2, Llama-3) encoding: each pre-tokenized word is mapped into GPT-2's
//! byte alphabet, then the adjacent pair with the lowest merge rank is merged until none is
//! left.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::error::{malformed, TokenizerError};
use super::pretokenize::PreTokenizer;
use super::unicode::ByteAlphabet;
use super::vocab::Vocab;
use crate::gguf::keys::tokenizer as keys;
use crate::gguf::Array;

/// Merge ranks and the word splitter of one BPE vocabulary.
pub(crate) struct Bpe {
    pub pre: PreTokenizer,
    pub alphabet: ByteAlphabet,
    /// Llama-3: a word that is itself a token is taken whole, skipping the merges.
    pub ignore_merges: bool,
    /// Merge halves interned to small ids, so a rank lookup needs no allocation.
    parts: HashMap<Vec<u8>, u32>,
    ranks: HashMap<(u32, u32), u32>,
}

/// A queued merge: `(rank, left, right, left len, right len)`.
type Candidate = Reverse<(u32, usize, usize, usize, usize)>;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Bpe {
    pub fn new(
        merges: &Array,
        pre: PreTokenizer,
        ignore_merges: bool,
    ) -> Result<Bpe, TokenizerError> {
        let merges = merges
            .as_strings()
            .ok_or_else(|| malformed(keys::MERGES, "expected an array of strings"))?;
        let mut parts: HashMap<Vec<u8>, u32> = HashMap::with_capacity(merges.len());
        let mut ranks = HashMap::with_capacity(merges.len());
        let mut intern = |s: &[u8]| -> u32 {
            if let Some(&id) = parts.get(s) {
                return id;
            }
            let id = parts.len() as u32;
            parts.insert(s.to_vec(), id);
            id
        };
        for (rank, m) in merges.iter().enumerate() {
            // Split at the first space after the first byte, so a merge whose left half is
            // itself a space still parses; a merge with no space can never apply.
            let (first, second) = match m.iter().skip(1).position(|&b| b == b' ') {
                Some(p) => (&m[..p + 1], &m[p + 2..]),
                None => continue,
            };
            let key = (intern(first), intern(second));
            // The first occurrence of a pair keeps its rank.
            ranks.entry(key).or_insert(rank as u32);
        }
        Ok(Bpe {
            pre,
            alphabet: ByteAlphabet::new(),
            ignore_merges,
            parts,
            ranks,
        })
    }

    fn rank(&self, left: &[u8], right: &[u8]) -> Option<u32> {
        let l = *self.parts.get(left)?;
        let r = *self.parts.get(right)?;
        self.ranks.get(&(l, r)).copied()
    }

    /// Append the tokens for one fragment of raw text (special tokens already split off).
    pub fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut word = String::new();
        for raw in self.pre.split(text) {
            word.clear();
            word.extend(raw.bytes().map(|b| self.alphabet.char_of(b)));
            self.encode_word(vocab, word.as_bytes(), out);
        }
    }

    fn encode_word(&self, vocab: &Vocab, word: &[u8], out: &mut Vec<u32>) {
        if self.ignore_merges {
            if let Some(id) = vocab.id(word) {
                out.push(id);
                return;
            }
        }
        let text = std::str::from_utf8(word).unwrap_or_default();
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (start + c.len_utf8() < word.len()).then_some(i + 1),
            });
        }

        // (rank, left) orders the heap as llama.cpp's queue: lowest rank, then leftmost.
        // The side lengths recorded at push time tell a stale entry from a live one.
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
        let add = |heap: &mut BinaryHeap<_>,
                   symbols: &[Symbol],
                   left: Option<usize>,
                   right: Option<usize>| {
            let (Some(left), Some(right)) = (left, right) else {
                return;
            };
            let (l, r) = (symbols[left], symbols[right]);
            let lt = &word[l.start..l.start + l.len];
            let rt = &word[r.start..r.start + r.len];
            if let Some(rank) = self.rank(lt, rt) {
                heap.push(Reverse((rank, left, right, l.len, r.len)));
            }
        };
        for i in 1..symbols.len() {
            add(&mut heap, &symbols, Some(i - 1), Some(i));
        }
        while let Some(Reverse((_, left, right, llen, rlen))) = heap.pop() {
            let (l, r) = (symbols[left], symbols[right]);
            if l.len == 0 || r.len == 0 || l.len != llen || r.len != rlen {
                continue;
            }
            symbols[left].len += r.len;
            symbols[right].len = 0;
            symbols[left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(left);
            }
            let (prev, next) = (symbols[left].prev, symbols[left].next);
            add(&mut heap, &symbols, prev, Some(left));
            add(&mut heap, &symbols, Some(left), next);
        }

        for s in symbols.iter().filter(|s| s.len > 0) {
            let piece = &word[s.start..s.start + s.len];
            match vocab.id(piece) {
                Some(id) => out.push(id),
                // As llama.cpp: try each byte of the encoded text as a one-byte token and
                // drop those that are not (only ASCII can be).
                None => out.extend(piece.iter().filter_map(|&b| vocab.id(&[b]))),
            }
        }
    }
}
