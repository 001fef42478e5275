//! The one thread that owns the model: it loads it, then admits queued requests into slots
//! (each with its own KV cache) and runs continuous batching: every step decodes one token for
//! every active slot in one batched forward pass, and a request joins (its prefill is a step
//! of its own) or leaves between steps. The async handlers only talk to it through channels,
//! so no model work runs on the HTTP runtime's threads.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::errors::ApiError;
use super::images::{EmbeddingCache, Image};
use super::metrics::Phase;
use super::{ServerConfig, ServerEvent, Shared, State};
use crate::chat::Message;
use crate::load::{self, ModelFiles};
use crate::pipeline::{Pipeline, ReplyText, Tokenize};
use crate::sampling::{Sampler, SamplerConfig};
use crate::text::{KvCache, Logits};
use crate::threadpool::ThreadPool;
use crate::tokenizer::Tokenizer;

/// A checked request, waiting for a slot.
pub struct Job {
    /// The system prompt.
    pub system: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Its images, decoded, in the order the template places them.
    pub images: Vec<Image>,
    /// Tokens to generate at most (None: until the context is full).
    pub max_tokens: Option<usize>,
    /// Temperature, top-p, seed.
    pub sampling: SamplerConfig,
    /// Strings that end the reply.
    pub stop: Vec<String>,
    /// Where the reply goes; closed when the client went away.
    pub events: UnboundedSender<Event>,
}

/// What a request's handler hears from the scheduler.
#[derive(Debug)]
pub enum Event {
    /// The prompt is evaluated: `prompt_tokens` in all, `cached` of them reused.
    Started { prompt_tokens: usize, cached: usize },
    /// A generated token and the text it made safe to show (may be empty).
    Token { id: Option<u32>, text: String },
    /// The reply ended (`stop` or `length`).
    Done {
        finish: &'static str,
        completion_tokens: usize,
    },
    /// The request failed; nothing more follows.
    Error(ApiError),
}

/// A request being answered.
struct Active {
    events: UnboundedSender<Event>,
    sampler: Sampler,
    reply: ReplyText,
    tokens: Vec<u32>,
    max_tokens: usize,
    /// Sampled but not yet evaluated: the next step's input.
    next: Option<u32>,
}

/// One sequence's KV cache and what it holds.
struct Slot {
    cache: KvCache,
    /// A key per cached position: token ids, and image rows as their image's hash and row, so
    /// a prefix match never mistakes one image for another.
    keys: Vec<u64>,
    active: Option<Active>,
}

/// The prompt of a request: its input rows and their keys.
struct Prompt {
    keys: Vec<u64>,
    rows: Vec<f32>,
}

/// Loads the model, then serves jobs from `jobs` until the channel closes and every reply is
/// done.
pub(super) fn run(cfg: &ServerConfig, jobs: Receiver<Job>, shared: Arc<Shared>) {
    let t0 = Instant::now();
    let pool = ThreadPool::new(cfg.threads);
    let fail = |e: String| {
        if let Ok(mut f) = shared.load_error.lock() {
            *f = Some(e);
        }
        shared.set_state(State::Failed);
        shared.stop.notify_one();
    };
    let files = match ModelFiles::open(&cfg.load, &pool) {
        Ok(f) => f,
        Err(e) => return fail(e.to_string()),
    };
    let loaded = match files.pipeline(&cfg.load, pool) {
        Ok(l) => l,
        Err(e) => return fail(e.to_string()),
    };
    let p = loaded.pipeline;
    let n_ctx = load::context_size(cfg.ctx_size, p.text.config.n_ctx_train);
    let mut slots = Vec::with_capacity(cfg.parallel);
    for _ in 0..cfg.parallel.max(1) {
        match p.text.try_new_cache(n_ctx, cfg.cache_type) {
            Ok(cache) => slots.push(Slot {
                cache,
                keys: Vec::new(),
                active: None,
            }),
            Err(e) => return fail(e.to_string()),
        }
    }
    (cfg.on_event)(ServerEvent::Loaded {
        warnings: loaded.warnings.iter().map(|w| w.to_string()).collect(),
        n_ctx,
        slots: slots.len(),
        seconds: t0.elapsed().as_secs_f64(),
    });
    shared.set_state(State::Ready);
    let mut s = Scheduler {
        p: &p,
        slots,
        pending: VecDeque::new(),
        images: EmbeddingCache::new(cfg.image_cache_bytes),
        shared: &shared,
    };
    s.serve(jobs);
}

struct Scheduler<'p, 'a> {
    p: &'p Pipeline<'a, Tokenizer>,
    slots: Vec<Slot>,
    pending: VecDeque<Job>,
    images: EmbeddingCache,
    shared: &'p Shared,
}

impl Scheduler<'_, '_> {
    fn serve(&mut self, jobs: Receiver<Job>) {
        let m = &self.shared.metrics;
        let mut open = true;
        loop {
            let idle = self.slots.iter().all(|s| s.active.is_none());
            if idle && self.pending.is_empty() {
                if !open {
                    return;
                }
                match jobs.recv() {
                    Ok(j) => self.pending.push_back(j),
                    Err(_) => return,
                }
            }
            while open {
                match jobs.try_recv() {
                    Ok(j) => self.pending.push_back(j),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            // A client that left while waiting costs nothing more.
            let before = self.pending.len();
            self.pending.retain(|j| !j.events.is_closed());
            let gone = before - self.pending.len();
            m.queued.fetch_sub(gone, Ordering::Relaxed);
            m.disconnects.fetch_add(gone as u64, Ordering::Relaxed);
            // One prefill per step, so a long prompt delays the others' next token by one
            // prefill at most.
            if self.slots.iter().any(|s| s.active.is_none()) {
                if let Some(job) = self.pending.pop_front() {
                    m.queued.fetch_sub(1, Ordering::Relaxed);
                    self.admit(job);
                }
            }
            self.decode_step();
            let busy = self.slots.iter().filter(|s| s.active.is_some()).count();
            m.busy_slots.store(busy, Ordering::Relaxed);
        }
    }

    /// Renders and tokenizes `job`, places it in the free slot whose cache shares the longest
    /// prefix with it, prefills what is not shared and samples the first token.
    fn admit(&mut self, job: Job) {
        let m = &self.shared.metrics;
        let prompt = match self.prompt(&job) {
            Ok(p) => p,
            Err(e) => {
                let _ = job.events.send(Event::Error(e));
                return;
            }
        };
        let d = self.p.text.config.n_embd;
        let n = prompt.keys.len();
        let n_ctx = self.slots[0].cache.n_ctx();
        if n >= n_ctx {
            let e = ApiError::invalid_param(
                "messages",
                format!(
                    "the prompt is {n} tokens; the context holds {n_ctx}, and at least one \
                     position must be left for the reply"
                ),
            )
            .with_code("context_length_exceeded");
            let _ = job.events.send(Event::Error(e));
            return;
        }
        let shared_prefix = |s: &Slot| {
            s.keys
                .iter()
                .zip(&prompt.keys)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let Some(i) = (0..self.slots.len())
            .filter(|&i| self.slots[i].active.is_none())
            .max_by_key(|&i| (shared_prefix(&self.slots[i]), std::cmp::Reverse(i)))
        else {
            return;
        };
        let slot = &mut self.slots[i];
        // At least the last position is evaluated again: its logits choose the first token.
        let reuse = shared_prefix(slot).min(n - 1);
        slot.cache.truncate(reuse);
        slot.keys.truncate(reuse);
        let start = Instant::now();
        let logits = match self.p.text.forward(
            prompt.rows[reuse * d..].to_vec(),
            &mut slot.cache,
            Logits::Last,
            &self.p.pool,
        ) {
            Ok(l) => l,
            Err(e) => {
                slot.cache.truncate(reuse);
                let _ = job
                    .events
                    .send(Event::Error(ApiError::internal(e.to_string())));
                return;
            }
        };
        m.time(Phase::Prefill, start.elapsed());
        m.prompt_tokens.fetch_add(n as u64, Ordering::Relaxed);
        m.cached_prompt_tokens
            .fetch_add(reuse as u64, Ordering::Relaxed);
        slot.keys.extend_from_slice(&prompt.keys[reuse..]);
        let _ = job.events.send(Event::Started {
            prompt_tokens: n,
            cached: reuse,
        });
        slot.active = Some(Active {
            events: job.events,
            sampler: Sampler::new(job.sampling),
            reply: ReplyText::new(&job.stop),
            tokens: Vec::new(),
            max_tokens: job.max_tokens.unwrap_or(usize::MAX),
            next: None,
        });
        // Counted before its first token goes out, so a client that saw a token also sees
        // the slot busy.
        let busy = self.slots.iter().filter(|s| s.active.is_some()).count();
        m.busy_slots.store(busy, Ordering::Relaxed);
        advance(self.p, &mut self.slots[i], &logits, self.shared);
    }

    /// The prompt's rows: the rendered chat split at each `<image>`, text pieces tokenized
    /// apart (as [`Pipeline::prompt_embeddings`] does) and each image's embeddings, cached by
    /// its hash, between them.
    fn prompt(&mut self, job: &Job) -> Result<Prompt, ApiError> {
        let p = self.p;
        let m = &self.shared.metrics;
        let rendered = p
            .template
            .render(job.system.as_deref(), &job.messages)
            .map_err(|e| {
                ApiError::invalid_param("messages", format!("the chat template refused: {e}"))
            })?;
        let pieces: Vec<&str> = rendered.split("<image>").collect();
        if pieces.len() - 1 != job.images.len() {
            return Err(ApiError::invalid_param(
                "messages",
                format!(
                    "the chat has {} <image> placeholders for {} images (the text must not \
                     contain <image> itself)",
                    pieces.len() - 1,
                    job.images.len()
                ),
            ));
        }
        let vision = match (&p.vision, job.images.is_empty()) {
            (_, true) => None,
            (Some(v), false) => Some(v),
            (None, false) => {
                return Err(ApiError::invalid_param(
                    "messages",
                    "the request has images but the server has no vision projector loaded",
                ))
            }
        };
        let base_only = job.images.len() > 1
            && vision
                .and_then(|v| v.anyres.as_ref())
                .is_some_and(|a| a.max_tiles.is_some());
        let d = p.text.config.n_embd;
        let (mut keys, mut rows) = (Vec::new(), Vec::new());
        for (k, text) in pieces.iter().enumerate() {
            let ids = if k == 0 {
                Tokenize::encode(&p.tokenizer, text, true)
            } else {
                Tokenize::encode_continuation(&p.tokenizer, text)
            };
            rows.extend(
                p.text
                    .embed(&ids)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
            );
            keys.extend(ids.iter().map(|&id| u64::from(id)));
            let (Some(img), Some(v)) = (job.images.get(k), vision) else {
                continue;
            };
            let key = (img.hash, base_only);
            let emb = match self.images.get(key) {
                Some(e) => {
                    m.image_cache_hits.fetch_add(1, Ordering::Relaxed);
                    e
                }
                None => {
                    let start = Instant::now();
                    let e = v.embed_image(&img.rgb, base_only, &p.pool).map_err(|e| {
                        ApiError::invalid_param(format!("image {k}"), e.to_string())
                            .with_code("invalid_image")
                    })?;
                    m.time(Phase::Encode, start.elapsed());
                    m.images_encoded.fetch_add(1, Ordering::Relaxed);
                    let e = Arc::new(e);
                    self.images.insert(key, e.clone());
                    e
                }
            };
            if emb.len() % d != 0 {
                return Err(ApiError::internal(format!(
                    "the projector gives rows of {} values, the text model takes {d}",
                    v.n_out
                )));
            }
            // Image rows' keys: the image's hash and the row, with the top bit set so they
            // never equal a token id.
            let h = (img.hash as u64) ^ ((img.hash >> 64) as u64);
            keys.extend((0..emb.len() / d).map(|r| (1 << 63) | (h.wrapping_add(r as u64) >> 1)));
            rows.extend_from_slice(&emb);
        }
        Ok(Prompt { keys, rows })
    }

    /// One token for every active slot, in one forward pass; slots whose client went away
    /// are freed first.
    fn decode_step(&mut self) {
        let m = &self.shared.metrics;
        for s in &mut self.slots {
            if s.active.as_ref().is_some_and(|a| a.events.is_closed()) {
                s.active = None;
                m.disconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
        let ready = |s: &Slot| s.active.as_ref().and_then(|a| a.next);
        let ids: Vec<u32> = self.slots.iter().filter_map(ready).collect();
        if ids.is_empty() {
            return;
        }
        let start = Instant::now();
        let mut caches: Vec<&mut KvCache> = self
            .slots
            .iter_mut()
            .filter(|s| ready(s).is_some())
            .map(|s| &mut s.cache)
            .collect();
        let result = self
            .p
            .text
            .embed(&ids)
            .and_then(|x| self.p.text.forward_slots(x, &mut caches, &self.p.pool));
        m.time(Phase::Decode, start.elapsed());
        m.decode_steps.fetch_add(1, Ordering::Relaxed);
        m.decode_rows.fetch_add(ids.len() as u64, Ordering::Relaxed);
        let n_vocab = self.p.text.config.n_vocab;
        let mut row = 0;
        for s in self.slots.iter_mut() {
            let Some(id) = ready(s) else { continue };
            match &result {
                Ok(logits) => {
                    s.keys.push(u64::from(id));
                    if let Some(a) = s.active.as_mut() {
                        a.next = None;
                    }
                    advance(
                        self.p,
                        s,
                        &logits[row * n_vocab..(row + 1) * n_vocab],
                        self.shared,
                    );
                }
                Err(e) => {
                    if let Some(a) = s.active.take() {
                        let _ = a
                            .events
                            .send(Event::Error(ApiError::internal(e.to_string())));
                    }
                }
            }
            row += 1;
        }
    }
}

/// Samples the slot's next token from `logits` and sends it; ends the reply at an
/// end-of-generation token, a stop string, the token budget or a full context.
fn advance(p: &Pipeline<'_, Tokenizer>, slot: &mut Slot, logits: &[f32], shared: &Shared) {
    let Some(a) = slot.active.as_mut() else {
        return;
    };
    let id = a.sampler.sample(logits, &a.tokens);
    let finish = if Tokenize::is_eog(&p.tokenizer, id) {
        Some("stop")
    } else {
        a.tokens.push(id);
        shared
            .metrics
            .completion_tokens
            .fetch_add(1, Ordering::Relaxed);
        let text = a.reply.push(&Tokenize::piece(&p.tokenizer, id));
        let _ = a.events.send(Event::Token { id: Some(id), text });
        if a.reply.stopped() {
            Some("stop")
        } else if a.tokens.len() >= a.max_tokens || slot.cache.len() >= slot.cache.n_ctx() {
            Some("length")
        } else {
            a.next = Some(id);
            None
        }
    };
    if let Some(finish) = finish {
        let Some(a) = slot.active.take() else { return };
        let (rest, _) = a.reply.finish();
        if !rest.is_empty() {
            let _ = a.events.send(Event::Token {
                id: None,
                text: rest,
            });
        }
        let _ = a.events.send(Event::Done {
            finish,
            completion_tokens: a.tokens.len(),
        });
    }
}
