//! What the model reads: the system prompt (configured text, intent
//! instructions, the robot's current state), the conversation fitted to the
//! context, the chat template and the tokens.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use voice_core::chat::{History, Message, Role};
use voice_core::intent;
use voice_core::robot_state::RobotState;

use crate::engine::EngineError;
use crate::params::LlmConfig;

pub struct Prompter<'m> {
    model: &'m LlamaModel,
    template: LlamaChatTemplate,
    /// The configured system prompt plus, with intents, their instructions
    /// (the robot state is added per turn).
    base: String,
    /// Latest robot state.
    state: Arc<Mutex<RobotState>>,
}

/// A turn's prompt.
pub struct TurnPrompt {
    pub tokens: Vec<LlamaToken>,
    /// The user's text as it went in (sanitized, maybe truncated).
    pub user_text: String,
    /// The user's text was cut to fit: (chars given, chars kept).
    pub truncated: Option<(usize, usize)>,
}

impl<'m> Prompter<'m> {
    pub fn new(
        model: &'m LlamaModel,
        cfg: &LlmConfig,
        state: Arc<Mutex<RobotState>>,
        log: &voice_ros::log::Log,
    ) -> Result<Self, EngineError> {
        let template = match model.chat_template(None) {
            Ok(t) => t,
            Err(e) => {
                log.warn(format!(
                    "model has no usable chat template ({e}); using ChatML"
                ));
                LlamaChatTemplate::new("chatml").map_err(|e| EngineError::Context(e.to_string()))?
            }
        };
        Ok(Self {
            model,
            template,
            base: base_prompt(cfg),
            state,
        })
    }

    /// A runtime parameter set may have changed the system prompt.
    pub fn update(&mut self, cfg: &LlmConfig) {
        self.base = base_prompt(cfg);
    }

    /// The configured system prompt, the intent instructions and the robot's
    /// current state, in that order: what changes most comes last, so the KV
    /// cache keeps the longest prefix.
    pub fn system(&self, cfg: &LlmConfig) -> String {
        with_state(self.base.clone(), cfg, &self.state)
    }

    /// The system prompt with an empty question, as the template writes it.
    pub fn system_only(&self, cfg: &LlmConfig) -> Vec<Message> {
        vec![
            Message::new(Role::System, self.system(cfg)),
            Message::new(Role::User, ""),
        ]
    }

    pub fn render(&self, messages: &[Message]) -> Option<String> {
        let chat: Vec<LlamaChatMessage> = messages
            .iter()
            .filter_map(|m| LlamaChatMessage::new(m.role.as_str().into(), m.content.clone()).ok())
            .collect();
        self.model
            .apply_chat_template(&self.template, &chat, true)
            .ok()
    }

    pub fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut t = vocab.tokenize(text.as_bytes(), true, true);
        // templates that spell out BOS themselves would give two
        if t.len() >= 2 && t[0] == vocab.bos() && t[1] == vocab.bos() {
            t.remove(0);
        }
        t
    }

    pub fn count(&self, messages: &[Message]) -> usize {
        self.render(messages)
            .map_or(usize::MAX, |s| self.tokenize(&s).len())
    }

    /// The prompt of a turn: system prompt, history fitted into `room`
    /// tokens, the user's text (truncated when it cannot fit), the chat
    /// template and, with intents, the action prefill.
    pub fn turn(
        &self,
        cfg: &LlmConfig,
        history: &mut History,
        text: &str,
        room: usize,
    ) -> Result<TurnPrompt, &'static str> {
        let user = voice_core::chat::sanitize(text);
        let system = self.system(cfg);
        let fitted = history
            .fit(&system, &user, room, |m| self.count(m))
            .ok_or("prompt cannot fit the context")?;
        let truncated = fitted
            .truncated_user
            .map(|kept| (user.chars().count(), kept));
        let user_text = fitted
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let prompt = self
            .render(&fitted.messages)
            .ok_or("chat template failed")?;
        Ok(TurnPrompt {
            tokens: self.tokenize(&(prompt + prefill(cfg))),
            user_text,
            truncated,
        })
    }
}

/// With intents, the start of the action written into the prompt.
fn prefill(cfg: &LlmConfig) -> &'static str {
    if cfg.intents.is_some() {
        intent::PREFILL
    } else {
        ""
    }
}

/// The whole system prompt of a turn for engines without a [`Prompter`]
/// (the server's): the same text the local model reads.
pub fn system(cfg: &LlmConfig, state: &Mutex<RobotState>) -> String {
    with_state(base_prompt(cfg), cfg, state)
}

/// `base` followed by the robot's current state, when there is one.
fn with_state(mut s: String, cfg: &LlmConfig, state: &Mutex<RobotState>) -> String {
    let described = state.lock().ok().and_then(|st| {
        st.describe(
            cfg.intents.as_ref().map(|i| &i.places),
            Instant::now(),
            cfg.context.max_age,
        )
    });
    if let Some(state) = described {
        s += "\n\n";
        s += &state;
    }
    s
}

/// The configured system prompt plus, with intents, their instructions (the
/// robot state is added per turn).
fn base_prompt(cfg: &LlmConfig) -> String {
    let mut p = cfg.system_prompt.clone();
    if let Some(i) = &cfg.intents {
        p += "\n\n";
        p += &intent::instructions(&i.places);
    }
    p
}
