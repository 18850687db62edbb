//! The llama.cpp engine of llm_node: one model, one context, `parallel` KV
//! sequences decoded together (continuous batching). Each conversation is
//! bound to a sequence while it has one; its KV cache keeps the shared prefix
//! (system prompt + history) between turns, so a turn evaluates only the
//! tokens that changed.
//!
//! Who owns what: the [`Scheduler`] (voice_core) decides which turn runs on
//! which sequence and keeps the conversations; a [`Turn`] owns one reply
//! while it is generated; the engine owns the model, the context, the
//! batch and the KV cache of each sequence, and carries out the
//! scheduler's decisions. It talks to ROS only through [`Output`].

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
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::LlamaBackendDeviceType;
use voice_core::compute;
use voice_core::intent::{self, Decision};
use voice_core::model_file::{self, Format, ModelFileError};
use voice_core::robot_state::{Navigation, RobotState};
use voice_core::scheduler::{
    Action, DiscardReason, DropReason, Scheduler, StopReason, TurnRequest,
};

use crate::params::{IntentConfig, LlmConfig, NavOut};
use crate::prompt::Prompter;
use crate::sampling::TurnSampler;
use crate::turn::{ms, Chunk, Judgement, Turn};

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
pub enum Ended {
    /// The model ended its reply.
    Eog,
    MaxTokens,
    Stopped(StopReason),
    DecodeError,
    /// The grammar allowed no token (never for a valid grammar).
    GrammarDeadEnd,
    /// engine openai: the server's stream broke after part of the reply.
    ServerCut,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ended::Eog => "end",
            Ended::MaxTokens => "max_tokens",
            Ended::Stopped(StopReason::Interrupted) => "interrupted",
            Ended::Stopped(StopReason::NewUtterance) => "interrupted by a new utterance",
            Ended::Stopped(StopReason::Reset) => "reset",
            Ended::DecodeError => "decode error",
            Ended::GrammarDeadEnd => "grammar allows no token",
            Ended::ServerCut => "the server's stream broke",
        })
    }
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
    /// Stop generation: `which` `None` = every conversation, else that one;
    /// only of turns received before the interrupt was `raised`.
    Interrupt {
        which: Option<String>,
        raised: Instant,
    },
    /// Forget every conversation's history; the reply says what was cleared.
    Reset(tokio::sync::oneshot::Sender<String>),
    /// Stop every turn and leave the engine loop, so the model can be freed
    /// (lifecycle cleanup); the sender is told once it is.
    Unload(std::sync::mpsc::Sender<()>),
    /// The conversation's exchanges so far (oldest first), answered by
    /// another engine (the server's, before this one falls back for it).
    History {
        conversation_id: String,
        exchanges: Vec<(String, String)>,
    },
}

/// A configuration's load request: told the engine's start report, or why it failed.
pub type Loaded = std::sync::mpsc::SyncSender<Result<StartReport, String>>;

/// The turn an action belongs to.
pub struct TurnInfo<'a> {
    pub turn_id: &'a str,
    pub conversation_id: &'a str,
    pub request: &'a str,
    pub raw: &'a str,
}

/// Where the engine's output goes (implemented on the ROS side).
pub trait Output: Send {
    /// A piece of a reply (`reply/chunk`).
    fn chunk(&self, chunk: Chunk);
    /// The first chunk of a reply prepared before its turn is confirmed
    /// (`reply/tentative`: for tts_node to synthesize and hold, never to
    /// speak unconfirmed). Outputs that cannot hold one ignore it.
    fn tentative(&self, _chunk: Chunk) {}
    /// A whole reply as said (`reply/text`), of turn `turn_id`.
    fn reply(&self, turn_id: &str, text: &str);
    /// The turn ended without a reply (dropped, superseded, merged into
    /// another, failed): `why` in a word.
    fn ended(&self, turn_id: &str, why: &str);
    /// An end-of-turn judgement (`end_of_turn`).
    fn end_of_turn(&self, judgement: Judgement);
    /// Stop speaking the reply of `turn_id` (it was replaced).
    fn stop_speech(&self, turn_id: &str);
    /// With intents: carries out a decision; returns the place a goal was
    /// sent to when the robot state should say so (goal topic).
    fn act(&self, decision: &Decision<'_>, turn: &TurnInfo<'_>) -> Option<String>;
}

/// One output shared by the engines of successive configurations (lifecycle).
impl<T: Output> Output for Arc<Mutex<T>> {
    fn chunk(&self, chunk: Chunk) {
        self.lock().unwrap_or_else(|e| e.into_inner()).chunk(chunk)
    }
    fn tentative(&self, chunk: Chunk) {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .tentative(chunk)
    }
    fn reply(&self, turn_id: &str, text: &str) {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .reply(turn_id, text)
    }
    fn ended(&self, turn_id: &str, why: &str) {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .ended(turn_id, why)
    }
    fn end_of_turn(&self, judgement: Judgement) {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .end_of_turn(judgement)
    }
    fn stop_speech(&self, turn_id: &str) {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop_speech(turn_id)
    }
    fn act(&self, decision: &Decision<'_>, turn: &TurnInfo<'_>) -> Option<String> {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .act(decision, turn)
    }
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
    /// Preemptive replies (preempt_above): first chunks prepared at a pause;
    /// of those, released when the turn was confirmed, and discarded (the
    /// user went on, or the turn came with other words), with the tokens
    /// they had generated.
    pub preempted: AtomicU64,
    pub preempt_confirmed: AtomicU64,
    pub preempt_discarded: AtomicU64,
    pub preempt_wasted_tokens: AtomicU64,
    pub last_tokens_per_s: Mutex<f64>,
    pub last_prompt_tokens: AtomicU64,
}

/// What the engine says once it is ready (sent through the ready channel).
pub struct StartReport {
    /// Model and context settings.
    pub context: String,
    /// Where llama.cpp runs: build, devices, layers on the GPU, flash attention.
    pub compute: String,
}

/// One KV sequence: the tokens in its cache and the turn generating on it.
struct Seq {
    id: i32,
    cached: Vec<LlamaToken>,
    /// Prompt tokens pre-filled by an end-of-turn judgement (the cached
    /// prompt up to them), until a turn uses or discards them.
    prefilled: Option<usize>,
    turn: Option<Generating>,
    /// A reply prepared at a pause for a turn not yet confirmed.
    held: Option<Held>,
}

impl Seq {
    /// The generation that decodes on this sequence (its turn's, or a held
    /// reply's while its first chunk is not ready), beside the cached tokens.
    fn generating(&mut self) -> (&mut Vec<LlamaToken>, Option<&mut Generating>) {
        let g = match (&mut self.turn, &mut self.held) {
            (Some(g), _) => Some(g),
            (None, Some(h)) if h.state == HeldState::Generating => Some(&mut h.gen),
            _ => None,
        };
        (&mut self.cached, g)
    }
}

/// A reply's first chunk generated at a tentative end of turn, before the
/// turn is confirmed (`preempt_above`). Only `reply/tentative` hears of it;
/// the turn, when it comes with the same words, takes it over (its chunks
/// are published then), otherwise it is discarded.
struct Held {
    turn_id: String,
    conversation_id: String,
    /// The user's text judged.
    text: String,
    gen: Generating,
    /// The generated pieces, replayed into the confirmed turn.
    pieces: Vec<Vec<u8>>,
    state: HeldState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldState {
    Generating,
    /// The first chunk is ready: generation pauses until the turn comes.
    Ready,
    /// The reply ended inside its first chunk.
    Ended(Ended),
}

/// A turn being generated on a sequence, with its decoding state.
struct Generating {
    turn: Turn,
    /// Prompt tokens not yet evaluated.
    pending: Vec<LlamaToken>,
    sampler: TurnSampler,
    /// Sampled, not yet in the KV cache.
    next_token: Option<LlamaToken>,
    /// Index of this turn's logits in the batch just decoded.
    logits_at: Option<i32>,
}

pub struct Engine<'m> {
    cfg: LlmConfig,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    prompts: Prompter<'m>,
    seqs: Vec<Seq>,
    sched: Scheduler,
    /// Tokens per sequence.
    budget: usize,
    out: Box<dyn Output>,
    /// Latest robot state for the system prompt.
    state: Arc<Mutex<RobotState>>,
    stats: Arc<Stats>,
    log: voice_ros::log::Log,
    /// Accepted runtime parameter sets (`ros2 param set`), applied before the next turn.
    updates: tokio::sync::watch::Receiver<Arc<LlmConfig>>,
    /// An unload asked for: the loop ends, the sender is told once freed.
    unloading: Option<std::sync::mpsc::Sender<()>>,
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
    pub out: Box<dyn Output>,
    pub state: Arc<Mutex<RobotState>>,
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
    ) -> Result<(Self, StartReport), EngineError> {
        let Wiring {
            out,
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
        let prompts = Prompter::new(model, &cfg, state.clone(), &log)?;
        let budget = (ctx.n_ctx() / cfg.parallel) as usize;
        let seqs = (0..cfg.parallel as i32)
            .map(|id| Seq {
                id,
                cached: Vec::new(),
                prefilled: None,
                turn: None,
                held: None,
            })
            .collect();
        let mut engine = Self {
            sched: Scheduler::new(cfg.parallel as usize, cfg.busy_policy, cfg.history_turns),
            cfg,
            model,
            ctx,
            prompts,
            seqs,
            budget,
            out,
            state,
            stats,
            log,
            updates,
            unloading: None,
        };
        if engine.cfg.intents.is_some() {
            // refused grammars surface at start, not on the first turn
            LlamaSampler::grammar(engine.model, &intent::grammar(), "root")
                .map_err(|e| EngineError::Grammar(e.to_string()))?;
        }
        engine.check_room()?;
        let report = StartReport {
            context: engine.describe(),
            compute: engine.compute(),
        };
        engine.warm_up();
        Ok((engine, report))
    }

    /// The system prompt with an empty question must leave room for a
    /// reply (and for the robot-state lines when they are configured).
    fn check_room(&self) -> Result<(), EngineError> {
        let sys = self.prompts.count(&self.prompts.system_only(&self.cfg));
        let reserve = if self.cfg.context.battery_topic.is_some()
            || self.cfg.context.pose_topic.is_some()
            || self.cfg.intents.is_some()
        {
            STATE_RESERVE_TOKENS
        } else {
            0
        };
        let room = self.budget.saturating_sub(self.cfg.max_tokens as usize);
        if sys + reserve + 8 > room {
            return Err(EngineError::SystemPromptTooLong {
                tokens: sys,
                budget: room,
            });
        }
        Ok(())
    }

    /// Model and context settings, for the start-up line and diagnostics.
    fn describe(&self) -> String {
        let info = format!(
            "{} layers, n_ctx {} ({} per conversation), parallel {}, n_batch {}, n_ubatch {}, threads {}/{}, flash_attn {}, gpu layers requested {}",
            self.model.n_layer(),
            self.ctx.n_ctx(),
            self.budget,
            self.cfg.parallel,
            self.ctx.n_batch(),
            self.ctx.n_ubatch(),
            self.cfg.n_threads,
            self.cfg.n_threads_batch,
            self.cfg.flash_attn,
            self.cfg.n_gpu_layers
        );
        match &self.cfg.intents {
            Some(i) => format!(
                "{info}, intents on ({} places, {})",
                i.places.len(),
                match &i.nav {
                    NavOut::Action { server } =>
                        format!("goals to the NavigateToPose action {server}"),
                    NavOut::Topic { goal, stop } => format!("goals on {goal}, stop on {stop}"),
                }
            ),
            None => format!("{info}, intents off"),
        }
    }

    /// Where llama.cpp runs; warns when GPU layers were asked for and no
    /// GPU can take them.
    fn compute(&self) -> String {
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
        let n_layer = self.model.n_layer();
        let offloaded =
            compute::layers_offloaded(self.cfg.n_gpu_layers, n_layer, gpu_build, &devices);
        if let Some(why) =
            compute::no_gpu(gpu_build, &devices).filter(|_| self.cfg.n_gpu_layers > 0)
        {
            self.log.warn(format!(
                "n_gpu_layers is {} but {}: all layers run on the CPU",
                self.cfg.n_gpu_layers,
                why.explain("llm_node")
            ));
        }
        compute::summary(
            gpu_build,
            &devices,
            &format!("{offloaded}/{} layers on GPU", n_layer + 1),
            self.cfg.flash_attn,
        )
    }

    /// Evaluates the system prompt of the default conversation ("") once at
    /// start: the first decode allocates and pages in the model (seconds on
    /// a cold small machine), and the default conversation's first turn then
    /// finds its system prompt in the KV cache.
    fn warm_up(&mut self) {
        let messages = self.prompts.system_only(&self.cfg);
        let Some(prompt) = self.prompts.render(&messages) else {
            return;
        };
        let tokens = self.prompts.tokenize(&prompt);
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
        self.sched.bind(0, "");
        self.seqs[0].cached = tokens[..n].to_vec();
    }

    /// Takes the values of an accepted runtime parameter set; turns that
    /// start from now on use them.
    fn apply_updates(&mut self) {
        if !self.updates.has_changed().unwrap_or(false) {
            return;
        }
        let new = self.updates.borrow_and_update().clone();
        self.cfg.apply_live(&new);
        self.prompts.update(&self.cfg);
        self.sched
            .set_policy(self.cfg.busy_policy, self.cfg.history_turns);
        self.log.info(format!(
            "parameters applied: temperature {}, top_p {}, top_k {}, repeat_penalty {}, max_tokens {}, history_turns {}, busy_policy {:?}",
            self.cfg.temperature,
            self.cfg.top_p,
            self.cfg.top_k,
            self.cfg.repeat_penalty,
            self.cfg.max_tokens,
            self.cfg.history_turns,
            self.cfg.busy_policy
        ));
    }

    /// The engine loop: runs until `stop` is set, the commands end, or an
    /// unload is asked for (then its sender, to tell once the engine is
    /// dropped).
    pub fn run(
        &mut self,
        commands: &Receiver<Command>,
        stop: &AtomicBool,
    ) -> Option<std::sync::mpsc::Sender<()>> {
        while !stop.load(Ordering::SeqCst) {
            self.apply_updates();
            if !self.sched.busy() && !self.preparing() {
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
                    Err(TryRecvError::Disconnected) => return None,
                }
            }
            if let Some(done) = self.unloading.take() {
                return Some(done);
            }
            // a set that arrived with (or before) this turn applies to it
            self.apply_updates();
            self.schedule();
            self.step();
            self.stats
                .active
                .store(self.sched.running() as u64, Ordering::Relaxed);
        }
        None
    }

    fn handle(&mut self, c: Command) {
        match c {
            Command::Turn(req) => {
                let acts = self.sched.admit(req);
                self.carry_out(acts);
            }
            Command::Judge(req) => self.judge(req),
            Command::Interrupt { which, raised } => {
                for slot in 0..self.seqs.len() {
                    let of = self.seqs[slot]
                        .held
                        .as_ref()
                        .is_some_and(|h| which.as_deref().is_none_or(|c| c == h.conversation_id));
                    if of {
                        self.discard_held(slot, "interrupted");
                    }
                }
                let acts = self.sched.interrupt(which.as_deref(), raised);
                self.carry_out(acts);
            }
            Command::Reset(reply) => {
                self.discard_all_held("reset");
                let acts = self.sched.stop_all();
                self.carry_out(acts);
                let n = self.sched.clear();
                self.ctx.clear_kv_cache();
                for s in &mut self.seqs {
                    s.cached.clear();
                    s.prefilled = None;
                }
                self.log
                    .info(format!("reset: cleared the history of {n} conversation(s)"));
                let _ = reply.send(format!("cleared {n} conversation(s)"));
            }
            Command::Unload(done) => {
                self.discard_all_held("unloaded");
                let acts = self.sched.stop_all();
                self.carry_out(acts);
                self.unloading = Some(done);
            }
            Command::History {
                conversation_id,
                exchanges,
            } => self.sched.history(&conversation_id).replace(exchanges),
        }
    }

    /// Starts waiting turns on free sequences.
    fn schedule(&mut self) {
        while let Some(start) = self.sched.next_start() {
            if start.rebound {
                self.forget_cache(start.slot);
            }
            if let Err(why) = self.start(start.slot, start.req.clone()) {
                self.fail(start.slot, start.req, &why);
            }
        }
    }

    /// The sequence now belongs to another conversation: its cached tokens
    /// are no longer a prefix to keep.
    fn forget_cache(&mut self, slot: usize) {
        let s = &mut self.seqs[slot];
        s.cached.clear();
        s.prefilled = None;
    }

    /// The prompt of a turn (see [`Prompter::turn`]): tokens and the user
    /// text as it went in.
    fn prompt_for(
        &mut self,
        turn_id: &str,
        conversation_id: &str,
        text: &str,
    ) -> Result<(Vec<LlamaToken>, String), String> {
        let room = self.budget.saturating_sub(self.cfg.max_tokens as usize);
        let history = self.sched.history(conversation_id);
        let p = self.prompts.turn(&self.cfg, history, text, room)?;
        if let Some((given, kept)) = p.truncated {
            self.log.warn(format!(
                "turn {turn_id}: input of {given} chars truncated to {kept} chars to fit the context"
            ));
        }
        Ok((p.tokens, p.user_text))
    }

    /// Keeps the KV cache's common prefix with `tokens` (at most `limit`
    /// tokens); returns how many.
    fn reuse_prefix(&mut self, slot: usize, tokens: &[LlamaToken], limit: usize) -> usize {
        let s = &mut self.seqs[slot];
        let keep = s
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
            .min(limit);
        let _ = self
            .ctx
            .clear_kv_cache_seq(Some(s.id as u32), Some(keep as u32), None);
        s.cached.truncate(keep);
        keep
    }

    /// A turn that cannot start: its final (empty) chunk closes it for
    /// the nodes downstream, and the conversation's next turn moves up.
    fn fail(&mut self, slot: usize, req: TurnRequest, why: &str) {
        self.log
            .error(format!("turn {}: {why}; not answered", req.turn_id));
        self.out.chunk(Chunk {
            first_chunk_ms: ms(req.received.elapsed()),
            ..Chunk::closing(&req)
        });
        self.out.ended(&req.turn_id, "failed");
        self.sched.start_failed(slot);
    }

    fn start(&mut self, slot: usize, req: TurnRequest) -> Result<(), String> {
        let (tokens, user_text) = self.prompt_for(&req.turn_id, &req.conversation_id, &req.text)?;
        for other in 0..self.seqs.len() {
            let of_this = self.seqs[other].held.as_ref().is_some_and(|h| {
                h.turn_id == req.turn_id || h.conversation_id == req.conversation_id
            });
            if other != slot && of_this {
                self.discard_held(other, "the turn runs on another sequence");
            }
        }
        if self.seqs[slot].held.is_some() && self.adopt_held(slot, &req, &tokens) {
            return Ok(());
        }
        let sampler = crate::sampling::for_turn(self.model, &self.cfg)
            .ok_or("the intent grammar could not be set up")?;
        // at least one token must be decoded to get logits
        let keep = self.reuse_prefix(slot, &tokens, tokens.len().saturating_sub(1));
        let s = &mut self.seqs[slot];
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
            s.id,
            tokens.len(),
            keep,
            reused_prefill,
            pending.len()
        ));
        let prefill = self.cfg.intents.as_ref().map(|_| intent::PREFILL);
        s.turn = Some(Generating {
            turn: Turn::new(
                req,
                user_text,
                pending.len(),
                reused_prefill as u32,
                prefill,
                self.cfg.first_chunk_words,
            ),
            pending,
            sampler,
            next_token: None,
            logits_at: None,
        });
        Ok(())
    }

    /// Scores a tentative end of turn: the model's probability that the
    /// user's message ends here, read at the template's end-of-turn token,
    /// while the reply's prompt is evaluated into the conversation's KV
    /// sequence (the turn that follows starts from it). Not judged (-1) when
    /// the conversation is being answered or no sequence is free.
    fn judge(&mut self, req: JudgeRequest) {
        let t0 = Instant::now();
        let scored = match self.sched.judge_slot(&req.conversation_id) {
            Some((slot, rebound)) => {
                // the user went on after the pause a reply was prepared at
                self.discard_held(slot, "the user went on");
                if rebound {
                    self.forget_cache(slot);
                }
                self.prefill_and_score(slot, &req).map(|v| (slot, v))
            }
            None => Err("conversation busy or no free sequence".to_string()),
        };
        let (slot, p, prefilled) = match scored {
            Ok((slot, (p, n))) => {
                self.stats.judged.fetch_add(1, Ordering::Relaxed);
                (Some(slot), p, n)
            }
            Err(why) => {
                self.stats.not_judged.fetch_add(1, Ordering::Relaxed);
                self.log
                    .debug(format!("turn {} not judged: {why}", req.turn_id));
                (None, -1.0, 0)
            }
        };
        let compute_ms = ms(t0.elapsed());
        self.log.info(format!(
            "turn {} (revision {}): end-of-turn probability {p:.4} for {:?} ({compute_ms:.0} ms, {prefilled} prompt tokens pre-filled)",
            req.turn_id, req.revision, req.text
        ));
        self.out.end_of_turn(Judgement {
            turn_id: req.turn_id.clone(),
            revision: req.revision,
            probability: p,
            compute_ms,
            prefilled_tokens: prefilled as u32,
        });
        // intents: an action is not prepared ahead (its goal is sent as it
        // is decided); engine openai: the turn goes to the server
        let preempt = self
            .cfg
            .preempt_above
            .filter(|_| self.cfg.intents.is_none() && self.cfg.remote.is_none());
        if let (Some(slot), Some(above)) = (slot, preempt) {
            if p >= above {
                self.prepare(slot, req);
            }
        }
    }

    /// Whether a held reply is being generated (the loop must keep stepping).
    fn preparing(&self) -> bool {
        self.seqs.iter().any(|s| {
            s.held
                .as_ref()
                .is_some_and(|h| h.state == HeldState::Generating)
        })
    }

    /// Starts a held reply on `slot`, whose prompt the judgement has just
    /// pre-filled (all but its last token, which the reply decodes first).
    fn prepare(&mut self, slot: usize, req: JudgeRequest) {
        let Some(sampler) = crate::sampling::for_turn(self.model, &self.cfg) else {
            return;
        };
        let Ok((tokens, user_text)) =
            self.prompt_for(&req.turn_id, &req.conversation_id, &req.text)
        else {
            return;
        };
        let s = &mut self.seqs[slot];
        if s.turn.is_some() || !tokens.starts_with(&s.cached) || tokens.len() != s.cached.len() + 1
        {
            return; // not the prompt just pre-filled
        }
        let stand_in = TurnRequest {
            turn_id: req.turn_id.clone(),
            conversation_id: req.conversation_id.clone(),
            text: req.text.clone(),
            speech_end: Default::default(),
            stt_ms: 0.0,
            received: Instant::now(),
            replaces: None,
        };
        let pending = tokens[s.cached.len()..].to_vec();
        s.held = Some(Held {
            turn_id: req.turn_id,
            conversation_id: req.conversation_id,
            text: req.text,
            gen: Generating {
                turn: Turn::new(
                    stand_in,
                    user_text,
                    pending.len(),
                    0,
                    None,
                    self.cfg.first_chunk_words,
                ),
                pending,
                sampler,
                next_token: None,
                logits_at: None,
            },
            pieces: Vec::new(),
            state: HeldState::Generating,
        });
        self.stats.preempted.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops the held reply on `slot` (its tokens stay in the KV cache
    /// until the next prompt there differs from them).
    fn discard_held(&mut self, slot: usize, why: &str) {
        let Some(h) = self.seqs[slot].held.take() else {
            return;
        };
        self.stats.preempt_discarded.fetch_add(1, Ordering::Relaxed);
        self.stats
            .preempt_wasted_tokens
            .fetch_add(u64::from(h.gen.turn.generated), Ordering::Relaxed);
        self.log.info(format!(
            "turn {}: reply prepared at the pause discarded ({why}; {} tokens generated): {:?}",
            h.turn_id,
            h.gen.turn.generated,
            h.gen.turn.reply.trim()
        ));
    }

    fn discard_all_held(&mut self, why: &str) {
        for slot in 0..self.seqs.len() {
            self.discard_held(slot, why);
        }
    }

    /// A sampled token of a held reply: it pauses once its first chunk is
    /// ready (sent on `reply/tentative`) or the reply ended.
    fn sample_held(&mut self, i: usize, idx: i32) {
        let vocab = self.model.vocab();
        let max_tokens = self.cfg.max_tokens;
        let budget = self.budget;
        let cached = self.seqs[i].cached.len();
        let Some(h) = self.seqs[i].held.as_mut() else {
            return;
        };
        let Some(token) = h.gen.sampler.sample(&self.ctx, idx) else {
            h.state = HeldState::Ended(Ended::GrammarDeadEnd);
            return;
        };
        h.gen.turn.sampled();
        if vocab.is_eog(token) {
            h.state = HeldState::Ended(Ended::Eog);
        } else {
            let piece = vocab.token_to_piece(token, false, None);
            let chunks = h.gen.turn.token(&piece);
            h.pieces.push(piece);
            h.gen.next_token = Some(token);
            if h.gen.turn.generated >= max_tokens || cached + 1 >= budget {
                h.state = HeldState::Ended(Ended::MaxTokens);
            } else if let Some(first) = chunks.into_iter().next() {
                h.state = HeldState::Ready;
                self.out.tentative(first);
            }
        }
        if let HeldState::Ended(_) = h.state {
            // the whole reply fits its first chunk: that is what is held
            let text = h.gen.turn.reply.trim().to_string();
            self.out.tentative(Chunk {
                turn_id: h.turn_id.clone(),
                conversation_id: h.conversation_id.clone(),
                text,
                ..Default::default()
            });
        }
        if h.state != HeldState::Generating {
            self.log.debug(format!(
                "turn {}: first chunk prepared at the pause ({} tokens), held until the turn is confirmed",
                h.turn_id, h.gen.turn.generated
            ));
        }
    }

    /// The turn `req` takes over the reply held on `slot` when it is the
    /// one prepared (same turn, same words, same prompt): its chunks so far
    /// are published now and generation goes on from there. Otherwise the
    /// held reply is discarded. Returns whether it was taken over.
    fn adopt_held(&mut self, slot: usize, req: &TurnRequest, tokens: &[LlamaToken]) -> bool {
        let same = self.seqs[slot].held.as_ref().is_some_and(|h| {
            h.turn_id == req.turn_id
                && h.text == req.text
                && h.conversation_id == req.conversation_id
        });
        let s = &mut self.seqs[slot];
        if !same || !s.cached.starts_with(tokens) {
            self.discard_held(slot, "the turn came with other words");
            return false;
        }
        let Some(h) = s.held.take() else {
            return false;
        };
        let prefilled = s.prefilled.take().unwrap_or(0);
        self.stats
            .prefill_reused_tokens
            .fetch_add(prefilled as u64, Ordering::Relaxed);
        self.stats.preempt_confirmed.fetch_add(1, Ordering::Relaxed);
        let Generating {
            turn: held_turn,
            sampler,
            next_token,
            ..
        } = h.gen;
        let mut turn = Turn::new(
            req.clone(),
            held_turn.user_text.clone(),
            held_turn.prompt_evaluated,
            prefilled as u32,
            None,
            self.cfg.first_chunk_words,
        );
        turn.sampled();
        let mut chunks = Vec::new();
        for p in &h.pieces {
            chunks.extend(turn.token(p));
        }
        self.log.debug(format!(
            "turn {}: takes over the reply prepared at the pause ({} tokens)",
            req.turn_id, held_turn.generated
        ));
        self.seqs[slot].turn = Some(Generating {
            turn,
            pending: Vec::new(),
            sampler,
            next_token,
            logits_at: None,
        });
        self.parts().publish(slot, chunks);
        if let HeldState::Ended(why) = h.state {
            self.finish(slot, why);
        }
        true
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
        let keep = self.reuse_prefix(slot, &tokens, end - 1);
        let upto = tokens.len() - 1;
        let seq = self.seqs[slot].id;
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
                self.seqs[slot].cached.truncate(pos);
                return Err(format!("decode failed: {e}"));
            }
            if let Some(i) = at {
                let logits = self.ctx.get_logits_ith(i);
                p = Some(voice_core::turn::token_probability(
                    logits,
                    tokens[end].0 as usize,
                ));
            }
            self.seqs[slot]
                .cached
                .extend_from_slice(&tokens[pos..pos + take]);
            pos += take;
        }
        let evaluated = upto - keep;
        self.seqs[slot].prefilled = Some(upto);
        self.stats
            .prefilled_tokens
            .fetch_add(evaluated as u64, Ordering::Relaxed);
        Ok((
            p.ok_or("the user's text ends before the cached prefix")?,
            evaluated,
        ))
    }

    /// One decode: every generating sequence's next token plus prompt chunks.
    fn step(&mut self) {
        let n_batch = self.ctx.n_batch() as usize;
        let mut batch = LlamaBatch::new(n_batch, self.seqs.len() as i32);
        let mut used = 0usize;
        // generating sequences first: one token each keeps their latency flat
        for s in &mut self.seqs {
            let id = s.id;
            let (cached, Some(t)) = s.generating() else {
                continue;
            };
            t.logits_at = None;
            if let Some(tok) = t.next_token.take() {
                if batch.add(tok, cached.len() as i32, &[id], true).is_ok() {
                    t.logits_at = Some(batch.n_tokens() - 1);
                    cached.push(tok);
                    used += 1;
                }
            }
        }
        for s in &mut self.seqs {
            let id = s.id;
            let (cached, Some(t)) = s.generating() else {
                continue;
            };
            if t.pending.is_empty() || used >= n_batch {
                continue;
            }
            let take = t.pending.len().min(n_batch - used);
            let last = take == t.pending.len();
            for (k, &tok) in t.pending[..take].iter().enumerate() {
                let logits = last && k + 1 == take;
                if batch.add(tok, cached.len() as i32, &[id], logits).is_err() {
                    break;
                }
                cached.push(tok);
                if logits {
                    t.logits_at = Some(batch.n_tokens() - 1);
                }
            }
            t.pending.drain(..take);
            used += take;
        }
        if batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut batch) {
            self.log.error(format!(
                "llama decode failed ({e}); ending the active replies"
            ));
            for i in 0..self.seqs.len() {
                let held = self.seqs[i].held.is_some();
                self.discard_held(i, "decode failed");
                if self.seqs[i].turn.is_some() || held {
                    self.finish(i, Ended::DecodeError);
                    let id = self.seqs[i].id as u32;
                    let _ = self.ctx.clear_kv_cache_seq(Some(id), None, None);
                    self.seqs[i].cached.clear();
                }
            }
            return;
        }
        for i in 0..self.seqs.len() {
            let Some(idx) = self.seqs[i].generating().1.and_then(|t| t.logits_at) else {
                continue;
            };
            if self.seqs[i].turn.is_some() {
                self.sample_one(i, idx);
            } else {
                self.sample_held(i, idx);
            }
        }
    }

    fn sample_one(&mut self, i: usize, idx: i32) {
        let vocab = self.model.vocab();
        let Some(g) = self.seqs[i].turn.as_mut() else {
            return;
        };
        let Some(token) = g.sampler.sample(&self.ctx, idx) else {
            return self.finish(i, Ended::GrammarDeadEnd);
        };
        g.turn.sampled();
        if vocab.is_eog(token) {
            return self.finish(i, Ended::Eog);
        }
        let chunks = g.turn.token(&vocab.token_to_piece(token, false, None));
        let done =
            g.turn.generated >= self.cfg.max_tokens || self.seqs[i].cached.len() + 1 >= self.budget;
        self.parts().publish(i, chunks);
        if done {
            return self.finish(i, Ended::MaxTokens);
        }
        if let Some(g) = self.seqs[i].turn.as_mut() {
            g.next_token = Some(token);
        }
    }

    /// Ends the sequence's turn: final chunk, whole reply, history.
    fn finish(&mut self, slot: usize, why: Ended) {
        let Some(Generating { turn, sampler, .. }) = self.seqs[slot].turn.take() else {
            return;
        };
        let (turn_id, evaluated, generated, first_token_ms, tps) = (
            turn.req.turn_id.clone(),
            turn.prompt_evaluated,
            turn.generated,
            turn.first_token_ms(),
            turn.tokens_per_s(),
        );
        let grammar_note = if turn.constrained() {
            format!(", {} by the full grammar pass", sampler.resampled)
        } else {
            String::new()
        };
        let reply = self.parts().conclude(slot, turn, why);
        self.log.info(format!(
            "turn {turn_id} ({why}): {evaluated} prompt tokens evaluated, {generated} generated{grammar_note}, first token {first_token_ms:.0} ms, {tps:.1} tok/s: {reply:?}"
        ));
    }
}

impl Runner for Engine<'_> {
    fn parts(&mut self) -> Parts<'_> {
        Parts {
            out: &*self.out,
            stats: &self.stats,
            log: &self.log,
            sched: &mut self.sched,
            intents: self.cfg.intents.as_ref(),
            state: &self.state,
        }
    }

    fn finish(&mut self, slot: usize, why: Ended) {
        Engine::finish(self, slot, why)
    }

    fn take_turn(&mut self, slot: usize) -> Option<Turn> {
        self.seqs[slot].turn.take().map(|g| g.turn)
    }
}

/// What both engines (llama.cpp's and the server's) use to end their turns:
/// where output goes, the figures, the log, the scheduler, and with intents
/// what the actions need.
pub struct Parts<'a> {
    pub out: &'a dyn Output,
    pub stats: &'a Stats,
    pub log: &'a voice_ros::log::Log,
    pub sched: &'a mut Scheduler,
    pub intents: Option<&'a IntentConfig>,
    pub state: &'a Mutex<RobotState>,
}

impl Parts<'_> {
    /// Publishes a turn's chunks; its first one marks the turn begun.
    pub fn publish(&mut self, slot: usize, chunks: Vec<Chunk>) {
        if chunks.first().is_some_and(|c| c.index == 0) {
            self.sched.mark_begun(slot);
        }
        for c in chunks {
            self.out.chunk(c);
        }
    }

    /// Ends a turn taken off its slot: with intents the action decides what
    /// else is said; the last chunks (the final one among them), the whole
    /// reply, the figures and the history. Returns what the model wrote.
    pub fn conclude(&mut self, slot: usize, turn: Turn, why: Ended) -> String {
        let (turn_id, generated, tps) = (
            turn.req.turn_id.clone(),
            turn.generated,
            turn.tokens_per_s(),
        );
        let done = turn.finish(|t| decide(self.intents, self.out, self.state, self.log, t, why));
        self.publish(slot, done.chunks);
        self.stats.turns.fetch_add(1, Ordering::Relaxed);
        self.stats
            .tokens_generated
            .fetch_add(u64::from(generated), Ordering::Relaxed);
        if let Ok(mut t) = self.stats.last_tokens_per_s.lock() {
            *t = tps;
        }
        // the history keeps what the model wrote (with intents, its JSON), so
        // it sees its own format in later turns
        self.out.reply(&turn_id, &done.spoken);
        self.sched
            .ended(slot, Some((done.user_text, done.reply.clone())));
        done.reply
    }
}

/// An engine's running turns, as the scheduler's decisions reach them.
pub trait Runner {
    fn parts(&mut self) -> Parts<'_>;
    /// Ends the slot's turn (final chunk, reply, history).
    fn finish(&mut self, slot: usize, why: Ended);
    /// Takes the slot's turn away without an end (its generation stops).
    fn take_turn(&mut self, slot: usize) -> Option<Turn>;

    /// Carries out the scheduler's decisions, counting and logging them.
    fn carry_out(&mut self, acts: Vec<Action>) {
        for act in acts {
            match act {
                Action::Stop { slot, why } => {
                    if why != StopReason::Reset {
                        self.parts()
                            .stats
                            .interrupted
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    self.finish(slot, Ended::Stopped(why));
                }
                Action::Discard {
                    slot,
                    stop_speech,
                    why,
                } => {
                    if let Some(turn) = self.take_turn(slot) {
                        let p = self.parts();
                        discarded(p.out, p.stats, p.log, &turn, stop_speech, why);
                    }
                }
                other => {
                    let p = self.parts();
                    report(p.out, p.stats, p.log, other);
                }
            }
        }
    }
}

/// Sends the closing chunk of a turn the scheduler discarded (superseded
/// before any of it was published, or replaced by its continuation), says
/// so and counts it.
fn discarded(
    out: &dyn Output,
    stats: &Stats,
    log: &voice_ros::log::Log,
    turn: &Turn,
    stop_speech: bool,
    why: DiscardReason,
) {
    out.chunk(Chunk::closing(&turn.req));
    let old = &turn.req.turn_id;
    out.ended(
        old,
        match why {
            DiscardReason::Superseded { .. } => "superseded",
            DiscardReason::Replaced => "replaced",
        },
    );
    match why {
        DiscardReason::Superseded { by } => {
            stats.superseded.fetch_add(1, Ordering::Relaxed);
            log.info(format!(
                "turn {old} superseded by {by} before any of its reply was published ({} tokens dropped)",
                turn.generated
            ));
        }
        DiscardReason::Replaced => {
            if stop_speech {
                out.stop_speech(old);
            }
            log.info(format!("turn {old} replaced by its continuation"));
        }
    }
}

/// Carries out, counts and logs a scheduler decision that involves no
/// running turn (a stop or discard is the engine's own business).
fn report(out: &dyn Output, stats: &Stats, log: &voice_ros::log::Log, act: Action) {
    match act {
        Action::Stop { .. } | Action::Discard { .. } => {}
        Action::StopSpeech { turn_id, forgot } => {
            out.stop_speech(&turn_id);
            log.info(format!(
                "turn {turn_id} replaced by its continuation (its reply stopped{})",
                if forgot {
                    ", its exchange forgotten"
                } else {
                    ""
                }
            ));
        }
        Action::Dropped { turn_id, why } => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            out.ended(&turn_id, "dropped");
            log.warn(match why {
                DropReason::Busy => format!(
                    "turn {turn_id} dropped: its conversation is still being answered (busy_policy drop)"
                ),
                DropReason::QueueFull => {
                    format!("turn {turn_id} dropped: conversation queue full")
                }
                DropReason::WaitingFull => format!(
                    "turn {turn_id} dropped: {} turns already waiting",
                    voice_core::scheduler::WAITING_MAX
                ),
            });
        }
        Action::Merged { turn_id, into } => {
            stats.merged.fetch_add(1, Ordering::Relaxed);
            if let Some(into) = into {
                // the joined turn goes on under the newer id
                out.ended(&into, "merged");
                log.info(format!("turn {turn_id} joined to waiting turn {into}"));
            }
        }
    }
}

/// With intents: parses the finished output and carries out the action.
/// Returns the text to say beyond the streamed answer (confirmation or
/// question). An interrupted output, or an action cut off by
/// max_tokens, does nothing.
pub fn decide(
    intents: Option<&IntentConfig>,
    out: &dyn Output,
    state: &Mutex<RobotState>,
    log: &voice_ros::log::Log,
    t: &Turn,
    why: Ended,
) -> Option<String> {
    let cfg = intents?;
    let action = match (why, t.said()) {
        (Ended::Eog, _) => match intent::parse(&t.reply) {
            Ok(action) => action,
            Err(e) => {
                // the grammar makes this unreachable unless llama.cpp misbehaves
                log.error(format!("turn {}: {e}", t.req.turn_id));
                return None;
            }
        },
        // an answer cut by max_tokens was still an answer (and was spoken)
        (Ended::MaxTokens, Some(said)) if t.reply.starts_with(intent::ANSWER_PREFIX) => {
            intent::Action::Answer {
                say: said.to_string(),
            }
        }
        _ => {
            log.info(format!(
                "turn {} ({why}): no action taken for the unfinished output {:?}",
                t.req.turn_id, t.reply
            ));
            return None;
        }
    };
    let d = intent::decide(&action, &cfg.places, &cfg.replies);
    let goal = out.act(
        &d,
        &TurnInfo {
            turn_id: &t.req.turn_id,
            conversation_id: &t.req.conversation_id,
            request: &t.user_text,
            raw: &t.reply,
        },
    );
    if let Some(place) = goal {
        if let Ok(mut st) = state.lock() {
            st.nav = Some(Navigation::Sent { place });
        }
    }
    match d {
        Decision::Answer { .. } => None,
        other => Some(other.say().to_string()),
    }
}
