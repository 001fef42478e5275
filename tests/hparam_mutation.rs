//! Every numeric hyperparameter of a converted text model and mmproj, mutated one at a time
//! (0, 1, the type's extremes, one off either way, and for floats NaN, infinities and a sign
//! flip; numeric arrays at their first and last element; and the key removed): each variant
//! loads and runs (a short prompt and a decode step; images, tiles and a video through the
//! encoder into the text model) or fails with an error. None may panic or hang.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::hf_text::write_text_gguf;
use common::hf_vision::write_mmproj_gguf;
use common::npy::fixtures_dir;
use common::TempDir;
use gguf_tools::convert::{convert, OutType};
use llava_edge::gguf::{Array, GgufFile, GgufWriter, TensorSpec, Value};
use llava_edge::image::RgbImage;
use llava_edge::text::{KvType, Logits, TextModel};
use llava_edge::threadpool::ThreadPool;
use llava_edge::tokenizer::Tokenizer;
use llava_edge::vision::VisionEncoder;

/// Longest a variant may take before it counts as a hang (a fixture runs in milliseconds).
const HANG: Duration = Duration::from_secs(120);

macro_rules! int_variants {
    ($x:expr, $t:ty) => {{
        let x: $t = $x;
        let mut out: Vec<$t> = vec![0, 1, <$t>::MAX, <$t>::MIN];
        out.extend(x.checked_sub(1));
        out.extend(x.checked_add(1));
        out
    }};
}

fn float_variants(x: f64) -> Vec<f64> {
    vec![
        0.0,
        1.0,
        1e30,
        x - 1.0,
        x + 1.0,
        -x,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ]
}

/// Mutations of one scalar, the unchanged value left out.
fn scalar_variants(v: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = match *v {
        Value::U8(x) => int_variants!(x, u8).into_iter().map(Value::U8).collect(),
        Value::I8(x) => int_variants!(x, i8).into_iter().map(Value::I8).collect(),
        Value::U16(x) => int_variants!(x, u16).into_iter().map(Value::U16).collect(),
        Value::I16(x) => int_variants!(x, i16).into_iter().map(Value::I16).collect(),
        Value::U32(x) => int_variants!(x, u32).into_iter().map(Value::U32).collect(),
        Value::I32(x) => int_variants!(x, i32).into_iter().map(Value::I32).collect(),
        Value::U64(x) => int_variants!(x, u64).into_iter().map(Value::U64).collect(),
        Value::I64(x) => int_variants!(x, i64).into_iter().map(Value::I64).collect(),
        Value::F32(x) => float_variants(x.into())
            .into_iter()
            .map(|f| Value::F32(f as f32))
            .collect(),
        Value::F64(x) => float_variants(x).into_iter().map(Value::F64).collect(),
        _ => Vec::new(),
    };
    // Bitwise identity, so NaN variants survive and the original value goes.
    let same = |a: &Value, b: &Value| format!("{a:?}") == format!("{b:?}");
    let mut unique: Vec<Value> = Vec::new();
    for x in out.drain(..) {
        if !same(&x, v) && !unique.iter().any(|u| same(u, &x)) {
            unique.push(x);
        }
    }
    unique
}

macro_rules! each_numeric_array {
    ($a:expr, $v:ident => $body:expr) => {
        match $a {
            Array::U8($v) => $body,
            Array::I8($v) => $body,
            Array::U16($v) => $body,
            Array::I16($v) => $body,
            Array::U32($v) => $body,
            Array::I32($v) => $body,
            Array::U64($v) => $body,
            Array::I64($v) => $body,
            Array::F32($v) => $body,
            Array::F64($v) => $body,
            _ => {}
        }
    };
}

fn elem(a: &Array, i: usize) -> Option<Value> {
    Some(match a {
        Array::U8(v) => Value::U8(v[i]),
        Array::I8(v) => Value::I8(v[i]),
        Array::U16(v) => Value::U16(v[i]),
        Array::I16(v) => Value::I16(v[i]),
        Array::U32(v) => Value::U32(v[i]),
        Array::I32(v) => Value::I32(v[i]),
        Array::U64(v) => Value::U64(v[i]),
        Array::I64(v) => Value::I64(v[i]),
        Array::F32(v) => Value::F32(v[i]),
        Array::F64(v) => Value::F64(v[i]),
        _ => return None,
    })
}

fn with_elem(a: &Array, i: usize, x: &Value) -> Array {
    let mut a = a.clone();
    match (&mut a, x) {
        (Array::U8(v), Value::U8(x)) => v[i] = *x,
        (Array::I8(v), Value::I8(x)) => v[i] = *x,
        (Array::U16(v), Value::U16(x)) => v[i] = *x,
        (Array::I16(v), Value::I16(x)) => v[i] = *x,
        (Array::U32(v), Value::U32(x)) => v[i] = *x,
        (Array::I32(v), Value::I32(x)) => v[i] = *x,
        (Array::U64(v), Value::U64(x)) => v[i] = *x,
        (Array::I64(v), Value::I64(x)) => v[i] = *x,
        (Array::F32(v), Value::F32(x)) => v[i] = *x,
        (Array::F64(v), Value::F64(x)) => v[i] = *x,
        _ => unreachable!("element type follows the array's"),
    }
    a
}

/// One rewrite of a file: a label and the key's new value (None: the key removed).
struct Variant {
    label: String,
    key: String,
    value: Option<Value>,
}

/// Every mutation of every numeric key of `f`, enumerated from the file itself.
fn variants(f: &GgufFile) -> Vec<Variant> {
    let mut out = Vec::new();
    for (k, v) in f.metadata() {
        let mut push = |label: String, value: Option<Value>| {
            out.push(Variant {
                label,
                key: k.clone(),
                value,
            })
        };
        match v {
            Value::Array(a) => {
                let mut numeric = false;
                each_numeric_array!(a, _v => numeric = true);
                if !numeric || a.is_empty() {
                    continue;
                }
                let mut at = vec![0, a.len() - 1];
                at.dedup();
                for i in at {
                    let Some(e) = elem(a, i) else { continue };
                    for x in scalar_variants(&e) {
                        push(
                            format!("{k}[{i}] = {x}"),
                            Some(Value::Array(with_elem(a, i, &x))),
                        );
                    }
                }
                push(format!("{k} removed"), None);
            }
            _ => {
                let xs = scalar_variants(v);
                if xs.is_empty() {
                    continue;
                }
                for x in xs {
                    push(format!("{k} = {x}"), Some(x));
                }
                push(format!("{k} removed"), None);
            }
        }
    }
    out
}

/// `src` rewritten to `dst` with one key changed; Err when the writer itself refuses it
/// (an alignment that is not a power of two).
fn rewrite(src: &GgufFile, dst: &Path, v: &Variant) -> Result<(), String> {
    let meta: Vec<(String, Value)> = src
        .metadata()
        .iter()
        .filter_map(|(k, x)| {
            if *k == v.key {
                v.value.clone().map(|n| (k.clone(), n))
            } else {
                Some((k.clone(), x.clone()))
            }
        })
        .collect();
    let specs: Vec<TensorSpec> = src
        .tensors()
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &t.dims, t.ty))
        .collect();
    let mut w = GgufWriter::create(dst, &meta, &specs).map_err(|e| e.to_string())?;
    for t in src.tensors() {
        w.write_tensor(&t.name, src.view(t).data)
            .map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Loads the text model and tokenizer, prefills a short prompt, decodes one token.
fn run_text(path: &Path) -> Result<(), String> {
    let f = GgufFile::open(path).map_err(err)?;
    let m = TextModel::load(&f).map_err(err)?;
    // The reference writer's files hold no tokenizer: fixed ids stand in for a prompt.
    let tok = match f.get("tokenizer.ggml.model") {
        Some(_) => Some(Tokenizer::from_gguf(&f).map_err(err)?),
        None => None,
    };
    let pool = ThreadPool::new(2);
    // The trained context sizes the cache the CLI would make by default.
    drop(
        m.try_new_cache(m.config.n_ctx_train, KvType::F16)
            .map_err(err)?,
    );
    let ids = match &tok {
        Some(t) => t.encode("USER: Describe the picture.\nASSISTANT:", true, false),
        None => vec![1, 7, 42, 5, 99, 3],
    };
    let mut cache = m.try_new_cache(ids.len() + 2, KvType::F16).map_err(err)?;
    let logits = m
        .forward(m.embed(&ids).map_err(err)?, &mut cache, Logits::Last, &pool)
        .map_err(err)?;
    let next = argmax(&logits);
    let logits = m
        .forward(
            m.embed(&[next]).map_err(err)?,
            &mut cache,
            Logits::Last,
            &pool,
        )
        .map_err(err)?;
    if let Some(t) = &tok {
        let _ = t.decode(&[next, argmax(&logits)]);
    }
    Ok(())
}

fn picture(width: usize, height: usize) -> RgbImage {
    RgbImage {
        width,
        height,
        data: (0..width * height * 3)
            .map(|i| (i * 37 % 251) as u8)
            .collect(),
    }
}

/// Loads the mmproj with the (unchanged) text model, encodes a wide and a tall image (tiled
/// where the file has pinpoints, one tile each for several images) and, for OneVision, a
/// video; each goes through the text model after a few tokens.
fn run_vision(mmproj: &Path, text: &Path) -> Result<(), String> {
    let tf = GgufFile::open(text).map_err(err)?;
    let m = TextModel::load(&tf).map_err(err)?;
    let vf = GgufFile::open(mmproj).map_err(err)?;
    let v = VisionEncoder::load(&vf).map_err(err)?;
    v.check_text_width(m.config.n_embd, tf.path())
        .map_err(err)?;
    let pool = ThreadPool::new(2);
    let d = m.config.n_embd;
    let mut media = Vec::new();
    for (w, h, base_only) in [(150, 60, false), (40, 90, true)] {
        media.push(
            v.embed_image(&picture(w, h), base_only, &pool)
                .map_err(err)?,
        );
    }
    if v.anyres.as_ref().is_some_and(|a| a.max_tiles.is_some()) {
        let frames = [picture(50, 40), picture(50, 40)];
        media.push(v.embed_video(&frames, &pool).map_err(err)?);
    }
    for rows in media {
        if rows.is_empty() || !rows.len().is_multiple_of(d) {
            return Err(format!(
                "BUG: the encoder gave {} values, not whole rows of {d}",
                rows.len()
            ));
        }
        let mut x = m.embed(&[1, 2, 3]).map_err(err)?;
        x.extend(rows);
        let mut cache = m.try_new_cache(x.len() / d, KvType::F16).map_err(err)?;
        m.forward(x, &mut cache, Logits::Last, &pool).map_err(err)?;
    }
    Ok(())
}

enum End {
    Error(String),
    Ran,
    Panic(String),
    Hang,
}

/// Runs `f` on its own thread, catching a panic and giving up on it after [`HANG`].
fn guarded(f: impl FnOnce() -> Result<(), String> + Send + 'static) -> End {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(HANG) {
        Ok(Ok(Ok(()))) => End::Ran,
        Ok(Ok(Err(e))) => End::Error(e),
        Ok(Err(p)) => End::Panic(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
        Err(_) => End::Hang,
    }
}

#[derive(Default)]
struct Tally {
    tried: usize,
    errors: usize,
    ran: usize,
    refused_by_writer: usize,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, label: &str, end: End) {
        self.tried += 1;
        // HPARAM_MUTATION_VERBOSE=1 lists every variant's end, to review what still runs.
        if std::env::var_os("HPARAM_MUTATION_VERBOSE").is_some() {
            match &end {
                End::Ran => println!("ran:   {label}"),
                End::Error(e) => println!("error: {label}: {e}"),
                _ => {}
            }
        }
        match end {
            End::Ran => self.ran += 1,
            End::Error(e) if e.starts_with("BUG") => self.failures.push(format!("{label}: {e}")),
            End::Error(_) => self.errors += 1,
            End::Panic(m) => self.failures.push(format!("{label}: panic: {m}")),
            End::Hang => self
                .failures
                .push(format!("{label}: no end within {HANG:?}")),
        }
    }
}

#[test]
fn every_numeric_hyperparameter_mutated_is_an_error_or_a_run() {
    let tmp = TempDir::new("hparam-mutation");
    let mut totals = (Tally::default(), Tally::default());
    // The converter's files (tokenizer included; the encoder stored up to the feature layer),
    // and the tests' reference writers' (no tokenizer; every encoder layer stored).
    for (case, converted) in [
        ("llava15", true),
        ("llava_next_mistral", true),
        ("llava_ov", true),
        ("llava_v1", false),
    ] {
        let (text, mmproj) = (
            tmp.path(&format!("{case}-text.gguf")),
            tmp.path(&format!("{case}-mmproj.gguf")),
        );
        let dir = fixtures_dir().join(case);
        if converted {
            convert(&dir.join("hf"), &text, &mmproj, OutType::F32, false).unwrap();
        } else {
            write_text_gguf(&dir, &text);
            write_mmproj_gguf(&dir, &mmproj);
        }
        // The unmutated pair runs: every error below comes from a mutation.
        assert!(run_text(&text).is_ok(), "{case}: {:?}", run_text(&text));
        let r = run_vision(&mmproj, &text);
        assert!(r.is_ok(), "{case}: {r:?}");

        for (is_text, src_path) in [(true, &text), (false, &mmproj)] {
            let src = GgufFile::open(src_path).unwrap();
            let tally = if is_text {
                &mut totals.0
            } else {
                &mut totals.1
            };
            let vs = variants(&src);
            assert!(vs.len() > 20, "{case}: only {} variants", vs.len());
            for (i, v) in vs.iter().enumerate() {
                let dst: PathBuf = tmp.path(&format!("{case}-{is_text}-{i}.gguf"));
                if rewrite(&src, &dst, v).is_err() {
                    tally.refused_by_writer += 1;
                    continue;
                }
                let (d, t) = (dst.clone(), text.clone());
                let end = if is_text {
                    guarded(move || run_text(&d))
                } else {
                    guarded(move || run_vision(&d, &t))
                };
                tally.record(&format!("{case}: {}", v.label), end);
                let _ = std::fs::remove_file(&dst);
            }
        }
    }
    for (what, t) in [("text", &totals.0), ("mmproj", &totals.1)] {
        println!(
            "{what}: {} variants: {} errors, {} runs, {} refused by the writer, {} panics or hangs",
            t.tried,
            t.errors,
            t.ran,
            t.refused_by_writer,
            t.failures.len()
        );
    }
    let failures: Vec<&String> = totals.0.failures.iter().chain(&totals.1.failures).collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
