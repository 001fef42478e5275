//! The tokenizers against llama.cpp's test vectors on the three real vocabularies
//! (`shared/vocab/*.gguf.inp` -> `.out`), plus decoding, special tokens, streaming and
//! malformed metadata.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{shared_dir, TempDir};
use llava_edge::gguf::{Array, GgufFile, GgufWriter, Value};
use llava_edge::tokenizer::{PreTokenizer, Tokenizer, TokenizerError};

const SPM: &str = "ggml-vocab-llama-spm.gguf";
const QWEN2: &str = "ggml-vocab-qwen2.gguf";
const LLAMA_BPE: &str = "ggml-vocab-llama-bpe.gguf";

fn vocab_path(name: &str) -> PathBuf {
    shared_dir().join("vocab").join(name)
}

fn load(name: &str) -> Tokenizer {
    let f = GgufFile::open(vocab_path(name)).expect("open vocab");
    Tokenizer::from_gguf(&f).expect("build tokenizer")
}

/// The test strings and expected ids, split as llama.cpp's test-tokenizer-0 splits them: on
/// "\n__ggml_vocab_test__\n", the first string starting at the file's first byte, no string
/// after the final separator. Expected lines are trimmed, then split on single spaces.
fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(vocab_path(&format!("{name}.inp"))).unwrap();
    let out = std::fs::read_to_string(vocab_path(&format!("{name}.out"))).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut strings = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            None => {
                strings.push(inp[pos..].to_string());
                break;
            }
            Some(at) => {
                strings.push(inp[pos..pos + at].to_string());
                pos += at + sep.len();
            }
        }
    }
    let expected: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        strings.len(),
        expected.len(),
        "{name}: .inp and .out hold different numbers of cases"
    );
    strings.into_iter().zip(expected).collect()
}

fn check_vocab(name: &str) {
    let tok = load(name);
    let cases = cases(name);
    assert!(cases.len() > 30, "{name}: only {} cases", cases.len());
    let mut failures = Vec::new();
    for (s, want) in &cases {
        let got = tok.encode(s, false, false);
        if &got != want {
            failures.push(format!(
                "{name}: {s:?}\n  expected {want:?}\n  got      {got:?}"
            ));
        }
    }
    println!(
        "{name}: {} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn llama_spm_matches_llama_cpp_vectors() {
    check_vocab(SPM);
}

#[test]
fn qwen2_matches_llama_cpp_vectors() {
    check_vocab(QWEN2);
}

#[test]
fn llama_bpe_matches_llama_cpp_vectors() {
    check_vocab(LLAMA_BPE);
}

/// Concatenated pieces always give the text back; `decode` does too except where a BPE
/// vocabulary asks for Hugging Face's space clean-up (Llama-3: " ," -> ","), which is lossy
/// by design. SentencePiece's added leading space is removed by `decode` (as llama.cpp's
/// detokenizer does) but is present in the raw pieces.
#[test]
fn decode_inverts_encode() {
    for name in [SPM, QWEN2, LLAMA_BPE] {
        let tok = load(name);
        let spm = tok.pre_tokenizer().is_none();
        for (s, _) in cases(name) {
            let ids = tok.encode(&s, false, false);
            let raw: Vec<u8> = ids
                .iter()
                .flat_map(|&id| tok.piece(id, false).to_vec())
                .collect();
            let want_raw = if spm && !s.is_empty() {
                format!(" {s}")
            } else {
                s.clone()
            };
            assert_eq!(
                String::from_utf8(raw).unwrap(),
                want_raw,
                "{name}: pieces of {s:?}"
            );

            let lossy_cleanup =
                name == LLAMA_BPE && [" ?", " !", " .", " ,", " '"].iter().any(|p| s.contains(p));
            if !lossy_cleanup {
                assert_eq!(tok.decode(&ids), s, "{name}: decode of {s:?}");
            }
        }
    }
}

#[test]
fn special_tokens_are_parsed_only_when_asked() {
    let q = load(QWEN2);
    let start = q.token_id("<|im_start|>").expect("<|im_start|>");
    let end = q.token_id("<|im_end|>").expect("<|im_end|>");
    let text = "<|im_start|>user\nDescribe <|im_end|>";
    let ids = q.encode(text, false, true);
    assert_eq!(ids.first(), Some(&start));
    assert_eq!(ids.last(), Some(&end));
    let mut inner = vec![start];
    inner.extend(q.encode("user\nDescribe ", false, false));
    inner.push(end);
    assert_eq!(ids, inner);
    let plain = q.encode(text, false, false);
    assert!(
        !plain.contains(&start) && !plain.contains(&end),
        "{plain:?}"
    );
    assert_eq!(q.decode(&plain), text);
    // Control tokens render as nothing by default, as their text on request.
    assert_eq!(q.decode(&ids), "user\nDescribe ");
    assert_eq!(
        String::from_utf8(q.detokenize(&ids, false, true)).unwrap(),
        text
    );
    assert!(q.is_eog(end));
    assert!(q.is_eog(q.token_id("<|endoftext|>").unwrap()));
    assert!(!q.is_eog(start));

    let s = load(SPM);
    assert_eq!((s.bos(), s.eos()), (Some(1), Some(2)));
    let ids = s.encode("<s>Hello", false, true);
    let mut want = vec![1];
    // Text after a special token gets SentencePiece's space prefix again.
    want.extend(s.encode("Hello", false, false));
    assert_eq!(ids, want);
    assert!(!s.encode("<s>Hello", false, false).contains(&1));
    assert!(s.is_eog(2));
    assert!(!s.is_eog(1));
}

#[test]
fn add_special_follows_the_vocab() {
    let s = load(SPM);
    let ids = s.encode("Hello", true, false);
    assert_eq!(ids[0], 1);
    assert_eq!(&ids[1..], s.encode("Hello", false, false));
    assert_eq!(s.encode("", true, false), vec![1]);
    assert!(s.encode("", false, false).is_empty());
    // As llama.cpp's detokenizer: the space prefix is stripped only when the text starts
    // the sequence; after a BOS (shown or removed) the space is kept.
    assert_eq!(s.decode(&ids), " Hello");
    assert_eq!(s.detokenize(&ids, true, false), b" Hello");
    assert_eq!(s.decode(&ids[1..]), "Hello");

    let l = load(LLAMA_BPE);
    let ids = l.encode("Hello", true, false);
    assert_eq!(Some(ids[0]), l.bos());
    assert_eq!(l.pre_tokenizer(), Some(PreTokenizer::Llama3));

    let q = load(QWEN2);
    assert_eq!(q.pre_tokenizer(), Some(PreTokenizer::Qwen2));
    let add_bos = q.vocab().add_bos();
    assert_eq!(
        q.encode("Hello", true, false).len(),
        1 + usize::from(add_bos)
    );
}

/// Characters whose bytes are spread over several tokens come out whole, once complete.
#[test]
fn stream_decoder_waits_for_whole_characters() {
    let text = "llama 🦙 says 你好, é! 𝄞";
    for name in [SPM, QWEN2, LLAMA_BPE] {
        let tok = load(name);
        let ids = tok.encode(text, false, false);
        let mut dec = tok.stream_decoder();
        let mut out = String::new();
        let mut held_back = 0;
        for &id in &ids {
            let part = dec.push(id);
            if dec.has_pending() {
                held_back += 1;
            }
            out.push_str(&part);
        }
        out.push_str(&dec.finish());
        assert!(!out.contains('\u{FFFD}'), "{name}: {out:?}");
        let want = if tok.pre_tokenizer().is_none() {
            format!(" {text}")
        } else {
            text.to_string()
        };
        assert_eq!(out, want, "{name}");
        assert!(held_back > 0, "{name}: no token split a character: {ids:?}");
    }

    // Byte-fallback tokens, fed one by one.
    let s = load(SPM);
    let bytes: Vec<u32> = "🦙"
        .bytes()
        .map(|b| s.token_id(&format!("<0x{b:02X}>")).unwrap())
        .collect();
    let mut dec = s.stream_decoder();
    for &id in &bytes[..3] {
        assert_eq!(dec.push(id), "");
    }
    assert_eq!(dec.push(bytes[3]), "🦙");
    // A stray continuation byte cannot start a character: replaced at once.
    assert_eq!(dec.push(bytes[1]), "\u{FFFD}");
    assert!(!dec.has_pending());
}

#[test]
fn piece_lookup() {
    let s = load(SPM);
    assert_eq!(s.n_vocab(), 32000);
    let hello = s.token_id("▁Hello").unwrap();
    assert_eq!(s.token_to_bytes(hello), b" Hello");
    assert_eq!(s.token_to_bytes(s.token_id("<0x0A>").unwrap()), b"\n");
    assert_eq!(s.token_to_bytes(1), b"<s>");
    assert_eq!(s.piece(1, false), b"");
    assert_eq!(s.token_to_bytes(u32::MAX), b"");

    let q = load(QWEN2);
    assert_eq!(q.n_vocab(), 151936);
    let ids = q.encode(" Hello", false, false);
    assert_eq!(ids, vec![q.token_id("ĠHello").unwrap()]);
    assert_eq!(q.token_to_bytes(ids[0]), b" Hello");
}

#[test]
fn loading_the_qwen2_vocab_is_fast() {
    let t = Instant::now();
    let f = GgufFile::open(vocab_path(QWEN2)).unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let took = t.elapsed();
    println!("qwen2 vocab ({} tokens) loaded in {took:?}", tok.n_vocab());
    // Generous: debug builds on a shared 2-core machine; release takes a fraction of this.
    assert!(took.as_secs_f64() < 10.0, "{took:?}");

    // Long inputs stay linear-ish: 200 kB of text must not take quadratic time.
    let long = "The quick brown fox, 12345 jumps! 你好 ".repeat(5000);
    let t = Instant::now();
    let n = tok.encode(&long, false, false).len();
    println!(
        "encoded {} bytes into {n} tokens in {:?}",
        long.len(),
        t.elapsed()
    );
    let word = "a".repeat(50_000);
    let t = Instant::now();
    tok.encode(&word, false, false);
    let s = load(SPM);
    s.encode(&word, false, false);
    println!("50k-letter word in {:?}", t.elapsed());
}

// --- malformed metadata -------------------------------------------------------------------

fn strings(v: &[&str]) -> Value {
    Value::Array(Array::String(
        v.iter().map(|s| s.as_bytes().to_vec()).collect(),
    ))
}

fn build(md: Vec<(&str, Value)>) -> Result<Tokenizer, TokenizerError> {
    let dir = TempDir::new("tokenizer");
    let path = dir.path("v.gguf");
    let md: Vec<(String, Value)> = md.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    GgufWriter::create(&path, &md, &[])
        .unwrap()
        .finish()
        .unwrap();
    let f = GgufFile::open(&path).unwrap();
    Tokenizer::from_gguf(&f)
}

fn bpe_md(merges: &[&str]) -> Vec<(&'static str, Value)> {
    vec![
        ("tokenizer.ggml.model", Value::string("gpt2")),
        ("tokenizer.ggml.pre", Value::string("qwen2")),
        (
            "tokenizer.ggml.tokens",
            strings(&["a", "b", "ab", "Ġ", "<|x|>"]),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(vec![1, 1, 1, 1, 3])),
        ),
        ("tokenizer.ggml.merges", strings(merges)),
    ]
}

#[test]
fn malformed_metadata_is_a_typed_error_naming_the_key() {
    let err = build(vec![("tokenizer.ggml.pre", Value::string("qwen2"))]).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::MissingKey {
                key: "tokenizer.ggml.model"
            }
        ),
        "{err}"
    );

    let err = build(vec![("tokenizer.ggml.model", Value::string("t5"))]).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::UnknownModel(m) if m == "t5"),
        "{err}"
    );

    let mut md = bpe_md(&["a b"]);
    md[1].1 = Value::string("no-such-pre");
    let err = build(md).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::UnknownPre(p) if p == "no-such-pre"),
        "{err}"
    );
    assert!(err.to_string().contains("no-such-pre"));

    let err = build(vec![("tokenizer.ggml.model", Value::string("llama"))]).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::MissingKey {
                key: "tokenizer.ggml.tokens"
            }
        ),
        "{err}"
    );

    let mut md = bpe_md(&["a b"]);
    md.retain(|(k, _)| *k != "tokenizer.ggml.merges");
    let err = build(md).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::MissingKey {
                key: "tokenizer.ggml.merges"
            }
        ),
        "{err}"
    );

    let mut md = bpe_md(&["a b"]);
    md[2].1 = Value::U32(3);
    let err = build(md).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::Malformed {
                key: "tokenizer.ggml.tokens",
                ..
            }
        ),
        "{err}"
    );

    let mut md = bpe_md(&["a b"]);
    md[3].1 = Value::Array(Array::I32(vec![1, 1]));
    let err = build(md).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::Malformed {
                key: "tokenizer.ggml.token_type",
                ..
            }
        ),
        "{err}"
    );

    let mut md = bpe_md(&["a b"]);
    md.push(("tokenizer.ggml.bos_token_id", Value::string("one")));
    let err = build(md).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::Malformed {
                key: "tokenizer.ggml.bos_token_id",
                ..
            }
        ),
        "{err}"
    );

    let mut md = bpe_md(&["a b"]);
    md[2].1 = strings(&["a", "a", "ab", "Ġ", "<|x|>"]);
    let err = build(md).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::Malformed {
                key: "tokenizer.ggml.tokens",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn odd_but_loadable_vocabularies_do_not_panic() {
    // Merges naming texts that are no token, merges without a space, ids out of range.
    let mut md = bpe_md(&["a b", "x y", "nospace", " ", "ab Ġ", "Ġ"]);
    md.push(("tokenizer.ggml.bos_token_id", Value::U32(999)));
    md.push(("tokenizer.ggml.eos_token_id", Value::U32(4)));
    let tok = build(md).unwrap();
    // The default BOS (11) is out of range and the key's 999 too: no BOS at all.
    assert_eq!(tok.bos(), None);
    assert_eq!(tok.eos(), Some(4));
    assert_eq!(tok.encode("ab", true, false), vec![2]);
    // 'c' has no token and no one-byte token either: dropped, as llama.cpp drops it.
    assert_eq!(tok.encode("abc a", false, false), vec![2, 3, 0]);
    assert_eq!(tok.encode("<|x|>ab", false, true), vec![4, 2]);
    assert_eq!(tok.decode(&[4, 2, 7, u32::MAX]), "ab");

    // SentencePiece with no byte tokens and no scores: unknown characters become <unk>.
    let md = vec![
        ("tokenizer.ggml.model", Value::string("llama")),
        (
            "tokenizer.ggml.tokens",
            strings(&["<unk>", "<s>", "</s>", "▁", "h", "i", "hi", "▁hi", ""]),
        ),
    ];
    let tok = build(md).unwrap();
    assert_eq!(tok.encode("hi", false, false), vec![7]);
    assert_eq!(tok.encode("hé", false, false), vec![3, 4, 0, 0]);
    assert_eq!(tok.token_id("[EMPTY_8]"), Some(8));
}
