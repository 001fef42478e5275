//! `gguf-tools inspect`: a file's header, metadata (arrays summarised), tensor table and
//! totals by type, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use llava_edge::dtype::GgmlType;
use llava_edge::gguf::{Array, GgufFile, Value};
use serde_json::{json, Value as Json};

/// Elements of an array shown before eliding the rest.
const ARRAY_PREVIEW: usize = 4;

fn preview(a: &Array) -> String {
    let n = a.len();
    let mut items: Vec<String> = match a {
        Array::String(v) => v
            .iter()
            .take(ARRAY_PREVIEW)
            .map(|s| format!("{:?}", String::from_utf8_lossy(s)))
            .collect(),
        Array::Array(v) => v
            .iter()
            .take(ARRAY_PREVIEW)
            .map(|inner| format!("[{}]", preview(inner)))
            .collect(),
        Array::F32(v) => v
            .iter()
            .take(ARRAY_PREVIEW)
            .map(|x| format!("{x}"))
            .collect(),
        Array::F64(v) => v
            .iter()
            .take(ARRAY_PREVIEW)
            .map(|x| format!("{x}"))
            .collect(),
        Array::Bool(v) => v
            .iter()
            .take(ARRAY_PREVIEW)
            .map(|x| format!("{x}"))
            .collect(),
        other => other
            .to_i64_vec()
            .unwrap_or_default()
            .into_iter()
            .take(ARRAY_PREVIEW)
            .map(|x| x.to_string())
            .collect(),
    };
    if n > ARRAY_PREVIEW {
        items.push(format!("... ({} more)", n - ARRAY_PREVIEW));
    }
    items.join(", ")
}

fn describe(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("[{}; {}] {}", a.elem_type().name(), a.len(), preview(a)),
        Value::String(s) => {
            let s = String::from_utf8_lossy(s);
            if s.chars().count() > 120 {
                let cut: String = s.chars().take(120).collect();
                format!("{cut:?}... ({} chars)", s.chars().count())
            } else {
                format!("{s:?}")
            }
        }
        scalar => scalar.to_string(),
    }
}

fn shape(dims: &[u64]) -> String {
    let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join(", "))
}

fn totals(f: &GgufFile) -> BTreeMap<GgmlType, (usize, u64, u64)> {
    let mut t: BTreeMap<GgmlType, (usize, u64, u64)> = BTreeMap::new();
    for info in f.tensors() {
        let e = t.entry(info.ty).or_default();
        e.0 += 1;
        e.1 += info.n_elements;
        e.2 += info.size;
    }
    t
}

/// The human-readable report.
pub fn text_report(f: &GgufFile) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "file:        {}", f.path().display());
    let _ = writeln!(
        out,
        "gguf:        version {}, alignment {}, data at offset {}, {} bytes",
        f.version(),
        f.alignment(),
        f.data_offset(),
        f.file_size()
    );
    let _ = writeln!(out, "\nmetadata ({} keys):", f.metadata().len());
    let width = f.metadata().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in f.metadata() {
        let _ = writeln!(
            out,
            "  {k:<width$}  {:<7}  {}",
            v.value_type().name(),
            describe(v)
        );
    }
    let _ = writeln!(out, "\ntensors ({}):", f.tensors().len());
    let width = f
        .tensors()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "  {:<width$}  {:<7}  {:<24}  {:>12}  {:>12}",
        "name", "type", "shape", "bytes", "offset"
    );
    for t in f.tensors() {
        let _ = writeln!(
            out,
            "  {:<width$}  {:<7}  {:<24}  {:>12}  {:>12}",
            t.name,
            t.ty.name(),
            shape(&t.dims),
            t.size,
            f.data_offset() + t.offset
        );
    }
    let _ = writeln!(out, "\ntotals by type:");
    let (mut n, mut e, mut b) = (0, 0, 0);
    for (ty, (count, elems, bytes)) in totals(f) {
        let _ = writeln!(
            out,
            "  {:<7}  {count:>5} tensors  {elems:>14} elements  {bytes:>14} bytes  ({:.2} bits/weight)",
            ty.name(),
            bytes as f64 * 8.0 / elems.max(1) as f64
        );
        n += count;
        e += elems;
        b += bytes;
    }
    let _ = writeln!(
        out,
        "  {:<7}  {n:>5} tensors  {e:>14} elements  {b:>14} bytes",
        "all"
    );
    out
}

fn json_value(v: &Value) -> Json {
    match v {
        Value::Array(a) => json!({
            "type": "ARRAY",
            "elem_type": a.elem_type().name(),
            "len": a.len(),
            "preview": preview(a),
        }),
        Value::String(s) => json!({"type": "STRING", "value": String::from_utf8_lossy(s)}),
        Value::Bool(b) => json!({"type": "BOOL", "value": b}),
        Value::F32(x) => json!({"type": "FLOAT32", "value": x}),
        Value::F64(x) => json!({"type": "FLOAT64", "value": x}),
        Value::U64(x) => json!({"type": "UINT64", "value": x}),
        other => json!({"type": other.value_type().name(), "value": other.as_i64()}),
    }
}

/// The machine-readable report.
pub fn json_report(f: &GgufFile) -> Json {
    let metadata: Vec<Json> = f
        .metadata()
        .iter()
        .map(|(k, v)| {
            let mut j = json_value(v);
            j["key"] = json!(k);
            j
        })
        .collect();
    let tensors: Vec<Json> = f
        .tensors()
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "type": t.ty.name(), "shape": t.dims,
                "bytes": t.size, "offset": f.data_offset() + t.offset,
            })
        })
        .collect();
    let totals: Vec<Json> = totals(f)
        .into_iter()
        .map(|(ty, (count, elems, bytes))| {
            json!({"type": ty.name(), "tensors": count, "elements": elems, "bytes": bytes})
        })
        .collect();
    json!({
        "file": f.path().display().to_string(),
        "version": f.version(),
        "alignment": f.alignment(),
        "data_offset": f.data_offset(),
        "file_size": f.file_size(),
        "metadata": metadata,
        "tensors": tensors,
        "totals": totals,
    })
}
