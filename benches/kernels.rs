//! Kernel throughput, ours beside ggml's (the `ggml-sys-bleedingedge` dev-dependency, built for
//! this CPU), in one run: the machine's read bandwidth, matrix-vector products (decode) in GB/s
//! of weights streamed, matrix products over many tokens (prefill, vision) in GOP/s, and our
//! attention kernel in GFLOP/s. Medians of several timed repetitions after a warm-up.
//!
//! `cargo bench --bench kernels` (`-- --quick` for fewer repetitions, `-- --threads N`);
//! `-- --device vulkan` times the Vulkan device's products instead (weights resident on the
//! device, one submit and wait per product: what a decode step's product costs there).

use std::hint::black_box;
use std::time::Instant;

use ggml_sys_bleedingedge as ggml;
use llava_edge::dtype::GgmlType;
use llava_edge::kernels::{self, KvRef, Visible};
use llava_edge::ops::attention::attend_rows;
use llava_edge::ops::matrix::Matrix;
use llava_edge::threadpool::ThreadPool;

// The pinned ggml's C is compiled without _GNU_SOURCE, so glibc's CPU_* affinity macros became
// calls to undefined functions. They are reached only after ggml_numa_init, which this bench
// never calls; these definitions satisfy the linker and would abort if ever reached.
#[no_mangle]
extern "C" fn CPU_ALLOC_SIZE(_: i32) -> usize {
    std::process::abort()
}
#[no_mangle]
extern "C" fn CPU_ALLOC(_: i32) -> *mut std::ffi::c_void {
    std::process::abort()
}
#[no_mangle]
extern "C" fn CPU_FREE(_: *mut std::ffi::c_void) {
    std::process::abort()
}
#[no_mangle]
extern "C" fn CPU_SET_S(_: usize, _: usize, _: *mut std::ffi::c_void) {
    std::process::abort()
}
#[no_mangle]
extern "C" fn CPU_ZERO_S(_: usize, _: *mut std::ffi::c_void) {
    std::process::abort()
}

struct Opts {
    threads: usize,
    reps: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median seconds of `reps` runs of `f` after one warm-up run.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// xorshift: weights need no statistical quality, only to be cheap and fixed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Byte offsets of the f16 scale fields in one block of `ty`.
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 => &[0, 2],
        GgmlType::Q4_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        GgmlType::Q2_K => &[80, 82],
        _ => &[],
    }
}

/// Random weights of `ty`: random code bytes, small normal f16 scales (the speed of a product
/// does not depend on the values; NaN or infinite scales would only make the check meaningless).
fn random_matrix(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let bytes = rows * cols / ty.block_size() * ty.type_size();
    let mut v: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
    if ty == GgmlType::F16 {
        for c in v.chunks_exact_mut(2) {
            c.copy_from_slice(&half::f16::from_f32(rng.f32()).to_le_bytes());
        }
        return v;
    }

    for block in v.chunks_exact_mut(ty.type_size()) {
        for &o in scale_offsets(ty) {
            let d = half::f16::from_f32(0.001 + 0.01 * rng.f32().abs());
            block[o..o + 2].copy_from_slice(&d.to_le_bytes());
        }
    }
    v
}

/// ggml's mul_mat on the same bytes: a graph of one mul_mat node per weight matrix (run in
/// order, as a model's layers are), its tensors pointing at our buffers.
struct GgmlProduct {
    ctx: *mut ggml::ggml_context,
    graph: *mut ggml::ggml_cgraph,
    plan: ggml::ggml_cplan,
    _work: Vec<u8>,
}

impl GgmlProduct {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ty: GgmlType,
        ws: &[Vec<u8>],
        outs: &mut [Vec<f32>],
        rows: usize,
        cols: usize,
        x: &[f32],
        n: usize,
        threads: usize,
    ) -> Self {
        // SAFETY: ggml's C API as documented in ggml.h: a context holding only tensor headers
        // and the graph (no_alloc), data pointers set to buffers that outlive the graph's use
        // (the caller keeps ws, x and outs alive while computing).
        unsafe {
            let ctx = ggml::ggml_init(ggml::ggml_init_params {
                mem_size: 32 << 20,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            });
            assert!(!ctx.is_null(), "ggml_init failed");
            let graph = ggml::ggml_new_graph(ctx);
            let xt =
                ggml::ggml_new_tensor_2d(ctx, ggml::ggml_type_GGML_TYPE_F32, cols as i64, n as i64);
            (*xt).data = x.as_ptr() as *mut _;
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                let wt = ggml::ggml_new_tensor_2d(ctx, ty.id(), cols as i64, rows as i64);
                (*wt).data = w.as_ptr() as *mut _;
                let yt = ggml::ggml_mul_mat(ctx, wt, xt);
                (*yt).data = out.as_mut_ptr().cast();
                ggml::ggml_build_forward_expand(graph, yt);
            }
            let mut plan = ggml::ggml_graph_plan(graph, threads as i32);
            let mut work = vec![0u8; plan.work_size.max(1)];
            plan.work_data = work.as_mut_ptr();
            GgmlProduct {
                ctx,
                graph,
                plan,
                _work: work,
            }
        }
    }

    fn run(&mut self) {
        // SAFETY: the graph and plan built in `new`, whose buffers are still alive.
        unsafe { ggml::ggml_graph_compute(self.graph, &mut self.plan) };
    }
}

impl Drop for GgmlProduct {
    fn drop(&mut self) {
        // SAFETY: the context from ggml_init, freed once.
        unsafe { ggml::ggml_free(self.ctx) };
    }
}

/// Read bandwidth: `threads` threads summing their halves of a 1 GiB buffer.
fn stream_read(o: &Opts, pool: &ThreadPool) -> f64 {
    let n = 1usize << 28;
    let buf: Vec<f32> = (0..n).map(|i| (i & 7) as f32).collect();
    let sums = std::sync::Mutex::new(0f32);
    let secs = time(o.reps.max(3), || {
        pool.for_ranges(n, 4096, &|r| {
            let mut acc = [0f32; 16];
            for c in buf[r].chunks_exact(16) {
                for k in 0..16 {
                    acc[k] += c[k];
                }
            }
            *sums.lock().unwrap() += acc.iter().sum::<f32>();
        });
    });
    black_box(sums.into_inner().unwrap());
    (n * 4) as f64 / secs / 1e9
}

/// Matrices over each of `ws`, in `layout`.
fn views<'a>(
    name: &'a str,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    ws: &'a [Vec<u8>],
    layout: llava_edge::gguf::Layout,
) -> Vec<Matrix<'a>> {
    ws.iter()
        .map(|w| Matrix {
            name,
            ty,
            rows,
            cols,
            data: w,
            layout,
            bf16_products: false,
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn matvec(
    o: &Opts,
    pool: &ThreadPool,
    rng: &mut Rng,
    stream: f64,
    ty: GgmlType,
    name: &str,
    rows: usize,
    cols: usize,
) {
    // Enough copies that the set is far larger than the caches: every product reads from DRAM.
    let bytes = rows * cols / ty.block_size() * ty.type_size();
    let copies = (256usize << 20).div_ceil(bytes);
    let ws: Vec<Vec<u8>> = (0..copies)
        .map(|_| random_matrix(rng, ty, rows, cols))
        .collect();
    let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
    let mut ours = vec![0f32; rows];
    let ms = views(name, ty, rows, cols, &ws, llava_edge::gguf::Layout::Rows);
    let t_ours = time(o.reps, || {
        for m in &ms {
            m.matmul(&x, 1, &mut ours, pool);
        }
    });
    let mut theirs = vec![vec![0f32; rows]; copies];
    let mut g = GgmlProduct::new(ty, &ws, &mut theirs, rows, cols, &x, 1, o.threads);
    let t_ggml = time(o.reps, || g.run());
    drop(g);
    check(&ours, &theirs[copies - 1], name);
    let total = (bytes * copies) as f64 / 1e9;
    let line = |label: String, t: f64| {
        let (a, b) = (total / t, total / t_ggml);
        println!(
            "matvec  {:<6} {:<22} {:>8.1} GB/s ({:>3.0}%) {:>8.1} GB/s ({:>3.0}%) {:>6.2}",
            label,
            name,
            a,
            100.0 * a / stream,
            b,
            100.0 * b / stream,
            a / b
        );
    };
    line(ty.to_string(), t_ours);
    if llava_edge::quant::interleave::interleaved8_block_bytes(ty).is_some() {
        // The layout `run` loads the legacy 4- and 5-bit matrices in: eight rows interleaved.
        let mut ws = ws;
        for w in &mut ws {
            assert!(llava_edge::quant::interleave::interleave_rows(
                ty, cols, rows, w
            ));
        }
        let ms = views(
            name,
            ty,
            rows,
            cols,
            &ws,
            llava_edge::gguf::Layout::Interleaved8,
        );
        let t = time(o.reps, || {
            for m in &ms {
                m.matmul(&x, 1, &mut ours, pool);
            }
        });
        check(&ours, &theirs[copies - 1], name);
        line(format!("{ty}x8"), t);
    }
}

/// Ours and ggml's differ only by activation rounding and summation order.
fn check(ours: &[f32], theirs: &[f32], what: &str) {
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let worst = ours
        .iter()
        .zip(theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 0.05 * scale,
        "{what}: ours and ggml's differ by {worst} (scale {scale})"
    );
}

#[allow(clippy::too_many_arguments)]
fn matmul(
    o: &Opts,
    pool: &ThreadPool,
    rng: &mut Rng,
    ty: GgmlType,
    name: &str,
    rows: usize,
    cols: usize,
    n: usize,
) {
    let w = random_matrix(rng, ty, rows, cols);
    let x: Vec<f32> = (0..cols * n).map(|_| rng.f32()).collect();
    let m = Matrix {
        name,
        ty,
        rows,
        cols,
        data: &w,
        layout: llava_edge::gguf::Layout::Rows,
        bf16_products: false,
    };
    let mut ours = vec![0f32; rows * n];
    let reps = o.reps.min(5);
    let t_ours = time(reps, || m.matmul(&x, n, &mut ours, pool));
    let mut theirs = vec![vec![0f32; rows * n]];
    let mut g = GgmlProduct::new(
        ty,
        std::slice::from_ref(&w),
        &mut theirs,
        rows,
        cols,
        &x,
        n,
        o.threads,
    );
    let t_ggml = time(reps, || g.run());
    drop(g);
    check(&ours, &theirs[0], name);
    let ops = 2.0 * (rows * cols * n) as f64 / 1e9;
    println!(
        "matmul  {:<6} {:<22} {:>8.1} GOP/s        {:>8.1} GOP/s        {:>6.2}",
        ty.to_string(),
        name,
        ops / t_ours,
        ops / t_ggml,
        t_ggml / t_ours
    );
}

#[allow(clippy::too_many_arguments)]
fn attention(
    o: &Opts,
    pool: &ThreadPool,
    rng: &mut Rng,
    name: &str,
    n: usize,
    heads: usize,
    hd: usize,
    causal: bool,
    f16: bool,
) {
    let w = heads * hd;
    let q: Vec<f32> = (0..n * w).map(|_| rng.f32()).collect();
    let kv: Vec<f32> = (0..n * w).map(|_| rng.f32()).collect();
    let kv16: Vec<u16> = kv
        .iter()
        .map(|&v| half::f16::from_f32(v).to_bits())
        .collect();
    let (k, v) = if f16 {
        (KvRef::F16(&kv16), KvRef::F16(&kv16))
    } else {
        (KvRef::F32(&kv), KvRef::F32(&kv))
    };
    let mut out = vec![0f32; n * w];
    let visible = if causal {
        Visible::Causal { first: 0 }
    } else {
        Visible::All
    };
    let secs = time(o.reps.min(5), || {
        attend_rows(pool, &q, k, v, n, n, visible, heads, heads, hd, &mut out)
    });
    let pairs: usize = (0..n).map(|t| if causal { t + 1 } else { n }).sum();
    let flops = 4.0 * (pairs * w) as f64 / 1e9;
    println!(
        "attn    {:<6} {:<22} {:>8.1} GFLOP/s",
        if f16 { "F16" } else { "F32" },
        name,
        flops / secs
    );
}

/// One decode step's attention over `n_kv` cached positions of an F16 cache with grouped heads
/// (`group` query heads a key/value head), one thread, per instruction set: the group's query
/// heads one by one (the one-row kernel) against all of them as rows of one call (tiles reading
/// the cache in place). Prints the cache bytes read a second, once per key/value head.
fn decode_attention(o: &Opts, rng: &mut Rng, name: &str, n_kv: usize, group: usize, hd: usize) {
    let kv_heads = 2;
    let stride = kv_heads * hd;
    let q: Vec<f32> = (0..group * hd).map(|_| rng.f32()).collect();
    let kv16: Vec<u16> = (0..n_kv * stride)
        .map(|_| half::f16::from_f32(rng.f32()).to_bits())
        .collect();
    let kv = KvRef::F16(&kv16);
    let mut out = vec![0f32; group * hd];
    let mut scratch = Vec::new();
    let scale = 1.0 / (hd as f32).sqrt();
    let reps = o.reps.max(20);
    let gb = (2 * n_kv * hd * 2) as f64 / 1e9;
    for isa in kernels::FloatIsa::available() {
        let mut run = |rows: usize| {
            time(reps, || {
                for r in (0..group).step_by(rows) {
                    let head_rows = kernels::HeadRows {
                        nq: rows,
                        hd,
                        q: &q[r * hd..],
                        q_stride: hd,
                        k: kv,
                        v: kv,
                        stride,
                        n_kv,
                        visible: Visible::All,
                        scale,
                    };
                    kernels::attend_head_rows(
                        isa,
                        &head_rows,
                        &mut out[r * hd..],
                        hd,
                        &mut scratch,
                    );
                }
            })
        };
        let (one, grouped) = (run(1), run(group));
        println!(
            "attn    F16    {:<22} {:?}: {:>7.1} us ({:.1} GB/s) head by head, {:.1} us ({:.1} GB/s) grouped",
            name,
            isa.kind(),
            one * 1e6,
            gb / one,
            grouped * 1e6,
            gb / grouped,
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let quick = args.iter().any(|a| a == "--quick");
    // A plain argument selects the kinds to run (matvec, matmul, attn), as cargo bench's filter.
    let only: Vec<&String> = args[1..]
        .iter()
        .filter(|a| ["matvec", "matmul", "attn"].contains(&a.as_str()))
        .collect();
    let wants = |kind: &str| only.is_empty() || only.iter().any(|o| o.as_str() == kind);
    let o = Opts {
        threads,
        reps: if quick { 3 } else { 7 },
    };
    let pool = ThreadPool::new(threads);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let device = args
        .iter()
        .position(|a| a == "--device")
        .and_then(|i| args.get(i + 1));
    match device.map(String::as_str) {
        None | Some("cpu") => {}
        #[cfg(feature = "vulkan")]
        Some("vulkan") => return vulkan_products(&o, &mut rng),
        Some(d) => {
            eprintln!("--device {d}: this bench runs on cpu or vulkan");
            std::process::exit(2);
        }
    }
    // SAFETY: fills ggml's global tables (no allocation with no buffer and no_alloc).
    unsafe {
        ggml::ggml_free(ggml::ggml_init(ggml::ggml_init_params {
            mem_size: 1 << 16,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        }))
    };
    println!(
        "llava-edge kernels vs ggml ({} threads, ISA {:?}, GEMM {:?}; medians of {})",
        threads,
        kernels::Cpu::get().isa().kind(),
        kernels::Cpu::get().gemm().kind(),
        o.reps
    );
    let stream = stream_read(&o, &pool);
    println!("read bandwidth (1 GiB, {threads} threads): {stream:.1} GB/s\n");
    println!("kind    type   shape                          ours                 ggml  ours/ggml");
    for (ty, name, rows, cols) in [
        (GgmlType::Q4_0, "qwen2-0.5b ffn_up", 4864, 896),
        (GgmlType::Q5_0, "qwen2-0.5b ffn_up", 4864, 896),
        (GgmlType::Q8_0, "qwen2-0.5b ffn_up", 4864, 896),
        (GgmlType::Q8_0, "qwen2-0.5b tied output", 151936, 896),
        (GgmlType::Q4_0, "llama-7b ffn_up", 11008, 4096),
        (GgmlType::Q4_K, "llama-7b ffn_up", 11008, 4096),
        (GgmlType::Q6_K, "llama-7b ffn_down", 4096, 11008),
        (GgmlType::Q8_0, "llama-7b ffn_up", 11008, 4096),
        (GgmlType::Q5_K, "llama-7b ffn_up", 11008, 4096),
        (GgmlType::Q3_K, "llama-7b ffn_up", 11008, 4096),
        (GgmlType::Q2_K, "llama-7b ffn_up", 11008, 4096),
        (GgmlType::Q4_1, "llama-7b ffn_up", 11008, 4096),
        (GgmlType::Q5_1, "llama-7b ffn_up", 11008, 4096),
    ] {
        if wants("matvec") {
            matvec(&o, &pool, &mut rng, stream, ty, name, rows, cols);
        }
    }
    for (ty, name, rows, cols, n) in [
        (GgmlType::Q4_0, "qwen2-0.5b ffn_up x512", 4864, 896, 512),
        (GgmlType::Q5_0, "qwen2-0.5b ffn_up x512", 4864, 896, 512),
        (GgmlType::Q8_0, "qwen2-0.5b ffn_up x512", 4864, 896, 512),
        (GgmlType::Q4_0, "llama-7b attn_q x512", 4096, 4096, 512),
        (GgmlType::Q4_K, "llama-7b attn_q x512", 4096, 4096, 512),
        (GgmlType::Q6_K, "llama-7b attn_q x512", 4096, 4096, 512),
        (GgmlType::F16, "siglip fc1 x729", 4304, 1152, 729),
        (GgmlType::F16, "clip-l fc1 x577", 4096, 1024, 577),
        (GgmlType::F16, "clip-l fc2 x577", 1024, 4096, 577),
        (GgmlType::F16, "clip-l attn_q x577", 1024, 1024, 577),
        (GgmlType::Q8_0, "siglip fc1 x729", 4304, 1152, 729),
    ] {
        if wants("matmul") {
            matmul(&o, &pool, &mut rng, ty, name, rows, cols, n);
        }
    }
    if !wants("attn") {
        return;
    }
    attention(
        &o,
        &pool,
        &mut rng,
        "qwen2 512 causal",
        512,
        14,
        64,
        true,
        true,
    );
    // A OneVision image prompt's prefill: five SigLIP tiles' rows and the text, causal.
    attention(
        &o,
        &pool,
        &mut rng,
        "qwen2 3072 causal",
        3072,
        14,
        64,
        true,
        true,
    );
    attention(
        &o,
        &pool,
        &mut rng,
        "siglip 729x729",
        729,
        16,
        72,
        false,
        false,
    );
    attention(
        &o,
        &pool,
        &mut rng,
        "clip-l 577x577",
        577,
        16,
        64,
        false,
        false,
    );
    // Decode after a OneVision image (thousands of cached positions), Qwen2-0.5B's heads.
    for n_kv in [256, 1024, 4096] {
        let name = format!("qwen2 decode @{n_kv}");
        decode_attention(&o, &mut rng, &name, n_kv, 7, 64);
    }
}

/// The Vulkan device's products (float and int8 variants) on decode and prefill shapes: GB/s of
/// weights for one token, GOP/s for many. On lavapipe these are CPU figures, a sanity check.
#[cfg(feature = "vulkan")]
fn vulkan_products(o: &Opts, rng: &mut Rng) {
    use llava_edge::vulkan::{q8_scratch_bytes, Vulkan, MUL_MAT_Q8_TYPES};
    let vk = match Vulkan::new(None) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("no Vulkan device: {e}");
            return;
        }
    };
    println!("Vulkan device: {}; medians of {}\n", vk.info(), o.reps);
    println!("type   shape                          variant   time        rate");
    for (ty, name, rows, cols, n) in [
        (GgmlType::Q4_0, "qwen2-0.5b ffn_up", 4864, 896, 1),
        (GgmlType::Q8_0, "qwen2-0.5b ffn_up", 4864, 896, 1),
        (GgmlType::Q4_K, "qwen2-0.5b ffn_up", 4864, 1024, 1),
        (GgmlType::F16, "qwen2-0.5b ffn_up", 4864, 896, 1),
        (GgmlType::Q4_0, "llama-7b attn_q", 4096, 4096, 1),
        (GgmlType::Q4_0, "qwen2-0.5b ffn_up x64", 4864, 896, 64),
        (GgmlType::F16, "clip-l attn_q x577", 1024, 1024, 577),
    ] {
        let w = vk
            .upload(&random_matrix(rng, ty, rows, cols), "weights")
            .unwrap();
        let x: Vec<f32> = (0..n * cols).map(|_| rng.f32()).collect();
        let x = vk.upload_f32(&x, "input").unwrap();
        let y = vk.buffer((n * rows * 4) as u64, "output").unwrap();
        let scratch = vk.buffer(q8_scratch_bytes(cols, n), "int8 input").unwrap();
        let bytes = (rows * cols / ty.block_size() * ty.type_size()) as f64;
        for int8 in [false, true] {
            if int8 && !MUL_MAT_Q8_TYPES.contains(&ty) {
                continue;
            }
            let t = time(o.reps, || {
                let mut rec = vk.recorder().unwrap();
                if int8 {
                    rec.mul_mat_q8(&w, ty, rows, cols, &x, n, &scratch, &y)
                } else {
                    rec.mul_mat(&w, ty, rows, cols, &x, n, &y)
                }
                .unwrap();
                rec.submit().unwrap();
            });
            let rate = if n == 1 {
                format!("{:.1} GB/s", bytes / t / 1e9)
            } else {
                format!("{:.1} GOP/s", 2.0 * (rows * cols * n) as f64 / t / 1e9)
            };
            println!(
                "{:<6} {:<30} {:<9} {:>8.2} ms  {rate}",
                format!("{ty}"),
                format!("{name} {rows}x{cols}"),
                if int8 { "int8" } else { "float" },
                t * 1e3
            );
        }
    }
}
