//! A model file's own chat template (`tokenizer.chat_template`), rendered as transformers'
//! `apply_chat_template` does: Jinja with `trim_blocks` and `lstrip_blocks`, `messages`,
//! `add_generation_prompt`, the special tokens, `raise_exception` and `strftime_now`.
//!
//! What a template expects of a message is found out once, by rendering small probes: whether
//! `content` is a list of typed parts (`{type: image}`, `{type: text, text}`, as the llava-hf
//! templates iterate) or a plain string, whether it prints `<image>` / `<video>` for media parts
//! itself (else the placeholders go into the text, where the pipeline looks for them), and
//! whether it accepts a system message (else the system prompt leads the first user message).

use std::collections::BTreeMap;

use minijinja::{Environment, Error, ErrorKind, Value};

use super::{Message, Role};

/// The special-token texts a template may print, from the vocabulary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `bos_token` (None: left undefined, as transformers leaves it).
    pub bos: Option<String>,
    /// `eos_token`.
    pub eos: Option<String>,
    /// The tokenizer puts BOS before the prompt itself, so a BOS the template writes at the
    /// start is dropped (else the model would read two).
    pub bos_added_by_tokenizer: bool,
}

impl SpecialTokens {
    /// The vocabulary's BOS and EOS texts, and whether it adds BOS itself.
    pub fn from_tokenizer(t: &crate::tokenizer::Tokenizer) -> SpecialTokens {
        let text = |id: Option<u32>| {
            id.map(|id| String::from_utf8_lossy(t.token_to_bytes(id)).into_owned())
                .filter(|s| !s.is_empty())
        };
        SpecialTokens {
            bos: text(t.bos()),
            eos: text(t.eos()),
            bos_added_by_tokenizer: t.vocab().add_bos(),
        }
    }
}

/// Why a Jinja chat template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template is not valid Jinja (or uses something this renderer lacks).
    #[error("the chat template does not compile: {0}")]
    Syntax(String),
    /// Rendering failed (an undefined method, the template's own `raise_exception`, ...).
    #[error("the chat template failed on this conversation: {0}")]
    Render(String),
    /// Neither a string nor a list of parts as content shows up in the output.
    #[error("the chat template never prints the message text, as a string or as text parts")]
    NoText,
}

/// A compiled Jinja chat template and what it was found to expect.
#[derive(Debug)]
pub struct JinjaTemplate {
    source: String,
    env: Environment<'static>,
    tokens: SpecialTokens,
    /// `content` as a list of typed parts (else a string).
    parts: bool,
    /// The template prints `<image>` for an image part (else it goes into the text).
    images_in_parts: bool,
    /// The template prints `<video>` for a video part.
    videos_in_parts: bool,
    /// The template accepts a `system` message.
    system_role: bool,
}

impl PartialEq for JinjaTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.tokens == other.tokens
    }
}

impl Eq for JinjaTemplate {}

// Probe texts without letters (a template may change their case) or characters JSON escapes
// (it may print them with `tojson`).
const PROBE_TEXT: &str = "\u{2042}5813\u{2042}";
const PROBE_SYSTEM: &str = "\u{2042}5821\u{2042}";
/// An extra key of the probe's text part: seen in the output only when the template printed the
/// whole list (a string template given parts), which is not taking parts.
const PROBE_KEY: &str = "\u{2042}5827\u{2042}";

impl JinjaTemplate {
    /// Compiles `source` and probes what it expects of messages.
    pub fn new(source: &str, tokens: SpecialTokens) -> Result<JinjaTemplate, TemplateError> {
        let source = strip_generation_tags(source);
        let env = environment();
        env.template_from_str(&source)
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        let mut t = JinjaTemplate {
            source,
            env,
            tokens,
            parts: true,
            images_in_parts: true,
            videos_in_parts: true,
            system_role: true,
        };
        let user = |images, videos| Message {
            role: Role::User,
            images,
            videos,
            text: PROBE_TEXT.into(),
        };
        let shows = |t: &JinjaTemplate, m: &Message, what: &str| {
            t.render_raw(None, std::slice::from_ref(m))
                .is_ok_and(|s| s.contains(what) && !s.contains(PROBE_KEY))
        };
        if !shows(&t, &user(0, 0), PROBE_TEXT) {
            t.parts = false;
            // The string form's error says most about why the template cannot be used.
            let out = t
                .render_raw(None, &[user(0, 0)])
                .map_err(|e| TemplateError::Render(describe(&e)))?;
            if !out.contains(PROBE_TEXT) {
                return Err(TemplateError::NoText);
            }
        }
        if t.parts {
            t.images_in_parts = shows(&t, &user(1, 0), "<image>");
            t.videos_in_parts = shows(&t, &user(0, 1), "<video>");
        }
        t.system_role = t
            .render_raw(Some(PROBE_SYSTEM), &[user(0, 0)])
            .is_ok_and(|s| s.contains(PROBE_SYSTEM));
        Ok(t)
    }

    /// Whether messages are given as lists of typed parts (else as strings).
    pub fn uses_content_parts(&self) -> bool {
        self.parts
    }

    /// Whether the template takes a system message (else the system prompt is folded into the
    /// first user message).
    pub fn has_system_role(&self) -> bool {
        self.system_role
    }

    /// The conversation rendered with the assistant's cue, a BOS the tokenizer adds itself
    /// removed from the front.
    pub fn render(
        &self,
        system: Option<&str>,
        messages: &[Message],
    ) -> Result<String, TemplateError> {
        let out = self
            .render_raw(system, messages)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        match (&self.tokens.bos, self.tokens.bos_added_by_tokenizer) {
            (Some(bos), true) if !bos.is_empty() => match out.strip_prefix(bos.as_str()) {
                Some(rest) => Ok(rest.to_string()),
                None => Ok(out),
            },
            _ => Ok(out),
        }
    }

    fn render_raw(&self, system: Option<&str>, messages: &[Message]) -> Result<String, Error> {
        let tmpl = self.env.template_from_str(&self.source)?;
        let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
        ctx.insert(
            "messages",
            Value::from(self.messages_value(system, messages)),
        );
        ctx.insert("add_generation_prompt", Value::from(true));
        // transformers passes these as None: `tools is none` must hold.
        ctx.insert("tools", Value::from(()));
        ctx.insert("documents", Value::from(()));
        if let Some(b) = &self.tokens.bos {
            ctx.insert("bos_token", Value::from(b.as_str()));
        }
        if let Some(e) = &self.tokens.eos {
            ctx.insert("eos_token", Value::from(e.as_str()));
        }
        tmpl.render(ctx)
    }

    /// The messages as the template expects them (see the module documentation), keys in
    /// the order transformers' users write them (`tojson` shows the order).
    fn messages_value(&self, system: Option<&str>, messages: &[Message]) -> Vec<Value> {
        let text_part =
            |text: &str| map([("type", Value::from("text")), ("text", Value::from(text))]);
        let mut folded = None;
        let mut out = Vec::new();
        match system {
            Some(s) if self.system_role => {
                let content = if self.parts {
                    Value::from(vec![text_part(s)])
                } else {
                    Value::from(s)
                };
                out.push(map([("role", Value::from("system")), ("content", content)]));
            }
            Some(s) => folded = Some(s),
            None => {}
        }
        for m in messages {
            let mut text = m.text.clone();
            if m.role == Role::User {
                if let Some(s) = folded.take() {
                    text = format!("{s}\n\n{text}");
                }
            }
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            let mut parts = Vec::new();
            let mut lead = String::new();
            for (n, kind, marker, in_parts) in [
                (m.images, "image", "<image>\n", self.images_in_parts),
                (m.videos, "video", "<video>\n", self.videos_in_parts),
            ] {
                if self.parts && in_parts {
                    parts.extend((0..n).map(|_| map([("type", Value::from(kind))])));
                } else {
                    lead.push_str(&marker.repeat(n));
                }
            }
            let text = lead + &text;
            let content = if self.parts {
                parts.push(if m.text == PROBE_TEXT {
                    map([
                        ("type", Value::from("text")),
                        ("text", Value::from(text)),
                        ("probe", Value::from(PROBE_KEY)),
                    ])
                } else {
                    text_part(&text)
                });
                Value::from(parts)
            } else {
                Value::from(text)
            };
            out.push(map([("role", Value::from(role)), ("content", content)]));
        }
        out
    }
}

/// A map with its keys in the order given.
fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The environment transformers renders chat templates in.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
    env.add_filter("tojson", tojson);
    env
}

/// transformers' `tojson`: Python's `json.dumps(x, ensure_ascii=False, indent=...)`, with its
/// `", "` and `": "` separators and no HTML escaping (minijinja's own escapes `<`, `>`, `&`, `'`
/// and writes compact JSON, so tool and argument blocks would differ).
fn tojson(
    value: &Value,
    indent: Option<usize>,
    kwargs: minijinja::value::Kwargs,
) -> Result<Value, Error> {
    let indent = indent.or(kwargs.get::<Option<usize>>("indent")?);
    // Accepted for compatibility; keys already come out in the order the data has them.
    let _: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let done = match indent {
        Some(n) => {
            let pad = " ".repeat(n);
            let f = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            serde::Serialize::serialize(
                value,
                &mut serde_json::Serializer::with_formatter(&mut out, f),
            )
        }
        None => serde::Serialize::serialize(
            value,
            &mut serde_json::Serializer::with_formatter(&mut out, PythonSeparators),
        ),
    };
    done.map_err(|e| {
        Error::new(ErrorKind::InvalidOperation, "cannot serialize to JSON").with_source(e)
    })?;
    Ok(Value::from(String::from_utf8_lossy(&out).into_owned()))
}

/// Compact JSON with Python's default separators.
struct PythonSeparators;

impl serde_json::ser::Formatter for PythonSeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// `{% generation %}` / `{% endgeneration %}` mark the assistant's tokens for training in
/// transformers; they render nothing, so they are removed before compiling.
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let Some(len) = rest[start..].find("%}") else {
            break;
        };
        let tag = &rest[start..start + len + 2];
        let inner = tag[2..tag.len() - 2].trim_matches(|c: char| c == '-' || c == '+');
        out.push_str(&rest[..start]);
        if !matches!(inner.trim(), "generation" | "endgeneration") {
            out.push_str(tag);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// A minijinja error with its location and cause.
fn describe(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

/// Today's date (UTC) formatted with the strftime directives templates use for a date line.
fn strftime_now(fmt: &str) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let (hh, mm, ss) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('%') => out.push('%'),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.unwrap_or(' ')
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn generation_tags_are_removed() {
        assert_eq!(
            strip_generation_tags("a{% generation %}b{%- endgeneration -%}c{% if x %}"),
            "abc{% if x %}"
        );
    }
}
