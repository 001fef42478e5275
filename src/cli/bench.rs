//! `llava-edge bench`: the library's measurements, printed as a table or JSON, or side by side
//! with llama.cpp's ([`super::compare`]).

use llava_edge::bench::{self, BenchConfig};
use llava_edge::image::load_image;
use llava_edge::load::default_threads;

use super::args::BenchArgs;
use super::run::print_load_warnings;

/// Runs `bench --draft-model/--lookup`: plain and speculative decode on the same prompt, and
/// the verify pass's cost per k.
fn bench_speculative(a: &BenchArgs, cfg: &BenchConfig) -> Result<(), Box<dyn std::error::Error>> {
    let d = &a.draft.draft;
    let spec = bench::SpecBench {
        draft_model: d.draft_model.clone(),
        lookup_ngram: d.lookup_ngram,
        p_min: d.draft_p_min,
        config: d.config(a.draft.force_accept)?,
    };
    let r = bench::speculative(&a.model, cfg, &spec)?;
    print_load_warnings(&r.warnings);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("model            {}", a.model.display());
    println!("draft            {} (k = {})", r.drafter, r.k);
    println!("threads          {}", r.threads);
    if let Some(f) = r.force_accept {
        println!("forced accept    {f:.2} (benchmark only: the output is not the model's)");
    }
    println!(
        "decode  tg{:<5}  {:.2} tok/s plain, {:.2} tok/s speculative ({:.2}x) after {} prompt \
         tokens",
        r.n_gen, r.decode_tok_s, r.effective_tok_s, r.speedup, r.n_prompt
    );
    println!(
        "acceptance       {:.1}% ({} of {} proposals), {:.2} tokens a verify pass",
        100.0 * r.acceptance,
        r.stats.accepted,
        r.stats.proposed,
        r.tokens_per_pass
    );
    println!(
        "a pass           {:.1} ms drafting + {:.1} ms verifying",
        r.draft_ms_per_pass, r.verify_ms_per_pass
    );
    let costs: Vec<String> = r
        .verify_cost
        .iter()
        .map(|c| format!("k={} {:.2}x", c.k, c.relative))
        .collect();
    println!(
        "verify pass cost (k+1 rows over one decode step): {}",
        costs.join(", ")
    );
    Ok(())
}

/// Runs the benchmark `a` asks for and prints it.
pub fn bench(a: &BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut placing = llava_edge::load::LoadOptions::new(a.model.clone());
    a.device.apply(&mut placing)?;
    let threads = a.threads.unwrap_or_else(default_threads);
    let img = a.image.as_deref().map(load_image).transpose()?;
    let cfg = BenchConfig {
        n_prompt: a.n_prompt,
        n_gen: a.n_gen,
        depth: a.depth,
        repeat: a.repeat,
        threads,
        ttft_prompt: 20,
        repack: !a.no_repack,
        vision_bf16: a.vision_bf16,
        device: placing.device,
        gpu_layers: placing.gpu_layers,
    };
    if a.draft.draft.enabled() {
        return bench_speculative(a, &cfg);
    }
    if let Some(dir) = &a.vs_llama_cpp {
        return super::compare::side_by_side(a, &cfg, dir);
    }
    let r = bench::run(&a.model, a.mmproj.as_deref(), img.as_ref(), &cfg)?;
    print_load_warnings(&r.warnings);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("model            {}", a.model.display());
    println!("threads          {}", r.threads);
    match &r.device {
        Some(d) => println!("device           {d} ({} text layers)", r.device_layers),
        None => println!("device           CPU"),
    }
    println!("load             {:.0} ms", r.load_ms);
    if let (Some(e), Some(n)) = (r.image_encode_ms, r.image_tokens) {
        println!("image encode     {e:.0} ms ({n} tokens)");
    }
    if r.depth > 0 {
        println!("depth            {} tokens in the cache first", r.depth);
    }
    println!("prefill pp{:<5}  {:.2} tok/s", r.n_prompt, r.prefill_tok_s);
    if r.device_layers > 0 {
        // The bound below is the CPU threads' read rate, not the device's.
        println!("decode  tg{:<5}  {:.2} tok/s", r.n_gen, r.decode_tok_s);
    } else {
        println!(
            "decode  tg{:<5}  {:.2} tok/s ({:.0}% of the memory bound: {:.1} MiB a token at \
             {:.1} GB/s read by these threads)",
            r.n_gen,
            r.decode_tok_s,
            100.0 * r.decode_tok_s / r.decode_bound_tok_s,
            r.decode_mib_per_token,
            r.read_gbs
        );
    }
    if let Some(t) = r.ttft_ms {
        println!(
            "first token      {t:.0} ms (image + {} prompt tokens)",
            cfg.ttft_prompt
        );
    }
    println!("peak RSS         {:.0} MiB", r.peak_rss_mib);
    Ok(())
}
