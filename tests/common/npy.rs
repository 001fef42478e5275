//! A reader for the `.npy` files the transformers fixtures are stored in: format 1.0,
//! little-endian `<f4` or `<i8`, C order (what tests/reference/make_fixtures.py writes).

use std::path::Path;

/// A loaded array: its shape and values (i64 arrays are widened to f64 losslessly enough for
/// token ids; floats are kept as f32).
#[derive(Debug)]
pub enum Npy {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I64 { shape: Vec<usize>, data: Vec<i64> },
}

impl Npy {
    pub fn shape(&self) -> &[usize] {
        match self {
            Npy::F32 { shape, .. } | Npy::I64 { shape, .. } => shape,
        }
    }

    pub fn f32(&self) -> &[f32] {
        match self {
            Npy::F32 { data, .. } => data,
            Npy::I64 { .. } => panic!("array is i64, not f32"),
        }
    }

    pub fn i64(&self) -> &[i64] {
        match self {
            Npy::I64 { data, .. } => data,
            Npy::F32 { .. } => panic!("array is f32, not i64"),
        }
    }
}

/// Reads `path`, panicking with the file name on anything unexpected (test-only code).
pub fn read(path: &Path) -> Npy {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x93NUMPY\x01\x00"),
        "{}: not npy v1.0",
        path.display()
    );
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    let body = &bytes[10 + hlen..];
    assert!(
        header.contains("'fortran_order': False"),
        "{}: not C order",
        path.display()
    );
    let shape_str = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_str
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let n: usize = shape.iter().product();
    if header.contains("'descr': '<f4'") {
        assert_eq!(body.len(), n * 4, "{}", path.display());
        let data = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Npy::F32 { shape, data }
    } else if header.contains("'descr': '<i8'") {
        assert_eq!(body.len(), n * 8, "{}", path.display());
        let data = body
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Npy::I64 { shape, data }
    } else {
        panic!("{}: unsupported dtype in {header}", path.display());
    }
}

/// The fixtures folder of the repository.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}
