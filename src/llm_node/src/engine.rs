//! The llama.cpp engine of llm_node: one model, one context, `parallel` KV
//! sequences decoded together (continuous batching). Each conversation is
//! bound to a sequence while it has one; its KV cache keeps the shared prefix
//! (system prompt + history) between turns, so a turn evaluates only the
//! tokens that changed.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::LlamaBackendDeviceType;
use r2r::voice_agent::msg::{EndOfTurn, ReplyChunk};
use voice_core::chat::{History, Message};
use voice_core::chunker::{Chunker, ChunkerConfig};
use voice_core::compute;
use voice_core::intent::{self, SayStream};
use voice_core::model_file::{self, Format, ModelFileError};
use voice_core::utf8::Utf8Stream;

use crate::actions::TurnInfo;
use crate::context::SharedState;
use crate::params::{BusyPolicy, LlmConfig};
use crate::publish::Sink;
use crate::sampling::TurnSampler;

/// Conversations whose history is kept (least recently used forgotten first).
const MAX_CONVERSATIONS: usize = 64;
/// Turns waiting per conversation under the "queue" policy.
const QUEUE_PER_CONVERSATION: usize = 4;
/// Turns waiting for a free sequence, all conversations together.
const WAITING_MAX: usize = 64;
/// Idle wait for commands before checking the stop flag.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Prompt tokens kept free for the robot-state lines, which change between turns.
const STATE_RESERVE_TOKENS: usize = 96;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    #[error("model_path: llama.cpp could not load {path}: {msg}")]
    Load { path: String, msg: String },
    #[error("llama.cpp context: {0}")]
    Context(String),
    #[error("places_file: llama.cpp refused the intent grammar: {0}")]
    Grammar(String),
    #[error("ctx_size: the system prompt alone ({tokens} tokens) leaves no room in the per-conversation context of {budget} tokens (ctx_size / parallel, minus max_tokens)")]
    SystemPromptTooLong { tokens: usize, budget: usize },
}

/// Why a turn's generation ended (shown in the turn's log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The model ended its reply.
    Eog,
    MaxTokens,
    Interrupted,
    InterruptedByNewUtterance,
    Reset,
    /// The user went on: a later turn continues and replaces this one.
    Replaced,
    DecodeError,
    /// The grammar allowed no token (never for a valid grammar).
    GrammarDeadEnd,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ended::Eog => "end",
            Ended::MaxTokens => "max_tokens",
            Ended::Interrupted => "interrupted",
            Ended::InterruptedByNewUtterance => "interrupted by a new utterance",
            Ended::Reset => "reset",
            Ended::Replaced => "replaced by its continuation",
            Ended::DecodeError => "decode error",
            Ended::GrammarDeadEnd => "grammar allows no token",
        })
    }
}

/// One user turn to answer.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub turn_id: String,
    pub conversation_id: String,
    pub text: String,
    /// Copied into every chunk (end of user speech, zero for text prompts).
    pub speech_end: r2r::builtin_interfaces::msg::Time,
    /// Speech end -> transcript [ms], copied into every chunk.
    pub stt_ms: f32,
    pub received: Instant,
    /// A turn this one continues (its text included): that turn's reply is
    /// dropped or stopped and its exchange left out of the history.
    pub replaces: Option<String>,
}

/// A tentative end of the user's turn to judge (from `transcript/partial`).
#[derive(Debug, Clone)]
pub struct JudgeRequest {
    pub turn_id: String,
    pub revision: u32,
    pub conversation_id: String,
    pub text: String,
}

pub enum Command {
    Turn(TurnRequest),
    /// Score a tentative end of turn, pre-filling the reply's prompt.
    Judge(JudgeRequest),
    /// Stop generation: `None` = every conversation, else that one.
    Interrupt(Option<String>),
    /// Forget every conversation's history; the reply says what was cleared.
    Reset(tokio::sync::oneshot::Sender<String>),
}

/// Figures shared with the diagnostics task.
#[derive(Default)]
pub struct Stats {
    pub turns: AtomicU64,
    pub tokens_generated: AtomicU64,
    pub active: AtomicU64,
    pub dropped: AtomicU64,
    pub interrupted: AtomicU64,
    /// Utterances joined to the turn they followed (busy_policy merge).
    pub merged: AtomicU64,
    /// Replies dropped before their first chunk because the user went on.
    pub superseded: AtomicU64,
    /// End-of-turn judgements made / refused (conversation busy, no free sequence).
    pub judged: AtomicU64,
    pub not_judged: AtomicU64,
    /// Prompt tokens pre-filled while judging; of those, reused by the turn
    /// that followed, and wasted (the turn's prompt differed).
    pub prefilled_tokens: AtomicU64,
    pub prefill_reused_tokens: AtomicU64,
    pub prefill_wasted_tokens: AtomicU64,
    pub last_tokens_per_s: Mutex<f64>,
    pub last_prompt_tokens: AtomicU64,
    pub info: Mutex<String>,
    /// Where llama.cpp runs: build, devices, layers on the GPU, flash attention.
    pub compute: Mutex<String>,
}

struct Active {
    req: TurnRequest,
    user_text: String,
    pending: Vec<LlamaToken>,
    prompt_evaluated: usize,
    /// Prompt tokens found in the KV cache from an end-of-turn judgement.
    prefilled: u32,
    sampler: TurnSampler,
    utf8: Utf8Stream,
    /// With intents: the spoken part of the constrained output.
    say: Option<SayStream>,
    chunker: Chunker,
    reply: String,
    chunk_index: u32,
    generated: u32,
    first_token: Option<Instant>,
    first_chunk: Option<Instant>,
    gen_start: Option<Instant>,
    /// Sampled, not yet in the KV cache.
    next_token: Option<LlamaToken>,
    /// Index of this sequence's logits in the batch just decoded.
    logits_at: Option<i32>,
}

impl Active {
    /// Sentences ready to speak from newly generated `text`: with intents
    /// only the answer's `say` string is spoken, otherwise all of it.
    fn speak(&mut self, text: &str) -> Vec<String> {
        match self.say.as_mut() {
            Some(say) => {
                let spoken = say.push(text);
                self.chunker.push(&spoken)
            }
            None => self.chunker.push(text),
        }
    }
}

struct Slot {
    seq: i32,
    conversation: Option<String>,
    /// Tokens in this sequence's KV cache.
    cached: Vec<LlamaToken>,
    last_used: Instant,
    active: Option<Active>,
    /// Prompt tokens pre-filled by an end-of-turn judgement (the cached
    /// prompt up to them), until a turn uses or discards them.
    prefilled: Option<usize>,
}

struct Conversation {
    history: History,
    queued: VecDeque<TurnRequest>,
    last_used: Instant,
}

pub struct Engine<'m> {
    cfg: LlmConfig,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    template: LlamaChatTemplate,
    slots: Vec<Slot>,
    conversations: HashMap<String, Conversation>,
    waiting: VecDeque<TurnRequest>,
    budget: usize,
    /// The configured system prompt plus, with intents, their instructions
    /// (fixed for the node's life; the robot state is added per turn).
    base_prompt: String,
    sink: Sink,
    /// Latest robot state for the system prompt.
    state: SharedState,
    stats: Arc<Stats>,
    log: voice_ros::log::Log,
    /// Accepted runtime parameter sets (`ros2 param set`), applied before the next turn.
    updates: tokio::sync::watch::Receiver<Arc<LlmConfig>>,
    /// Recently finished turns (turn id, conversation, user text), for
    /// replacing one by its continuation.
    recent: VecDeque<(String, String, String)>,
}

/// Loads the backend and model (once per process).
pub fn load(cfg: &LlmConfig) -> Result<(LlamaBackend, LlamaModel), EngineError> {
    model_file::check("model_path", &cfg.model_path, Format::Gguf)?;
    let mut backend = LlamaBackend::init().map_err(|e| EngineError::Context(e.to_string()))?;
    backend.void_logs();
    let mp = LlamaModelParams::default()
        .with_n_gpu_layers(cfg.n_gpu_layers)
        .with_use_mlock(cfg.use_mlock)
        .with_use_mmap(cfg.use_mmap);
    let model = LlamaModel::load_from_file(&backend, &cfg.model_path, &mp).map_err(|e| {
        EngineError::Load {
            path: cfg.model_path.clone(),
            msg: e.to_string(),
        }
    })?;
    Ok((backend, model))
}

/// What the engine is connected to: where its output goes, the robot
/// state it reads, the figures it shares, its log and parameter updates.
pub struct Wiring {
    pub sink: Sink,
    pub state: SharedState,
    pub stats: Arc<Stats>,
    pub log: voice_ros::log::Log,
    /// Accepted runtime parameter sets (`ros2 param set`).
    pub updates: tokio::sync::watch::Receiver<Arc<LlmConfig>>,
}

impl<'m> Engine<'m> {
    pub fn new(
        cfg: LlmConfig,
        backend: &LlamaBackend,
        model: &'m LlamaModel,
        wiring: Wiring,
    ) -> Result<Self, EngineError> {
        let Wiring {
            sink,
            state,
            stats,
            log,
            updates,
        } = wiring;
        let fa = if cfg.flash_attn {
            llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED
        } else {
            llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
        };
        let cp = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(cfg.ctx_size))
            .with_n_batch(cfg.n_batch)
            .with_n_ubatch(cfg.n_ubatch)
            .with_n_seq_max(cfg.parallel)
            .with_n_threads(cfg.n_threads)
            .with_n_threads_batch(cfg.n_threads_batch)
            .with_flash_attention_policy(fa);
        let ctx = model.new_context(backend, cp).map_err(|e| {
            EngineError::Context(format!(
                "{e} (ctx_size {}, parallel {})",
                cfg.ctx_size, cfg.parallel
            ))
        })?;
        let template = match model.chat_template(None) {
            Ok(t) => t,
            Err(e) => {
                log.warn(format!(
                    "model has no usable chat template ({e}); using ChatML"
                ));
                LlamaChatTemplate::new("chatml").map_err(|e| EngineError::Context(e.to_string()))?
            }
        };
        let budget = (ctx.n_ctx() / cfg.parallel) as usize;
        let slots = (0..cfg.parallel as i32)
            .map(|seq| Slot {
                seq,
                conversation: None,
                cached: Vec::new(),
                last_used: Instant::now(),
                active: None,
                prefilled: None,
            })
            .collect();
        let base_prompt = base_prompt(&cfg);
        let engine = Self {
            cfg,
            model,
            ctx,
            template,
            slots,
            conversations: HashMap::new(),
            waiting: VecDeque::new(),
            budget,
            base_prompt,
            sink,
            state,
            stats,
            log,
            updates,
            recent: VecDeque::new(),
        };
        if engine.cfg.intents.is_some() {
            // refused grammars surface at start, not on the first turn
            LlamaSampler::grammar(engine.model, &intent::grammar(), "root")
                .map_err(|e| EngineError::Grammar(e.to_string()))?;
        }
        // The system prompt with an empty question must leave room for a
        // reply (and for the robot-state lines when they are configured).
        let sys = engine.count(&[
            Message::new(voice_core::chat::Role::System, engine.system_prompt()),
            Message::new(voice_core::chat::Role::User, ""),
        ]);
        let reserve = if engine.cfg.context.battery_topic.is_some()
            || engine.cfg.context.pose_topic.is_some()
            || engine.cfg.intents.is_some()
        {
            STATE_RESERVE_TOKENS
        } else {
            0
        };
        let room = engine.budget.saturating_sub(engine.cfg.max_tokens as usize);
        if sys + reserve + 8 > room {
            return Err(EngineError::SystemPromptTooLong {
                tokens: sys,
                budget: room,
            });
        }
        let info = format!(
            "{} layers, n_ctx {} ({} per conversation), parallel {}, n_batch {}, n_ubatch {}, threads {}/{}, flash_attn {}, gpu layers requested {}",
            engine.model.n_layer(),
            engine.ctx.n_ctx(),
            engine.budget,
            engine.cfg.parallel,
            engine.ctx.n_batch(),
            engine.ctx.n_ubatch(),
            engine.cfg.n_threads,
            engine.cfg.n_threads_batch,
            engine.cfg.flash_attn,
            engine.cfg.n_gpu_layers
        );
        let info = match &engine.cfg.intents {
            Some(i) => format!(
                "{info}, intents on ({} places, {})",
                i.places.len(),
                match &i.nav {
                    crate::params::NavOut::Action { server } =>
                        format!("goals to the NavigateToPose action {server}"),
                    crate::params::NavOut::Topic { goal, stop } =>
                        format!("goals on {goal}, stop on {stop}"),
                }
            ),
            None => format!("{info}, intents off"),
        };
        if let Ok(mut i) = engine.stats.info.lock() {
            *i = info;
        }
        let devices: Vec<compute::Device> = llama_cpp_2::list_llama_ggml_backend_devices()
            .into_iter()
            .map(|d| compute::Device {
                name: d.name,
                description: d.description,
                kind: match d.device_type {
                    LlamaBackendDeviceType::Cpu => compute::DeviceKind::Cpu,
                    LlamaBackendDeviceType::Gpu => compute::DeviceKind::Gpu,
                    LlamaBackendDeviceType::IntegratedGpu => compute::DeviceKind::IntegratedGpu,
                    _ => compute::DeviceKind::Other,
                },
                memory_total: d.memory_total,
                memory_free: d.memory_free,
            })
            .collect();
        let gpu_build = cfg!(feature = "cuda");
        let n_layer = engine.model.n_layer();
        let offloaded =
            compute::layers_offloaded(engine.cfg.n_gpu_layers, n_layer, gpu_build, &devices);
        if let Some(why) =
            compute::no_gpu(gpu_build, &devices).filter(|_| engine.cfg.n_gpu_layers > 0)
        {
            engine.log.warn(format!(
                "n_gpu_layers is {} but {}: all layers run on the CPU",
                engine.cfg.n_gpu_layers,
                why.explain("llm_node")
            ));
        }
        if let Ok(mut c) = engine.stats.compute.lock() {
            *c = compute::summary(
                gpu_build,
                &devices,
                &format!("{offloaded}/{} layers on GPU", n_layer + 1),
                engine.cfg.flash_attn,
            );
        }
        let mut engine = engine;
        engine.warm_up();
        Ok(engine)
    }

    /// Evaluates the system prompt of the default conversation ("") once at
    /// start: the first decode allocates and pages in the model (seconds on
    /// a cold small machine), and the default conversation's first turn then
    /// finds its system prompt in the KV cache.
    fn warm_up(&mut self) {
        let messages = [
            Message::new(voice_core::chat::Role::System, self.system_prompt()),
            Message::new(voice_core::chat::Role::User, ""),
        ];
        let Some(prompt) = self.render(&messages) else {
            return;
        };
        let tokens = self.tokenize(&prompt);
        let n = tokens.len().min(self.ctx.n_batch() as usize);
        let mut batch = LlamaBatch::new(n.max(1), 1);
        for (i, &t) in tokens[..n].iter().enumerate() {
            if batch.add(t, i as i32, &[0], i + 1 == n).is_err() {
                return;
            }
        }
        if n == 0 || self.ctx.decode(&mut batch).is_err() {
            let _ = self.ctx.clear_kv_cache_seq(Some(0), None, None);
            return;
        }
        let s = &mut self.slots[0];
        s.conversation = Some(String::new());
        s.cached = tokens[..n].to_vec();
    }

    /// The configured system prompt, the intent instructions and the robot's
    /// current state, in that order: what changes most comes last, so the KV
    /// cache keeps the longest prefix.
    fn system_prompt(&self) -> String {
        let mut s = self.base_prompt.clone();
        let described = self.state.lock().ok().and_then(|st| {
            st.describe(
                self.cfg.intents.as_ref().map(|i| &i.places),
                Instant::now(),
                self.cfg.context.max_age,
            )
        });
        if let Some(state) = described {
            s += "\n\n";
            s += &state;
        }
        s
    }

    fn render(&self, messages: &[Message]) -> Option<String> {
        let chat: Vec<LlamaChatMessage> = messages
            .iter()
            .filter_map(|m| LlamaChatMessage::new(m.role.as_str().into(), m.content.clone()).ok())
            .collect();
        self.model
            .apply_chat_template(&self.template, &chat, true)
            .ok()
    }

    fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut t = vocab.tokenize(text.as_bytes(), true, true);
        // templates that spell out BOS themselves would give two
        if t.len() >= 2 && t[0] == vocab.bos() && t[1] == vocab.bos() {
            t.remove(0);
        }
        t
    }

    fn count(&self, messages: &[Message]) -> usize {
        self.render(messages)
            .map_or(usize::MAX, |s| self.tokenize(&s).len())
    }

    /// Takes the values of an accepted runtime parameter set; turns that
    /// start from now on use them.
    fn apply_updates(&mut self) {
        if !self.updates.has_changed().unwrap_or(false) {
            return;
        }
        let new = self.updates.borrow_and_update().clone();
        self.cfg.apply_live(&new);
        self.base_prompt = base_prompt(&self.cfg);
        let turns = self.cfg.history_turns;
        for c in self.conversations.values_mut() {
            c.history.set_max_turns(turns);
        }
        self.log.info(format!(
            "parameters applied: temperature {}, top_p {}, top_k {}, repeat_penalty {}, max_tokens {}, history_turns {}, busy_policy {:?}",
            self.cfg.temperature,
            self.cfg.top_p,
            self.cfg.top_k,
            self.cfg.repeat_penalty,
            self.cfg.max_tokens,
            turns,
            self.cfg.busy_policy
        ));
    }

    /// The engine loop: runs until `stop` is set.
    pub fn run(&mut self, commands: Receiver<Command>, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            self.apply_updates();
            let busy = !self.waiting.is_empty() || self.slots.iter().any(|s| s.active.is_some());
            if !busy {
                match commands.recv_timeout(IDLE_POLL) {
                    Ok(c) => self.handle(c),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // every command that arrived is handled before the next token
            loop {
                match commands.try_recv() {
                    Ok(c) => self.handle(c),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            // a set that arrived with (or before) this turn applies to it
            self.apply_updates();
            self.schedule();
            self.step();
            self.stats.active.store(
                self.slots.iter().filter(|s| s.active.is_some()).count() as u64,
                Ordering::Relaxed,
            );
        }
    }

    fn handle(&mut self, c: Command) {
        match c {
            Command::Turn(req) => {
                if let Some(old) = req.replaces.clone() {
                    self.replace(&old, &req.conversation_id);
                }
                self.admit(req)
            }
            Command::Judge(req) => self.judge(req),
            Command::Interrupt(which) => {
                let idx: Vec<usize> = (0..self.slots.len())
                    .filter(|&i| {
                        self.slots[i].active.as_ref().is_some_and(|a| {
                            which.as_ref().is_none_or(|w| *w == a.req.conversation_id)
                        })
                    })
                    .collect();
                for i in idx {
                    self.stats.interrupted.fetch_add(1, Ordering::Relaxed);
                    self.finish(i, Ended::Interrupted);
                }
                // queued turns of interrupted conversations are dropped too
                match which {
                    None => {
                        self.waiting.clear();
                        for c in self.conversations.values_mut() {
                            c.queued.clear();
                        }
                    }
                    Some(w) => {
                        self.waiting.retain(|r| r.conversation_id != w);
                        if let Some(c) = self.conversations.get_mut(&w) {
                            c.queued.clear();
                        }
                    }
                }
            }
            Command::Reset(reply) => {
                for i in 0..self.slots.len() {
                    if self.slots[i].active.is_some() {
                        self.finish(i, Ended::Reset);
                    }
                }
                let n = self.conversations.len();
                self.conversations.clear();
                self.waiting.clear();
                self.ctx.clear_kv_cache();
                for s in &mut self.slots {
                    s.cached.clear();
                    s.conversation = None;
                }
                self.log
                    .info(format!("reset: cleared the history of {n} conversation(s)"));
                let _ = reply.send(format!("cleared {n} conversation(s)"));
            }
        }
    }

    /// Applies the busy policy and queues the turn.
    fn admit(&mut self, req: TurnRequest) {
        let busy_slot = self.slots.iter().position(|s| {
            s.active
                .as_ref()
                .is_some_and(|a| a.req.conversation_id == req.conversation_id)
        });
        let queued_already = self
            .waiting
            .iter()
            .any(|r| r.conversation_id == req.conversation_id);
        if busy_slot.is_some() || queued_already {
            match self.cfg.busy_policy {
                BusyPolicy::Merge => return self.merge(busy_slot, req),
                BusyPolicy::Drop => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    self.log.warn(format!(
                        "turn {} dropped: conversation {:?} is still being answered (busy_policy drop)",
                        req.turn_id, req.conversation_id
                    ));
                    return;
                }
                BusyPolicy::Interrupt => {
                    if let Some(i) = busy_slot {
                        self.stats.interrupted.fetch_add(1, Ordering::Relaxed);
                        self.finish(i, Ended::InterruptedByNewUtterance);
                    }
                    self.waiting
                        .retain(|r| r.conversation_id != req.conversation_id);
                }
                BusyPolicy::Queue => {
                    let conv = self.conversation(&req.conversation_id);
                    if conv.queued.len() >= QUEUE_PER_CONVERSATION {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        self.log.warn(format!(
                            "turn {} dropped: conversation queue full",
                            req.turn_id
                        ));
                    } else {
                        conv.queued.push_back(req);
                    }
                    return;
                }
            }
        }
        if self.waiting.len() >= WAITING_MAX {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.log.warn(format!(
                "turn {} dropped: {} turns already waiting",
                req.turn_id, WAITING_MAX
            ));
            return;
        }
        self.waiting.push_back(req);
    }

    /// Closes a turn with an empty final chunk (nothing more of it is said).
    fn close_silently(&self, req: &TurnRequest) {
        self.sink.chunk(empty_final(req));
    }

    /// A turn the user went on with ("Go to the kitchen." ... "and bring me
    /// water"): its continuation carries both texts and is answered instead.
    /// The old turn's reply is dropped if nothing of it was published,
    /// else stopped (tts_node told through `interrupt`); a finished one's
    /// exchange leaves the history; a waiting one is dropped.
    fn replace(&mut self, old: &str, conversation_id: &str) {
        self.waiting.retain(|r| r.turn_id != old);
        if let Some(c) = self.conversations.get_mut(conversation_id) {
            c.queued.retain(|r| r.turn_id != old);
        }
        let active = self
            .slots
            .iter()
            .position(|s| s.active.as_ref().is_some_and(|a| a.req.turn_id == old));
        if let Some(i) = active {
            let begun = self.slots[i]
                .active
                .as_ref()
                .is_some_and(|a| a.chunk_index > 0);
            self.finish(i, Ended::Replaced);
            if begun {
                self.sink.stop_speech(old);
            }
            self.log
                .info(format!("turn {old} replaced by its continuation"));
            return;
        }
        if let Some(k) = self.recent.iter().position(|(t, _, _)| t == old) {
            let (_, conv, user) = self.recent.remove(k).unwrap_or_default();
            let forgot = self
                .conversations
                .get_mut(&conv)
                .is_some_and(|c| c.history.forget_last(&user));
            self.sink.stop_speech(old);
            self.log.info(format!(
                "turn {old} replaced by its continuation (its reply stopped{})",
                if forgot {
                    ", its exchange forgotten"
                } else {
                    ""
                }
            ));
        }
    }

    /// busy_policy merge: the new utterance joins the turn it follows. A
    /// turn not yet started takes it in; a reply of which nothing was
    /// published yet is dropped (closed with an empty final chunk) and the
    /// joined text answered at once; a reply already under way finishes and
    /// the text waits, joined with any other text waiting.
    fn merge(&mut self, busy_slot: Option<usize>, req: TurnRequest) {
        self.stats.merged.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = self
            .waiting
            .iter_mut()
            .find(|r| r.conversation_id == req.conversation_id)
        {
            self.log.info(format!(
                "turn {} joined to waiting turn {}",
                req.turn_id, w.turn_id
            ));
            join(w, req);
            return;
        }
        let begun = busy_slot.is_some_and(|i| {
            self.slots[i]
                .active
                .as_ref()
                .is_some_and(|a| a.chunk_index > 0)
        });
        if let (Some(i), false) = (busy_slot, begun) {
            if let Some(a) = self.slots[i].active.take() {
                self.stats.superseded.fetch_add(1, Ordering::Relaxed);
                self.slots[i].last_used = Instant::now();
                self.log.info(format!(
                    "turn {} superseded by {} before any of its reply was published ({} tokens dropped)",
                    a.req.turn_id, req.turn_id, a.generated
                ));
                self.close_silently(&a.req);
                let mut joined = a.req;
                join(&mut joined, req);
                self.waiting.push_front(joined);
                return;
            }
        }
        let conv = self.conversation(&req.conversation_id);
        match conv.queued.back_mut() {
            Some(q) => join(q, req),
            None => conv.queued.push_back(req),
        }
    }

    fn conversation(&mut self, id: &str) -> &mut Conversation {
        if !self.conversations.contains_key(id) && self.conversations.len() >= MAX_CONVERSATIONS {
            let busy: Vec<String> = self
                .slots
                .iter()
                .filter(|s| s.active.is_some())
                .filter_map(|s| s.conversation.clone())
                .collect();
            if let Some(oldest) = self
                .conversations
                .iter()
                .filter(|(k, _)| !busy.contains(k))
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone())
            {
                self.conversations.remove(&oldest);
            }
        }
        let turns = self.cfg.history_turns;
        let c = self
            .conversations
            .entry(id.to_string())
            .or_insert_with(|| Conversation {
                history: History::new(turns),
                queued: VecDeque::new(),
                last_used: Instant::now(),
            });
        c.last_used = Instant::now();
        c
    }

    /// Moves waiting turns onto free sequences.
    fn schedule(&mut self) {
        let mut i = 0;
        while i < self.waiting.len() {
            let conv = self.waiting[i].conversation_id.clone();
            if self.slots.iter().any(|s| {
                s.active
                    .as_ref()
                    .is_some_and(|a| a.req.conversation_id == conv)
            }) {
                i += 1;
                continue;
            }
            let Some(slot) = self.free_slot(&conv) else {
                break;
            };
            let Some(req) = self.waiting.remove(i) else {
                break;
            };
            self.start(slot, req);
        }
    }

    /// The sequence for a turn of `conv`: its own idle one (its KV cache
    /// holds the conversation), else an unused one, else the least recently
    /// used idle one. `None` when every sequence is generating.
    fn free_slot(&self, conv: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.active.is_none() && s.conversation.as_deref() == Some(conv))
            .or_else(|| {
                self.slots
                    .iter()
                    .position(|s| s.active.is_none() && s.conversation.is_none())
            })
            .or_else(|| {
                self.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.active.is_none())
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(k, _)| k)
            })
    }

    /// The prompt of a turn: system prompt, history fitted to the context,
    /// the user's text (truncated when it cannot fit), the chat template and,
    /// with intents, the action prefill. Tokens and the user text kept.
    fn prompt_for(
        &mut self,
        turn_id: &str,
        conversation_id: &str,
        text: &str,
    ) -> Result<(Vec<LlamaToken>, String), String> {
        let user = voice_core::chat::sanitize(text);
        let room = self.budget.saturating_sub(self.cfg.max_tokens as usize);
        let history = self.conversation(conversation_id).history.clone();
        let system = self.system_prompt();
        let Some(fitted) = history.fit(&system, &user, room, |m| self.count(m)) else {
            return Err("prompt cannot fit the context".into());
        };
        if let Some(kept) = fitted.truncated_user {
            self.log.warn(format!(
                "turn {turn_id}: input of {} chars truncated to {kept} chars to fit the context",
                user.chars().count()
            ));
        }
        let user_text = fitted
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let Some(prompt) = self.render(&fitted.messages) else {
            return Err("chat template failed".into());
        };
        Ok((self.tokenize(&(prompt + self.prefill())), user_text))
    }

    /// With intents, the start of the action written into the prompt.
    fn prefill(&self) -> &'static str {
        if self.cfg.intents.is_some() {
            intent::PREFILL
        } else {
            ""
        }
    }

    /// Binds `slot` to the conversation and keeps the KV cache's common
    /// prefix with `tokens` (at most `limit` tokens); returns how many.
    fn reuse_prefix(
        &mut self,
        slot: usize,
        conversation_id: &str,
        tokens: &[LlamaToken],
        limit: usize,
    ) -> usize {
        let s = &mut self.slots[slot];
        if s.conversation.as_deref() != Some(conversation_id) {
            s.cached.clear();
            s.conversation = Some(conversation_id.to_string());
            s.prefilled = None;
        }
        let keep = s
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
            .min(limit);
        let _ = self
            .ctx
            .clear_kv_cache_seq(Some(s.seq as u32), Some(keep as u32), None);
        s.cached.truncate(keep);
        keep
    }

    /// A turn that cannot start: its final (empty) chunk closes it for
    /// the nodes downstream, and the conversation's next turn moves up.
    fn fail(&mut self, req: TurnRequest, why: &str) {
        self.log
            .error(format!("turn {}: {why}; not answered", req.turn_id));
        self.sink.chunk(ReplyChunk {
            first_chunk_ms: ms(req.received.elapsed()),
            ..empty_final(&req)
        });
        if let Some(next) = self.conversation(&req.conversation_id).queued.pop_front() {
            self.waiting.push_back(next);
        }
    }

    fn start(&mut self, slot: usize, req: TurnRequest) {
        let (tokens, user_text) =
            match self.prompt_for(&req.turn_id, &req.conversation_id, &req.text) {
                Ok(p) => p,
                Err(why) => return self.fail(req, &why),
            };
        let Some(sampler) = self.sampler() else {
            return self.fail(req, "the intent grammar could not be set up");
        };
        let prefill = self.prefill();
        let say = self.cfg.intents.as_ref().map(|_| {
            let mut say = SayStream::new();
            say.push(prefill);
            say
        });
        // at least one token must be decoded to get logits
        let keep = self.reuse_prefix(
            slot,
            &req.conversation_id,
            &tokens,
            tokens.len().saturating_sub(1),
        );
        let s = &mut self.slots[slot];
        let mut reused_prefill = 0;
        if let Some(n) = s.prefilled.take() {
            reused_prefill = keep.min(n);
            self.stats
                .prefill_reused_tokens
                .fetch_add(reused_prefill as u64, Ordering::Relaxed);
            self.stats
                .prefill_wasted_tokens
                .fetch_add(n.saturating_sub(keep) as u64, Ordering::Relaxed);
        }
        let pending = tokens[keep..].to_vec();
        self.stats
            .last_prompt_tokens
            .store(pending.len() as u64, Ordering::Relaxed);
        self.log.debug(format!(
            "turn {} on seq {}: prompt {} tokens, {} reused from the KV cache ({} pre-filled at the pause), {} to evaluate",
            req.turn_id,
            s.seq,
            tokens.len(),
            keep,
            reused_prefill,
            pending.len()
        ));
        s.active = Some(Active {
            user_text,
            prompt_evaluated: pending.len(),
            prefilled: reused_prefill as u32,
            pending,
            sampler,
            utf8: Utf8Stream::new(),
            say,
            chunker: Chunker::new(ChunkerConfig::default()),
            reply: prefill.to_string(),
            chunk_index: 0,
            generated: 0,
            first_token: None,
            first_chunk: None,
            gen_start: None,
            next_token: None,
            logits_at: None,
            req,
        });
    }

    /// Scores a tentative end of turn: the model's probability that the
    /// user's message ends here, read at the template's end-of-turn token,
    /// while the reply's prompt is evaluated into the conversation's KV
    /// sequence (the turn that follows starts from it). Not judged (-1) when
    /// the conversation is being answered or no sequence is free.
    fn judge(&mut self, req: JudgeRequest) {
        let t0 = Instant::now();
        let busy = self.slots.iter().any(|s| {
            s.active
                .as_ref()
                .is_some_and(|a| a.req.conversation_id == req.conversation_id)
        }) || self
            .waiting
            .iter()
            .any(|r| r.conversation_id == req.conversation_id);
        let slot = if busy {
            None
        } else {
            self.free_slot(&req.conversation_id)
        };
        let scored = match slot {
            Some(slot) => self.prefill_and_score(slot, &req),
            None => Err("conversation busy or no free sequence".to_string()),
        };
        let (p, prefilled) = match scored {
            Ok(v) => {
                self.stats.judged.fetch_add(1, Ordering::Relaxed);
                v
            }
            Err(why) => {
                self.stats.not_judged.fetch_add(1, Ordering::Relaxed);
                self.log
                    .debug(format!("turn {} not judged: {why}", req.turn_id));
                (-1.0, 0)
            }
        };
        let compute_ms = ms(t0.elapsed());
        self.log.info(format!(
            "turn {} (revision {}): end-of-turn probability {p:.4} for {:?} ({compute_ms:.0} ms, {prefilled} prompt tokens pre-filled)",
            req.turn_id, req.revision, req.text
        ));
        self.sink.end_of_turn(EndOfTurn {
            turn_id: req.turn_id,
            revision: req.revision,
            probability: p,
            compute_ms,
            prefilled_tokens: prefilled as u32,
            ..Default::default()
        });
    }

    fn prefill_and_score(
        &mut self,
        slot: usize,
        req: &JudgeRequest,
    ) -> Result<(f32, usize), String> {
        let (tokens, _) = self.prompt_for(&req.turn_id, &req.conversation_id, &req.text)?;
        let end = crate::eot::user_end(self.model, &tokens)
            .ok_or("no end-of-turn token in the prompt")?;
        // the logits at the last token of the user's text are needed, and
        // the last prompt token stays for the turn to decode
        let keep = self.reuse_prefix(slot, &req.conversation_id, &tokens, end - 1);
        let upto = tokens.len() - 1;
        let seq = self.slots[slot].seq;
        let n_batch = self.ctx.n_batch() as usize;
        let mut p = None;
        let mut pos = keep;
        while pos < upto {
            let take = (upto - pos).min(n_batch);
            let mut batch = LlamaBatch::new(n_batch, 1);
            let mut at = None;
            for (k, &tok) in tokens[pos..pos + take].iter().enumerate() {
                let want = pos + k == end - 1;
                batch
                    .add(tok, (pos + k) as i32, &[seq], want)
                    .map_err(|e| e.to_string())?;
                if want {
                    at = Some(batch.n_tokens() - 1);
                }
            }
            if let Err(e) = self.ctx.decode(&mut batch) {
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(seq as u32), Some(pos as u32), None);
                self.slots[slot].cached.truncate(pos);
                return Err(format!("decode failed: {e}"));
            }
            if let Some(i) = at {
                let logits = self.ctx.get_logits_ith(i);
                p = Some(voice_core::turn::token_probability(
                    logits,
                    tokens[end].0 as usize,
                ));
            }
            self.slots[slot]
                .cached
                .extend_from_slice(&tokens[pos..pos + take]);
            pos += take;
        }
        let evaluated = upto - keep;
        let s = &mut self.slots[slot];
        s.last_used = Instant::now();
        s.prefilled = Some(upto);
        self.stats
            .prefilled_tokens
            .fetch_add(evaluated as u64, Ordering::Relaxed);
        Ok((
            p.ok_or("the user's text ends before the cached prefix")?,
            evaluated,
        ))
    }

    /// The turn's sampler: the configured chain, with intents constrained by
    /// the action grammar (so no output other than a valid action can be sampled).
    fn sampler(&self) -> Option<TurnSampler> {
        let grammar = match self.cfg.intents {
            Some(_) => Some(LlamaSampler::grammar(self.model, &intent::grammar(), "root").ok()?),
            None => None,
        };
        let mut chain = Vec::new();
        if self.cfg.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
            return Some(TurnSampler::new(LlamaSampler::chain_simple(chain), grammar));
        }
        if (self.cfg.repeat_penalty - 1.0).abs() > f32::EPSILON {
            chain.push(LlamaSampler::penalties(
                self.model.vocab().n_tokens(),
                64,
                self.cfg.repeat_penalty,
                0.0,
                0.0,
            ));
        }
        if self.cfg.top_k > 0 {
            chain.push(LlamaSampler::top_k(self.cfg.top_k));
        }
        chain.push(LlamaSampler::top_p(self.cfg.top_p, 1));
        chain.push(LlamaSampler::temp(self.cfg.temperature));
        chain.push(LlamaSampler::dist(self.cfg.seed));
        Some(TurnSampler::new(LlamaSampler::chain_simple(chain), grammar))
    }

    /// One decode: every generating sequence's next token plus prompt chunks.
    fn step(&mut self) {
        let n_batch = self.ctx.n_batch() as usize;
        let mut batch = LlamaBatch::new(n_batch, self.slots.len() as i32);
        let mut used = 0usize;
        // generating sequences first: one token each keeps their latency flat
        for s in &mut self.slots {
            let Some(a) = s.active.as_mut() else { continue };
            a.logits_at = None;
            if let Some(tok) = a.next_token.take() {
                if batch
                    .add(tok, s.cached.len() as i32, &[s.seq], true)
                    .is_ok()
                {
                    a.logits_at = Some(batch.n_tokens() - 1);
                    s.cached.push(tok);
                    used += 1;
                }
            }
        }
        for s in &mut self.slots {
            let Some(a) = s.active.as_mut() else { continue };
            if a.pending.is_empty() || used >= n_batch {
                continue;
            }
            let take = a.pending.len().min(n_batch - used);
            let last = take == a.pending.len();
            for (k, &tok) in a.pending[..take].iter().enumerate() {
                let logits = last && k + 1 == take;
                if batch
                    .add(tok, s.cached.len() as i32, &[s.seq], logits)
                    .is_err()
                {
                    break;
                }
                s.cached.push(tok);
                if logits {
                    a.logits_at = Some(batch.n_tokens() - 1);
                }
            }
            a.pending.drain(..take);
            used += take;
        }
        if batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut batch) {
            self.log.error(format!(
                "llama decode failed ({e}); ending the active replies"
            ));
            for i in 0..self.slots.len() {
                if self.slots[i].active.is_some() {
                    self.finish(i, Ended::DecodeError);
                    let seq = self.slots[i].seq as u32;
                    let _ = self.ctx.clear_kv_cache_seq(Some(seq), None, None);
                    self.slots[i].cached.clear();
                }
            }
            return;
        }
        for i in 0..self.slots.len() {
            let Some(idx) = self.slots[i].active.as_ref().and_then(|a| a.logits_at) else {
                continue;
            };
            self.sample_one(i, idx);
        }
    }

    fn sample_one(&mut self, i: usize, idx: i32) {
        let vocab = self.model.vocab();
        let Some(a) = self.slots[i].active.as_mut() else {
            return;
        };
        let Some(token) = a.sampler.sample(&self.ctx, idx) else {
            self.finish(i, Ended::GrammarDeadEnd);
            return;
        };
        let now = Instant::now();
        if a.first_token.is_none() {
            a.first_token = Some(now);
            a.gen_start = Some(now);
        }
        if vocab.is_eog(token) {
            self.finish(i, Ended::Eog);
            return;
        }
        a.generated += 1;
        let piece = vocab.token_to_piece(token, false, None);
        let text = a.utf8.push(&piece);
        a.reply.push_str(&text);
        let chunks = a.speak(&text);
        for c in chunks {
            self.emit(i, c, false);
        }
        let full = self.slots[i].cached.len() + 1 >= self.budget;
        let Some(a) = self.slots[i].active.as_mut() else {
            return;
        };
        if a.generated >= self.cfg.max_tokens || full {
            self.finish(i, Ended::MaxTokens);
            return;
        }
        a.next_token = Some(token);
    }

    fn emit(&mut self, i: usize, text: String, is_final: bool) {
        let Some(a) = self.slots[i].active.as_mut() else {
            return;
        };
        let now = Instant::now();
        let first_chunk = *a.first_chunk.get_or_insert(now);
        let tps = match a.gen_start {
            Some(t) if a.generated > 1 => {
                f64::from(a.generated - 1) / now.duration_since(t).as_secs_f64().max(1e-6)
            }
            _ => 0.0,
        };
        self.sink.chunk(ReplyChunk {
            turn_id: a.req.turn_id.clone(),
            conversation_id: a.req.conversation_id.clone(),
            index: a.chunk_index,
            text,
            is_final,
            speech_end: a.req.speech_end.clone(),
            stt_ms: a.req.stt_ms,
            first_token_ms: a.first_token.map_or(0.0, |t| ms(t - a.req.received)),
            first_chunk_ms: ms(first_chunk - a.req.received),
            prompt_tokens: a.prompt_evaluated as u32,
            prefilled_tokens: a.prefilled,
            generated_tokens: a.generated,
            tokens_per_s: tps as f32,
            ..Default::default()
        });
        a.chunk_index += 1;
    }

    /// Ends the sequence's turn: final chunk, whole reply, history.
    fn finish(&mut self, i: usize, why: Ended) {
        if why == Ended::Replaced {
            // its continuation is answered with the whole text instead:
            // nothing more of this reply goes out, nothing enters the history
            if let Some(a) = self.slots[i].active.take() {
                self.slots[i].last_used = Instant::now();
                self.close_silently(&a.req);
            }
            return;
        }
        let Some(a) = self.slots[i].active.as_mut() else {
            return;
        };
        let rest = a.utf8.finish();
        a.reply.push_str(&rest);
        let mut pieces = a.speak(&rest);
        // with intents, the action decides what else is said
        let mut spoken_reply = None;
        if a.say.is_some() {
            let (spoken, goal) = self.decide(i, why);
            let Some(a) = self.slots[i].active.as_mut() else {
                return;
            };
            if let Some(extra) = &spoken {
                pieces.extend(a.chunker.push(extra));
            }
            spoken_reply = Some(spoken.unwrap_or_else(|| {
                a.say
                    .as_ref()
                    .map(|s| s.said().to_string())
                    .unwrap_or_default()
            }));
            if let Some(place) = goal {
                if let Ok(mut st) = self.state.lock() {
                    st.nav = Some(voice_core::robot_state::Navigation::Sent { place });
                }
            }
        }
        let Some(a) = self.slots[i].active.as_mut() else {
            return;
        };
        pieces.push(a.chunker.finish());
        let n = pieces.len();
        for (k, piece) in pieces.into_iter().enumerate() {
            self.emit(i, piece, k + 1 == n);
        }
        let Some(a) = self.slots[i].active.take() else {
            return;
        };
        self.slots[i].last_used = Instant::now();
        let elapsed = a.gen_start.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let tps = if elapsed > 0.0 && a.generated > 1 {
            f64::from(a.generated - 1) / elapsed
        } else {
            0.0
        };
        self.stats.turns.fetch_add(1, Ordering::Relaxed);
        self.stats
            .tokens_generated
            .fetch_add(u64::from(a.generated), Ordering::Relaxed);
        if let Ok(mut t) = self.stats.last_tokens_per_s.lock() {
            *t = tps;
        }
        let grammar_note = if a.say.is_some() {
            format!(", {} by the full grammar pass", a.sampler.resampled)
        } else {
            String::new()
        };
        self.log.info(format!(
            "turn {} ({}): {} prompt tokens evaluated, {} generated{grammar_note}, first token {:.0} ms, {:.1} tok/s: {:?}",
            a.req.turn_id,
            why,
            a.prompt_evaluated,
            a.generated,
            a.first_token.map_or(0.0, |t| ms(t - a.req.received)),
            tps,
            a.reply
        ));
        let conv_id = a.req.conversation_id.clone();
        // the history keeps what the model wrote (with intents, its JSON), so
        // it sees its own format in later turns
        self.sink.reply(spoken_reply.as_deref().unwrap_or(&a.reply));
        push_bounded(
            &mut self.recent,
            (a.req.turn_id.clone(), conv_id.clone(), a.user_text.clone()),
        );
        let conv = self.conversation(&conv_id);
        conv.history.push(a.user_text, a.reply.trim().to_string());
        if let Some(next) = conv.queued.pop_front() {
            self.waiting.push_front(next);
        }
    }
}

impl Engine<'_> {
    /// With intents: parses the finished output and carries out the action.
    /// Returns the text to say beyond the streamed answer (confirmation or
    /// question) and the place a goal was sent to. An interrupted output, or
    /// an action cut off by max_tokens, does nothing.
    fn decide(&mut self, i: usize, why: Ended) -> (Option<String>, Option<String>) {
        let (Some(a), Some(cfg), Some(actions)) = (
            self.slots[i].active.as_ref(),
            self.cfg.intents.as_ref(),
            self.sink.actions.as_ref(),
        ) else {
            return (None, None);
        };
        let action = match (why, &a.say) {
            (Ended::Eog, _) => match intent::parse(&a.reply) {
                Ok(action) => action,
                Err(e) => {
                    // the grammar makes this unreachable unless llama.cpp misbehaves
                    self.log.error(format!("turn {}: {e}", a.req.turn_id));
                    return (None, None);
                }
            },
            // an answer cut by max_tokens was still an answer (and was spoken)
            (Ended::MaxTokens, Some(say)) if a.reply.starts_with(intent::ANSWER_PREFIX) => {
                intent::Action::Answer {
                    say: say.said().to_string(),
                }
            }
            _ => {
                self.log.info(format!(
                    "turn {} ({why}): no action taken for the unfinished output {:?}",
                    a.req.turn_id, a.reply
                ));
                return (None, None);
            }
        };
        let d = intent::decide(&action, &cfg.places, &cfg.replies);
        let goal = actions.act(
            &d,
            &TurnInfo {
                turn_id: &a.req.turn_id,
                conversation_id: &a.req.conversation_id,
                request: &a.user_text,
                raw: &a.reply,
            },
        );
        let extra = match d {
            intent::Decision::Answer { .. } => None,
            other => Some(other.say().to_string()),
        };
        (extra, goal)
    }
}

/// The empty final chunk that closes `req`'s turn.
fn empty_final(req: &TurnRequest) -> ReplyChunk {
    ReplyChunk {
        turn_id: req.turn_id.clone(),
        conversation_id: req.conversation_id.clone(),
        is_final: true,
        speech_end: req.speech_end.clone(),
        stt_ms: req.stt_ms,
        ..Default::default()
    }
}

/// Finished turns remembered for replacement.
const RECENT_TURNS: usize = 16;

fn push_bounded<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() >= RECENT_TURNS {
        q.pop_front();
    }
    q.push_back(v);
}

/// `new` joins `into`: the texts in order, the newest turn id and timing
/// (the end of speech the reply answers is the newest).
fn join(into: &mut TurnRequest, new: TurnRequest) {
    into.text = format!("{} {}", into.text.trim_end(), new.text.trim_start());
    into.turn_id = new.turn_id;
    into.speech_end = new.speech_end;
    into.stt_ms = new.stt_ms;
    into.received = new.received;
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

fn ms(d: Duration) -> f32 {
    (d.as_secs_f64() * 1e3) as f32
}
