//! Malformed, truncated and hostile GGUF input: always a typed error naming the problem,
//! never a panic, an out-of-bounds read or a giant allocation.

mod common;

use common::{shared_dir, Rng, TempDir};
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::{Array, GgufError, GgufFile, GgufWriter, TensorSpec, Value};

/// A small but complete file: scalar, string and nested-array metadata and three tensors.
fn sample_file() -> Vec<u8> {
    let dir = TempDir::new("sample");
    let path = dir.path("s.gguf");
    let md = vec![
        ("general.architecture".to_string(), Value::string("llama")),
        ("general.alignment".to_string(), Value::U32(32)),
        ("a.count".to_string(), Value::U32(7)),
        (
            "a.tokens".to_string(),
            Value::Array(Array::String(vec![b"<s>".to_vec(), b"hi".to_vec()])),
        ),
        (
            "a.grid".to_string(),
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::I32(vec![3]),
            ])),
        ),
        ("a.flag".to_string(), Value::Bool(false)),
    ];
    let specs = vec![
        TensorSpec::new("w", &[32, 2], GgmlType::Q8_0),
        TensorSpec::new("b", &[3], GgmlType::F32),
        TensorSpec::new("h", &[5, 1], GgmlType::F16),
    ];
    let mut w = GgufWriter::create(&path, &md, &specs).unwrap();
    for s in &specs {
        let n = s.ty.bytes_for(s.dims.iter().product()).unwrap() as usize;
        w.write_tensor(&s.name, &vec![0x11; n]).unwrap();
    }
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

fn parse(bytes: Vec<u8>) -> std::thread::Result<Result<GgufFile, GgufError>> {
    std::panic::catch_unwind(move || GgufFile::from_bytes(bytes, "mutant.gguf"))
}

/// Offset just past the last tensor's data: every shorter prefix is missing something.
fn end_of_data(f: &GgufFile) -> usize {
    f.tensors()
        .iter()
        .map(|t| f.data_offset() + t.offset + t.size)
        .max()
        .unwrap_or(0) as usize
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample_file();
    let full = GgufFile::from_bytes(bytes.clone(), "full").unwrap();
    let end = end_of_data(&full);
    for len in 0..end {
        match parse(bytes[..len].to_vec()) {
            Err(_) => panic!("panic on a file truncated to {len} bytes"),
            Ok(Ok(_)) => panic!("a file truncated to {len} of {end} bytes was accepted"),
            Ok(Err(e)) => assert!(
                e.to_string().contains("mutant.gguf"),
                "error names the file: {e}"
            ),
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    let base = sample_file();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut err) = (0, 0);
    for i in 0..4000 {
        let mut m = base.clone();
        let n_edits = 1 + rng.below(4);
        for _ in 0..n_edits {
            if m.is_empty() {
                break;
            }
            let at = rng.below(m.len());
            match rng.below(5) {
                0 => m[at] ^= 1 << rng.below(8),
                1 => m[at] = 0xff,
                2 => m[at] = 0,
                // Large little-endian integers where counts and lengths live.
                3 => {
                    let v = rng.next_u64().to_le_bytes();
                    let k = (m.len() - at).min(8);
                    m[at..at + k].copy_from_slice(&v[..k]);
                }
                _ => m.truncate(at),
            }
        }
        match parse(m) {
            Err(_) => panic!("panic on mutation {i}"),
            Ok(Ok(_)) => ok += 1,
            Ok(Err(_)) => err += 1,
        }
    }
    // Most edits hit tensor data (legal) or break the header (errors); both must occur.
    assert!(ok > 0 && err > 0, "ok {ok} err {err}");
}

#[test]
fn mutated_real_vocab_files_never_panic() {
    let mut rng = Rng(42);
    for name in ["ggml-vocab-llama-spm.gguf", "ggml-vocab-qwen2.gguf"] {
        let base = std::fs::read(shared_dir().join("vocab").join(name)).unwrap();
        // Mutate the first 64 KiB, where the counts, keys and array lengths are.
        let head = base.len().min(1 << 16);
        for i in 0..150 {
            let mut m = base.clone();
            let at = rng.below(head);
            let v = rng.next_u64().to_le_bytes();
            let k = (m.len() - at).min(1 + rng.below(8));
            m[at..at + k].copy_from_slice(&v[..k]);
            if i % 10 == 0 {
                m.truncate(rng.below(head));
            }
            assert!(parse(m).is_ok(), "panic on {name} mutation {i}");
        }
    }
}

/// The byte offset of the first occurrence of `needle`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

fn expect_err(bytes: Vec<u8>, needle: &str) -> GgufError {
    let e = match parse(bytes) {
        Err(_) => panic!("panic (wanted an error mentioning {needle:?})"),
        Ok(Ok(_)) => panic!("accepted (wanted an error mentioning {needle:?})"),
        Ok(Err(e)) => e,
    };
    assert!(
        e.to_string().contains(needle),
        "error {e:?} does not mention {needle:?}"
    );
    e
}

/// Offset of tensor `name`'s info record (its length-prefixed name) in the header.
fn tensor_info_at(bytes: &[u8], name: &[u8]) -> usize {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend_from_slice(name);
    find(bytes, &pat) + pat.len()
}

#[test]
fn crafted_corruptions_give_specific_errors() {
    let base = sample_file();

    let mut m = base.clone();
    m[0] = b'G' ^ 0x20;
    assert!(matches!(
        expect_err(m, "not a GGUF file"),
        GgufError::BadMagic { .. }
    ));

    let mut m = base.clone();
    m[4..8].copy_from_slice(&1u32.to_le_bytes());
    expect_err(m, "version 1");
    let mut m = base.clone();
    m[4..8].copy_from_slice(&3u32.to_be_bytes());
    expect_err(m, "big-endian");

    // Counts far beyond what the file could hold.
    let mut m = base.clone();
    m[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_err(m, "tensor count");
    let mut m = base.clone();
    m[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    expect_err(m, "metadata count");

    // A string length past the end of the file.
    let mut m = base.clone();
    let at = find(&m, b"general.architecture") - 8;
    m[at..at + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    expect_err(m, "truncated");

    // An unknown value type.
    let mut m = base.clone();
    let at = find(&m, b"a.count") + 7;
    m[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
    expect_err(m, "unknown value type 77");

    // An array length that cannot fit.
    let mut m = base.clone();
    let at = find(&m, b"a.tokens") + 8 + 4 + 4;
    m[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    expect_err(m, "cannot fit");

    // A bool that is neither 0 nor 1.
    let mut m = base.clone();
    let at = find(&m, b"a.flag") + 6 + 4;
    m[at] = 2;
    expect_err(m, "bool byte is 2");

    // Alignment that is not a power of two.
    let mut m = base.clone();
    let at = find(&m, b"general.alignment") + 17 + 4;
    m[at..at + 4].copy_from_slice(&24u32.to_le_bytes());
    expect_err(m, "not a power of two");

    // Tensor info: too many dims, unknown type, block mismatch, overflow, misaligned,
    // out of range, overlapping.
    let w_at = tensor_info_at(&base, b"w"); // n_dims u32, dims 2 x u64, type u32, offset u64
    let mut m = base.clone();
    m[w_at..w_at + 4].copy_from_slice(&5u32.to_le_bytes());
    expect_err(m, "5 dimensions");
    let mut m = base.clone();
    m[w_at + 20..w_at + 24].copy_from_slice(&4u32.to_le_bytes());
    expect_err(m, "unknown ggml type id 4");
    let mut m = base.clone();
    m[w_at + 4..w_at + 12].copy_from_slice(&33u64.to_le_bytes());
    expect_err(m, "not a multiple of Q8_0's block size");
    let mut m = base.clone();
    m[w_at + 4..w_at + 12].copy_from_slice(&(1u64 << 40).to_le_bytes());
    m[w_at + 12..w_at + 20].copy_from_slice(&(1u64 << 40).to_le_bytes());
    expect_err(m, "overflow");
    // Found by the fuzzer: a zero dimension hid the overflow of the others.
    let mut m = base.clone();
    m[w_at + 4..w_at + 12].copy_from_slice(&0u64.to_le_bytes());
    m[w_at + 12..w_at + 20].copy_from_slice(&(1u64 << 63).to_le_bytes());
    expect_err(m, "overflow");
    let mut m = base.clone();
    m[w_at + 24..w_at + 32].copy_from_slice(&8u64.to_le_bytes());
    expect_err(m, "not a multiple of the alignment");
    let mut m = base.clone();
    m[w_at + 24..w_at + 32].copy_from_slice(&(1u64 << 20).to_le_bytes());
    expect_err(m, "runs past the end");
    let b_at = tensor_info_at(&base, b"b"); // n_dims u32, 1 dim, type u32, offset u64
    let mut m = base.clone();
    m[b_at + 16..b_at + 24].copy_from_slice(&32u64.to_le_bytes());
    let e = expect_err(m, "overlaps");
    assert!(matches!(e, GgufError::BadTensor { .. }));

    // Duplicate key (renamed to an existing key of the same length) and duplicate tensor name.
    let mut m = base.clone();
    let at = find(&m, b"a.grid");
    m[at..at + 6].copy_from_slice(b"a.flag");
    expect_err(m, "appears twice");
    let mut m = base.clone();
    let at = tensor_info_at(&m, b"h") - 1;
    m[at] = b'b';
    expect_err(m, "appears twice");

    // Invalid UTF-8 in a key.
    let mut m = base.clone();
    let at = find(&m, b"a.count");
    m[at] = 0xff;
    expect_err(m, "UTF-8");
}

#[test]
fn unknown_but_valid_types_parse_and_are_unsupported_only_when_used() {
    let dir = TempDir::new("iq");
    let path = dir.path("iq.gguf");
    let specs = vec![TensorSpec::new("iq", &[256, 2], GgmlType::IQ4_XS)];
    let mut w = GgufWriter::create(&path, &[], &specs).unwrap();
    w.write_tensor("iq", &vec![0; 2 * 136]).unwrap();
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    let t = f.tensor("iq").unwrap();
    assert_eq!(t.info.ty, GgmlType::IQ4_XS);
    let e = t.as_f32().unwrap_err();
    assert!(e.to_string().contains("IQ4_XS"), "{e}");
}

#[test]
fn missing_and_empty_files_are_clear_errors() {
    let dir = TempDir::new("missing");
    let e = GgufFile::open(dir.path("nope.gguf")).err().unwrap();
    assert!(matches!(e, GgufError::Io { op: "open", .. }), "{e}");
    std::fs::write(dir.path("empty.gguf"), b"").unwrap();
    let e = GgufFile::open(dir.path("empty.gguf")).err().unwrap();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    std::fs::write(dir.path("text.gguf"), b"hello world").unwrap();
    let e = GgufFile::open(dir.path("text.gguf")).err().unwrap();
    assert!(e.to_string().contains("not a GGUF file"), "{e}");
}

/// Inputs the fuzzer once crashed on: each must now parse to a value or an error.
#[test]
fn fuzz_regressions_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| {
            GgufFile::from_bytes(bytes, "regression").map(|f| {
                f.tensors()
                    .iter()
                    .map(|t| t.n_rows() as usize + f.view(t).data.len())
                    .sum::<usize>()
            })
        });
        assert!(result.is_ok(), "panic on {}", path.display());
        n += 1;
    }
    assert!(n > 0);
}
