//! Where the model files meet: a pipeline refuses an mmproj made for another text width
//! however it is built.

mod common;

use std::path::Path;

use common::hf_text::write_text_gguf;
use common::hf_vision::write_mmproj_gguf;
use common::npy::fixtures_dir;
use common::TempDir;
use llava_edge::chat::ChatTemplate;
use llava_edge::gguf::{GgufFile, GgufWriter, TensorSpec};
use llava_edge::pipeline::{Pipeline, PipelineError, Tokenize};
use llava_edge::text::TextModel;
use llava_edge::threadpool::ThreadPool;
use llava_edge::vision::{VisionEncoder, VisionError};

/// `mmproj` with its last projector layer made `width` rows wide (the first rows as they were).
fn widen_projector(mmproj: &Path, out: &Path, width: u64) {
    let f = GgufFile::open(mmproj).unwrap();
    let widen = |name: &str, dims: &[u64]| -> Vec<u64> {
        match name {
            "mm.2.weight" => vec![dims[0], width],
            "mm.2.bias" => vec![width],
            _ => dims.to_vec(),
        }
    };
    let specs: Vec<TensorSpec> = f
        .tensors()
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &widen(&t.name, &t.dims), t.ty))
        .collect();
    let mut w = GgufWriter::create(out, f.metadata(), &specs).unwrap();
    for (t, s) in f.tensors().iter().zip(&specs) {
        let mut data = f.view(t).data.to_vec();
        data.resize(s.ty.bytes_for(s.dims.iter().product()).unwrap() as usize, 0);
        w.write_tensor(&t.name, &data).unwrap();
    }
    w.finish().unwrap();
}

/// Token ids as bytes: the fixture's text file has no vocabulary, and no text is encoded here.
struct Bytes;

impl Tokenize for Bytes {
    fn encode(&self, text: &str, _add_bos: bool) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }
    fn encode_continuation(&self, text: &str) -> Vec<u32> {
        self.encode(text, false)
    }
    fn piece(&self, id: u32) -> Vec<u8> {
        vec![id as u8]
    }
    fn is_eog(&self, _id: u32) -> bool {
        false
    }
    fn token_id(&self, _text: &str) -> Option<u32> {
        None
    }
}

type Parts<'a> = (
    TextModel<'a>,
    Option<VisionEncoder<'a>>,
    Bytes,
    ChatTemplate,
    ThreadPool,
);

/// What a pipeline is built of, from the text file `tf` and the mmproj `vf`.
fn parts<'a>(tf: &'a GgufFile, vf: &'a GgufFile) -> Parts<'a> {
    (
        TextModel::load(tf).unwrap(),
        Some(VisionEncoder::load(vf).unwrap()),
        Bytes,
        ChatTemplate::ALL[0].clone(),
        ThreadPool::new(1),
    )
}

fn assert_names_both(e: &VisionError, mmproj: &Path, text: &Path, n_out: usize, n_embd: usize) {
    assert!(matches!(e, VisionError::WidthMismatch { .. }), "{e}");
    let msg = e.to_string();
    let (n_out, n_embd) = (n_out.to_string(), n_embd.to_string());
    for s in [
        n_out.as_str(),
        n_embd.as_str(),
        mmproj.to_str().unwrap(),
        text.to_str().unwrap(),
    ] {
        assert!(msg.contains(s), "'{msg}' does not name {s}");
    }
}

#[test]
fn a_pipeline_built_by_hand_refuses_an_mmproj_of_another_width() {
    let tmp = TempDir::new("load-device-width");
    let dir = fixtures_dir().join("llava15");
    let (text, mmproj, wide) = (
        tmp.path("text.gguf"),
        tmp.path("mmproj.gguf"),
        tmp.path("mmproj-wide.gguf"),
    );
    write_text_gguf(&dir, &text);
    write_mmproj_gguf(&dir, &mmproj);
    let tf = GgufFile::open(&text).unwrap();
    let n_embd = TextModel::load(&tf).unwrap().config.n_embd;
    // Twice the width: rows that would be read as twice the tokens, not refused by their count.
    widen_projector(&mmproj, &wide, 2 * n_embd as u64);
    let (vf, wf) = (
        GgufFile::open(&mmproj).unwrap(),
        GgufFile::open(&wide).unwrap(),
    );
    let (t, v, tok, tpl, pool) = parts(&tf, &vf);
    let p = Pipeline::new(t, v, tok, tpl, pool).expect("matching widths");
    assert_eq!(p.vision.as_ref().unwrap().n_out, n_embd);

    let (t, v, tok, tpl, pool) = parts(&tf, &wf);
    let e = Pipeline::new(t, v, tok, tpl, pool)
        .err()
        .expect("a projector twice the text width is refused");
    assert_names_both(&e, &wide, &text, 2 * n_embd, n_embd);

    // Built field by field, the pipeline refuses the first image before reading it (the file
    // named does not exist: the width is checked first).
    let (text_model, vision, tokenizer, template, pool) = parts(&tf, &wf);
    let p = Pipeline {
        text: text_model,
        vision,
        tokenizer,
        template,
        pool,
    };
    match p.encode_image(&tmp.path("no-such-image.png"), false) {
        Err(PipelineError::Vision(e)) => assert_names_both(&e, &wide, &text, 2 * n_embd, n_embd),
        Err(e) => panic!("expected the width error, got: {e}"),
        Ok(_) => panic!("an image was encoded for a text model of another width"),
    }
}
