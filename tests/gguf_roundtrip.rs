//! The writer's files read back identically: every value type, nested arrays, alignments,
//! tensor types and chunked writes; and writer misuse is a typed error that leaves no file.

mod common;

use common::TempDir;
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::{Array, GgufError, GgufFile, GgufWriter, TensorSpec, Value};

fn every_value_kind() -> Vec<(String, Value)> {
    vec![
        ("general.architecture".into(), Value::string("llama")),
        ("t.u8".into(), Value::U8(200)),
        ("t.i8".into(), Value::I8(-100)),
        ("t.u16".into(), Value::U16(60000)),
        ("t.i16".into(), Value::I16(-30000)),
        ("t.u32".into(), Value::U32(4_000_000_000)),
        ("t.i32".into(), Value::I32(-2_000_000_000)),
        ("t.f32".into(), Value::F32(-1.5e-7)),
        ("t.bool".into(), Value::Bool(true)),
        ("t.u64".into(), Value::U64(u64::MAX)),
        ("t.i64".into(), Value::I64(i64::MIN)),
        ("t.f64".into(), Value::F64(std::f64::consts::PI)),
        ("t.str.unicode".into(), Value::string("héllo ✓ 日本")),
        // Strings are bytes: invalid UTF-8 must survive the round trip.
        ("t.str.bytes".into(), Value::String(vec![0xff, 0xfe, b'a'])),
        ("t.str.empty".into(), Value::string("")),
        ("t.arr.u8".into(), Value::Array(Array::U8(vec![1, 2, 3]))),
        ("t.arr.i8".into(), Value::Array(Array::I8(vec![-1, 2]))),
        ("t.arr.u16".into(), Value::Array(Array::U16(vec![9, 65535]))),
        ("t.arr.i16".into(), Value::Array(Array::I16(vec![-9]))),
        ("t.arr.u32".into(), Value::Array(Array::U32(vec![]))),
        ("t.arr.i32".into(), Value::Array(Array::I32(vec![-1, 0, 1]))),
        (
            "t.arr.f32".into(),
            Value::Array(Array::F32(vec![0.5, -0.25, f32::MAX])),
        ),
        (
            "t.arr.bool".into(),
            Value::Array(Array::Bool(vec![true, false, true])),
        ),
        (
            "t.arr.u64".into(),
            Value::Array(Array::U64(vec![u64::MAX, 0])),
        ),
        (
            "t.arr.i64".into(),
            Value::Array(Array::I64(vec![i64::MIN, 7])),
        ),
        (
            "t.arr.f64".into(),
            Value::Array(Array::F64(vec![1e300, -0.0])),
        ),
        (
            "t.arr.str".into(),
            Value::Array(Array::String(vec![
                b"a".to_vec(),
                vec![],
                "▁the".as_bytes().to_vec(),
            ])),
        ),
        (
            "t.arr.nested".into(),
            Value::Array(Array::Array(vec![
                Array::I32(vec![336, 672]),
                Array::Array(vec![Array::String(vec![b"deep".to_vec()])]),
                Array::F32(vec![]),
            ])),
        ),
    ]
}

/// `fuzz/seed.sh` sets `LLAVA_EDGE_SEED_DIR` to collect the files these tests write as seeds.
fn keep_as_fuzz_seed(path: &std::path::Path) {
    if let Ok(dir) = std::env::var("LLAVA_EDGE_SEED_DIR") {
        let name = path.file_name().unwrap();
        std::fs::copy(path, std::path::Path::new(&dir).join(name)).unwrap();
    }
}

fn tensor_bytes(spec: &TensorSpec, seed: u8) -> Vec<u8> {
    let n: u64 = spec.dims.iter().product();
    let size = spec.ty.bytes_for(n).unwrap() as usize;
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn every_value_type_and_tensor_round_trips() {
    let dir = TempDir::new("roundtrip");
    let path = dir.path("all.gguf");
    let metadata = every_value_kind();
    let specs = vec![
        TensorSpec::new("token_embd.weight", &[64, 3], GgmlType::Q4_0),
        TensorSpec::new("scalar", &[], GgmlType::F32),
        TensorSpec::new("norm", &[7], GgmlType::F32),
        TensorSpec::new("empty", &[0, 4], GgmlType::F16),
        TensorSpec::new("k", &[256, 2, 1, 2], GgmlType::Q4_K),
        TensorSpec::new("iq", &[256], GgmlType::IQ2_XXS),
    ];
    let mut w = GgufWriter::create(&path, &metadata, &specs).unwrap();
    for (i, s) in specs.iter().enumerate() {
        if s.dims.contains(&0) {
            continue;
        }
        let data = tensor_bytes(s, i as u8);
        if s.name == "k" {
            // Chunked writes of one tensor.
            for chunk in data.chunks(100) {
                w.write_chunk(&s.name, chunk).unwrap();
            }
        } else {
            w.write_tensor(&s.name, &data).unwrap();
        }
    }
    w.finish().unwrap();

    keep_as_fuzz_seed(&path);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.metadata(), &metadata[..]);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.tensors().len(), specs.len());
    for (i, s) in specs.iter().enumerate() {
        let t = f.tensor(&s.name).unwrap();
        assert_eq!(t.info.dims, s.dims);
        assert_eq!(t.info.ty, s.ty);
        assert_eq!(t.info.offset % 32, 0, "{}", s.name);
        if !s.dims.contains(&0) {
            assert_eq!(t.data, &tensor_bytes(s, i as u8)[..], "{}", s.name);
        }
    }
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u64("t.u32").unwrap(), 4_000_000_000);
    assert!(matches!(
        f.get_u64("t.i8"),
        Err(GgufError::WrongKeyType { .. })
    ));
    assert!(matches!(
        f.get_str("nope"),
        Err(GgufError::MissingKey { .. })
    ));
    assert!(matches!(
        f.tensor("nope"),
        Err(GgufError::MissingTensor { .. })
    ));
    let norm = f.tensor("norm").unwrap();
    assert_eq!(norm.as_f32().unwrap().len(), 7);
    assert!(matches!(
        f.tensor("k").unwrap().as_f32(),
        Err(GgufError::UnsupportedType {
            ty: GgmlType::Q4_K,
            ..
        })
    ));
}

#[test]
fn custom_alignment_is_honoured() {
    let dir = TempDir::new("align");
    for align in [1u32, 8, 64, 4096] {
        let path = dir.path(&format!("a{align}.gguf"));
        let md = vec![("general.alignment".to_string(), Value::U32(align))];
        let specs = vec![
            TensorSpec::new("a", &[3], GgmlType::F32),
            TensorSpec::new("b", &[5], GgmlType::F16),
            TensorSpec::new("c", &[32], GgmlType::Q8_0),
        ];
        let mut w = GgufWriter::create(&path, &md, &specs).unwrap();
        for s in &specs {
            w.write_tensor(&s.name, &tensor_bytes(s, 1)).unwrap();
        }
        w.finish().unwrap();
        keep_as_fuzz_seed(&path);
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.alignment(), u64::from(align));
        assert_eq!(f.data_offset() % u64::from(align), 0);
        for s in &specs {
            let t = f.tensor(&s.name).unwrap();
            assert_eq!(t.info.offset % u64::from(align), 0);
            assert_eq!(t.data, &tensor_bytes(s, 1)[..]);
        }
    }
}

#[test]
fn writer_misuse_is_an_error_and_leaves_no_file() {
    let dir = TempDir::new("misuse");
    let path = dir.path("bad.gguf");
    let specs = vec![
        TensorSpec::new("a", &[4], GgmlType::F32),
        TensorSpec::new("b", &[4], GgmlType::F32),
    ];
    // Shape that does not fit the type's blocks.
    assert!(
        GgufWriter::create(&path, &[], &[TensorSpec::new("q", &[33], GgmlType::Q4_0)]).is_err()
    );
    // Duplicate names, too many dims, bad alignment.
    assert!(GgufWriter::create(&path, &[], &[specs[0].clone(), specs[0].clone()]).is_err());
    assert!(GgufWriter::create(
        &path,
        &[],
        &[TensorSpec::new("d", &[1, 1, 1, 1, 1], GgmlType::F32)]
    )
    .is_err());
    assert!(
        GgufWriter::create(&path, &[("general.alignment".into(), Value::U32(3))], &[]).is_err()
    );

    let mut w = GgufWriter::create(&path, &[], &specs).unwrap();
    assert!(w.write_tensor("b", &[0; 16]).is_err(), "out of order");
    assert!(w.write_tensor("a", &[0; 15]).is_err(), "wrong size");
    assert!(w.write_chunk("a", &[0; 17]).is_err(), "chunk too big");
    w.write_tensor("a", &[0; 16]).unwrap();
    let err = w.finish().unwrap_err();
    assert!(err.to_string().contains("'b'"), "{err}");
    assert!(!path.exists());
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "partial file left behind"
    );

    // An existing file is not clobbered by a writer that never finishes.
    std::fs::write(&path, b"precious").unwrap();
    let w = GgufWriter::create(&path, &[], &specs).unwrap();
    drop(w);
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}
