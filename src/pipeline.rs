//! Image(s) + prompt -> tokens: renders the chat, tokenizes it, encodes each image and splices
//! its embeddings in at the image token, runs the prefill, then decodes and streams text.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::chat::{ChatTemplate, Message, Role};
use crate::image::{load_image, ImageError};
use crate::sampling::Sampler;
use crate::speculative::{Speculation, TurnInput};
use crate::text::{KvCache, Logits, TextError, TextModel};
use crate::threadpool::ThreadPool;
use crate::tokenizer::Utf8Stream;
use crate::vision::{VisionEncoder, VisionError};

/// What the pipeline needs of a tokenizer.
pub trait Tokenize {
    /// Token ids of `text`, special tokens (`<image>`, `<|im_start|>`) recognised, with the
    /// vocabulary's BOS first when `add_bos` and the vocabulary asks for one.
    fn encode(&self, text: &str, add_bos: bool) -> Vec<u32>;
    /// Token ids of text that continues the sequence (after an image): no BOS, no leading
    /// space prefix.
    fn encode_continuation(&self, text: &str) -> Vec<u32>;
    /// The bytes token `id` stands for (for streaming output).
    fn piece(&self, id: u32) -> Vec<u8>;
    /// Whether `id` ends generation (EOS, `<|im_end|>`, ...).
    fn is_eog(&self, id: u32) -> bool;
    /// The id of a token written exactly as `text`, if the vocabulary has one.
    fn token_id(&self, text: &str) -> Option<u32>;
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The text model failed (context full, bad token, ...).
    #[error(transparent)]
    Text(#[from] TextError),
    /// The vision encoder failed.
    #[error(transparent)]
    Vision(#[from] VisionError),
    /// An image could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A video could not be read.
    #[error(transparent)]
    Video(#[from] crate::image::video::VideoError),
    /// The model's chat template failed on this conversation.
    #[error(transparent)]
    Template(#[from] crate::chat::TemplateError),
    /// The request has images or a video, but the pipeline has no vision encoder (no mmproj
    /// file was loaded). Holds what was given: "an image" or "a video".
    #[error("{0} was given but no mmproj (vision projector) file is loaded")]
    NoVisionEncoder(&'static str),
    /// The prompt's `<image>` placeholders do not match the images given.
    #[error("the prompt has {placeholders} <image> placeholders for {images} images")]
    PlaceholderCount { placeholders: usize, images: usize },
    /// The rendered prompt holds more `<image>` placeholders than the request has images.
    #[error("more <image> placeholders than images")]
    ExtraImagePlaceholder,
    /// The rendered prompt holds a `<video>` placeholder but the request has no video.
    #[error("a <video> placeholder but no video")]
    NoVideo,
    /// The chat template placed fewer media than the request holds.
    #[error("the chat template left no place for an image or video")]
    MediaNotPlaced,
    /// The cache passed with a conversation is not the one it was built in.
    #[error(
        "the cache holds {cache} positions, the conversation {conversation}: not this \
         conversation's cache"
    )]
    ForeignCache { cache: usize, conversation: usize },
}

/// One question about zero or more images.
#[derive(Clone, Debug)]
pub struct Request {
    /// The user's text.
    pub prompt: String,
    /// Images, in the order their placeholders appear.
    pub images: Vec<PathBuf>,
    /// A video: a directory of frames, an animated GIF, or a video file (via ffmpeg).
    pub video: Option<PathBuf>,
    /// Frames sampled from the video at most.
    pub max_frames: usize,
    /// A system prompt, where the template has one.
    pub system: Option<String>,
    /// Tokens to generate at most.
    pub n_predict: usize,
    /// Strings that end generation when they appear in the output.
    pub stop: Vec<String>,
}

/// Where the time went.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    /// Image loading, preprocessing, encoding and projection.
    pub image_encode: Duration,
    /// Image tokens spliced into the prompt, per image.
    pub image_tokens: Vec<usize>,
    /// Prompt tokens (text and image).
    pub prompt_tokens: usize,
    /// The prefill forward pass.
    pub prefill: Duration,
    /// Tokens generated.
    pub generated: usize,
    /// The decode loop.
    pub decode: Duration,
    /// Time from the request to the first generated token.
    pub first_token: Duration,
    /// The prompt's token ids (image rows stand as the `<image>` token, or 0 without one).
    pub prompt: Vec<u32>,
    /// The generated token ids (without the end-of-generation token).
    pub tokens: Vec<u32>,
    /// Which positions of `prompt` are image or video rows (a draft model of another width
    /// leaves them out).
    pub media: Vec<std::ops::Range<usize>>,
    /// Why the reply ended.
    pub finish: Finish,
}

/// Why a reply ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn (an end-of-generation token).
    #[default]
    EndOfTurn,
    /// A stop string appeared; the reply is cut before it.
    StopString,
    /// The token budget (`n_predict`) ran out.
    MaxTokens,
    /// The context filled up mid-reply. The reply so far is returned, and the turn is taken
    /// back out of the conversation and the cache, so the conversation can go on from before
    /// it.
    ContextFull,
    /// The caller's cancel flag was raised.
    Cancelled,
}

impl Finish {
    /// OpenAI's and llama-server's `finish_reason`: `stop` when the model or a stop string
    /// ended the reply, `length` when a limit did, `cancelled` when the caller did.
    pub fn reason(self) -> &'static str {
        match self {
            Finish::EndOfTurn | Finish::StopString => "stop",
            Finish::MaxTokens | Finish::ContextFull => "length",
            Finish::Cancelled => "cancelled",
        }
    }

    /// Which limit or event ended the reply, in more detail than [`Finish::reason`].
    pub fn detail(self) -> &'static str {
        match self {
            Finish::EndOfTurn => "end_of_turn",
            Finish::StopString => "stop_string",
            Finish::MaxTokens => "max_tokens",
            Finish::ContextFull => "context_full",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// What a multi-turn chat keeps between turns besides its KV cache.
#[derive(Clone, Debug, Default)]
pub struct Conversation {
    /// Turns answered so far.
    pub turns: usize,
    /// Token ids so far (media rows as stand-ins), for the repetition penalty.
    history: Vec<u32>,
    /// The last answer's final token when it was sampled but not evaluated.
    unfed: Vec<u32>,
    /// Cache positions after the last turn (to refuse another conversation's cache).
    in_cache: usize,
}

/// A loaded model pair, ready for requests. [`Pipeline::new`] checks that the two belong
/// together; one built field by field is checked before its first image or video.
pub struct Pipeline<'a, T: Tokenize> {
    /// The language model.
    pub text: TextModel<'a>,
    /// The vision encoder and projector, when an mmproj file was given.
    pub vision: Option<VisionEncoder<'a>>,
    /// The tokenizer.
    pub tokenizer: T,
    /// The chat template.
    pub template: ChatTemplate,
    /// Threads for the forward passes.
    pub pool: ThreadPool,
}

/// Reply text on its way out: bytes become complete UTF-8 ([`Utf8Stream`]), the reply is cut
/// at the first stop string, and text that could be the start of one is held back until it is
/// known not to be, so a stop string never reaches the caller's stream either. Public for
/// callers that decode themselves (the server's batched decode).
pub struct ReplyText {
    utf8: Utf8Stream,
    stops: Vec<String>,
    /// The reply so far (cut at a stop string once one appeared).
    text: String,
    /// How much of `text` was handed out; no stop string can begin before it.
    shown: usize,
    stopped: bool,
}

impl ReplyText {
    /// A reply cut at the first of `stops`.
    pub fn new(stops: &[String]) -> ReplyText {
        ReplyText {
            utf8: Utf8Stream::default(),
            stops: stops.to_vec(),
            text: String::new(),
            shown: 0,
            stopped: false,
        }
    }

    /// Adds a token's bytes; returns the text now safe to show.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let s = self.utf8.push(bytes);
        self.push_text(&s)
    }

    fn push_text(&mut self, s: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.text.push_str(s);
        let tail = &self.text[self.shown..];
        let first_stop = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| tail.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            self.text.truncate(self.shown + at);
            self.stopped = true;
            return self.take(self.text.len());
        }
        // The longest end of the text that a stop string starts with must wait.
        let hold = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(|&k| s.is_char_boundary(k))
                    .map(|k| &s[..k])
            })
            .filter(|p| tail.ends_with(p))
            .map(str::len)
            .max()
            .unwrap_or(0);
        self.take(self.text.len() - hold)
    }

    fn take(&mut self, upto: usize) -> String {
        let out = self.text[self.shown..upto].to_string();
        self.shown = upto;
        out
    }

    /// Whether a stop string ended the reply.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// End of the reply: the held text (an unfinished character as U+FFFD) and the whole reply.
    pub fn finish(mut self) -> (String, String) {
        let rest = self.utf8.finish();
        let mut out = self.push_text(&rest);
        if !self.stopped {
            out.push_str(&self.take(self.text.len()));
        }
        (out, self.text)
    }
}

impl<'a, T: Tokenize> Pipeline<'a, T> {
    /// The pipeline of these parts; refuses an encoder whose projector's rows are not the text
    /// model's width ([`VisionError::WidthMismatch`], naming both files).
    pub fn new(
        text: TextModel<'a>,
        vision: Option<VisionEncoder<'a>>,
        tokenizer: T,
        template: ChatTemplate,
        pool: ThreadPool,
    ) -> Result<Self, VisionError> {
        if let Some(v) = &vision {
            v.check_text_width(text.config.n_embd, text.path())?;
        }
        Ok(Pipeline {
            text,
            vision,
            tokenizer,
            template,
            pool,
        })
    }

    /// Encodes one image file into embeddings `[tokens, n_embd_text]` (see
    /// [`VisionEncoder::embed_image`]).
    pub fn encode_image(
        &self,
        path: &std::path::Path,
        base_only: bool,
    ) -> Result<Vec<f32>, PipelineError> {
        let v = self.encoder("an image")?;
        Ok(v.embed_image(&load_image(path)?, base_only, &self.pool)?)
    }

    /// The vision encoder, for `what` the request holds; checked against the text model's
    /// width here too, for a pipeline built field by field rather than by [`Pipeline::new`].
    fn encoder(&self, what: &'static str) -> Result<&VisionEncoder<'a>, PipelineError> {
        let v = self
            .vision
            .as_ref()
            .ok_or(PipelineError::NoVisionEncoder(what))?;
        v.check_text_width(self.text.config.n_embd, self.text.path())?;
        Ok(v)
    }

    /// The prompt's input rows: the rendered chat is split at each `<image>` / `<video>`
    /// placeholder, the text pieces are tokenized separately (as a tokenizer treats text around
    /// a special token, and without needing the vocabulary to have one), and the media rows go
    /// between them.
    pub fn prompt_embeddings(
        &self,
        req: &Request,
        t: &mut Timings,
    ) -> Result<(Vec<u32>, Vec<f32>), PipelineError> {
        self.turn_embeddings(req, true, t)
    }

    /// [`Pipeline::prompt_embeddings`] of a conversation's first turn (`first_turn`: system
    /// prompt, BOS), or of a later one: only the text that follows the previous answer (its
    /// end-of-turn marker, the new user turn, the assistant's opening).
    pub fn turn_embeddings(
        &self,
        req: &Request,
        first_turn: bool,
        t: &mut Timings,
    ) -> Result<(Vec<u32>, Vec<f32>), PipelineError> {
        let placeholders = req.prompt.matches("<image>").count();
        if placeholders != 0 && placeholders != req.images.len() {
            return Err(PipelineError::PlaceholderCount {
                placeholders,
                images: req.images.len(),
            });
        }
        // Media go where the user put the placeholders, else where the template places them.
        let msg = Message {
            role: Role::User,
            images: if placeholders == 0 {
                req.images.len()
            } else {
                0
            },
            videos: usize::from(req.video.is_some() && !req.prompt.contains("<video>")),
            text: req.prompt.clone(),
        };
        let rendered = if first_turn {
            self.template.render(req.system.as_deref(), &[msg])?
        } else {
            self.template.next_turn(&msg)?
        };
        let onevision_multi = req.images.len() > 1
            && self
                .vision
                .as_ref()
                .and_then(|v| v.anyres.as_ref())
                .is_some_and(|a| a.max_tiles.is_some());
        let d = self.text.config.n_embd;
        let (mut seq, mut rows) = (Vec::new(), Vec::new());
        let mut images = req.images.iter();
        let mut video = req.video.as_ref();
        let mut rest = rendered.as_str();
        let mut first = first_turn;
        loop {
            let next = ["<image>", "<video>"]
                .into_iter()
                .filter_map(|m| rest.find(m).map(|i| (i, m)))
                .min();
            let (text, marker) = match next {
                Some((i, m)) => (&rest[..i], Some(m)),
                None => (rest, None),
            };
            let ids = if first {
                self.tokenizer.encode(text, true)
            } else {
                self.tokenizer.encode_continuation(text)
            };
            first = false;
            rows.extend(self.text.embed(&ids)?);
            seq.extend_from_slice(&ids);
            let Some(marker) = marker else { break };
            rest = &rest[text.len() + marker.len()..];
            let start = Instant::now();
            let emb = if marker == "<image>" {
                let path = images.next().ok_or(PipelineError::ExtraImagePlaceholder)?;
                let emb = self.encode_image(path, onevision_multi)?;
                t.image_tokens.push(emb.len() / d);
                emb
            } else {
                let path = video.take().ok_or(PipelineError::NoVideo)?;
                let v = self.encoder("a video")?;
                let frames = crate::image::video::load_frames(path, req.max_frames.max(1))?;
                let emb = v.embed_video(&frames, &self.pool)?;
                t.image_tokens.push(emb.len() / d);
                emb
            };
            t.image_encode += start.elapsed();
            // Stand-in ids for the media rows in the token history (for the repetition penalty).
            let stand_in = self.tokenizer.token_id(marker).unwrap_or(0);
            t.media.push(seq.len()..seq.len() + emb.len() / d);
            seq.extend(std::iter::repeat_n(stand_in, emb.len() / d));
            rows.extend_from_slice(&emb);
        }
        if images.next().is_some() || video.is_some() {
            return Err(PipelineError::MediaNotPlaced);
        }
        t.prompt_tokens = seq.len();
        Ok((seq, rows))
    }

    /// Answers `req`, calling `on_text` with each piece of output as it is decoded.
    pub fn generate(
        &self,
        req: &Request,
        cache: &mut KvCache,
        sampler: &mut Sampler,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Timings), PipelineError> {
        self.chat(&mut Conversation::default(), req, cache, sampler, on_text)
    }

    /// The next turn of `conv`, whose earlier turns are in `cache`: only this turn's text and
    /// media are encoded and prefilled (images of earlier turns are neither encoded nor
    /// evaluated again). The first turn of a conversation is [`Pipeline::generate`]; later
    /// turns' system prompts are ignored (the template places it once).
    ///
    /// The reply ends at an end-of-generation token, a stop string (cut from the reply),
    /// `n_predict` tokens, or a full context; [`Timings::finish`] says which. A reply cut short by
    /// the context, and a turn that fails, leave `conv` and `cache` as they were before the turn.
    pub fn chat(
        &self,
        conv: &mut Conversation,
        req: &Request,
        cache: &mut KvCache,
        sampler: &mut Sampler,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Timings), PipelineError> {
        self.chat_cancellable(conv, req, cache, sampler, &AtomicBool::new(false), on_text)
    }

    /// [`Pipeline::chat`] that also stops when `cancel` is raised (checked before each token),
    /// keeping the reply so far in the conversation ([`Finish::Cancelled`]).
    pub fn chat_cancellable(
        &self,
        conv: &mut Conversation,
        req: &Request,
        cache: &mut KvCache,
        sampler: &mut Sampler,
        cancel: &AtomicBool,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Timings), PipelineError> {
        self.chat_with(conv, req, cache, sampler, None, cancel, on_text)
    }

    /// [`Pipeline::chat_cancellable`] with speculative decoding: `spec`'s drafter follows the
    /// conversation (its state is taken back with a turn that is) and proposes tokens that the
    /// text model verifies several at a time. Greedy replies are the text model's alone, token
    /// for token; sampled ones follow its distribution.
    #[allow(clippy::too_many_arguments)]
    pub fn chat_speculative(
        &self,
        conv: &mut Conversation,
        req: &Request,
        cache: &mut KvCache,
        sampler: &mut Sampler,
        spec: &mut Speculation<'_>,
        cancel: &AtomicBool,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Timings), PipelineError> {
        self.chat_with(conv, req, cache, sampler, Some(spec), cancel, on_text)
    }

    #[allow(clippy::too_many_arguments)]
    fn chat_with(
        &self,
        conv: &mut Conversation,
        req: &Request,
        cache: &mut KvCache,
        sampler: &mut Sampler,
        mut spec: Option<&mut Speculation<'_>>,
        cancel: &AtomicBool,
        mut on_text: impl FnMut(&str),
    ) -> Result<(String, Timings), PipelineError> {
        let t0 = Instant::now();
        let mut t = Timings::default();
        if conv.turns > 0 && cache.len() != conv.in_cache {
            return Err(PipelineError::ForeignCache {
                cache: cache.len(),
                conversation: conv.in_cache,
            });
        }
        let (seq, turn_rows) = self.turn_embeddings(req, conv.turns == 0, &mut t)?;
        // The previous answer's last token was sampled but never evaluated.
        let mut rows = self.text.embed(&conv.unfed)?;
        rows.extend(turn_rows);
        // A turn that does not fit fails before it touches the conversation.
        let needed = cache.len() + rows.len() / self.text.config.n_embd;
        if needed > cache.n_ctx() {
            return Err(crate::text::TextError::ContextFull {
                needed,
                n_ctx: cache.n_ctx(),
            }
            .into());
        }
        // What taking the turn back restores.
        let (cache_before, history_before) = (cache.len(), conv.history.len());
        let unfed_before = conv.unfed.clone();
        let draft_before = spec.as_ref().map(|s| s.drafter.mark());
        if let Some(s) = spec.as_deref_mut() {
            let mut ids = conv.unfed.clone();
            ids.extend_from_slice(&seq);
            let shift = conv.unfed.len();
            let media: Vec<_> = t
                .media
                .iter()
                .map(|r| r.start + shift..r.end + shift)
                .collect();
            let input = TurnInput {
                ids: &ids,
                media: &media,
                rows: &rows,
            };
            if let Err(e) = s.drafter.prefill(&input, &self.pool) {
                s.drafter.rollback(draft_before.unwrap_or_default());
                return Err(e.into());
            }
        }
        let mut history = std::mem::take(&mut conv.history);
        history.append(&mut conv.unfed);
        history.extend_from_slice(&seq);
        t.prompt = seq;
        let decoded = self.prefill_and_decode(
            rows,
            req,
            cache,
            sampler,
            spec.as_deref_mut(),
            cancel,
            &mut history,
            &mut t,
            t0,
            &mut on_text,
        );
        if let (Some(s), Some(mark)) = (spec, draft_before) {
            match &decoded {
                Ok(_) if t.finish != Finish::ContextFull => {
                    let kept = t.tokens.len() - usize::from(matches!(decoded, Ok((_, Some(_)))));
                    // A drafter that cannot follow the reply forgets the turn: its proposals
                    // get worse, the output stays the target's.
                    if s.drafter.end_reply(&t.tokens[..kept], &self.pool).is_err() {
                        s.drafter.rollback(mark);
                    }
                }
                _ => s.drafter.rollback(mark),
            }
        }
        let take_back = |conv: &mut Conversation, cache: &mut KvCache, mut history: Vec<u32>| {
            cache.truncate(cache_before);
            history.truncate(history_before);
            conv.history = history;
            conv.unfed = unfed_before.clone();
        };
        match decoded {
            Err(e) => {
                take_back(conv, cache, history);
                Err(e)
            }
            Ok((reply, _)) if t.finish == Finish::ContextFull => {
                take_back(conv, cache, history);
                Ok((reply, t))
            }
            Ok((reply, unfed)) => {
                conv.unfed.extend(unfed);
                conv.turns += 1;
                conv.in_cache = cache.len();
                conv.history = history;
                Ok((reply, t))
            }
        }
    }

    /// The prefill of `rows`, then the reply; returns it with its last token when that was
    /// sampled but not evaluated.
    #[allow(clippy::too_many_arguments)]
    fn prefill_and_decode(
        &self,
        rows: Vec<f32>,
        req: &Request,
        cache: &mut KvCache,
        sampler: &mut Sampler,
        mut spec: Option<&mut Speculation<'_>>,
        cancel: &AtomicBool,
        history: &mut Vec<u32>,
        t: &mut Timings,
        t0: Instant,
        on_text: &mut impl FnMut(&str),
    ) -> Result<(String, Option<u32>), PipelineError> {
        let start = Instant::now();
        let mut logits = self.text.forward(rows, cache, Logits::Last, &self.pool)?;
        t.prefill = start.elapsed();
        let start = Instant::now();
        let mut text = ReplyText::new(&req.stop);
        let mut unfed = None;
        let decode_start = cache.len();
        // With speculation: kept proposals, already evaluated, then the target's own next
        // token, not yet evaluated.
        let mut ahead = std::collections::VecDeque::new();
        let mut next = None;
        t.finish = Finish::MaxTokens;
        while t.generated < req.n_predict {
            if cancel.load(Ordering::Relaxed) {
                t.finish = Finish::Cancelled;
                break;
            }
            let (id, evaluated) = match (ahead.pop_front(), next.take()) {
                (Some(a), n) => {
                    next = n;
                    (a, true)
                }
                (None, Some(n)) => (n, false),
                (None, None) => (sampler.sample(&logits, history), false),
            };
            if t.generated == 0 {
                t.first_token = t0.elapsed();
            }
            if self.tokenizer.is_eog(id) {
                t.finish = Finish::EndOfTurn;
                break;
            }
            history.push(id);
            t.tokens.push(id);
            t.generated += 1;
            let shown = text.push(&self.tokenizer.piece(id));
            if !shown.is_empty() {
                on_text(&shown);
            }
            if text.stopped() {
                t.finish = Finish::StopString;
            } else if t.generated == req.n_predict {
                t.finish = Finish::MaxTokens;
            } else if evaluated {
                continue;
            } else if cache.len() >= cache.n_ctx() {
                t.finish = Finish::ContextFull;
            } else if let Some(s) = spec.as_deref_mut() {
                let limit = req.n_predict - t.generated;
                let step = s.step(
                    &self.text, cache, id, &t.tokens, history, limit, sampler, &self.pool,
                )?;
                ahead.extend(step.accepted);
                next = Some(step.next);
                continue;
            } else {
                logits =
                    self.text
                        .forward(self.text.embed(&[id])?, cache, Logits::Last, &self.pool)?;
                continue;
            }
            unfed = Some(id);
            break;
        }
        // Proposals evaluated past where the reply ended leave the cache; a last token that
        // was chosen but not evaluated is not in it.
        cache.truncate(decode_start + t.generated - usize::from(unfed.is_some()));
        let (rest, reply) = text.finish();
        if !rest.is_empty() {
            on_text(&rest);
        }
        t.decode = start.elapsed();
        Ok((reply, unfed))
    }
}

impl Tokenize for crate::tokenizer::Tokenizer {
    fn encode(&self, text: &str, add_bos: bool) -> Vec<u32> {
        crate::tokenizer::Tokenizer::encode(self, text, add_bos, true)
    }

    fn encode_continuation(&self, text: &str) -> Vec<u32> {
        crate::tokenizer::Tokenizer::encode_continuation(self, text, true)
    }

    fn piece(&self, id: u32) -> Vec<u8> {
        crate::tokenizer::Tokenizer::piece(self, id, false).to_vec()
    }

    fn is_eog(&self, id: u32) -> bool {
        crate::tokenizer::Tokenizer::is_eog(self, id)
    }

    fn token_id(&self, text: &str) -> Option<u32> {
        crate::tokenizer::Tokenizer::token_id(self, text)
    }
}

#[cfg(test)]
mod tests {
    use super::ReplyText;

    /// Everything shown while pushing `pieces` and at the end, and the reply.
    fn run(stops: &[&str], pieces: &[&[u8]]) -> (Vec<String>, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut r = ReplyText::new(&stops);
        let mut shown: Vec<String> = pieces.iter().map(|p| r.push(p)).collect();
        let (rest, reply) = r.finish();
        shown.push(rest);
        (shown, reply)
    }

    #[test]
    fn an_invalid_byte_costs_only_itself_and_pending_bytes_are_flushed() {
        let (shown, reply) = run(&[], &[b"a\xffb\xe2\x82", b"\xac", b"x\xf0\x9f"]);
        assert_eq!(shown, ["a\u{fffd}b", "\u{20ac}", "x", "\u{fffd}"]);
        assert_eq!(reply, "a\u{fffd}b\u{20ac}x\u{fffd}");
    }

    #[test]
    fn a_stop_string_is_cut_from_the_reply_and_never_shown() {
        // Split over tokens, with a false start ("</" then "x") that must come out after all.
        let (shown, reply) = run(&["</s>"], &[b"Hi </", b"x </", b"s", b"> after"]);
        assert_eq!(shown.concat(), "Hi </x ");
        assert_eq!(reply, "Hi </x ");
        // Inside one token, with text after it in the same token.
        let (shown, reply) = run(&["STOP", "END"], &[b"one ", b"twoENDthree STOP"]);
        assert_eq!(shown.concat(), "one two");
        assert_eq!(reply, "one two");
        // Held text that never becomes a stop string is shown at the end.
        let (shown, reply) = run(&["\n\nUser:"], &[b"bye\n", b"\nUs"]);
        assert_eq!(shown, ["bye", "", "\n\nUs"]);
        assert_eq!(reply, "bye\n\nUs");
    }

    #[test]
    fn stop_strings_with_multibyte_characters_are_held_on_character_boundaries() {
        let (shown, reply) = run(&["é!"], &[b"caf\xc3", b"\xa9", b"!"]);
        assert_eq!(shown.concat(), "caf");
        assert_eq!(reply, "caf");
    }
}
