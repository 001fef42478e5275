//! The one thread that owns the model: it loads it, then admits queued requests into slots
//! (each with its own KV cache) and runs continuous batching: every step decodes one token for
//! every active slot in one batched forward pass, and a request joins (its prefill is a step
//! of its own) or leaves between steps. The async handlers only talk to it through channels,
//! so no model work runs on the HTTP runtime's threads. With a drafter (`--draft-model`,
//! `--lookup`), a step with one slot decoding verifies that slot's proposals instead
//! ([`super::DraftOptions`]).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::errors::ApiError;
use super::images::{EmbeddingCache, Image};
use super::metrics::Phase;
use super::{Drafting, ServerConfig, ServerEvent, Shared, State};
use crate::chat::Message;
use crate::load::{self, ModelFiles};
use crate::pipeline::{Pipeline, ReplyText, Tokenize};
use crate::sampling::{Sampler, SamplerConfig};
use crate::speculative::{
    open_draft, Drafter, LookupDrafter, ModelDrafter, Speculation, TurnInput,
};
use crate::text::{KvCache, Logits, TextModel};
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
    /// Never end at an end-of-generation token (llama-server's `ignore_eos`).
    pub ignore_eos: bool,
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
    ignore_eos: bool,
    /// With a drafter: the prompt, until the drafter has followed it (on the first step that
    /// drafts for this reply).
    draft_prompt: Option<Prompt>,
}

/// One sequence's KV cache and what it holds.
struct Slot<'m> {
    cache: KvCache,
    /// A key per cached position: token ids, and image rows as their image's hash and row, so
    /// a prefix match never mistakes one image for another.
    keys: Vec<u64>,
    active: Option<Active>,
    /// The slot's drafter (its own draft cache), when the server drafts.
    spec: Option<Speculation<'m>>,
}

/// The prompt of a request: its input rows and their keys.
#[derive(Clone)]
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
    let draft_file = match cfg.draft.as_ref().map(|d| &d.drafting) {
        Some(Drafting::Model { path, .. }) => {
            match open_draft(path, &files.text, cfg.load.repack, &p.pool) {
                Ok(f) => Some(f),
                Err(e) => return fail(e.to_string()),
            }
        }
        _ => None,
    };
    let draft_model = match draft_file.as_ref().map(TextModel::load).transpose() {
        Ok(m) => m,
        Err(e) => return fail(format!("draft model: {e}")),
    };
    let mut slots = Vec::with_capacity(cfg.parallel);
    for _ in 0..cfg.parallel.max(1) {
        let drafter: Option<Box<dyn Drafter + '_>> = match (&cfg.draft, &draft_model) {
            (Some(d), Some(m)) => match m.try_new_cache(n_ctx, cfg.cache_type) {
                Ok(cache) => {
                    let mut md = ModelDrafter::new(m, cache);
                    if let Drafting::Model { p_min, .. } = d.drafting {
                        md.p_min = p_min;
                    }
                    Some(Box::new(md))
                }
                Err(e) => return fail(format!("draft model: {e}")),
            },
            (
                Some(super::DraftOptions {
                    drafting: Drafting::Lookup { ngram },
                    ..
                }),
                _,
            ) => Some(Box::new(LookupDrafter::new(*ngram, 1))),
            _ => None,
        };
        let spec = drafter
            .zip(cfg.draft.as_ref())
            .map(|(d, o)| Speculation::new(d, o.config.clone()));
        match p.text.try_new_cache(n_ctx, cfg.cache_type) {
            Ok(cache) => slots.push(Slot {
                cache,
                keys: Vec::new(),
                active: None,
                spec,
            }),
            Err(e) => return fail(e.to_string()),
        }
    }
    // Image rows reach a draft model only at the target's width (as `run` does).
    let draft_rows = draft_model
        .as_ref()
        .is_some_and(|m| m.config.n_embd == p.text.config.n_embd);
    let eog = (0..p.text.config.n_vocab as u32)
        .filter(|&id| Tokenize::is_eog(&p.tokenizer, id))
        .collect();
    (cfg.on_event)(ServerEvent::Loaded {
        warnings: loaded.warnings.iter().map(|w| w.to_string()).collect(),
        n_ctx,
        slots: slots.len(),
        seconds: t0.elapsed().as_secs_f64(),
        placement: p.text.placement(),
        n_layer: p.text.config.n_layer,
        vision_on_device: p.vision.as_ref().map(|v| v.device().is_some()),
    });
    shared.set_state(State::Ready);
    let mut s = Scheduler {
        p: &p,
        slots,
        pending: VecDeque::new(),
        images: EmbeddingCache::new(cfg.image_cache_bytes),
        shared: &shared,
        draft_rows,
        eog,
    };
    s.serve(jobs);
}

struct Scheduler<'p, 'a, 'm> {
    p: &'p Pipeline<'a, Tokenizer>,
    slots: Vec<Slot<'m>>,
    pending: VecDeque<Job>,
    images: EmbeddingCache,
    shared: &'p Shared,
    /// Whether the draft model takes the prompt's image rows too.
    draft_rows: bool,
    /// The end-of-generation tokens (masked for `ignore_eos`).
    eog: Vec<u32>,
}

impl Scheduler<'_, '_, '_> {
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
        let shared_prefix = |s: &Slot<'_>| {
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
        let draft_prompt = slot.spec.is_some().then(|| Prompt {
            keys: prompt.keys.clone(),
            rows: if self.draft_rows {
                prompt.rows
            } else {
                Vec::new()
            },
        });
        slot.active = Some(Active {
            events: job.events,
            sampler: Sampler::new(job.sampling),
            reply: ReplyText::new(&job.stop),
            tokens: Vec::new(),
            max_tokens: job.max_tokens.unwrap_or(usize::MAX),
            next: None,
            ignore_eos: job.ignore_eos,
            draft_prompt,
        });
        // Counted before its first token goes out, so a client that saw a token also sees
        // the slot busy.
        let busy = self.slots.iter().filter(|s| s.active.is_some()).count();
        m.busy_slots.store(busy, Ordering::Relaxed);
        advance(self.p, &mut self.slots[i], &logits, &self.eog, self.shared);
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
        let ready = |s: &Slot<'_>| s.active.as_ref().and_then(|a| a.next);
        let ids: Vec<u32> = self.slots.iter().filter_map(ready).collect();
        if ids.is_empty() {
            return;
        }
        if ids.len() == 1 {
            if let Some(i) = self.slots.iter().position(|s| {
                s.spec.is_some()
                    && s.active
                        .as_ref()
                        .is_some_and(|a| a.next.is_some() && !a.ignore_eos)
            }) {
                return self.speculative_step(i);
            }
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
                        &self.eog,
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

    /// One decode step of slot `i` alone, with speculation: its drafter proposes tokens after
    /// the pending one, the model verifies them all in one forward pass, and every kept token
    /// goes out as a plain step would send it. The draft follows the prompt on the slot's
    /// first such step of a reply (and catches up on the reply itself when it drafts).
    fn speculative_step(&mut self, i: usize) {
        let (p, m) = (self.p, &self.shared.metrics);
        let Slot {
            cache,
            active,
            spec,
            ..
        } = &mut self.slots[i];
        let (Some(a), Some(spec)) = (active.as_mut(), spec.as_mut()) else {
            return;
        };
        let Some(id) = a.next else { return };
        let start = Instant::now();
        let mut result = Ok(());
        if let Some(prompt) = a.draft_prompt.take() {
            let (ids, media) = draft_input(&prompt.keys);
            spec.drafter.rollback(0);
            let input = TurnInput {
                ids: &ids,
                media: &media,
                rows: &prompt.rows,
            };
            result = spec.drafter.prefill(&input, &p.pool);
        }
        let (proposed, accepted) = (spec.stats.proposed, spec.stats.accepted);
        let base = cache.len();
        // Proposals past the token budget would be thrown away: the pending token and the
        // step's own next one already count.
        let limit = a.max_tokens.saturating_sub(a.tokens.len() + 1);
        let step = result.and_then(|()| {
            spec.step(
                &p.text,
                cache,
                id,
                &a.tokens,
                &a.tokens,
                limit,
                &mut a.sampler,
                &p.pool,
            )
        });
        m.time(Phase::Decode, start.elapsed());
        m.decode_steps.fetch_add(1, Ordering::Relaxed);
        m.decode_rows.fetch_add(1, Ordering::Relaxed);
        m.draft_proposed
            .fetch_add((spec.stats.proposed - proposed) as u64, Ordering::Relaxed);
        m.draft_accepted
            .fetch_add((spec.stats.accepted - accepted) as u64, Ordering::Relaxed);
        let slot = &mut self.slots[i];
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                slot.cache.truncate(slot.keys.len());
                if let Some(a) = slot.active.take() {
                    let _ = a
                        .events
                        .send(Event::Error(ApiError::internal(e.to_string())));
                }
                return;
            }
        };
        slot.keys.push(u64::from(id));
        // The kept proposals are in the cache already; each goes out as a plain step's token
        // would, and the reply may end at any of them.
        for (j, &d) in step.accepted.iter().enumerate() {
            if !emit(p, slot, d, base + 1 + j, self.shared) {
                break;
            }
            slot.keys.push(u64::from(d));
            if let Some(a) = slot.active.as_mut() {
                a.next = None;
            }
        }
        if slot.active.is_some() {
            let cached = slot.keys.len();
            emit(p, slot, step.next, cached, self.shared);
        }
        slot.cache.truncate(slot.keys.len());
    }
}

/// A prompt's keys as a drafter's input: token ids, and the image rows (keys with the top bit
/// set) as ranges with a stand-in id.
fn draft_input(keys: &[u64]) -> (Vec<u32>, Vec<Range<usize>>) {
    let media_row = |k: u64| k >> 63 == 1;
    let ids = keys
        .iter()
        .map(|&k| if media_row(k) { 0 } else { k as u32 })
        .collect();
    let mut media: Vec<Range<usize>> = Vec::new();
    for (r, &k) in keys.iter().enumerate() {
        if !media_row(k) {
            continue;
        }
        match media.last_mut() {
            Some(last) if last.end == r => last.end = r + 1,
            _ => media.push(r..r + 1),
        }
    }
    (ids, media)
}

/// Samples the slot's next token from `logits` (end-of-generation tokens `eog` masked for
/// `ignore_eos`) and sends it.
fn advance(
    p: &Pipeline<'_, Tokenizer>,
    slot: &mut Slot<'_>,
    logits: &[f32],
    eog: &[u32],
    shared: &Shared,
) {
    let Some(a) = slot.active.as_mut() else {
        return;
    };
    let id = if a.ignore_eos && !eog.is_empty() {
        let mut l = logits.to_vec();
        for &t in eog {
            l[t as usize] = f32::NEG_INFINITY;
        }
        a.sampler.sample(&l, &a.tokens)
    } else {
        a.sampler.sample(logits, &a.tokens)
    };
    let cached = slot.cache.len();
    emit(p, slot, id, cached, shared);
}

/// Sends `id` as the slot's next reply token, `cached` positions being in its cache before
/// it; ends the reply at an end-of-generation token, a stop string, the token budget or a
/// full context. Returns whether the reply goes on (then `id` is the next step's input).
fn emit(
    p: &Pipeline<'_, Tokenizer>,
    slot: &mut Slot<'_>,
    id: u32,
    cached: usize,
    shared: &Shared,
) -> bool {
    let Some(a) = slot.active.as_mut() else {
        return false;
    };
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
        } else if a.tokens.len() >= a.max_tokens || cached >= slot.cache.n_ctx() {
            Some("length")
        } else {
            a.next = Some(id);
            None
        }
    };
    let Some(finish) = finish else {
        return true;
    };
    if let Some(a) = slot.active.take() {
        // Counted free before the client hears the reply is done, so a /metrics read after
        // the reply never sees its slot busy (the loop's own count comes only after the step).
        let _ = shared
            .metrics
            .busy_slots
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1));
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
    false
}
