//! Speculative decoding: a drafter proposes a few tokens, the target model evaluates them all in
//! one forward pass (the row it had to run anyway plus one row per proposal, read with one pass
//! over the weights), keeps the longest prefix its own choice agrees with, and adds its own
//! token where they part. Decode is bound by reading the weights, so k+1 rows cost little more
//! than one.
//!
//! Greedy output is the target's alone, token for token. Sampling keeps the target's
//! distribution by the standard rule (Leviathan et al. 2023; Chen et al. 2023): a draft token
//! x drawn from q is kept with probability min(1, p(x)/q(x)), else the token is drawn from
//! norm(max(0, p - q)). A deterministic drafter (prompt lookup, or a draft model taking its
//! argmax) has q one-hot at the proposal: the rule keeps x with probability p(x) and otherwise
//! draws from p without x. A draft model can also draw its proposals from its own q
//! ([`ModelDrafter::sampling`]), which a sampling target keeps far more often.
//!
//! Two drafters: a smaller model sharing the target's vocabulary ([`ModelDrafter`], its own KV
//! cache rolled back past rejected proposals), and prompt lookup ([`LookupDrafter`]: the
//! continuation of the latest earlier occurrence of the last few tokens, llama.cpp's
//! `--lookup` / prompt-lookup decoding), which needs no second model.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::gguf::GgufFile;
use crate::sampling::Sampler;
use crate::text::{KvCache, Logits, TextError, TextModel};
use crate::threadpool::ThreadPool;

/// A turn's input rows as the target model sees them, for a drafter to follow.
pub struct TurnInput<'r> {
    /// One token id per row; media rows hold a stand-in id.
    pub ids: &'r [u32],
    /// Which rows are image or video rows (indices into `ids`).
    pub media: &'r [Range<usize>],
    /// The rows, `[ids.len(), target width]`: token embeddings and the projector's output.
    pub rows: &'r [f32],
}

/// Proposes tokens for the target model to verify.
pub trait Drafter {
    /// Follows a turn's input (the prompt) into the drafter's state.
    fn prefill(&mut self, input: &TurnInput, pool: &ThreadPool) -> Result<(), TextError>;
    /// Up to `k` tokens to follow `reply` (the reply so far, its last token the one the target
    /// just chose). Fewer, or none, when the drafter has nothing it trusts.
    fn propose(
        &mut self,
        reply: &[u32],
        k: usize,
        pool: &ThreadPool,
    ) -> Result<Vec<u32>, TextError>;
    /// The reply is over and the target's cache holds `kept` of its tokens: a next turn follows
    /// them.
    fn end_reply(&mut self, kept: &[u32], pool: &ThreadPool) -> Result<(), TextError>;
    /// The drafter's state before a turn, for [`Drafter::rollback`].
    fn mark(&self) -> usize;
    /// Back to the state of `mark` (a turn taken back).
    fn rollback(&mut self, mark: usize);
    /// The distributions the last proposals were drawn from, one a proposal; empty for a
    /// deterministic drafter (q one-hot at each proposal).
    fn distributions(&self) -> &[Vec<(u32, f64)>] {
        &[]
    }
}

/// A drafter lent for a while (a caller keeping it to look at afterwards).
impl<D: Drafter + ?Sized> Drafter for &mut D {
    fn prefill(&mut self, input: &TurnInput, pool: &ThreadPool) -> Result<(), TextError> {
        (**self).prefill(input, pool)
    }
    fn propose(
        &mut self,
        reply: &[u32],
        k: usize,
        pool: &ThreadPool,
    ) -> Result<Vec<u32>, TextError> {
        (**self).propose(reply, k, pool)
    }
    fn end_reply(&mut self, kept: &[u32], pool: &ThreadPool) -> Result<(), TextError> {
        (**self).end_reply(kept, pool)
    }
    fn mark(&self) -> usize {
        (**self).mark()
    }
    fn rollback(&mut self, mark: usize) {
        (**self).rollback(mark)
    }
    fn distributions(&self) -> &[Vec<(u32, f64)>] {
        (**self).distributions()
    }
}

/// A smaller model with the target's vocabulary, decoding greedily in its own KV cache.
pub struct ModelDrafter<'m> {
    model: &'m TextModel<'m>,
    cache: KvCache,
    /// Cache positions before this reply (prompts and earlier turns).
    reply_start: usize,
    /// Reply tokens the cache holds after `reply_start` (proposals included, until rolled back).
    fed: Vec<u32>,
    /// Whether the last prompt's media rows went in (the widths match) or were left out.
    sees_media: Option<bool>,
    /// Stop drafting when the draft's own choice is less likely than this (llama.cpp's
    /// `--draft-p-min`; 0 drafts all k).
    pub p_min: f32,
    /// Draw proposals from the draft's own distribution under these settings (the target's,
    /// with another seed) instead of taking its argmax: when the target samples, proposals
    /// drawn from q are kept with probability min(1, p/q), far more often than an argmax is
    /// kept with probability p. Its repetition penalty sees only the reply.
    pub sampling: Option<Sampler>,
    /// The distributions of the last proposals, when sampled.
    q: Vec<Vec<(u32, f64)>>,
}

impl<'m> ModelDrafter<'m> {
    /// A drafter running `model` in `cache` (sized as the target's: the draft never holds more
    /// positions than the target).
    pub fn new(model: &'m TextModel<'m>, cache: KvCache) -> ModelDrafter<'m> {
        ModelDrafter {
            model,
            cache,
            reply_start: 0,
            fed: Vec::new(),
            sees_media: None,
            p_min: 0.0,
            sampling: None,
            q: Vec::new(),
        }
    }

    /// Whether the last prompt's image rows reached the draft (its width is the target's), or
    /// `None` before any prompt with media.
    pub fn sees_media(&self) -> Option<bool> {
        self.sees_media
    }

    /// The draft's cache.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// The draft's cache, the drafter done with (tests compare it with a plain run's).
    pub fn into_cache(self) -> KvCache {
        self.cache
    }

    /// Runs `ids` after what the cache holds; the last row's logits.
    fn feed(&mut self, ids: &[u32], pool: &ThreadPool) -> Result<Vec<f32>, TextError> {
        self.model
            .forward(self.model.embed(ids)?, &mut self.cache, Logits::Last, pool)
    }

    /// Makes the cache hold exactly `reply[..upto]` after `reply_start`, keeping the common
    /// prefix of what it held.
    fn sync(&mut self, reply: &[u32], upto: usize) {
        let common = self
            .fed
            .iter()
            .zip(&reply[..upto])
            .take_while(|(a, b)| a == b)
            .count();
        self.cache.truncate(self.reply_start + common);
        self.fed.truncate(common);
    }
}

impl Drafter for ModelDrafter<'_> {
    fn prefill(&mut self, input: &TurnInput, pool: &ThreadPool) -> Result<(), TextError> {
        let d = self.model.config.n_embd;
        let width = input.rows.len() / input.ids.len().max(1);
        let share = width == d;
        if !input.media.is_empty() {
            self.sees_media = Some(share);
        }
        // The draft embeds the text itself (its own table); media rows are the target's
        // projector output, usable only at the draft's width. Without them the draft's cache
        // simply has fewer positions than the target's.
        let mut rows = Vec::new();
        let mut at = 0;
        let mut media = input.media.to_vec();
        media.sort_by_key(|r| r.start);
        for r in media
            .iter()
            .chain(std::iter::once(&(input.ids.len()..input.ids.len())))
        {
            rows.extend(self.model.embed(&input.ids[at..r.start])?);
            if share {
                rows.extend_from_slice(&input.rows[r.start * width..r.end * width]);
            }
            at = r.end;
        }
        if !rows.is_empty() {
            self.model
                .forward(rows, &mut self.cache, Logits::Last, pool)?;
        }
        self.reply_start = self.cache.len();
        self.fed.clear();
        Ok(())
    }

    fn propose(
        &mut self,
        reply: &[u32],
        k: usize,
        pool: &ThreadPool,
    ) -> Result<Vec<u32>, TextError> {
        let Some(last) = reply.len().checked_sub(1) else {
            return Ok(Vec::new());
        };
        // Whatever of the reply the cache already holds stays; the last token is always run
        // again, for its logits.
        self.sync(reply, last);
        let todo = reply[self.fed.len()..].to_vec();
        if self.cache.len() + todo.len() > self.cache.n_ctx() {
            return Ok(Vec::new());
        }
        let mut logits = self.feed(&todo, pool)?;
        self.fed.extend_from_slice(&todo);
        let mut drafts = Vec::with_capacity(k);
        self.q.clear();
        while drafts.len() < k {
            let id = match self.sampling.as_mut().filter(|s| !s.is_greedy()) {
                Some(s) => {
                    let q = s.distribution(&logits, &self.fed);
                    let id = s.draw(&q);
                    self.q.push(q);
                    id
                }
                None => crate::ops::argmax(&logits) as u32,
            };
            if self.p_min > 0.0 && top_probability(&logits, id) < self.p_min {
                self.q.truncate(drafts.len());
                break;
            }
            drafts.push(id);
            if drafts.len() == k || self.cache.len() >= self.cache.n_ctx() {
                break;
            }
            logits = self.feed(&[id], pool)?;
            self.fed.push(id);
        }
        Ok(drafts)
    }

    fn end_reply(&mut self, kept: &[u32], pool: &ThreadPool) -> Result<(), TextError> {
        self.sync(kept, kept.len());
        let todo = kept[self.fed.len()..].to_vec();
        if !todo.is_empty() && self.cache.len() + todo.len() <= self.cache.n_ctx() {
            self.feed(&todo, pool)?;
        }
        self.reply_start = self.cache.len();
        self.fed.clear();
        Ok(())
    }

    fn mark(&self) -> usize {
        self.reply_start
    }

    fn rollback(&mut self, mark: usize) {
        self.cache.truncate(mark);
        self.reply_start = mark.min(self.cache.len());
        self.fed.clear();
    }

    fn distributions(&self) -> &[Vec<(u32, f64)>] {
        &self.q
    }
}

/// Softmax probability of `id` under `logits`.
fn top_probability(logits: &[f32], id: u32) -> f32 {
    let m = logits[id as usize];
    let z: f64 = logits.iter().map(|&v| f64::from(v - m).exp()).sum();
    (1.0 / z) as f32
}

/// Prompt lookup: the continuation of the latest earlier occurrence of the last `max_ngram`
/// (down to `min_ngram`) tokens of the prompt and reply so far. No second model; it pays off
/// where the answer quotes or repeats (code edits, extraction, summaries with names).
pub struct LookupDrafter {
    /// Text token ids of the conversation so far (media rows left out).
    context: Vec<u32>,
    /// Longest n-gram matched first.
    pub max_ngram: usize,
    /// Shortest n-gram accepted as a match.
    pub min_ngram: usize,
}

impl LookupDrafter {
    /// Matches of `max_ngram` tokens down to `min_ngram` (llama.cpp's prompt lookup: 3 to 1).
    pub fn new(max_ngram: usize, min_ngram: usize) -> LookupDrafter {
        let min_ngram = min_ngram.max(1);
        LookupDrafter {
            context: Vec::new(),
            max_ngram: max_ngram.max(min_ngram),
            min_ngram,
        }
    }
}

/// Up to `k` tokens that followed the latest earlier occurrence of `seq`'s last n tokens, for n
/// from `max_n` down to `min_n`; empty when none occurs.
pub fn lookup(seq: &[u32], k: usize, max_n: usize, min_n: usize) -> Vec<u32> {
    for n in (min_n.max(1)..=max_n).rev() {
        if seq.len() <= n {
            continue;
        }
        let pattern = &seq[seq.len() - n..];
        // Latest start first: recent text predicts the next tokens best.
        if let Some(start) = (0..seq.len() - n)
            .rev()
            .find(|&i| &seq[i..i + n] == pattern)
        {
            let from = start + n;
            return seq[from..(from + k).min(seq.len())].to_vec();
        }
    }
    Vec::new()
}

impl Drafter for LookupDrafter {
    fn prefill(&mut self, input: &TurnInput, _pool: &ThreadPool) -> Result<(), TextError> {
        let in_media = |i: usize| input.media.iter().any(|r| r.contains(&i));
        self.context.extend(
            input
                .ids
                .iter()
                .enumerate()
                .filter(|&(i, _)| !in_media(i))
                .map(|(_, &id)| id),
        );
        Ok(())
    }

    fn propose(
        &mut self,
        reply: &[u32],
        k: usize,
        _pool: &ThreadPool,
    ) -> Result<Vec<u32>, TextError> {
        let mut seq = self.context.clone();
        seq.extend_from_slice(reply);
        Ok(lookup(&seq, k, self.max_ngram, self.min_ngram))
    }

    fn end_reply(&mut self, kept: &[u32], _pool: &ThreadPool) -> Result<(), TextError> {
        self.context.extend_from_slice(kept);
        Ok(())
    }

    fn mark(&self) -> usize {
        self.context.len()
    }

    fn rollback(&mut self, mark: usize) {
        self.context.truncate(mark);
    }
}

/// How speculation runs.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecConfig {
    /// Proposals per verify pass at most (llama.cpp's `--draft-max`).
    pub max: usize,
    /// Fewer proposals than this run a plain decode step instead (llama.cpp's `--draft-min`).
    pub min: usize,
    /// Benchmarks only: keep each proposal with this probability whatever the target says
    /// (the output is then not the model's), so speed can be measured against acceptance on
    /// random-weight files, which accept almost nothing.
    pub force_accept: Option<f64>,
}

impl Default for SpecConfig {
    fn default() -> Self {
        SpecConfig {
            max: 8,
            min: 0,
            force_accept: None,
        }
    }
}

/// Counts and times of speculative decoding.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SpecStats {
    /// Verify passes with at least one proposal.
    pub verify_passes: usize,
    /// Decode steps run without proposals.
    pub plain_steps: usize,
    /// Tokens proposed.
    pub proposed: usize,
    /// Proposals the target kept.
    pub accepted: usize,
    /// Time spent drafting.
    #[serde(skip)]
    pub draft_time: Duration,
    /// Time in the target's forward passes.
    #[serde(skip)]
    pub verify_time: Duration,
}

impl SpecStats {
    /// Kept proposals over proposals (0 before any).
    pub fn acceptance(&self) -> f64 {
        self.accepted as f64 / self.proposed.max(1) as f64
    }
}

/// A drafter, its settings, and what it has done so far.
pub struct Speculation<'d> {
    /// Where proposals come from.
    pub drafter: Box<dyn Drafter + 'd>,
    /// Settings.
    pub config: SpecConfig,
    /// Counts so far.
    pub stats: SpecStats,
}

/// One decode step's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Proposals the target kept, already evaluated in its cache after the step's token.
    pub accepted: Vec<u32>,
    /// The target's own next token, chosen but not yet evaluated.
    pub next: u32,
}

impl<'d> Speculation<'d> {
    /// `drafter` with `config`.
    pub fn new(drafter: Box<dyn Drafter + 'd>, config: SpecConfig) -> Speculation<'d> {
        Speculation {
            drafter,
            config,
            stats: SpecStats::default(),
        }
    }

    /// Evaluates `id` (chosen, not yet in `cache`) in `target` together with up to
    /// `config.max` (and `limit`) proposals after it, in one forward pass, and returns the
    /// proposals kept and the target's next token; `cache` then ends after the last kept one.
    /// `reply` is the reply so far and `history` every token so far (for the sampler's
    /// penalty), both ending with `id`. The caller leaves room for `id` in the cache.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        target: &TextModel,
        cache: &mut KvCache,
        id: u32,
        reply: &[u32],
        history: &[u32],
        limit: usize,
        sampler: &mut Sampler,
        pool: &ThreadPool,
    ) -> Result<Step, TextError> {
        let room = cache.n_ctx().saturating_sub(cache.len() + 1);
        let k = self.config.max.min(limit).min(room);
        let start = Instant::now();
        let mut drafts = if k > 0 {
            self.drafter.propose(reply, k, pool)?
        } else {
            Vec::new()
        };
        // A draft with a padded vocabulary can name ids the target lacks.
        let n_vocab = target.config.n_vocab;
        let valid = drafts
            .iter()
            .take_while(|&&t| (t as usize) < n_vocab)
            .count();
        drafts.truncate(valid.min(k));
        if drafts.len() < self.config.min.max(1) {
            drafts.clear();
        }
        self.stats.draft_time += start.elapsed();

        let start = Instant::now();
        let base = cache.len();
        let mut rows = vec![id];
        rows.extend_from_slice(&drafts);
        let which = if drafts.is_empty() {
            Logits::Last
        } else {
            Logits::All
        };
        let logits = target.forward(target.embed(&rows)?, cache, which, pool)?;
        self.stats.verify_time += start.elapsed();

        let mut hist = history.to_vec();
        let mut accepted = Vec::with_capacity(drafts.len());
        let mut next = None;
        for (i, &d) in drafts.iter().enumerate() {
            let row = &logits[i * n_vocab..(i + 1) * n_vocab];
            let verdict = match self.config.force_accept {
                Some(rate) if sampler.uniform() < rate => Ok(d),
                Some(_) => Err(sampler.sample(row, &hist)),
                None => match self.drafter.distributions().get(i) {
                    Some(q) if !sampler.is_greedy() => {
                        let p = sampler.distribution(row, &hist);
                        accept_or_resample(sampler, &p, q, d)
                    }
                    _ => verify(sampler, row, &hist, d),
                },
            };
            match verdict {
                Ok(d) => {
                    accepted.push(d);
                    hist.push(d);
                }
                Err(own) => {
                    next = Some(own);
                    break;
                }
            }
        }
        let next = match next {
            Some(t) => t,
            None => sampler.sample(&logits[drafts.len() * n_vocab..], &hist),
        };
        cache.truncate(base + 1 + accepted.len());
        if drafts.is_empty() {
            self.stats.plain_steps += 1;
        } else {
            self.stats.verify_passes += 1;
        }
        self.stats.proposed += drafts.len();
        self.stats.accepted += accepted.len();
        Ok(Step { accepted, next })
    }
}

/// The target's verdict on draft token `d` given its logits `row`: `Ok(d)` kept, or `Err` with
/// the token it chose instead. Greedy: kept when it is the target's own choice (the argmax,
/// exactly as a plain decode step picks it).
fn verify(sampler: &mut Sampler, row: &[f32], history: &[u32], d: u32) -> Result<u32, u32> {
    if sampler.is_greedy() {
        let own = sampler.sample(row, history);
        return if own == d { Ok(d) } else { Err(own) };
    }
    let p = sampler.distribution(row, history);
    accept_or_resample(sampler, &p, &[(d, 1.0)], d)
}

/// The speculative-sampling rule for one draft token `x` drawn from `q`, the target's
/// distribution being `p` (both as [`Sampler::distribution`] gives: ids with probabilities):
/// `Ok(x)` with probability min(1, p(x)/q(x)), else `Err(y)` with y drawn from
/// norm(max(0, p - q)). The token that comes out is distributed as p.
pub fn accept_or_resample(
    sampler: &mut Sampler,
    p: &[(u32, f64)],
    q: &[(u32, f64)],
    x: u32,
) -> Result<u32, u32> {
    let q_of: HashMap<u32, f64> = q.iter().copied().collect();
    let px = p.iter().find(|e| e.0 == x).map_or(0.0, |e| e.1);
    let qx = q_of.get(&x).copied().unwrap_or(0.0);
    let ratio = if qx > 0.0 { px / qx } else { 0.0 };
    if sampler.uniform() < ratio.min(1.0) {
        return Ok(x);
    }
    let mut residual: Vec<(u32, f64)> = p
        .iter()
        .map(|&(id, pv)| (id, (pv - q_of.get(&id).copied().unwrap_or(0.0)).max(0.0)))
        .filter(|e| e.1 > 0.0)
        .collect();
    let z: f64 = residual.iter().map(|e| e.1).sum();
    if z <= 0.0 {
        // Only reachable by rounding when p equals q; p itself is then the right law.
        return Err(sampler.draw(p));
    }
    for e in &mut residual {
        e.1 /= z;
    }
    Err(sampler.draw(&residual))
}

/// A draft model's vocabulary is not the target's.
#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    /// The draft file could not be opened or loaded.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The two files' token lists differ.
    #[error(
        "draft model {draft} cannot draft for {target}: {problem}; a draft model must share \
         the target's tokenizer (the same family, e.g. Qwen2 0.5B for Qwen2 7B)"
    )]
    Vocab {
        /// The target model file.
        target: PathBuf,
        /// The draft model file.
        draft: PathBuf,
        /// How the vocabularies differ.
        problem: String,
    },
}

/// Vocabularies that differ by more entries than this are different tokenizers, not padding
/// (llama.cpp's `SPEC_VOCAB_MAX_SIZE_DIFFERENCE`).
pub const MAX_VOCAB_PADDING: usize = 128;

/// Checks that `draft` can draft for `target`: the same tokenizer model and token list, up to
/// a few padding entries at the end (the embeddings of two sizes of one family are often padded
/// to different multiples).
pub fn check_vocab(target: &GgufFile, draft: &GgufFile) -> Result<(), DraftError> {
    let fail = |problem: String| DraftError::Vocab {
        target: target.path().to_path_buf(),
        draft: draft.path().to_path_buf(),
        problem,
    };
    let model = |f: &GgufFile| {
        f.get(crate::gguf::keys::tokenizer::MODEL)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (mt, md) = (model(target), model(draft));
    if mt != md {
        return Err(fail(format!(
            "tokenizer.ggml.model is '{mt}' in the target and '{md}' in the draft"
        )));
    }
    let tokens = |f: &GgufFile| -> Result<Vec<Vec<u8>>, DraftError> {
        f.get(crate::gguf::keys::tokenizer::TOKENS)
            .and_then(|v| v.as_array())
            .and_then(|a| a.as_strings())
            .map(<[Vec<u8>]>::to_vec)
            .ok_or_else(|| {
                fail(format!(
                    "{} has no tokenizer.ggml.tokens list",
                    f.path().display()
                ))
            })
    };
    let (tt, td) = (tokens(target)?, tokens(draft)?);
    if tt.len().abs_diff(td.len()) > MAX_VOCAB_PADDING {
        return Err(fail(format!(
            "the target has {} tokens, the draft {}",
            tt.len(),
            td.len()
        )));
    }
    if let Some(i) = (0..tt.len().min(td.len())).find(|&i| tt[i] != td[i]) {
        return Err(fail(format!(
            "token {i} is '{}' in the target and '{}' in the draft",
            String::from_utf8_lossy(&tt[i]),
            String::from_utf8_lossy(&td[i])
        )));
    }
    Ok(())
}

/// Opens a draft model file for `target`: its vocabulary checked first, then (with `repack`)
/// its weights interleaved for decode and paged in, as the target's are.
pub fn open_draft(
    path: &Path,
    target: &GgufFile,
    repack: bool,
    pool: &ThreadPool,
) -> Result<GgufFile, DraftError> {
    let mut f = GgufFile::open(path).map_err(TextError::from)?;
    check_vocab(target, &f)?;
    if repack {
        // As for the target: a failure leaves the weights as mapped, only slower.
        let _ = crate::text::interleave_weights(&mut f, pool);
    }
    f.populate();
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_takes_the_longest_latest_match() {
        // "1 2 3" occurs twice before the end; the latest is followed by 9 9.
        let seq = [1, 2, 3, 4, 5, 1, 2, 3, 9, 9, 7, 2, 3];
        assert_eq!(lookup(&seq, 2, 3, 1), vec![9, 9]);
        // Only the 1-gram "8" matches: the continuation after its latest occurrence.
        assert_eq!(lookup(&[8, 6, 5, 8], 5, 3, 1), vec![6, 5, 8]);
        assert_eq!(lookup(&[8, 6, 5, 8], 5, 3, 2), Vec::<u32>::new());
        assert_eq!(lookup(&[1, 2, 3], 4, 3, 1), Vec::<u32>::new());
        // k bounds the proposals.
        assert_eq!(lookup(&[1, 2, 3, 4, 5, 6, 1], 3, 3, 1), vec![2, 3, 4]);
    }

    #[test]
    fn lookup_drafter_leaves_media_rows_out_and_rolls_back() {
        let pool = ThreadPool::new(1);
        let mut d = LookupDrafter::new(3, 1);
        let ids = [5, 7, 7, 7, 6, 1];
        let input = TurnInput {
            ids: &ids,
            media: std::slice::from_ref(&(1..4)),
            rows: &[],
        };
        d.prefill(&input, &pool).unwrap();
        assert_eq!(d.context, vec![5, 6, 1]);
        let m = d.mark();
        d.end_reply(&[5, 6], &pool).unwrap();
        // The latest earlier "5" (the last reply's) was followed by 6 and the 5 just chosen.
        assert_eq!(d.propose(&[5], 4, &pool).unwrap(), vec![6, 5]);
        d.rollback(m);
        assert_eq!(d.context, vec![5, 6, 1]);
    }
}
