//! Products against the reference on every route, stacking, bias, interleaving.

use super::plan::{GEMM_MIN_TOKENS, INTERLEAVED8_DECODE_MAX_TOKENS};
use super::*;
use crate::gguf::{GgufFile, GgufWriter, TensorSpec};
use crate::quant::interleave::interleave;

/// `m.gguf` of [`write_random`] in a fresh temporary folder named for `tag`: the folder
/// (for the caller to remove) and the file, open.
fn random_file(tag: &str, specs: &[TensorSpec], seed: u32) -> (std::path::PathBuf, GgufFile) {
    let dir = std::env::temp_dir().join(format!("le-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.gguf");
    write_random(&path, specs, seed);
    let f = GgufFile::open(&path).unwrap();
    (dir, f)
}

/// A GGUF file of `specs`, each tensor uniform in [-0.5, 0.5) from an LCG seeded with
/// `seed`, quantized to its type.
fn write_random(path: &std::path::Path, specs: &[TensorSpec], mut seed: u32) {
    let mut w = GgufWriter::create(path, &[], specs).unwrap();
    for s in specs {
        let n: usize = s.dims.iter().product::<u64>() as usize;
        let vals: Vec<f32> = (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        let mut bytes = Vec::new();
        crate::quant::quantize(s.ty, &vals, &mut bytes).unwrap();
        w.write_tensor(&s.name, &bytes).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn shapes_are_checked_without_panicking() {
    let dir = std::env::temp_dir().join(format!("le-matrix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.gguf");
    let specs = [
        TensorSpec::new("v", &[4], GgmlType::F32),
        TensorSpec::new("m", &[4, 2], GgmlType::F32),
        TensorSpec::new("t", &[4, 2, 3], GgmlType::F32),
        TensorSpec::new("q", &[32, 2], GgmlType::Q8_0),
        TensorSpec::new("iq", &[256, 2], GgmlType::IQ4_XS),
    ];
    let mut w = GgufWriter::create(&path, &[], &specs).unwrap();
    for s in &specs {
        let n = s.ty.bytes_for(s.dims.iter().product()).unwrap() as usize;
        w.write_tensor(&s.name, &vec![0; n]).unwrap();
    }
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert!(Matrix::new(f.tensor("v").unwrap(), 4, 1).is_ok());
    assert!(Matrix::new(f.tensor("m").unwrap(), 4, 2).is_ok());
    for (name, cols, rows) in [
        ("v", 4, 2),
        ("v", 2, 1),
        ("m", 2, 4),
        ("t", 4, 2),
        ("t", 4, 6),
    ] {
        let e = Matrix::new(f.tensor(name).unwrap(), cols, rows).unwrap_err();
        assert!(matches!(e, OpError::Shape { .. }), "{name}: {e}");
    }
    let q = Matrix::new(f.tensor("q").unwrap(), 32, 2).unwrap();
    let mut row = [1f32; 32];
    q.row_f32(1, &mut row);
    assert!(row.iter().all(|&v| v == 0.0));
    let e = Matrix::new(f.tensor("iq").unwrap(), 256, 2).unwrap_err();
    assert!(e.to_string().contains("IQ4_XS"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stacked_products_equal_separate_ones() {
    // q, k, v back to back; a matrix of another type; one after a gap of a vector.
    let (cols, rows) = (64usize, [24usize, 8, 8]);
    let mut specs: Vec<TensorSpec> = ["q", "k", "v"]
        .iter()
        .zip(rows)
        .map(|(n, r)| TensorSpec::new(*n, &[cols as u64, r as u64], GgmlType::Q8_0))
        .collect();
    specs.push(TensorSpec::new("f", &[cols as u64, 8], GgmlType::F32));
    specs.push(TensorSpec::new("gap", &[32], GgmlType::F32));
    specs.push(TensorSpec::new("late", &[cols as u64, 8], GgmlType::Q8_0));
    let (dir, f) = random_file("stacked", &specs, 1);
    let m = |name: &str, r: usize| Matrix::new(f.tensor(name).unwrap(), cols, r).unwrap();
    let (q, k, v) = (m("q", 24), m("k", 8), m("v", 8));
    let file = f.bytes();
    let all = Matrix::stacked(file, &[q, k, v]).expect("adjacent, one type");
    assert_eq!(all.rows, 40);
    assert!(
        Matrix::stacked(file, &[q, m("late", 8)]).is_none(),
        "not adjacent"
    );
    assert!(
        Matrix::stacked(file, &[v, m("f", 8)]).is_none(),
        "two types"
    );
    let pool = ThreadPool::new(2);
    for n in [1usize, 5] {
        let x: Vec<f32> = (0..n * cols).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut want = [vec![0f32; n * 24], vec![0f32; n * 8], vec![0f32; n * 8]];
        for (mat, out) in [q, k, v].iter().zip(want.iter_mut()) {
            mat.matmul(&x, n, out, &pool);
        }
        let mut got = [vec![0f32; n * 24], vec![0f32; n * 8], vec![0f32; n * 8]];
        let [g0, g1, g2] = &mut got;
        let mut scratch = Vec::new();
        matmul_stacked(
            Some(&all),
            &[&q, &k, &v],
            &x,
            n,
            &mut [g0, g1, g2],
            &pool,
            &mut scratch,
        );
        assert_eq!(got, want, "n = {n}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An F32 matrix of `rows` rows over all of `data`.
fn f32_rows(data: &[u8], rows: usize) -> Matrix<'_> {
    Matrix {
        name: "m",
        ty: GgmlType::F32,
        rows,
        cols: data.len() / 4 / rows,
        data,
        layout: Layout::Rows,
        bf16_products: false,
    }
}

#[test]
fn stacked_joins_only_matrices_of_one_buffer() {
    let bytes = 4096usize;
    let one = vec![0u8; 2 * bytes];
    let (a, b) = one.split_at(bytes);
    let joined = Matrix::stacked(&one, &[f32_rows(a, 4), f32_rows(b, 4)]).expect("one buffer");
    assert_eq!(joined.rows, 8);
    assert_eq!(joined.data.as_ptr_range(), one.as_ptr_range());
    assert!(Matrix::stacked(a, &[f32_rows(a, 4), f32_rows(b, 4)]).is_none());
    // Two memory maps placed back to back: adjacent addresses, two allocations. Joining
    // them by address alone made one slice over both (undefined behaviour to read).
    #[cfg(unix)]
    // SAFETY: the test's own anonymous maps, read only while mapped, unmapped at the end.
    unsafe {
        let len = bytes.next_multiple_of(libc::sysconf(libc::_SC_PAGESIZE).max(1) as usize);
        let (prot, flags) = (
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        );
        let first = libc::mmap(std::ptr::null_mut(), 2 * len, prot, flags, -1, 0);
        assert_ne!(first, libc::MAP_FAILED);
        let at = first.cast::<u8>().add(len).cast();
        let second = libc::mmap(at, len, prot, flags | libc::MAP_FIXED, -1, 0);
        assert_eq!(second, at, "a second map right after the first");
        let map1 = std::slice::from_raw_parts(first.cast::<u8>(), len);
        let map2 = std::slice::from_raw_parts(second.cast::<u8>(), len);
        let (tail, head) = (&map1[len - bytes..], &map2[..bytes]);
        assert_eq!(tail.as_ptr_range().end, head.as_ptr(), "adjacent");
        let (ma, mb) = (f32_rows(tail, 4), f32_rows(head, 4));
        assert!(Matrix::stacked(map1, &[ma, mb]).is_none());
        assert!(Matrix::stacked(map2, &[ma, mb]).is_none());
        assert_eq!(Matrix::stacked(map1, &[ma]).map(|m| m.rows), Some(4));
        libc::munmap(first, len);
        libc::munmap(second, len);
    }
}

#[test]
fn biased_products_add_the_bias_on_every_path() {
    // 200 rows: several 64-row GEMM chunks and a short last one.
    let (cols, rows) = (256usize, 200usize);
    let types = [
        GgmlType::F16,
        GgmlType::F32,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
    ];
    let specs: Vec<TensorSpec> = types
        .iter()
        .map(|ty| TensorSpec::new(ty.to_string(), &[cols as u64, rows as u64], *ty))
        .collect();
    let (dir, f) = random_file("bias", &specs, 3);
    let bias: Vec<f32> = (0..rows).map(|r| (r % 13) as f32 * 0.25 - 1.5).collect();
    let pool = ThreadPool::new(2);
    for ty in types {
        let m = Matrix::new(f.tensor(&ty.to_string()).unwrap(), cols, rows).unwrap();
        // One token (row kernels), three (below the GEMM), 37 (GEMM tiles and a tail).
        for n in [1usize, 3, 37] {
            let x: Vec<f32> = (0..n * cols).map(|i| ((i * 5) % 9) as f32 - 4.0).collect();
            let (mut plain, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
            m.matmul(&x, n, &mut plain, &pool);
            m.matmul_bias(&x, n, &mut got, &bias, &pool);
            for (i, (g, p)) in got.iter().zip(&plain).enumerate() {
                assert_eq!(*g, p + bias[i % rows], "{ty} n = {n}: out[{i}]");
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn products_sharing_an_input_equal_separate_ones() {
    // Rows that are and are not multiples of a 32-row chunk.
    let (cols, rows) = (160usize, [200usize, 64, 40]);
    let specs: Vec<TensorSpec> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| TensorSpec::new(format!("m{i}"), &[cols as u64, *r as u64], GgmlType::F16))
        .collect();
    let (dir, f) = random_file("sharing", &specs, 5);
    let ms: Vec<Matrix> = (0..3)
        .map(|i| Matrix::new(f.tensor(&format!("m{i}")).unwrap(), cols, rows[i]).unwrap())
        .collect();
    let biases: Vec<Vec<f32>> = rows
        .iter()
        .map(|&r| (0..r).map(|i| (i % 7) as f32 - 3.0).collect())
        .collect();
    let pool = ThreadPool::new(2);
    for n in [2usize, 37] {
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 3) % 13) as f32 * 0.5 - 3.0)
            .collect();
        let mut want: Vec<Vec<f32>> = rows.iter().map(|r| vec![0f32; n * r]).collect();
        for ((m, b), out) in ms.iter().zip(&biases).zip(want.iter_mut()) {
            m.matmul_bias(&x, n, out, b, &pool);
        }
        let mut got: Vec<Vec<f32>> = rows.iter().map(|r| vec![0f32; n * r]).collect();
        let [g0, g1, g2] = &mut got[..] else {
            unreachable!()
        };
        matmul_bias_sharing_input(
            &[&ms[0], &ms[1], &ms[2]],
            &[&biases[0], &biases[1], &biases[2]],
            &x,
            n,
            &mut [g0, g1, g2],
            &pool,
        );
        assert_eq!(got, want, "n = {n}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn interleaved_rows_equal_the_plain_rows() {
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        interleaved_equals_plain(ty);
    }
}

fn interleaved_equals_plain(ty: GgmlType) {
    let dir = std::env::temp_dir().join(format!("le-interleave-{ty}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.gguf");
    // 21 rows: two interleaved groups and five plain rows after them.
    let (cols, rows) = (96usize.next_multiple_of(ty.block_size()), 21usize);
    let specs = [
        TensorSpec::new("w", &[cols as u64, rows as u64], ty),
        TensorSpec::new("small", &[cols as u64, 7], ty),
        TensorSpec::new("other", &[cols as u64, 8], GgmlType::F16),
    ];
    write_random(&path, &specs, 7);
    let plain = GgufFile::open(&path).unwrap();
    let mut inter = GgufFile::open(&path).unwrap();
    let done: Vec<bool> = inter
        .tensors_mut(|_| true)
        .unwrap()
        .into_iter()
        .map(|(info, data)| interleave(info, data))
        .collect();
    assert_eq!(
        done,
        [true, false, false],
        "{ty}: a matrix of under eight rows, or of another type, stays plain"
    );
    let bytes = std::fs::read(&path).unwrap();
    let reread = GgufFile::from_bytes(bytes, "copy").unwrap();
    assert_eq!(
        reread.tensor("w").unwrap().data,
        plain.tensor("w").unwrap().data,
        "the file itself is untouched"
    );
    let p = Matrix::new(plain.tensor("w").unwrap(), cols, rows).unwrap();
    let q = Matrix::new(inter.tensor("w").unwrap(), cols, rows).unwrap();
    assert_eq!(q.layout, Layout::Interleaved8);
    assert_ne!(p.data, q.data);
    let (mut a, mut b) = (vec![0f32; cols], vec![0f32; cols]);
    for r in 0..rows {
        p.row_f32(r, &mut a);
        q.row_f32(r, &mut b);
        assert_eq!(a, b, "{ty} row {r}");
    }
    let pool = ThreadPool::new(2);
    for n in [
        1usize,
        2,
        5,
        INTERLEAVED8_DECODE_MAX_TOKENS - 1,
        INTERLEAVED8_DECODE_MAX_TOKENS,
    ] {
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let (mut want, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
        p.matmul(&x, n, &mut want, &pool);
        q.matmul(&x, n, &mut got, &pool);
        if n < INTERLEAVED8_DECODE_MAX_TOKENS {
            // Several tokens at decode (a server's batch, a verify pass) give each token what
            // it gets alone, bit for bit, so batching never changes a greedy reply.
            let mut alone = vec![0f32; rows];
            for t in 0..n {
                q.matmul(&x[t * cols..(t + 1) * cols], 1, &mut alone, &pool);
                assert_eq!(
                    got[t * rows..(t + 1) * rows],
                    alone[..],
                    "{ty} n = {n}: token {t} alone"
                );
            }
        }
        if n >= INTERLEAVED8_DECODE_MAX_TOKENS {
            assert_eq!(got, want, "{ty} n = {n}: the GEMM sees the same panels");
        } else {
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // The legacy kinds meet the same 32-value activation blocks either way, as
                // do K rows in the GEMM; a plain K row's decode dot meets 256-value ones
                // (Q8_K), so each side may round every activation by half of its block's
                // step (at most max|x| / 127 apart).
                let bound = if ty.block_size() == 256 && n < GEMM_MIN_TOKENS {
                    p.row_f32(i % rows, &mut a);
                    let wsum: f32 = a.iter().map(|v| v.abs()).sum();
                    wsum * 5.0 / 127.0 + 1e-4 * w.abs().max(1.0)
                } else {
                    1e-5 * w.abs().max(1.0)
                };
                assert!(
                    (g - w).abs() <= bound,
                    "{ty} n = {n}: out[{i}] {g} vs {w} (bound {bound})"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
