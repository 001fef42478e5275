//! `llava-edge serve`: reads the flags and starts the library's server
//! ([`llava_edge::server`]); prints where it listens and what loading said.

use std::sync::Arc;

use llava_edge::load::{self, LoadOptions};
use llava_edge::server::{serve as start, DraftOptions, Drafting, ServerConfig, ServerEvent};

use super::args::ServeArgs;
use super::run::placement_line;

/// Serves the model `a` names until SIGTERM or SIGINT.
pub fn serve(a: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    if a.parallel == 0 {
        return Err("--parallel must be 1 or more".into());
    }
    if let Some(d) = &a.allowed_dir {
        if !d.is_dir() {
            return Err(format!("--allowed-dir {}: not a directory", d.display()).into());
        }
    }
    let mut load = LoadOptions {
        mmproj: a.mmproj.clone(),
        repack: !a.no_repack,
        pad_square: a.pad_square,
        chat_template: a.chat_template.clone(),
        ..LoadOptions::new(a.model.clone())
    };
    a.device.apply(&mut load)?;
    let mut cfg = ServerConfig::new(load);
    cfg.threads = a.threads.unwrap_or_else(load::default_threads);
    cfg.host = a.host;
    cfg.port = a.port;
    cfg.parallel = a.parallel;
    cfg.queue = a.queue;
    cfg.api_key = a.api_key;
    cfg.ctx_size = a.ctx_size;
    cfg.cache_type = load::kv_type(&a.cache_type)?;
    cfg.allowed_dir = a.allowed_dir;
    cfg.body_limit = a.body_limit_mb.saturating_mul(1 << 20);
    cfg.image_cache_bytes = a.image_cache_mb.saturating_mul(1 << 20);
    if let Some(name) = a.alias {
        cfg.model_name = name;
    }
    if a.draft.enabled() {
        let drafting = match &a.draft.draft_model {
            Some(path) => Drafting::Model {
                path: path.clone(),
                p_min: a.draft.draft_p_min,
            },
            None => Drafting::Lookup {
                ngram: a.draft.lookup_ngram,
            },
        };
        cfg.draft = Some(DraftOptions {
            drafting,
            config: a.draft.config(None)?,
        });
    }
    cfg.on_event = Arc::new(|e| match e {
        ServerEvent::Listening(addr) => eprintln!("llava-edge: listening on http://{addr}"),
        ServerEvent::Loaded {
            warnings,
            n_ctx,
            slots,
            seconds,
            placement,
            n_layer,
            vision_on_device,
        } => {
            for w in warnings {
                eprintln!("note: {w}");
            }
            eprintln!(
                "llava-edge: model loaded in {seconds:.1} s: {slots} slots of {n_ctx} positions"
            );
            eprintln!("llava-edge: {}", placement_line(&placement, n_layer));
            if let Some(on_device) = vision_on_device {
                eprintln!(
                    "llava-edge: vision encoder: {}",
                    if on_device { "GPU" } else { "CPU" }
                );
            }
        }
        ServerEvent::ShuttingDown(grace) => eprintln!(
            "llava-edge: stopping: running replies have {} s to finish",
            grace.as_secs()
        ),
    });
    start(cfg)?;
    Ok(())
}
