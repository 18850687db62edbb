//! llm_node: transcripts become streamed replies.
//!
//! Wiring: `transcript` (Utterance) / `prompt` (String) / `interrupt` / the
//! `~/reset` service -> bounded command queue -> engine thread (llama.cpp,
//! continuous batching over `parallel` sequences) -> `reply/chunk` +
//! `reply/text`. With a places file, replies are grammar-constrained actions:
//! navigate_to -> `goal_pose`, stop -> `stop`, all -> `intent`. Battery and
//! pose topics, when configured, feed the system prompt.

mod actions;
mod bench;
mod chat_action;
mod context;
mod engine;
mod eot;
mod nav;
mod params;
mod prompt;
mod publish;
mod remote;
mod sampling;
mod turn;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use r2r::std_msgs::msg::String as StringMsg;
use r2r::std_srvs::srv::Trigger;
use r2r::voice_agent::msg::{EndOfTurn, Interrupt, PartialTranscript, ReplyChunk, Utterance};
use voice_core::interrupt::Target;
use voice_core::lifecycle::Step;
use voice_core::queue::{offer, Offered};
use voice_core::scheduler::TurnRequest;
use voice_ros::diag::Report;
use voice_ros::lifecycle::{Gate, Managed};
use voice_ros::node::{self, Tasks};
use voice_ros::{log::Log, stamp};

use crate::engine::{Command, Engine, JudgeRequest, Loaded, Output, StartReport, Stats, Wiring};
use crate::params::LlmParams;

const NODE_NAME: &str = "llm_node";
/// Commands waiting for the engine (turns, interrupts, resets).
const COMMAND_QUEUE: usize = 64;

fn main() -> ExitCode {
    node::main::<LlmParams, _, _>(
        NODE_NAME,
        &[("--bench-bare", bench::run), ("--bench-eot", eot::bench)],
        run,
    )
}

/// Sends a command without ever blocking the executor; a full queue drops
/// the command and says so.
fn send(tx: &SyncSender<Command>, c: Command, log: &Log, stats: &Stats) {
    if let Offered::Dropped(_) = offer(tx, c, &stats.dropped) {
        log.warn("command queue full: request dropped");
    }
}

/// The engine thread: for each configuration, loads the model and runs the
/// engine until it is unloaded (cleanup) or the node stops; one output for
/// them all.
#[allow(clippy::too_many_arguments)]
fn engine_thread(
    loads: &std::sync::mpsc::Receiver<Loaded>,
    commands: &std::sync::mpsc::Receiver<Command>,
    out: &dyn Fn() -> Box<dyn Output>,
    stop: &std::sync::atomic::AtomicBool,
    state: Arc<std::sync::Mutex<voice_core::robot_state::RobotState>>,
    stats: Arc<Stats>,
    log: Log,
    updates: tokio::sync::watch::Receiver<Arc<params::LlmConfig>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let reply = match loads.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let cfg = (**updates.borrow()).clone();
        let (backend, model) = match engine::load(&cfg) {
            Ok(loaded) => loaded,
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
                continue;
            }
        };
        let wiring = Wiring {
            out: out(),
            state: state.clone(),
            stats: stats.clone(),
            log: log.clone(),
            updates: updates.clone(),
        };
        let mut engine = match Engine::new(cfg, &backend, &model, wiring) {
            Ok((engine, report)) => {
                let _ = reply.send(Ok(report));
                engine
            }
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
                continue;
            }
        };
        let unloaded = engine.run(commands, stop);
        // the context before the model, the model before the backend
        drop(engine);
        drop(model);
        drop(backend);
        match unloaded {
            Some(done) => {
                let _ = done.send(());
            }
            None => break,
        }
    }
}

/// How long a lifecycle step waits for the engine to load or unload.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(300);

/// llm_node's lifecycle steps: configure loads the model (on the engine
/// thread), deactivate stops every reply (each ends with its final chunk),
/// cleanup (and shutdown) frees the model.
struct Lifecycle {
    load: SyncSender<Loaded>,
    commands: SyncSender<Command>,
    report: Arc<std::sync::Mutex<Option<StartReport>>>,
    log: Log,
    model_name: String,
}

impl Lifecycle {
    fn stop_replies(&self) {
        let c = Command::Interrupt {
            which: None,
            raised: Instant::now(),
        };
        if self.commands.send(c).is_err() {
            self.log.warn("lifecycle: the engine thread has ended");
        }
    }
}

impl Managed for Lifecycle {
    fn step(&mut self, step: Step) -> Result<(), String> {
        let gone = || "the engine thread has ended".to_string();
        match step {
            Step::Configure => {
                let (tx, rx) = sync_channel(1);
                self.load.send(tx).map_err(|_| gone())?;
                let report = rx.recv_timeout(ENGINE_TIMEOUT).map_err(|_| {
                    format!(
                        "the model did not load within {} s",
                        ENGINE_TIMEOUT.as_secs()
                    )
                })??;
                self.log
                    .info(format!("loaded {}: {}", self.model_name, report.context));
                self.log.info(format!("compute: {}", report.compute));
                *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
            }
            Step::Activate => {}
            Step::Deactivate => self.stop_replies(),
            Step::Cleanup | Step::Shutdown => {
                if self
                    .report
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none()
                {
                    return Ok(()); // nothing loaded (shutdown while unconfigured)
                }
                let (tx, rx) = std::sync::mpsc::channel();
                self.commands
                    .send(Command::Unload(tx))
                    .map_err(|_| gone())?;
                rx.recv_timeout(ENGINE_TIMEOUT)
                    .map_err(|_| "the model was not freed in time".to_string())?;
                *self.report.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.log.info("model unloaded");
            }
        }
        Ok(())
    }
}

async fn run() -> Result<()> {
    let (mut node, log, params) = node::start::<LlmParams>(NODE_NAME)?;
    let cfg = (*params.config).clone();
    let updates = params.updates;
    let mut tasks = Tasks::new(&log);

    let state = context::subscribe(&mut node, &cfg.context, &log)?;
    let nav = match cfg.intents.as_ref().map(|i| &i.nav) {
        #[cfg(nav2)]
        Some(params::NavOut::Action { server }) => Some(nav::spawn(
            &mut node,
            server,
            state.clone(),
            updates.clone(),
            log.clone(),
        )?),
        _ => None,
    };
    let actions = match &cfg.intents {
        Some(i) => Some(actions::ActionSink::create(
            &mut node,
            i,
            nav.clone(),
            &log,
        )?),
        None => None,
    };
    let chats = Arc::new(chat_action::Chats::default());
    let sink = publish::Sink {
        chunk: node.create_publisher::<ReplyChunk>("reply/chunk", node::event_qos())?,
        tentative: node.create_publisher::<ReplyChunk>("reply/tentative", node::event_qos())?,
        text: node.create_publisher::<StringMsg>("reply/text", node::event_qos())?,
        end_of_turn: node.create_publisher::<EndOfTurn>("end_of_turn", node::event_qos())?,
        interrupt: node.create_publisher::<Interrupt>("interrupt", node::event_qos())?,
        actions,
        chats: chats.clone(),
        log: log.clone(),
    };
    let fq = node::fq_name(&node);
    let places = cfg.intents.as_ref().map(|i| i.places.clone());
    let server = cfg.remote.as_ref().map(|r| r.server.base_url.clone());
    let max_age = cfg.context.max_age;

    // The engine (model + context) lives on its own thread; each
    // configuration (lifecycle) loads it there and reports back, cleanup
    // frees it there. With engine openai, the server engine has that place
    // and the local engine, the fallback, is behind it on its own thread.
    let stats = Arc::new(Stats::default());
    let server_stats = Arc::new(remote::ServerStats::default());
    let (tx, rx) = sync_channel::<Command>(COMMAND_QUEUE);
    let (load_tx, load_rx) = sync_channel::<Loaded>(1);
    let model_name = match &cfg.remote {
        Some(r) => r.server.model.clone(),
        None => std::path::Path::new(&cfg.model_path)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let out = Arc::new(std::sync::Mutex::new(sink));
    let local_thread = |tasks: &mut Tasks,
                        loads: std::sync::mpsc::Receiver<Loaded>,
                        commands: std::sync::mpsc::Receiver<Command>,
                        out: Box<dyn Fn() -> Box<dyn Output> + Send>| {
        let (stats, stop, log, state, updates) = (
            stats.clone(),
            tasks.stop_flag(),
            log.clone(),
            state.clone(),
            updates.clone(),
        );
        tasks.thread("llm-engine", move || {
            engine_thread(&loads, &commands, &*out, &stop, state, stats, log, updates)
        })
    };
    match &cfg.remote {
        None => {
            let out = out.clone();
            local_thread(
                &mut tasks,
                load_rx,
                rx,
                Box::new(move || Box::new(out.clone())),
            )?;
        }
        Some(r) => {
            let local = if r.fallback {
                let (ltx, lrx) = sync_channel::<Command>(COMMAND_QUEUE);
                let (lload_tx, lload_rx) = sync_channel::<Loaded>(1);
                let (etx, erx) = sync_channel::<remote::LocalEvent>(COMMAND_QUEUE);
                let relay = remote::Relay {
                    inner: out.clone(),
                    events: etx,
                };
                local_thread(
                    &mut tasks,
                    lload_rx,
                    lrx,
                    Box::new(move || Box::new(relay.clone())),
                )?;
                Some(remote::Local {
                    load: lload_tx,
                    commands: ltx,
                    events: erx,
                })
            } else {
                None
            };
            let (stats, server_stats, stop, log, state, updates, out) = (
                stats.clone(),
                server_stats.clone(),
                tasks.stop_flag(),
                log.clone(),
                state.clone(),
                updates.clone(),
                out.clone(),
            );
            tasks.thread("llm-server", move || {
                remote::thread(&load_rx, &rx, local, &stop, || remote::Wiring {
                    out: Box::new(out.clone()),
                    state: state.clone(),
                    stats: stats.clone(),
                    server: server_stats.clone(),
                    log: log.clone(),
                    updates: updates.clone(),
                })
            })?;
        }
    }
    let gate = Arc::new(Gate::default());
    let report: Arc<std::sync::Mutex<Option<StartReport>>> = Default::default();
    voice_ros::lifecycle::start(
        &mut node,
        &tasks,
        &log,
        params.values.managed,
        Lifecycle {
            load: load_tx,
            commands: tx.clone(),
            report: report.clone(),
            log: log.clone(),
            model_name: model_name.clone(),
        },
        gate.clone(),
    )?;
    // subscribed once able to answer (unmanaged: the model is loaded)
    let utterances = tasks.subscribe::<Utterance>(&mut node, "transcript", node::event_qos())?;
    let partials =
        tasks.subscribe::<PartialTranscript>(&mut node, "transcript/partial", node::event_qos())?;
    let prompts = tasks.subscribe::<StringMsg>(&mut node, "prompt", node::event_qos())?;
    let interrupts = tasks.subscribe::<Interrupt>(&mut node, "interrupt", node::event_qos())?;
    let reset =
        node.create_service::<Trigger::Service>("~/reset", r2r::QosProfile::services_default())?;
    let chat_goals = node
        .create_action_server::<r2r::voice_agent::action::Chat::Action>("chat")
        .map_err(|e| anyhow::anyhow!("cannot serve the chat action: {e}"))?;

    // every handler hands its command over without blocking (send)
    let command = {
        let (tx, log, stats) = (tx.clone(), log.clone(), stats.clone());
        move |c: Command| send(&tx, c, &log, &stats)
    };
    {
        let command = command.clone();
        let gate = gate.clone();
        tasks.each("transcript", utterances, move |u| {
            if !gate.admit() {
                return;
            }
            let req = TurnRequest {
                turn_id: u.turn_id,
                conversation_id: u.conversation_id,
                text: u.text,
                speech_end: stamp::to_core(&u.speech_end),
                stt_ms: u.end_of_speech_to_transcript_ms,
                received: Instant::now(),
                replaces: (!u.replaces.is_empty()).then_some(u.replaces),
            };
            command(Command::Turn(req));
        });
    }
    {
        // a pause in the user's speech: judge whether the turn ends there
        let command = command.clone();
        let gate = gate.clone();
        tasks.each("transcript/partial", partials, move |p| {
            if p.tentative_end && !p.is_final && gate.admit() {
                let req = JudgeRequest {
                    turn_id: p.turn_id,
                    revision: p.revision,
                    conversation_id: p.conversation_id,
                    text: p.text,
                };
                command(Command::Judge(req));
            }
        });
    }
    {
        let command = command.clone();
        let counter = AtomicU64::new(0);
        let gate = gate.clone();
        tasks.each("prompt", prompts, move |m| {
            if !gate.admit() {
                return;
            }
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            let req = TurnRequest {
                turn_id: format!("prompt-{}-{n}", std::process::id()),
                conversation_id: String::new(),
                text: m.data,
                speech_end: Default::default(),
                stt_ms: 0.0,
                received: Instant::now(),
                replaces: None,
            };
            command(Command::Turn(req));
        });
    }
    tasks.task(
        "chat action",
        chat_action::serve(
            chat_goals,
            chats,
            command.clone(),
            gate.clone(),
            log.clone(),
        ),
    );
    {
        let command = command.clone();
        let gate = gate.clone();
        tasks.each("interrupt", interrupts, move |m| {
            if !gate.admit() {
                return;
            }
            // a turn's speech (a replaced reply) is tts_node's business
            let cut = voice_ros::interrupt::cut(&m);
            let which = match cut.target {
                Target::All => None,
                Target::Conversation(c) => Some(c),
                Target::Turn(_) => return,
            };
            command(Command::Interrupt {
                which,
                raised: cut.raised,
            });
        });
    }
    {
        // the last handler takes the closure itself (no clone left in run())
        let mut reset = reset;
        let gate = gate.clone();
        tasks.task("~/reset", async move {
            while let Some(req) = reset.next().await {
                if matches!(gate.label(), "unconfigured" | "finalized") {
                    let _ = req.respond(Trigger::Response {
                        success: false,
                        message: format!("no model loaded (lifecycle state {})", gate.label()),
                    });
                    continue;
                }
                let (rtx, rrx) = tokio::sync::oneshot::channel();
                command(Command::Reset(rtx));
                let (success, message) =
                    match tokio::time::timeout(Duration::from_secs(10), rrx).await {
                        Ok(Ok(m)) => (true, m),
                        _ => (false, "engine did not answer".to_string()),
                    };
                let _ = req.respond(Trigger::Response { success, message });
            }
        });
    }
    tasks.diagnostics(&mut node, move || {
        let tps = stats.last_tokens_per_s.lock().map(|v| *v).unwrap_or(0.0);
        let (context, compute) = report
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|r| (r.context.clone(), r.compute.clone())))
            .unwrap_or_else(|| ("none".into(), "none".into()));
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut r = Report::new(&fq, &model_name)
            .kv("model", &model_name)
            .kv("engine", if server.is_some() { "openai" } else { "local" });
        if let Some(url) = &server {
            let s = &server_stats;
            r = r
                .kv("server", url)
                .kv(
                    "server_state",
                    if s.up.load(Ordering::Relaxed) {
                        "answering"
                    } else {
                        "failed (fallback)"
                    },
                )
                .kv("server_turns", n(&s.turns))
                .kv("fallback_turns", n(&s.fallback_turns))
                .kv("server_errors", n(&s.errors))
                .kv("server_cut_replies", n(&s.cut_replies))
                .kv(
                    "server_last_first_piece_ms",
                    format!(
                        "{:.0}",
                        s.last_first_piece_ms.lock().map(|v| *v).unwrap_or(0.0)
                    ),
                )
                .kv(
                    "server_last_error",
                    s.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
                );
        }
        r.kv("context", context)
            .kv("compute", compute)
            .kv("lifecycle_state", gate.label())
            .kv("ignored_while_inactive", gate.ignored())
            .kv("active_conversations", n(&stats.active))
            .kv("turns", n(&stats.turns))
            .kv("tokens_generated", n(&stats.tokens_generated))
            .kv("last_tokens_per_s", format!("{tps:.1}"))
            .kv("last_prompt_tokens_evaluated", n(&stats.last_prompt_tokens))
            .kv("dropped", n(&stats.dropped))
            .kv("merged", n(&stats.merged))
            .kv("superseded", n(&stats.superseded))
            .kv("end_of_turn_judged", n(&stats.judged))
            .kv("end_of_turn_not_judged", n(&stats.not_judged))
            .kv("prefilled_tokens", n(&stats.prefilled_tokens))
            .kv("prefill_reused_tokens", n(&stats.prefill_reused_tokens))
            .kv("prefill_wasted_tokens", n(&stats.prefill_wasted_tokens))
            .kv("preempted", n(&stats.preempted))
            .kv("preempt_confirmed", n(&stats.preempt_confirmed))
            .kv("preempt_discarded", n(&stats.preempt_discarded))
            .kv("preempt_wasted_tokens", n(&stats.preempt_wasted_tokens))
            .kv("interrupted", n(&stats.interrupted))
            .kv(
                "nav_goals",
                nav.as_ref()
                    .map_or_else(|| "none".into(), |h| h.stats.summary()),
            )
            .kv(
                "robot_state",
                state
                    .lock()
                    .ok()
                    .and_then(|s| s.describe(places.as_ref(), Instant::now(), max_age))
                    .unwrap_or_else(|| "none".into()),
            )
            .into_array()
    })?;

    // the engine stops at the flag; dropping the last sender wakes it too
    tasks.spin(
        node,
        "ready: listening on transcript and prompt, serving the chat action",
        move || drop(tx),
    )
}
