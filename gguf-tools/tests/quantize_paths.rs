//! `quantize IN IN` (or through a hard or symbolic link), and `synth` onto its own
//! vocabulary source, are refused before anything is written: an input is not replaced while
//! it is being read.

use gguf_tools::mix::Mix;
use gguf_tools::quantize::{quantize_file, Options, QuantizeError};
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::{GgufWriter, TensorSpec, Value};

fn small_gguf(path: &std::path::Path) {
    let md = vec![("general.architecture".to_string(), Value::string("llama"))];
    let specs = [TensorSpec::new("output_norm.weight", &[64], GgmlType::F32)];
    let mut w = GgufWriter::create(path, &md, &specs).unwrap();
    let data: Vec<u8> = (0..64).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.write_tensor("output_norm.weight", &data).unwrap();
    w.finish().unwrap();
}

#[test]
fn quantizing_a_file_onto_itself_is_refused() {
    let dir = std::env::temp_dir().join(format!("gguf-tools-qpaths-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.gguf");
    small_gguf(&input);
    let before = std::fs::read(&input).unwrap();
    let opts = Options {
        mix: Mix::from_name("f16").unwrap(),
        threads: 1,
        allow_requantize: false,
        progress: false,
    };
    let hard = dir.join("hard.gguf");
    std::fs::hard_link(&input, &hard).unwrap();
    let mut outs = vec![input.clone(), dir.join(".").join("in.gguf"), hard];
    #[cfg(unix)]
    {
        let soft = dir.join("soft.gguf");
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        outs.push(soft);
    }
    for out in &outs {
        let e = quantize_file(&input, out, &opts).err().unwrap();
        assert!(
            matches!(e, QuantizeError::SameFile { .. }),
            "{}: {e}",
            out.display()
        );
        assert!(e.to_string().contains("in.gguf"), "{e}");
    }
    assert_eq!(std::fs::read(&input).unwrap(), before);
    // Another file is fine.
    quantize_file(&input, &dir.join("out.gguf"), &opts).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn synth_onto_its_vocabulary_source_is_refused() {
    let dir = std::env::temp_dir().join(format!("gguf-tools-spaths-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let vocab = dir.join("vocab.gguf");
    small_gguf(&vocab);
    let before = std::fs::read(&vocab).unwrap();
    let e = gguf_tools::synth::synth("qwen2-0.5b", GgmlType::F16, Some(&vocab), &vocab, 1)
        .err()
        .unwrap();
    assert!(e.contains("is the vocabulary source"), "{e}");
    assert_eq!(std::fs::read(&vocab).unwrap(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}
