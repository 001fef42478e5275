//! Chat templates: the model file's own Jinja template ([`jinja`]), and three built-ins of the
//! LLaVA family rendered natively, for files without one and templates that cannot be rendered:
//! Vicuna v1 (LLaVA, LLaVA-1.5, LLaVA-NeXT-Vicuna), Mistral `[INST]` (LLaVA-NeXT-Mistral) and
//! ChatML (Qwen2, LLaVA-OneVision). Media appear as `<image>` / `<video>` placeholders, each on
//! its own line before the text, as the reference processors place them.

pub mod jinja;

use std::fmt;
use std::sync::Arc;

pub use jinja::{JinjaTemplate, SpecialTokens, TemplateError};

/// Vicuna's system prompt, as LLaVA and LLaVA-NeXT-Vicuna use it.
pub const VICUNA_SYSTEM: &str = "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";

/// A chat template: a built-in one, or the model's own Jinja template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `[SYSTEM ]USER: ... ASSISTANT:` (LLaVA, LLaVA-1.5, LLaVA-NeXT-Vicuna; the original
    /// LLaVA and NeXT-Vicuna are prompted with [`VICUNA_SYSTEM`], LLaVA-1.5 with none).
    Vicuna,
    /// `[INST] ... [/INST]` (Mistral).
    Mistral,
    /// `<|im_start|>role\n...<|im_end|>\n` (Qwen2 / OneVision).
    ChatMl,
    /// A Jinja template (`tokenizer.chat_template`), rendered as transformers does.
    Jinja(Arc<JinjaTemplate>),
}

/// A message in a conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// `user` or `assistant` (`system` is passed separately).
    pub role: Role,
    /// Images in this message.
    pub images: usize,
    /// Videos in this message.
    pub videos: usize,
    /// The text.
    pub text: String,
}

/// Who speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The person.
    User,
    /// The model.
    Assistant,
}

impl ChatTemplate {
    /// Every template, for `--chat-template` help.
    pub const ALL: [ChatTemplate; 3] = [
        ChatTemplate::Vicuna,
        ChatTemplate::Mistral,
        ChatTemplate::ChatMl,
    ];

    /// The template's name on the command line (`jinja` for a model's own template).
    pub fn name(&self) -> &'static str {
        match self {
            ChatTemplate::Vicuna => "vicuna",
            ChatTemplate::Mistral => "mistral",
            ChatTemplate::ChatMl => "chatml",
            ChatTemplate::Jinja(_) => "jinja",
        }
    }

    /// The template for a model whose file holds `file_template`: that Jinja template when it
    /// compiles and renders a probe conversation, else the built-in its markers name, else
    /// `fallback`. The reason a file's template was not used comes back for a warning.
    pub fn for_model(
        file_template: Option<&str>,
        tokens: SpecialTokens,
        fallback: ChatTemplate,
    ) -> (ChatTemplate, Option<TemplateError>) {
        let Some(src) = file_template else {
            return (fallback, None);
        };
        match ChatTemplate::jinja(src, tokens) {
            Ok(t) => (t, None),
            Err(e) => (ChatTemplate::detect(src).unwrap_or(fallback), Some(e)),
        }
    }

    /// A Jinja chat template, compiled and probed (see [`JinjaTemplate::new`]).
    pub fn jinja(source: &str, tokens: SpecialTokens) -> Result<ChatTemplate, TemplateError> {
        Ok(ChatTemplate::Jinja(Arc::new(JinjaTemplate::new(
            source, tokens,
        )?)))
    }

    /// The template named `name`.
    pub fn from_name(name: &str) -> Option<ChatTemplate> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Recognises a Jinja `tokenizer.chat_template` as one of ours by its markers.
    pub fn detect(jinja: &str) -> Option<ChatTemplate> {
        if jinja.contains("<|im_start|>") {
            Some(ChatTemplate::ChatMl)
        } else if jinja.contains("[INST]") {
            Some(ChatTemplate::Mistral)
        } else if jinja.contains("ASSISTANT") {
            // llava-hf's templates upper-case the role names, so only ASSISTANT is literal.
            Some(ChatTemplate::Vicuna)
        } else {
            None
        }
    }

    /// Renders a conversation after an optional system prompt, ending with the cue for the
    /// assistant's next reply. Only a Jinja template can fail (its own `raise_exception`, ...).
    pub fn render(
        &self,
        system: Option<&str>,
        messages: &[Message],
    ) -> Result<String, TemplateError> {
        let media = |m: &Message| "<image>\n".repeat(m.images) + &"<video>\n".repeat(m.videos);
        let mut s = String::new();
        match self {
            ChatTemplate::Vicuna => {
                if let Some(sys) = system {
                    s.push_str(sys);
                    s.push(' ');
                }
                for m in messages {
                    match m.role {
                        Role::User => s += &format!("USER: {}{} ", media(m), m.text),
                        Role::Assistant => s += &format!("ASSISTANT: {}</s>", m.text),
                    }
                }
                s.push_str("ASSISTANT:");
            }
            ChatTemplate::Mistral => {
                // Mistral's template folds a system prompt into the first instruction.
                let mut pending = system.map(|sys| format!("{sys}\n\n"));
                for m in messages {
                    match m.role {
                        Role::User => {
                            let sys = pending.take().unwrap_or_default();
                            s += &format!("[INST] {sys}{}{} [/INST]", media(m), m.text)
                        }
                        Role::Assistant => s += &format!(" {}</s>", m.text),
                    }
                }
            }
            ChatTemplate::ChatMl => {
                if let Some(sys) = system {
                    s += &format!("<|im_start|>system\n{sys}<|im_end|>\n");
                }
                for m in messages {
                    let role = match m.role {
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    };
                    s += &format!("<|im_start|>{role}\n{}{}<|im_end|>\n", media(m), m.text);
                }
                s.push_str("<|im_start|>assistant\n");
            }
            ChatTemplate::Jinja(j) => return j.render(system, messages),
        }
        Ok(s)
    }
}

impl ChatTemplate {
    /// The text that follows an answer when the user says `m` next: the answer's end-of-turn
    /// marker, the user turn, the assistant's opening. Cut from a rendered three-message chat,
    /// so it is always what [`ChatTemplate::render`] would give for the whole conversation.
    pub fn next_turn(&self, m: &Message) -> Result<String, TemplateError> {
        const MARK: &str = "\u{1}answer\u{1}";
        let answer = Message {
            role: Role::Assistant,
            images: 0,
            videos: 0,
            text: MARK.into(),
        };
        let full = self.render(None, &[user_turn("", 0), answer, m.clone()])?;
        let at = full.find(MARK).ok_or_else(|| {
            TemplateError::Render("the template does not print the assistant's answer".into())
        })? + MARK.len();
        Ok(full[at..].to_string())
    }
}

impl fmt::Display for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A single user turn with `images` images before `text`.
pub fn user_turn(text: &str, images: usize) -> Message {
    Message {
        role: Role::User,
        images,
        videos: 0,
        text: text.to_string(),
    }
}
