//! llm_node's server engine (`engine: openai`): replies streamed from an
//! OpenAI-compatible chat completions endpoint (vLLM, SGLang, llama.cpp's
//! server, llama-cpp-python, Ollama), with the in-process llama.cpp engine
//! as the fallback while the server cannot answer.
//!
//! What stays the same as with the local engine: the [`Scheduler`] keeps the
//! conversations (history, busy policy, interrupts, replaced turns); a
//! [`Turn`] makes the chunks from the streamed text; [`Output`] publishes.
//! What differs: each running turn is an HTTP stream on a task of this
//! thread's runtime, and cancelling a turn drops its stream (the server sees
//! the connection close and stops generating).
//!
//! Faults (server down, slow, 4xx/5xx, malformed or cut stream) are one
//! error line when the server is lost and a count for each. A turn that got
//! nothing from the server is handed to the local engine (with the
//! conversation's history); a reply cut mid-way gets its final chunk. While
//! the server is lost, turns go to the local engine and the server is asked
//! again every `server.probe_interval_s`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use voice_core::chat::{sanitize, Message};
use voice_core::intent::{self, Decision, ServerOutput};
use voice_core::robot_state::RobotState;
use voice_core::scheduler::{Scheduler, TurnRequest};
use voice_ros::log::Log;
use voice_ros::server::{self, Fault};

use crate::engine::{Command, Ended, Loaded, Output, Parts, Runner, StartReport, Stats, TurnInfo};
use crate::params::{LlmConfig, RemoteConfig};
use crate::turn::{ms, Chunk, Judgement, Turn};

/// Streamed pieces waiting for the engine loop.
const EVENT_QUEUE: usize = 256;
/// Commands held for the local engine while its model loads.
const DEFERRED_MAX: usize = 64;
/// How long the loop waits for a stream event before looking at its commands.
const POLL: Duration = Duration::from_millis(5);
/// How long a lifecycle step waits for the fallback model to load or unload.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(300);

/// Figures of the server engine (in /diagnostics).
#[derive(Default)]
pub struct ServerStats {
    /// The server answers (false after a fault until a probe succeeds).
    pub up: AtomicBool,
    pub turns: AtomicU64,
    pub fallback_turns: AtomicU64,
    pub errors: AtomicU64,
    /// Replies whose stream broke after part of them was published.
    pub cut_replies: AtomicU64,
    /// Request sent -> first streamed piece, of the last turn [ms].
    pub last_first_piece_ms: Mutex<f32>,
    pub last_error: Mutex<String>,
}

/// What the local (fallback) engine tells the server engine about the
/// turns handed to it.
pub enum LocalEvent {
    Reply { turn_id: String, text: String },
    Ended { turn_id: String },
}

/// The local engine's output while it stands in: everything goes to
/// `inner`, and replies and ends are told to the server engine too (it keeps
/// the conversations' history).
#[derive(Clone)]
pub struct Relay<O> {
    pub inner: O,
    pub events: SyncSender<LocalEvent>,
}

impl<O: Output> Output for Relay<O> {
    fn chunk(&self, chunk: Chunk) {
        self.inner.chunk(chunk)
    }
    fn reply(&self, turn_id: &str, text: &str) {
        self.inner.reply(turn_id, text);
        let _ = self.events.try_send(LocalEvent::Reply {
            turn_id: turn_id.into(),
            text: text.into(),
        });
    }
    fn ended(&self, turn_id: &str, why: &str) {
        self.inner.ended(turn_id, why);
        let _ = self.events.try_send(LocalEvent::Ended {
            turn_id: turn_id.into(),
        });
    }
    fn end_of_turn(&self, judgement: Judgement) {
        self.inner.end_of_turn(judgement)
    }
    fn stop_speech(&self, turn_id: &str) {
        self.inner.stop_speech(turn_id)
    }
    fn act(&self, decision: &Decision<'_>, turn: &TurnInfo<'_>) -> Option<String> {
        self.inner.act(decision, turn)
    }
}

/// The local engine's thread, seen from the server engine.
pub struct Local {
    pub load: SyncSender<Loaded>,
    pub commands: SyncSender<Command>,
    pub events: Receiver<LocalEvent>,
}

enum LocalState {
    Unloaded,
    Loading(Receiver<Result<StartReport, String>>),
    Ready,
}

/// What the engine is connected to.
pub struct Wiring {
    pub out: Box<dyn Output>,
    pub state: Arc<Mutex<RobotState>>,
    pub stats: Arc<Stats>,
    pub server: Arc<ServerStats>,
    pub log: Log,
    pub updates: tokio::sync::watch::Receiver<Arc<LlmConfig>>,
}

enum Event {
    Piece { slot: usize, gen: u64, text: String },
    Done { slot: usize, gen: u64, length: bool },
    Failed { slot: usize, gen: u64, fault: Fault },
    Probe(Result<(), Fault>),
}

/// A turn streaming from the server.
struct Streaming {
    turn: Turn,
    gen: u64,
    task: tokio::task::AbortHandle,
    /// With intents: the server's JSON in the local grammar's form.
    json: Option<ServerOutput>,
    sent: Instant,
}

pub struct Engine<'l> {
    cfg: LlmConfig,
    remote: RemoteConfig,
    client: reqwest::Client,
    key: Option<Arc<str>>,
    sched: Scheduler,
    slots: Vec<Option<Streaming>>,
    gen: u64,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    next_probe: Option<Instant>,
    probing: bool,
    local: Option<&'l Local>,
    local_state: LocalState,
    deferred: VecDeque<Command>,
    /// Turns the local engine answers: turn id -> (conversation, user text).
    delegated: HashMap<String, (String, String)>,
    out: Box<dyn Output>,
    state: Arc<Mutex<RobotState>>,
    stats: Arc<Stats>,
    server: Arc<ServerStats>,
    log: Log,
    updates: tokio::sync::watch::Receiver<Arc<LlmConfig>>,
    unloading: Option<std::sync::mpsc::Sender<()>>,
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

    /// The stream is dropped: the server stops generating.
    fn take_turn(&mut self, slot: usize) -> Option<Turn> {
        self.slots[slot].take().map(|s| {
            s.task.abort();
            s.turn
        })
    }
}

impl<'l> Engine<'l> {
    /// Sets up the client, asks the server once, and with `fallback_load
    /// start` loads the local model (waiting for it).
    pub async fn new(
        cfg: LlmConfig,
        local: Option<&'l Local>,
        wiring: Wiring,
    ) -> Result<(Self, StartReport), String> {
        let remote = cfg
            .remote
            .clone()
            .ok_or("engine openai without a server configuration")?;
        let key = server::api_key(&remote.server)?.map(Arc::from);
        let client = reqwest::Client::builder()
            .connect_timeout(remote.server.timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let Wiring {
            out,
            state,
            stats,
            server,
            log,
            updates,
        } = wiring;
        let mut engine = Self {
            sched: Scheduler::new(cfg.parallel as usize, cfg.busy_policy, cfg.history_turns),
            slots: (0..cfg.parallel).map(|_| None).collect(),
            cfg,
            remote,
            client,
            key,
            gen: 0,
            events_tx,
            events,
            next_probe: None,
            probing: false,
            local,
            local_state: LocalState::Unloaded,
            deferred: VecDeque::new(),
            delegated: HashMap::new(),
            out,
            state,
            stats,
            server,
            log,
            updates,
            unloading: None,
        };
        if !engine.remote.fallback {
            engine.local = None;
        }
        let answers = probe(&engine.client, &engine.remote, engine.key.clone()).await;
        let server_line = match &answers {
            Ok(()) => "answers".to_string(),
            Err(f) => format!("does not answer ({f})"),
        };
        // a server that does not answer at start is the one error line
        engine.set_up(true);
        if let Err(f) = &answers {
            engine.lost(f);
        }
        let mut fallback = "none".to_string();
        if engine.local.is_some() {
            fallback = format!("local {}", file_name(&engine.cfg.model_path));
            if engine.remote.fallback_at_start {
                let report = engine.load_local_now()?;
                fallback += &format!(" (loaded: {})", report.context);
            } else {
                fallback += " (loaded at the first fault)";
            }
        }
        let report = StartReport {
            context: format!(
                "server {} model {} ({server_line}), parallel {}, timeout {:.1} s, fallback {fallback}, intents {}",
                engine.remote.server.base_url,
                engine.remote.server.model,
                engine.cfg.parallel,
                engine.remote.server.timeout.as_secs_f64(),
                if engine.cfg.intents.is_some() { "on (JSON schema)" } else { "off" },
            ),
            compute: "the server's".into(),
        };
        Ok((engine, report))
    }

    /// The engine loop: runs until `stop` is set, the commands end, or an
    /// unload is asked for (then its sender, to tell once unloaded).
    pub async fn run(
        &mut self,
        commands: &Receiver<Command>,
        stop: &AtomicBool,
    ) -> Option<std::sync::mpsc::Sender<()>> {
        while !stop.load(Ordering::SeqCst) {
            self.apply_updates();
            loop {
                match commands.try_recv() {
                    Ok(c) => self.handle(c),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return None,
                }
            }
            if let Some(done) = self.unloading.take() {
                self.unload_local();
                return Some(done);
            }
            self.local_events();
            self.local_loaded();
            self.schedule();
            self.maybe_probe();
            self.stats
                .active
                .store(self.sched.running() as u64, Ordering::Relaxed);
            if let Ok(Some(ev)) = tokio::time::timeout(POLL, self.events.recv()).await {
                self.on_event(ev);
                while let Ok(ev) = self.events.try_recv() {
                    self.on_event(ev);
                }
            }
        }
        None
    }

    fn apply_updates(&mut self) {
        if !self.updates.has_changed().unwrap_or(false) {
            return;
        }
        let new = self.updates.borrow_and_update().clone();
        self.cfg.apply_live(&new);
        if let Some(r) = &self.cfg.remote {
            self.remote.server.timeout = r.server.timeout;
            self.remote.server.probe_interval = r.server.probe_interval;
        }
        self.sched
            .set_policy(self.cfg.busy_policy, self.cfg.history_turns);
        self.log.info(format!(
            "parameters applied: temperature {}, top_p {}, max_tokens {}, history_turns {}, busy_policy {:?}, server.timeout_s {:.1}",
            self.cfg.temperature,
            self.cfg.top_p,
            self.cfg.max_tokens,
            self.cfg.history_turns,
            self.cfg.busy_policy,
            self.remote.server.timeout.as_secs_f64()
        ));
    }

    fn handle(&mut self, c: Command) {
        match c {
            Command::Turn(req) => {
                let acts = self.sched.admit(req);
                self.carry_out(acts);
            }
            Command::Judge(req) => {
                // the server is not asked: a round trip per pause, and
                // servers differ in the logprobs they give for a prompt
                if matches!(self.local_state, LocalState::Ready) {
                    self.sync_history(&req.conversation_id);
                    self.send_local(Command::Judge(req));
                } else {
                    self.stats.not_judged.fetch_add(1, Ordering::Relaxed);
                    self.out.end_of_turn(Judgement {
                        turn_id: req.turn_id,
                        revision: req.revision,
                        probability: -1.0,
                        ..Default::default()
                    });
                }
            }
            Command::Interrupt { which, raised } => {
                let acts = self.sched.interrupt(which.as_deref(), raised);
                self.carry_out(acts);
                if !self.delegated.is_empty() {
                    self.send_local(Command::Interrupt { which, raised });
                }
            }
            Command::Reset(reply) => {
                let acts = self.sched.stop_all();
                self.carry_out(acts);
                let n = self.sched.clear();
                if matches!(self.local_state, LocalState::Ready) {
                    let (tx, _) = tokio::sync::oneshot::channel();
                    self.send_local(Command::Reset(tx));
                }
                self.log
                    .info(format!("reset: cleared the history of {n} conversation(s)"));
                let _ = reply.send(format!("cleared {n} conversation(s)"));
            }
            Command::Unload(done) => {
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

    /// Starts waiting turns: on the server while it answers (always without
    /// a fallback), else on the local engine.
    fn schedule(&mut self) {
        while let Some(start) = self.sched.next_start() {
            let up = self.server.up.load(Ordering::Relaxed);
            if up || self.local.is_none() {
                if let Err(why) = self.start(start.slot, start.req.clone()) {
                    self.fail(&start.req, &why);
                    self.sched.start_failed(start.slot);
                }
            } else {
                self.sched.start_failed(start.slot);
                self.delegate(start.req);
            }
        }
    }

    /// The chat messages of a turn: system prompt, history fitted into the
    /// per-request budget (estimated at 4 characters a token), the user's text.
    fn messages(&mut self, req: &TurnRequest) -> Result<(Vec<Message>, String), String> {
        let system = crate::prompt::system(&self.cfg, &self.state);
        let user = sanitize(&req.text);
        let room = (self.cfg.ctx_size as usize).saturating_sub(self.cfg.max_tokens as usize);
        let fitted = self
            .sched
            .history(&req.conversation_id)
            .fit(&system, &user, room, |m| {
                m.iter().map(|m| m.content.len() / 4 + 4).sum()
            })
            .ok_or("the system prompt alone does not fit ctx_size")?;
        let user_text = fitted
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        Ok((fitted.messages, user_text))
    }

    fn start(&mut self, slot: usize, req: TurnRequest) -> Result<(), String> {
        let (messages, user_text) = self.messages(&req)?;
        let mut body = serde_json::json!({
            "model": self.remote.server.model,
            "messages": messages
                .iter()
                .map(|m| serde_json::json!({"role": m.role.as_str(), "content": m.content}))
                .collect::<Vec<_>>(),
            "stream": true,
            "max_tokens": self.cfg.max_tokens,
            "temperature": self.cfg.temperature,
            "top_p": self.cfg.top_p,
            "seed": self.cfg.seed,
        });
        if self.cfg.intents.is_some() {
            body["response_format"] = if self.remote.json_schema_format {
                serde_json::json!({
                    "type": "json_schema",
                    "json_schema": {"name": "robot_action", "strict": true, "schema": intent::json_schema()},
                })
            } else {
                serde_json::json!({"type": "json_object", "schema": intent::json_schema()})
            };
        }
        self.gen += 1;
        let gen = self.gen;
        let task = tokio::spawn(stream(
            self.client.clone(),
            format!("{}/chat/completions", self.remote.server.base_url),
            self.key.clone(),
            body,
            self.remote.server.timeout,
            (slot, gen),
            self.events_tx.clone(),
        ))
        .abort_handle();
        self.log.debug(format!(
            "turn {} on the server (stream {gen}): {} messages",
            req.turn_id,
            messages.len()
        ));
        let prefill = self.cfg.intents.as_ref().map(|_| intent::PREFILL);
        self.slots[slot] = Some(Streaming {
            turn: Turn::new(req, user_text, 0, 0, prefill, self.cfg.first_chunk_words),
            gen,
            task,
            json: prefill.map(|_| ServerOutput::new()),
            sent: Instant::now(),
        });
        self.server.turns.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A turn that cannot be answered: its final (empty) chunk closes it.
    fn fail(&mut self, req: &TurnRequest, why: &str) {
        self.log
            .error(format!("turn {}: {why}; not answered", req.turn_id));
        self.out.chunk(Chunk {
            first_chunk_ms: ms(req.received.elapsed()),
            ..Chunk::closing(req)
        });
        self.out.ended(&req.turn_id, "failed");
    }

    fn on_event(&mut self, ev: Event) {
        let (slot, gen) = match &ev {
            Event::Probe(result) => {
                self.probing = false;
                match result {
                    Ok(()) => {
                        self.set_up(true);
                        self.log.info(format!(
                            "server {} answers again: turns go to it",
                            self.remote.server.base_url
                        ));
                    }
                    Err(f) => {
                        self.next_probe = Some(Instant::now() + self.remote.server.probe_interval);
                        self.log.debug(format!("server still not answering: {f}"));
                    }
                }
                return;
            }
            Event::Piece { slot, gen, .. }
            | Event::Done { slot, gen, .. }
            | Event::Failed { slot, gen, .. } => (*slot, *gen),
        };
        if self.slots[slot].as_ref().is_none_or(|s| s.gen != gen) {
            return; // a stream already cancelled
        }
        match ev {
            Event::Piece { text, .. } => self.piece(slot, &text),
            Event::Done { length, .. } => {
                self.finish(slot, if length { Ended::MaxTokens } else { Ended::Eog })
            }
            Event::Failed { fault, .. } => {
                self.server.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut e) = self.server.last_error.lock() {
                    *e = fault.to_string();
                }
                self.lost(&fault);
                let Some(s) = self.slots[slot].as_ref() else {
                    return;
                };
                if s.turn.generated > 0 {
                    self.server.cut_replies.fetch_add(1, Ordering::Relaxed);
                    return self.finish(slot, Ended::ServerCut);
                }
                let Some(s) = self.slots[slot].take() else {
                    return;
                };
                self.sched.start_failed(slot);
                if self.local.is_some() {
                    self.delegate(s.turn.req);
                } else {
                    self.fail(&s.turn.req, &format!("the server failed ({fault})"));
                }
            }
            Event::Probe(_) => {}
        }
    }

    fn piece(&mut self, slot: usize, text: &str) {
        let Some(s) = self.slots[slot].as_mut() else {
            return;
        };
        if s.turn.generated == 0 {
            if let Ok(mut t) = self.server.last_first_piece_ms.lock() {
                *t = ms(s.sent.elapsed());
            }
        }
        let text = match s.json.as_mut() {
            Some(j) => j.push(text),
            None => text.to_string(),
        };
        s.turn.sampled();
        let chunks = s.turn.token(text.as_bytes());
        self.parts().publish(slot, chunks);
    }

    /// Ends the slot's turn: its stream dropped, final chunk, whole reply, history.
    fn finish(&mut self, slot: usize, why: Ended) {
        let Some(mut s) = self.slots[slot].take() else {
            return;
        };
        s.task.abort();
        if let Some(rest) = s.json.as_mut().map(ServerOutput::finish) {
            if !rest.is_empty() {
                let chunks = s.turn.token(rest.as_bytes());
                self.parts().publish(slot, chunks);
            }
        }
        let turn = s.turn;
        let (turn_id, pieces, first_piece_ms, tps) = (
            turn.req.turn_id.clone(),
            turn.generated,
            turn.first_token_ms(),
            turn.tokens_per_s(),
        );
        let reply = self.parts().conclude(slot, turn, why);
        let line = format!(
            "turn {turn_id} ({why}) from the server: {pieces} pieces, first piece {first_piece_ms:.0} ms, {tps:.1} pieces/s: {reply:?}"
        );
        if why == Ended::ServerCut {
            self.log.warn(line);
        } else {
            self.log.info(line);
        }
    }

    fn set_up(&mut self, up: bool) {
        self.server.up.store(up, Ordering::Relaxed);
        self.next_probe = (!up).then(|| Instant::now() + self.remote.server.probe_interval);
    }

    /// A fault: the first while the server was answering is the error line;
    /// the others are counted (and at debug level).
    fn lost(&mut self, fault: &Fault) {
        let was_up = self.server.up.load(Ordering::Relaxed);
        self.set_up(false);
        if !was_up {
            self.log.debug(format!("server fault again: {fault}"));
            return;
        }
        self.log.error(format!(
            "server {} failed: {fault}; {}",
            self.remote.server.base_url,
            if self.local.is_some() {
                format!(
                    "the local model answers until the server does again (asked every {:.1} s)",
                    self.remote.server.probe_interval.as_secs_f64()
                )
            } else {
                "no fallback (fallback none): its turns end unanswered".into()
            }
        ));
    }

    fn maybe_probe(&mut self) {
        let due = self.next_probe.is_some_and(|t| Instant::now() >= t);
        if self.probing || !due {
            return;
        }
        self.probing = true;
        self.next_probe = None;
        let (client, remote, key, tx) = (
            self.client.clone(),
            self.remote.clone(),
            self.key.clone(),
            self.events_tx.clone(),
        );
        tokio::spawn(async move {
            let r = probe(&client, &remote, key).await;
            let _ = tx.send(Event::Probe(r)).await;
        });
    }

    /// Hands a turn to the local engine, with the conversation so far.
    fn delegate(&mut self, req: TurnRequest) {
        self.server.fallback_turns.fetch_add(1, Ordering::Relaxed);
        self.log
            .info(format!("turn {} answered by the local model", req.turn_id));
        self.delegated.insert(
            req.turn_id.clone(),
            (req.conversation_id.clone(), sanitize(&req.text)),
        );
        self.sync_history(&req.conversation_id);
        self.send_local(Command::Turn(req));
    }

    fn sync_history(&mut self, conversation_id: &str) {
        let exchanges = self
            .sched
            .history(conversation_id)
            .exchanges()
            .cloned()
            .collect();
        self.send_local(Command::History {
            conversation_id: conversation_id.into(),
            exchanges,
        });
    }

    /// Sends to the local engine; while it loads, the commands wait (bounded).
    fn send_local(&mut self, c: Command) {
        let Some(local) = self.local else {
            return;
        };
        match self.local_state {
            LocalState::Ready => {
                if let Err(e) = local.commands.try_send(c) {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    self.log.warn("local engine queue full: request dropped");
                    let (std::sync::mpsc::TrySendError::Full(c)
                    | std::sync::mpsc::TrySendError::Disconnected(c)) = e;
                    if let Command::Turn(req) = c {
                        self.delegated.remove(&req.turn_id);
                        self.fail(&req, "the local engine's queue is full");
                    }
                }
                return;
            }
            LocalState::Unloaded => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                if local.load.try_send(tx).is_ok() {
                    self.log.info("loading the local model (fallback)");
                    self.local_state = LocalState::Loading(rx);
                }
            }
            LocalState::Loading(_) => {}
        }
        if self.deferred.len() >= DEFERRED_MAX {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.log
                .warn("too many requests wait for the local model: request dropped");
            if let Command::Turn(req) = c {
                self.delegated.remove(&req.turn_id);
                self.fail(&req, "too many requests wait for the local model");
            }
            return;
        }
        self.deferred.push_back(c);
    }

    /// A load of the local model ended: its waiting commands go on, or fail.
    fn local_loaded(&mut self) {
        let LocalState::Loading(rx) = &self.local_state else {
            return;
        };
        let result = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => Err("the local engine thread has ended".into()),
        };
        match result {
            Ok(report) => {
                self.log
                    .info(format!("local model loaded: {}", report.context));
                self.local_state = LocalState::Ready;
                while let Some(c) = self.deferred.pop_front() {
                    self.send_local(c);
                }
            }
            Err(why) => {
                self.log
                    .error(format!("the local model (fallback) did not load: {why}"));
                self.local_state = LocalState::Unloaded;
                for c in std::mem::take(&mut self.deferred) {
                    if let Command::Turn(req) = c {
                        self.delegated.remove(&req.turn_id);
                        self.fail(&req, "neither the server nor the local model can answer");
                    }
                }
            }
        }
    }

    /// Loads the local model and waits for it (configure with fallback_load start).
    fn load_local_now(&mut self) -> Result<StartReport, String> {
        let local = self.local.ok_or("no local engine")?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        local
            .load
            .send(tx)
            .map_err(|_| "the local engine thread has ended")?;
        let report = rx.recv_timeout(LOCAL_TIMEOUT).map_err(|_| {
            format!(
                "the local model did not load within {} s",
                LOCAL_TIMEOUT.as_secs()
            )
        })??;
        self.local_state = LocalState::Ready;
        Ok(report)
    }

    /// Unload (cleanup): the local model too, once it is loaded.
    fn unload_local(&mut self) {
        let Some(local) = self.local else {
            return;
        };
        if let LocalState::Loading(rx) = &self.local_state {
            if matches!(rx.recv_timeout(LOCAL_TIMEOUT), Ok(Ok(_))) {
                self.local_state = LocalState::Ready;
            }
        }
        if matches!(self.local_state, LocalState::Ready) {
            let (tx, rx) = std::sync::mpsc::channel();
            if local.commands.send(Command::Unload(tx)).is_ok()
                && rx.recv_timeout(LOCAL_TIMEOUT).is_err()
            {
                self.log.warn("the local model was not freed in time");
            }
        }
        self.local_state = LocalState::Unloaded;
        self.deferred.clear();
        self.delegated.clear();
    }

    /// What the local engine said of the turns handed to it: its replies
    /// enter this engine's history.
    fn local_events(&mut self) {
        let Some(local) = self.local else {
            return;
        };
        while let Ok(ev) = local.events.try_recv() {
            match ev {
                LocalEvent::Reply { turn_id, text } => {
                    if let Some((conv, user)) = self.delegated.remove(&turn_id) {
                        self.sched.history(&conv).push(user, text);
                    }
                }
                LocalEvent::Ended { turn_id } => {
                    self.delegated.remove(&turn_id);
                }
            }
        }
    }
}

/// The last part of a path, for log lines.
fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One streamed chat completion: its pieces, then how it ended, go to `tx`.
async fn stream(
    client: reqwest::Client,
    url: String,
    key: Option<Arc<str>>,
    body: serde_json::Value,
    timeout: Duration,
    (slot, gen): (usize, u64),
    tx: mpsc::Sender<Event>,
) {
    let ended = read_stream(&client, &url, key, &body, timeout, |text| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(Event::Piece { slot, gen, text }).await;
        }
    })
    .await;
    let ev = match ended {
        Ok(length) => Event::Done { slot, gen, length },
        Err(fault) => Event::Failed { slot, gen, fault },
    };
    let _ = tx.send(ev).await;
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<Choice>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
}

/// A response that is not a success, as a fault (with the start of its body).
async fn status_fault(resp: reqwest::Response, timeout: Duration) -> Fault {
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(timeout, resp.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Fault::of_status(status, &body)
}

/// Posts the request and reads its server-sent events; returns whether the
/// reply ended at max_tokens. `timeout` bounds the wait for the answer and
/// for each event after it.
async fn read_stream<F, Fut>(
    client: &reqwest::Client,
    url: &str,
    key: Option<Arc<str>>,
    body: &serde_json::Value,
    timeout: Duration,
    mut piece: F,
) -> Result<bool, Fault>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut req = client.post(url).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = tokio::time::timeout(timeout, req.send())
        .await
        .map_err(|_| Fault::Timeout(timeout.as_secs_f64()))?
        .map_err(|e| Fault::of_request(e, timeout))?;
    if !resp.status().is_success() {
        return Err(status_fault(resp, timeout).await);
    }
    let mut events = resp.bytes_stream().eventsource();
    let mut finish: Option<String> = None;
    loop {
        let next = tokio::time::timeout(timeout, events.next())
            .await
            .map_err(|_| Fault::Timeout(timeout.as_secs_f64()))?;
        let ev = match next {
            // a server that ends without [DONE] after the finish reason
            None => {
                return finish
                    .map(|f| f == "length")
                    .ok_or_else(|| Fault::Cut("the stream ended before the reply did".into()))
            }
            Some(Err(e)) => return Err(Fault::Cut(e.to_string())),
            Some(Ok(ev)) => ev,
        };
        let data = ev.data.trim();
        if data == "[DONE]" {
            return Ok(finish.is_some_and(|f| f == "length"));
        }
        if data.is_empty() {
            continue;
        }
        let chunk: StreamChunk = serde_json::from_str(data)
            .map_err(|e| Fault::Malformed(format!("{e}: {:?}", server::quote(data))))?;
        if let Some(err) = chunk.error {
            return Err(Fault::Malformed(format!(
                "error in the stream: {}",
                server::quote(&err.to_string())
            )));
        }
        for c in chunk.choices {
            if let Some(t) = c.delta.content.filter(|t| !t.is_empty()) {
                piece(t).await;
            }
            if let Some(f) = c.finish_reason {
                finish = Some(f);
            }
        }
    }
}

/// Asks the server whether it answers (GET models, with the key).
async fn probe(
    client: &reqwest::Client,
    remote: &RemoteConfig,
    key: Option<Arc<str>>,
) -> Result<(), Fault> {
    let mut req = client.get(format!("{}/models", remote.server.base_url));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = tokio::time::timeout(remote.server.timeout, req.send())
        .await
        .map_err(|_| Fault::Timeout(remote.server.timeout.as_secs_f64()))?
        .map_err(|e| Fault::of_request(e, remote.server.timeout))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(status_fault(resp, remote.server.timeout).await)
    }
}

/// How one configuration's engine ended.
enum Ran {
    NotConfigured,
    Unloaded(std::sync::mpsc::Sender<()>),
    Stopped,
}

/// The server engine's thread: for each configuration, sets up the engine
/// and runs it until it is unloaded (cleanup) or the node stops.
pub fn thread(
    loads: &Receiver<Loaded>,
    commands: &Receiver<Command>,
    local: Option<Local>,
    stop: &AtomicBool,
    wiring: impl Fn() -> Wiring,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            wiring().log.error(format!("server engine runtime: {e}"));
            return;
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let reply = match loads.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let w = wiring();
        let cfg = (**w.updates.borrow()).clone();
        let ended = rt.block_on(async {
            let mut engine = match Engine::new(cfg, local.as_ref(), w).await {
                Ok((engine, report)) => {
                    let _ = reply.send(Ok(report));
                    engine
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return Ran::NotConfigured;
                }
            };
            let r = engine.run(commands, stop).await;
            for s in engine.slots.iter().flatten() {
                s.task.abort();
            }
            r.map_or(Ran::Stopped, Ran::Unloaded)
        });
        match ended {
            Ran::Unloaded(done) => {
                let _ = done.send(());
            }
            Ran::NotConfigured => {}
            Ran::Stopped => break,
        }
    }
}
