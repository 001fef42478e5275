//! The HTTP routes: small handlers that check the request, hand it to the scheduler and turn
//! its events into OpenAI's response shapes (one JSON object, or server-sent events).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State as Extract;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::api::{parse_chat, ChatRequest};
use super::errors::ApiError;
use super::images;
use super::scheduler::{Event, Job};
use super::{ServerConfig, Shared, State};
use crate::sampling::SamplerConfig;

/// What every handler gets.
#[derive(Clone)]
pub(super) struct AppState {
    pub shared: Arc<Shared>,
    pub jobs: std::sync::mpsc::Sender<Job>,
    pub cfg: Arc<ServerConfig>,
}

type St = Extract<AppState>;

pub(super) fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .fallback(fallback)
        .with_state(state)
}

/// Counts the response by status on its way out.
fn counted(st: &AppState, r: Response) -> Response {
    st.shared.metrics.response(r.status().as_u16());
    r
}

/// `Authorization: Bearer KEY`, compared in constant time (no early exit on the first
/// differing byte, so the time taken tells nothing about the key).
fn authorized(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &st.cfg.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (given.as_bytes(), key.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, &k) in b.iter().enumerate() {
        diff |= k ^ a.get(i).copied().unwrap_or(!k);
    }
    if diff == 0 {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

fn ready(st: &AppState) -> Result<(), ApiError> {
    match st.shared.state() {
        State::Ready => Ok(()),
        State::Loading => Err(ApiError::unavailable(
            "the model is loading",
            "model_loading",
            5,
        )),
        State::Failed => Err(ApiError::internal("the model failed to load")),
    }
}

async fn health(Extract(st): St) -> Response {
    let r = match st.shared.state() {
        State::Ready => (StatusCode::OK, axum_json(json!({"status": "ok"}))).into_response(),
        State::Loading => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum_json(json!({"status": "loading"})),
        )
            .into_response(),
        State::Failed => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum_json(json!({"status": "error"})),
        )
            .into_response(),
    };
    counted(&st, r)
}

async fn metrics(Extract(st): St, headers: HeaderMap) -> Response {
    let r = match authorized(&st, &headers) {
        Ok(()) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            st.shared.metrics.render(st.cfg.parallel.max(1)),
        )
            .into_response(),
        Err(e) => e.into_response(),
    };
    counted(&st, r)
}

async fn models(Extract(st): St, headers: HeaderMap) -> Response {
    let r = match authorized(&st, &headers) {
        Ok(()) => axum_json(json!({
            "object": "list",
            "data": [{
                "id": st.cfg.model_name,
                "object": "model",
                "created": 0,
                "owned_by": "llava-edge",
            }],
        }))
        .into_response(),
        Err(e) => e.into_response(),
    };
    counted(&st, r)
}

async fn fallback(Extract(st): St, method: Method, uri: Uri) -> Response {
    let r = ApiError::not_found(method.as_str(), uri.path()).into_response();
    counted(&st, r)
}

fn axum_json(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn chat(Extract(st): St, headers: HeaderMap, body: Body) -> Response {
    let r = match chat_inner(&st, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    counted(&st, r)
}

async fn chat_inner(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    authorized(st, headers)?;
    let limit = st.cfg.body_limit;
    let too_large = || {
        ApiError::invalid(format!(
            "the request body is over the server's limit of {limit} bytes (or was cut short)"
        ))
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let req = parse_chat(&body)?;
    drop(body);
    ready(st)?;
    // Reading files and decoding images is CPU and disk work: off the async threads.
    let urls = req.image_urls.clone();
    let allowed = st.cfg.allowed_dir.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        urls.iter()
            .enumerate()
            .map(|(i, u)| {
                let param = format!("image {i}");
                images::decode(&images::read_url(u, allowed.as_deref(), &param)?, &param)
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("image decoding failed: {e}")))??;
    let mut sampling = SamplerConfig {
        seed: req.seed.unwrap_or_else(random_seed),
        ..SamplerConfig::default()
    };
    if let Some(t) = req.temperature {
        sampling.temp = t;
    }
    if let Some(p) = req.top_p {
        sampling.top_p = p;
    }
    sampling
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job {
        system: req.system.clone(),
        messages: req.messages.clone(),
        images: decoded,
        max_tokens: req.max_tokens,
        sampling,
        stop: req.stop.clone(),
        ignore_eos: req.ignore_eos,
        events: tx,
    };
    let m = &st.shared.metrics;
    // Claim a queue place before sending, so two handlers cannot both take the last one.
    if m.queued.fetch_add(1, Ordering::AcqRel) >= st.cfg.queue {
        m.queued.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::unavailable(
            "the server is busy: every slot is answering and the queue is full",
            "queue_full",
            1,
        ));
    }
    if st.jobs.send(job).is_err() {
        m.queued.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::internal("the scheduler has stopped"));
    }
    // The first event says whether the request was taken (errors keep their status).
    let (prompt_tokens, cached) = match rx.recv().await {
        Some(Event::Started {
            prompt_tokens,
            cached,
        }) => (prompt_tokens, cached),
        Some(Event::Error(e)) => return Err(e),
        _ => return Err(ApiError::internal("the scheduler dropped the request")),
    };
    let reply = Reply {
        id: format!("chatcmpl-{:016x}", random_seed()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: st.cfg.model_name.clone(),
        prompt_tokens,
        cached,
    };
    if req.stream {
        Ok(stream(reply, req, rx))
    } else {
        whole(reply, &req, rx).await
    }
}

/// What every response of one request repeats.
struct Reply {
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    cached: usize,
}

impl Reply {
    fn usage(&self, completion: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": self.cached},
        })
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }
}

async fn whole(
    reply: Reply,
    req: &ChatRequest,
    mut rx: UnboundedReceiver<Event>,
) -> Result<Response, ApiError> {
    let (mut text, mut tokens) = (String::new(), Vec::new());
    loop {
        match rx.recv().await {
            Some(Event::Token { id, text: t }) => {
                text.push_str(&t);
                tokens.extend(id);
            }
            Some(Event::Done {
                finish,
                completion_tokens,
            }) => {
                let mut v = json!({
                    "id": reply.id,
                    "object": "chat.completion",
                    "created": reply.created,
                    "model": reply.model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }],
                    "usage": reply.usage(completion_tokens),
                });
                if req.return_tokens {
                    v["tokens"] = json!(tokens);
                }
                return Ok(axum_json(v));
            }
            Some(Event::Error(e)) => return Err(e),
            Some(Event::Started { .. }) | None => {
                return Err(ApiError::internal("the scheduler dropped the request"))
            }
        }
    }
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// Server-sent events in OpenAI's `chat.completion.chunk` shape, ending with `data: [DONE]`.
/// When the client goes away the body (and with it the receiver) is dropped, which the
/// scheduler sees before its next step.
fn stream(reply: Reply, req: ChatRequest, rx: UnboundedReceiver<Event>) -> Response {
    let first = sse(&reply.chunk(json!({"role": "assistant", "content": ""}), None));
    let state = Some((reply, req, rx, Some(first)));
    let body = futures_util::stream::unfold(state, |state| async move {
        let (reply, req, mut rx, first) = state?;
        if let Some(first) = first {
            return Some((Ok::<_, Infallible>(first), Some((reply, req, rx, None))));
        }
        loop {
            let out = match rx.recv().await {
                Some(Event::Token { id, text }) => {
                    if text.is_empty() && !req.return_tokens {
                        continue;
                    }
                    let mut delta = json!({"content": text});
                    if req.return_tokens {
                        delta["tokens"] = json!(id.into_iter().collect::<Vec<_>>());
                    }
                    sse(&reply.chunk(delta, None))
                }
                Some(Event::Done {
                    finish,
                    completion_tokens,
                }) => {
                    let mut last = reply.chunk(json!({}), Some(finish));
                    let mut out = String::new();
                    if req.include_usage {
                        out += &sse(&last);
                        last = reply.chunk(json!({}), None);
                        last["choices"] = json!([]);
                    }
                    last["usage"] = reply.usage(completion_tokens);
                    out += &sse(&last);
                    out += "data: [DONE]\n\n";
                    return Some((Ok(out), None));
                }
                Some(Event::Error(e)) => {
                    return Some((Ok(sse(&e.body()) + "data: [DONE]\n\n"), None))
                }
                Some(Event::Started { .. }) | None => {
                    let e = ApiError::internal("the scheduler dropped the request");
                    return Some((Ok(sse(&e.body()) + "data: [DONE]\n\n"), None));
                }
            };
            return Some((Ok(out), Some((reply, req, rx, None))));
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| ApiError::internal("response").into_response())
}

fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one(SystemTime::now())
}
