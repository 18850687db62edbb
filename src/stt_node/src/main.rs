//! stt_node: speech on `audio` becomes transcripts on `transcript`.
//!
//! Wiring: audio subscription -> bounded frame queue -> listener thread
//! (decode, resample, VAD, tentative ends, end of turn) -> work queue ->
//! Whisper thread -> `transcript/partial` while the user speaks, then
//! `transcript` + `transcript/text`. `end_of_turn` (llm_node's judgement of
//! a pause) goes back to the listener; `reply/chunk` and `say` tell it the
//! robot's own words (its echo is not a turn).

mod ask_action;
mod bench;
mod devices;
mod engine;
mod listen_action;
mod listener;
#[path = "../../voice_ros/onnx_runtime.rs"]
mod onnx_runtime;
mod params;
mod remote;
mod shared;
mod smart_turn;
mod whisper;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use r2r::std_msgs::msg::{Bool, String as StringMsg};
use r2r::voice_agent::msg::{
    AudioFrame, EndOfTurn, Interrupt, PartialTranscript, ReplyChunk, Utterance,
};
use voice_core::compute;
use voice_core::lifecycle::Step;
use voice_ros::lifecycle::{Handoff, Managed};
use voice_ros::node::{self, Tasks};

use crate::engine::{Detector, SileroDetector};
use crate::params::SttParams;
use crate::remote::Transcriber;
use crate::shared::{Shared, FRAME_QUEUE};

const NODE_NAME: &str = "stt_node";
/// End-of-turn answers waiting for the listener.
const ANSWER_QUEUE: usize = 16;

fn main() -> ExitCode {
    whisper_rs::install_logging_hooks();
    node::main::<SttParams, _, _>(NODE_NAME, &[("--bench-direct", bench::run)], run)
}

/// The models one configuration loads, and how /diagnostics names them.
struct Models {
    transcriber: Transcriber,
    detector: Detector,
    audio_judge: Option<smart_turn::SmartTurn>,
    names: String,
}

/// Loads Whisper, the VAD and (when set) the audio end-of-turn model.
fn load(
    cfg: &params::SttConfig,
    server: Arc<remote::ServerStats>,
    log: &voice_ros::log::Log,
) -> Result<Models> {
    let transcriber = Transcriber::load(cfg, server, log)?;
    let detector = match &cfg.vad_model {
        Some(path) => Detector::Silero(Box::new(SileroDetector::load(path)?)),
        None => {
            log.info("vad.model_path empty: using the energy-based endpointer");
            Detector::Energy(Default::default())
        }
    };
    let vad_name = match &detector {
        Detector::Silero(_) => "silero",
        Detector::Energy(_) => "energy",
    };
    log.info(format!(
        "loaded Whisper {} (language {}, {}{:?}; first inference {:.0} ms), VAD {vad_name}",
        transcriber.model_name,
        cfg.decode.language.as_deref().unwrap_or("auto"),
        cfg.model
            .as_ref()
            .map_or(String::new(), |m| format!("{} threads, ", m.n_threads)),
        cfg.decode.strategy,
        transcriber.warm_up_ms,
    ));
    let audio_judge = match &cfg.audio_model {
        Some(m) => {
            let st = smart_turn::SmartTurn::load(&m.path, &m.onnxruntime_path)?;
            log.info(format!(
                "loaded the audio end-of-turn model {} (first call {:.0} ms); turn.judge {}",
                m.path,
                st.warm_up_ms,
                cfg.judge.as_str()
            ));
            Some(st)
        }
        None => None,
    };
    let audio = if audio_judge.is_some() {
        " end-of-turn audio:smart-turn-v3"
    } else {
        ""
    };
    let names = format!("whisper:{} vad:{vad_name}{audio}", transcriber.model_name);
    Ok(Models {
        transcriber,
        detector,
        audio_judge,
        names,
    })
}

/// How long cleanup waits for a decode under way to finish.
const UNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// stt_node's lifecycle steps: configure loads the models and hands them to
/// the listener and Whisper threads; deactivate stops listening (audio is
/// ignored, work under way dropped); cleanup (and shutdown) frees them.
struct Lifecycle {
    updates: shared::Updates,
    whisper: Arc<Handoff<Transcriber>>,
    listener: Arc<Handoff<(Detector, Option<smart_turn::SmartTurn>)>>,
    shared: Arc<Shared>,
    names: Arc<std::sync::Mutex<String>>,
}

impl Managed for Lifecycle {
    fn step(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::Configure => {
                let cfg = self.updates.borrow().clone();
                let m = load(&cfg, self.shared.server.clone(), &self.shared.log)
                    .map_err(|e| format!("{e:#}"))?;
                *self.names.lock().unwrap_or_else(|e| e.into_inner()) = m.names;
                self.whisper.offer(m.transcriber);
                self.listener.offer((m.detector, m.audio_judge));
            }
            Step::Activate | Step::Deactivate => {}
            Step::Cleanup | Step::Shutdown => {
                let freed =
                    self.whisper.recall(UNLOAD_TIMEOUT) & self.listener.recall(UNLOAD_TIMEOUT);
                if !freed {
                    return Err(format!(
                        "the models were not freed within {} s (a decode still running)",
                        UNLOAD_TIMEOUT.as_secs()
                    ));
                }
                self.shared.log.info("models unloaded");
            }
        }
        Ok(())
    }
}

async fn run() -> Result<()> {
    let (mut node, log, params) = node::start::<SttParams>(NODE_NAME)?;
    let cfg = params.config.clone();
    let mut tasks = Tasks::new(&log);

    let gpu_build = cfg!(feature = "cuda");
    let devices = devices::list();
    let (use_gpu, flash_attn) = cfg
        .model
        .as_ref()
        .map_or((false, false), |m| (m.use_gpu, m.flash_attn));
    let on_gpu = compute::gpu_used(use_gpu, gpu_build, &devices);
    let compute = compute::summary(
        gpu_build,
        &devices,
        match (&cfg.remote, on_gpu) {
            (Some(_), _) if cfg.model.is_none() => "Whisper on the server",
            (_, true) => "Whisper on GPU",
            _ => "Whisper on CPU",
        },
        flash_attn,
    );
    log.info(format!("compute: {compute}"));
    if let Some(why) = compute::no_gpu(gpu_build, &devices).filter(|_| use_gpu) {
        log.warn(format!(
            "use_gpu is true but {}: running on CPU",
            why.explain(NODE_NAME)
        ));
    }

    let fq = node::fq_name(&node);
    let shared = Arc::new(Shared::new(log.clone()));
    let whisper_models = Arc::new(Handoff::default());
    let listener_models = Arc::new(Handoff::default());
    let names = Arc::new(std::sync::Mutex::new(String::from("none")));
    voice_ros::lifecycle::start(
        &mut node,
        &tasks,
        &log,
        params.values.managed,
        Lifecycle {
            updates: params.updates.clone(),
            whisper: whisper_models.clone(),
            listener: listener_models.clone(),
            shared: shared.clone(),
            names: names.clone(),
        },
        shared.gate.clone(),
    )?;
    // publishers and subscriptions made once able to listen (unmanaged:
    // the models are loaded): a node waiting for them knows it is heard
    let pubs = shared::Publishers {
        utterance: node.create_publisher::<Utterance>("transcript", node::event_qos())?,
        text: node.create_publisher::<StringMsg>("transcript/text", node::event_qos())?,
        partial: node
            .create_publisher::<PartialTranscript>("transcript/partial", node::event_qos())?,
        interrupt: node.create_publisher::<Interrupt>("interrupt", node::event_qos())?,
        normalized: if cfg.publish_normalized {
            Some(node.create_publisher::<AudioFrame>("~/audio_16k", node::audio_qos(true, 100))?)
        } else {
            None
        },
        #[cfg(hri)]
        live_speech: match &cfg.live_speech_topic {
            Some(topic) => Some(
                node.create_publisher::<r2r::hri_msgs::msg::LiveSpeech>(topic, node::event_qos())
                    .map_err(|e| anyhow::anyhow!("live_speech_topic {topic:?}: {e}"))?,
            ),
            None => None,
        },
    };

    let audio_sub = tasks.subscribe::<AudioFrame>(
        &mut node,
        "audio",
        node::audio_qos(cfg.reliable_audio, 50),
    )?;
    let speaking_sub = tasks.subscribe::<Bool>(&mut node, "speaking", node::state_qos())?;
    let eot_sub = tasks.subscribe::<EndOfTurn>(&mut node, "end_of_turn", node::event_qos())?;
    // what the robot says, for telling its echo from the user's words
    let chunk_sub = tasks.subscribe::<ReplyChunk>(&mut node, "reply/chunk", node::event_qos())?;
    let say_sub = tasks.subscribe::<StringMsg>(&mut node, "say", node::event_qos())?;
    let listen_goals = node
        .create_action_server::<r2r::voice_agent::action::Listen::Action>("listen")
        .map_err(|e| anyhow::anyhow!("cannot serve the listen action: {e}"))?;
    let ask_goals = node
        .create_action_server::<r2r::voice_agent::action::Ask::Action>("ask")
        .map_err(|e| anyhow::anyhow!("cannot serve the ask action: {e}"))?;
    // the ask action says its question through tts_node's say action
    let say_client = node
        .create_action_client::<r2r::voice_agent::action::Say::Action>("say")
        .map_err(|e| anyhow::anyhow!("cannot create the say action client: {e}"))?;
    let (frame_tx, frame_rx) = std::sync::mpsc::sync_channel::<AudioFrame>(FRAME_QUEUE);
    let (answer_tx, answer_rx) = std::sync::mpsc::sync_channel::<listener::Answer>(ANSWER_QUEUE);

    {
        let (shared, pubs, updates) = (shared.clone(), pubs.clone(), params.updates.clone());
        tasks.thread("stt-listen", move || {
            listener::listen(
                frame_rx,
                answer_rx,
                &listener_models,
                updates,
                &shared,
                pubs,
            )
        })?;
    }
    {
        let (shared, updates) = (shared.clone(), params.updates.clone());
        tasks.thread("stt-whisper", move || {
            whisper::transcribe(&whisper_models, updates, &shared, pubs)
        })?;
    }
    {
        let shared = shared.clone();
        tasks.each("end_of_turn", eot_sub, move |m| {
            if answer_tx
                .try_send((m.turn_id, m.revision, m.probability))
                .is_err()
            {
                shared.warn_throttled("end-of-turn answer dropped (listener behind)");
            }
        });
    }
    tasks.task(
        "listen action",
        listen_action::serve(
            listen_goals,
            shared.listening.clone(),
            shared.gate.clone(),
            log.clone(),
        ),
    );
    tasks.task(
        "ask action",
        ask_action::serve(ask_goals, say_client, shared.clone(), log.clone()),
    );
    {
        let shared = shared.clone();
        tasks.each("reply/chunk", chunk_sub, move |c| {
            shared.robot_said(&c.text)
        });
    }
    {
        let shared = shared.clone();
        tasks.each("say", say_sub, move |m| shared.robot_said(&m.data));
    }
    {
        // audio in -> bounded queue (full: drop and count, never block the executor)
        let shared = shared.clone();
        tasks.each("audio", audio_sub, move |frame| {
            if !shared.gate.admit() {
                return;
            }
            shared.frames_in.fetch_add(1, Ordering::Relaxed);
            if frame_tx.try_send(frame).is_err() {
                shared.drop_frame("dropped audio frame: frame queue full (listener behind)");
            }
        });
    }
    {
        let shared = shared.clone();
        tasks.each("speaking", speaking_sub, move |m| {
            shared.set_speaking(m.data)
        });
    }
    {
        let shared = shared.clone();
        tasks.diagnostics(&mut node, move || {
            let hw = names.lock().unwrap_or_else(|e| e.into_inner()).clone();
            shared.report(&fq, &hw, &compute)
        })?;
    }

    // dropping the node closes the audio subscription, which ends the listener's queue
    tasks.spin(
        node,
        "listening on audio (and serving the listen and ask actions)",
        move || shared.stop.store(true, Ordering::SeqCst),
    )
}
