//! `llava-edge serve`'s library half: an OpenAI-compatible chat server (as llama-server and
//! ollama offer), so the clients people have (the OpenAI SDKs, LangChain, Open WebUI) work
//! unchanged. axum on tokio moves the bytes ([`routes`]); one scheduler thread owns the model
//! and batches the requests ([`scheduler`]); they talk through channels.

pub mod api;
pub mod errors;
pub mod images;
pub mod metrics;
mod routes;
pub mod scheduler;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::load::LoadOptions;
use crate::speculative::SpecConfig;
use crate::text::KvType;

/// What the server prints or logs about itself, for the caller to show.
#[derive(Debug)]
pub enum ServerEvent {
    /// Accepting connections at this address (the port the system chose for port 0).
    Listening(SocketAddr),
    /// The model is loaded.
    Loaded {
        /// What loading gave to warn about.
        warnings: Vec<String>,
        /// Positions each slot's cache holds.
        n_ctx: usize,
        /// Sequences decoded together at most.
        slots: usize,
        /// Load time.
        seconds: f64,
        /// Where the text model's layers run.
        placement: crate::text::Placement,
        /// The text model's layers.
        n_layer: usize,
        /// Where the vision encoder runs: None without one, else whether on the device.
        vision_on_device: Option<bool>,
    },
    /// A stop was asked for; running replies get this long to finish.
    ShuttingDown(Duration),
}

/// How to serve.
pub struct ServerConfig {
    /// The model files and how to load them.
    pub load: LoadOptions,
    /// Threads of the model's compute pool.
    pub threads: usize,
    /// Address to listen on (loopback unless a caller asks otherwise).
    pub host: String,
    /// Port (0: one the system chooses, reported in [`ServerEvent::Listening`]).
    pub port: u16,
    /// Conversations decoded together, each with its own KV cache.
    pub parallel: usize,
    /// Requests allowed to wait for a slot; more are refused with 503.
    pub queue: usize,
    /// The key clients must send as `Authorization: Bearer`, if any.
    pub api_key: Option<String>,
    /// Context per slot (None: the default for the model).
    pub ctx_size: Option<usize>,
    /// KV cache element type.
    pub cache_type: KvType,
    /// The one directory `file://` image URLs may read from.
    pub allowed_dir: Option<PathBuf>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Memory for cached image embeddings, in bytes.
    pub image_cache_bytes: usize,
    /// The model's name in `/v1/models` and responses.
    pub model_name: String,
    /// How long running replies may take to finish after a stop is asked for.
    pub shutdown_grace: Duration,
    /// Speculative decoding, if any (see [`DraftOptions`]).
    pub draft: Option<DraftOptions>,
    /// Receives [`ServerEvent`]s.
    pub on_event: Arc<dyn Fn(ServerEvent) + Send + Sync>,
}

/// Where a server's proposals come from.
#[derive(Clone, Debug)]
pub enum Drafting {
    /// A smaller model with the target's vocabulary, one KV cache of it per slot.
    Model {
        /// Its GGUF file.
        path: PathBuf,
        /// Stop drafting when its own choice is less likely than this (0: always draft).
        p_min: f32,
    },
    /// Prompt lookup, matching n-grams of this many tokens down to one.
    Lookup { ngram: usize },
}

/// Speculative decoding in the server. It runs when one slot is decoding: a step then
/// verifies that slot's proposals in one pass over the weights. With several slots decoding,
/// the batched step already reads the weights once for all of them, so proposals would only
/// add rows; those steps stay plain. Greedy replies are the target's either way; sampled ones
/// keep its distribution (argmax proposals, kept by the speculative-sampling rule). Requests
/// with `ignore_eos` decode plainly.
#[derive(Clone, Debug)]
pub struct DraftOptions {
    /// The drafter.
    pub drafting: Drafting,
    /// Proposals a pass and when to draft.
    pub config: SpecConfig,
}

impl ServerConfig {
    /// Defaults for `load`: loopback port 8080, one slot, a queue of 64, 20 MB bodies, 256 MB
    /// of image embeddings, 30 s to finish at a stop, no drafting, events ignored.
    pub fn new(load: LoadOptions) -> ServerConfig {
        let model_name = load
            .model
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned());
        ServerConfig {
            load,
            threads: crate::load::default_threads(),
            host: "127.0.0.1".into(),
            port: 8080,
            parallel: 1,
            queue: 64,
            api_key: None,
            ctx_size: None,
            cache_type: KvType::F16,
            allowed_dir: None,
            body_limit: 20 << 20,
            image_cache_bytes: 256 << 20,
            model_name,
            shutdown_grace: Duration::from_secs(30),
            draft: None,
            on_event: Arc::new(|_| {}),
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The async runtime or a thread could not start.
    #[error("cannot start the server: {0}")]
    Start(#[source] std::io::Error),
    /// The model failed to load.
    #[error("{0}")]
    Load(String),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum State {
    Loading = 0,
    Ready = 1,
    Failed = 2,
}

/// What the handlers and the scheduler share.
struct Shared {
    state: AtomicU8,
    load_error: Mutex<Option<String>>,
    metrics: metrics::Metrics,
    /// Raised when the server must stop by itself (the model failed to load).
    stop: tokio::sync::Notify,
}

impl Shared {
    fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Loading,
            1 => State::Ready,
            _ => State::Failed,
        }
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }
}

/// Serves until SIGTERM or SIGINT: then stops accepting, lets running replies finish (for
/// `shutdown_grace` at most) and returns. The model loads on the scheduler thread while the
/// server already answers (`/health` says `loading`).
pub fn serve(cfg: ServerConfig) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        // The runtime only parses, copies and waits: the cores belong to the model's pool.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServerError::Start)?;
    let cfg = Arc::new(cfg);
    let shared = Arc::new(Shared {
        state: AtomicU8::new(State::Loading as u8),
        load_error: Mutex::new(None),
        metrics: metrics::Metrics::default(),
        stop: tokio::sync::Notify::new(),
    });
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&addr))
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(ServerError::Start)?;
    let (jobs, rx) = std::sync::mpsc::channel();
    let scheduler = {
        let (cfg, shared) = (cfg.clone(), shared.clone());
        std::thread::Builder::new()
            .name("llava-scheduler".into())
            .spawn(move || scheduler::run(&cfg, rx, shared))
            .map_err(ServerError::Start)?
    };
    (cfg.on_event)(ServerEvent::Listening(local));
    let app = routes::router(routes::AppState {
        shared: shared.clone(),
        jobs,
        cfg: cfg.clone(),
    });
    let finished = rt.block_on(async {
        let (asked_tx, asked_rx) = tokio::sync::oneshot::channel::<()>();
        let stop_shared = shared.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            tokio::select! {
                _ = stop_signal() => {}
                _ = stop_shared.stop.notified() => {}
            }
            let _ = asked_tx.send(());
        });
        let grace = cfg.shutdown_grace;
        let on_event = cfg.on_event.clone();
        tokio::select! {
            _ = server => true,
            _ = async move {
                if asked_rx.await.is_ok() {
                    on_event(ServerEvent::ShuttingDown(grace));
                    tokio::time::sleep(grace).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => false,
        }
    });
    if let Some(e) = shared.load_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(ServerError::Load(e));
    }
    // Every connection is closed, so the job channel is too: the scheduler finishes what it
    // holds and returns. Past the grace period, running replies are abandoned.
    if finished {
        let _ = scheduler.join();
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
