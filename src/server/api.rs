//! OpenAI's chat-completion request, read strictly: every field is checked for its type and
//! range, and a refusal names the field (`param`), so a client's mistake is a 400 that says
//! what to fix. Fields this server does not use (`frequency_penalty`, `user`, ...) are
//! ignored, as llama-server and ollama ignore them.

use serde_json::{Map, Value};

use super::errors::ApiError;
use crate::chat::{Message, Role};

/// One part of a message's content.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// `{"type": "text", "text": ...}`, or a plain string content.
    Text(String),
    /// `{"type": "image_url", "image_url": {"url": ...}}`: a `data:` or `file://` URL.
    Image(String),
}

/// A chat-completion request, checked.
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    /// The system prompt (the `system` / `developer` messages' text).
    pub system: Option<String>,
    /// The conversation for the template, media counted per message.
    pub messages: Vec<Message>,
    /// Image URLs in the order the template places them.
    pub image_urls: Vec<String>,
    /// Tokens to generate at most (`max_completion_tokens` or `max_tokens`).
    pub max_tokens: Option<usize>,
    /// Sampling temperature (0: greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Seed of the draw.
    pub seed: Option<u64>,
    /// Strings that end the reply.
    pub stop: Vec<String>,
    /// Server-sent events instead of one JSON reply.
    pub stream: bool,
    /// With `stream`: a last chunk with `usage` (`stream_options.include_usage`).
    pub include_usage: bool,
    /// llama-server's extension: the reply's token ids in the response (`tokens`).
    pub return_tokens: bool,
    /// llama-server's extension: never end at an end-of-generation token (the reply runs to
    /// `max_tokens`, a stop string or a full context), for benchmarks on random weights.
    pub ignore_eos: bool,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(param: &str, want: &str, got: &Value) -> ApiError {
    ApiError::invalid_param(
        param,
        format!("'{param}' must be {want}, not {}", kind(got)),
    )
}

/// Present and not null.
fn field<'v>(o: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn opt_f32(o: &Map<String, Value>, key: &str, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
    let Some(v) = field(o, key) else {
        return Ok(None);
    };
    let x = v.as_f64().ok_or_else(|| wrong(key, "a number", v))? as f32;
    if !(lo..=hi).contains(&x) {
        return Err(ApiError::invalid_param(
            key,
            format!("'{key}' is {x}: it must be between {lo} and {hi}"),
        ));
    }
    Ok(Some(x))
}

fn opt_count(o: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    let Some(v) = field(o, key) else {
        return Ok(None);
    };
    v.as_u64()
        .map(Some)
        .ok_or_else(|| wrong(key, "a whole number of 0 or more", v))
}

fn opt_bool(o: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match field(o, key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(wrong(key, "true or false", v)),
    }
}

/// Parses and checks a `/v1/chat/completions` body.
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(o) = &v else {
        return Err(ApiError::invalid(format!(
            "the body must be a JSON object, not {}",
            kind(&v)
        )));
    };
    let mut r = ChatRequest::default();
    if let Some(n) = field(o, "n") {
        if n.as_u64() != Some(1) {
            return Err(ApiError::invalid_param(
                "n",
                format!("'n' is {n}: this server generates one choice per request (n = 1)"),
            ));
        }
    }
    let max = opt_count(o, "max_completion_tokens")?
        .map(|m| ("max_completion_tokens", m))
        .or(opt_count(o, "max_tokens")?.map(|m| ("max_tokens", m)));
    if let Some((key, m)) = max {
        if m == 0 {
            return Err(ApiError::invalid_param(
                key,
                format!("'{key}' must be 1 or more"),
            ));
        }
        r.max_tokens = Some(usize::try_from(m).unwrap_or(usize::MAX));
    }
    r.temperature = opt_f32(o, "temperature", 0.0, 2.0)?;
    r.top_p = opt_f32(o, "top_p", 0.0, 1.0)?;
    if let Some(s) = field(o, "seed") {
        // OpenAI's seed is a signed 64-bit integer; its bits seed the draw.
        let seed = s
            .as_u64()
            .or(s.as_i64().map(|i| i as u64))
            .ok_or_else(|| wrong("seed", "an integer", s))?;
        r.seed = Some(seed);
    }
    r.stop = match field(o, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| wrong(&format!("stop[{i}]"), "a string", s))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(wrong("stop", "a string or an array of strings", v)),
    };
    r.stream = opt_bool(o, "stream")?;
    if let Some(so) = field(o, "stream_options") {
        let so = so
            .as_object()
            .ok_or_else(|| wrong("stream_options", "an object", so))?;
        r.include_usage = opt_bool(so, "include_usage")
            .map_err(|e| e.with_param("stream_options.include_usage"))?;
    }
    r.return_tokens = opt_bool(o, "return_tokens")?;
    r.ignore_eos = opt_bool(o, "ignore_eos")?;
    if let Some(m) = o.get("model") {
        if !m.is_string() && !m.is_null() {
            return Err(wrong("model", "a string", m));
        }
    }
    let messages = match o.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid_param(
                "messages",
                "'messages' is empty: send at least one message",
            ))
        }
        Some(v) => return Err(wrong("messages", "an array of messages", v)),
        None => return Err(ApiError::invalid_param("messages", "'messages' is missing")),
    };
    let mut system = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let m = m.as_object().ok_or_else(|| wrong(&at, "an object", m))?;
        let role = match m.get("role") {
            Some(Value::String(s)) => s.as_str(),
            Some(v) => return Err(wrong(&format!("{at}.role"), "a string", v)),
            None => {
                return Err(ApiError::invalid_param(
                    format!("{at}.role"),
                    format!("'{at}.role' is missing"),
                ))
            }
        };
        let parts = content(m.get("content"), &format!("{at}.content"))?;
        let images: Vec<String> = parts
            .iter()
            .filter_map(|p| match p {
                Part::Image(u) => Some(u.clone()),
                Part::Text(_) => None,
            })
            .collect();
        let text: Vec<&str> = parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                Part::Image(_) => None,
            })
            .collect();
        let text = text.join("\n");
        let role = match role {
            "system" | "developer" => {
                if !images.is_empty() {
                    return Err(ApiError::invalid_param(
                        format!("{at}.content"),
                        format!("a {role} message cannot hold images"),
                    ));
                }
                system.push(text);
                continue;
            }
            "user" => Role::User,
            "assistant" => {
                if !images.is_empty() {
                    return Err(ApiError::invalid_param(
                        format!("{at}.content"),
                        "an assistant message cannot hold images",
                    ));
                }
                Role::Assistant
            }
            other => {
                return Err(ApiError::invalid_param(
                    format!("{at}.role"),
                    format!(
                        "role '{other}' is not supported: roles are system, developer, user \
                         and assistant"
                    ),
                ))
            }
        };
        r.messages.push(Message {
            role,
            images: images.len(),
            videos: 0,
            text,
        });
        r.image_urls.extend(images);
    }
    if !r.messages.iter().any(|m| m.role == Role::User) {
        return Err(ApiError::invalid_param(
            "messages",
            "the conversation has no user message",
        ));
    }
    r.system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok(r)
}

/// A message's `content`: a string, or an array of text and image_url parts.
fn content(v: Option<&Value>, at: &str) -> Result<Vec<Part>, ApiError> {
    let parts = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![Part::Text(s.clone())]),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(wrong(at, "a string or an array of content parts", v)),
    };
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = format!("{at}[{i}]");
            let o = p.as_object().ok_or_else(|| wrong(&at, "an object", p))?;
            match o.get("type").and_then(Value::as_str) {
                Some("text") => match o.get("text") {
                    Some(Value::String(s)) => Ok(Part::Text(s.clone())),
                    Some(v) => Err(wrong(&format!("{at}.text"), "a string", v)),
                    None => Err(ApiError::invalid_param(
                        format!("{at}.text"),
                        format!("'{at}.text' is missing"),
                    )),
                },
                Some("image_url") => {
                    let url = match o.get("image_url") {
                        // The OpenAI shape, and the bare string some clients send.
                        Some(Value::Object(u)) => u.get("url").and_then(Value::as_str),
                        Some(Value::String(s)) => Some(s.as_str()),
                        _ => None,
                    };
                    url.map(|u| Part::Image(u.to_string())).ok_or_else(|| {
                        ApiError::invalid_param(
                            format!("{at}.image_url"),
                            format!("'{at}.image_url' must be an object with a string 'url'"),
                        )
                    })
                }
                Some(other) => Err(ApiError::invalid_param(
                    format!("{at}.type"),
                    format!("content part type '{other}' is not supported: use text or image_url"),
                )),
                None => Err(ApiError::invalid_param(
                    format!("{at}.type"),
                    format!("'{at}.type' must be a string: text or image_url"),
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ApiError {
        parse_chat(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn content_parts_give_text_and_images_in_order() {
        let r = parse_chat(
            br#"{"messages":[{"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"image_url","image_url":{"url":"data:a"}},
                {"type":"text","text":"what?"},{"type":"image_url","image_url":{"url":"data:b"}}]}],
                "max_tokens":5,"stop":"x","n":1,"seed":-3}"#,
        )
        .unwrap();
        assert_eq!(r.system.as_deref(), Some("be brief"));
        assert_eq!(r.messages.len(), 1);
        assert_eq!(r.messages[0].images, 2);
        assert_eq!(r.messages[0].text, "what?");
        assert_eq!(r.image_urls, ["data:a", "data:b"]);
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.stop, ["x"]);
        assert_eq!(r.seed, Some(-3i64 as u64));
    }

    #[test]
    fn mistakes_name_the_field() {
        assert!(err("{").message.contains("not valid JSON"));
        assert!(err("[]").message.contains("JSON object"));
        assert_eq!(
            err(r#"{"messages":"hi"}"#).param.as_deref(),
            Some("messages")
        );
        let e = err(r#"{"messages":[{"role":"tool","content":"x"}]}"#);
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = err(r#"{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#);
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = err(r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#);
        assert_eq!(e.param.as_deref(), Some("n"));
        let e = err(r#"{"messages":[{"role":"user","content":[{"type":"audio"}]}]}"#);
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].type"));
        let e = err(r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#);
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
    }
}
