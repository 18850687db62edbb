//! tts_node: reply chunks and `say` text become speech on `audio_out` (and
//! the speaker, when `playback` is on), with `speaking` and `turn_stats`.
//!
//! Wiring: `reply/chunk` + `say` -> bounded text queue -> synthesis thread
//! (normalize, split sentences, Piper or espeak-ng) -> bounded audio queue ->
//! output thread (frames paced at real time, playback, speaking, turn stats).
//! `interrupt` stops both at once.

mod bench;
mod control;
mod engine;
mod espeak;
#[path = "../../voice_ros/onnx_runtime.rs"]
mod onnx_runtime;
mod output;
mod params;
mod piper;
mod playback;
mod say_action;
mod synth;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use r2r::std_msgs::msg::{Bool, String as StringMsg};
use r2r::voice_agent::msg::{AudioFrame, Interrupt, ReplyChunk, TurnStats, Utterance};
use voice_core::interrupt::{Cut, Target};
use voice_core::lifecycle::Step;
use voice_core::queue::{offer, Offered};
use voice_ros::diag::Report;
use voice_ros::lifecycle::{Gate, Managed};
use voice_ros::log::Log;
use voice_ros::node::{self, Tasks};

use crate::control::{Control, TextJob, AUDIO_QUEUE};
use crate::engine::Engine;
use crate::params::TtsParams;
use crate::synth::EngineSlot;

const NODE_NAME: &str = "tts_node";
/// Text waiting for synthesis (chunks and `say` messages).
const TEXT_QUEUE: usize = 64;
/// Longest `say` text accepted [chars]; longer text is cut with a warning.
const MAX_SAY_CHARS: usize = 4_000;

/// Allocations above this size are mapped and unmapped by glibc each time
/// (its adaptive threshold is turned off by setting one) [bytes].
const MMAP_THRESHOLD: i32 = 256 * 1024;

fn main() -> ExitCode {
    // Each sentence's inference allocates tens of MB of temporaries. With
    // glibc's adaptive threshold they end up on the heap and RSS keeps every
    // high-water mark; mapped, they go back to the system after each sentence.
    // SAFETY: mallopt only changes allocator tuning, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
    node::main::<TtsParams, _, _>(
        NODE_NAME,
        &[("--bench-direct", bench::run), ("--speak", bench::speak)],
        run,
    )
}

/// Queues text for synthesis without blocking; a full queue drops it and says so.
fn enqueue(tx: &SyncSender<TextJob>, job: TextJob, ctl: &Control, log: &Log) {
    if let Offered::Dropped(j) = offer(tx, job, &ctl.dropped) {
        log.warn(format!(
            "text queue full: dropped text of turn {}",
            j.turn_id
        ));
    }
}

/// tts_node's lifecycle steps: configure loads the voice, deactivate stops
/// the speech under way, cleanup (and shutdown) frees the voice.
struct Lifecycle {
    slot: Arc<EngineSlot>,
    updates: control::Updates,
    ctl: Arc<Control>,
    engine_name: Arc<std::sync::Mutex<String>>,
}

impl Managed for Lifecycle {
    fn step(&mut self, step: Step) -> Result<(), String> {
        let stop_speech = |why: &str| {
            let cut = Cut {
                target: Target::All,
                raised: Instant::now(),
            };
            self.ctl.interrupt(cut, why);
        };
        match step {
            Step::Configure => {
                let cfg = self.updates.borrow().clone();
                let t0 = Instant::now();
                let engine = Engine::load(&cfg).map_err(|e| e.to_string())?;
                self.ctl.log.info(format!(
                    "loaded {} in {:.0} ms; audio_out {} ms frames, playback {}",
                    engine.name(),
                    t0.elapsed().as_secs_f64() * 1e3,
                    cfg.frame_ms,
                    cfg.playback.is_some()
                ));
                *self.engine_name.lock().unwrap_or_else(|e| e.into_inner()) = engine.name();
                *self.ctl.voice.lock().unwrap_or_else(|e| e.into_inner()) = Some(engine.language());
                *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(engine);
            }
            Step::Activate => {}
            Step::Deactivate => stop_speech("deactivated"),
            Step::Cleanup | Step::Shutdown => {
                stop_speech(if step == Step::Cleanup {
                    "cleaned up"
                } else {
                    "shut down"
                });
                // waits for a sentence being synthesized (cancelled above)
                *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
                *self.ctl.voice.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.ctl.log.info("voice unloaded");
            }
        }
        Ok(())
    }
}

async fn run() -> Result<()> {
    let (mut node, log, params) = node::start::<TtsParams>(NODE_NAME)?;
    let cfg = params.config.clone();
    let mut tasks = Tasks::new(&log);
    let speaker = cfg.playback.as_ref().and_then(|p| {
        playback::Speaker::open(p.device.as_deref())
            .inspect_err(|e| {
                log.warn(format!(
                    "playback disabled, no audio device ({e}); audio_out is still published"
                ))
            })
            .ok()
    });

    let fq = node::fq_name(&node);

    let ctl = Arc::new(Control::new(log.clone()));
    let slot = Arc::new(EngineSlot::new(None));
    let gate = Arc::new(Gate::default());
    let engine_name = Arc::new(std::sync::Mutex::new(String::from("none")));
    voice_ros::lifecycle::start(
        &mut node,
        &tasks,
        &log,
        params.values.managed,
        Lifecycle {
            slot: slot.clone(),
            updates: params.updates.clone(),
            ctl: ctl.clone(),
            engine_name: engine_name.clone(),
        },
        gate.clone(),
    )?;
    // publishers and subscriptions made once able to speak (unmanaged:
    // the voice is loaded): a node waiting for them knows it is heard
    let out = output::Publishers {
        audio: node.create_publisher::<AudioFrame>("audio_out", node::audio_qos(true, 200))?,
        speaking: node.create_publisher::<Bool>("speaking", node::state_qos())?,
        stats: node.create_publisher::<TurnStats>("turn_stats", node::event_qos())?,
    };
    let chunks = tasks.subscribe::<ReplyChunk>(&mut node, "reply/chunk", node::event_qos())?;
    let tentative =
        tasks.subscribe::<ReplyChunk>(&mut node, "reply/tentative", node::event_qos())?;
    let says = tasks.subscribe::<StringMsg>(&mut node, "say", node::event_qos())?;
    let interrupts = tasks.subscribe::<Interrupt>(&mut node, "interrupt", node::event_qos())?;
    let transcripts = tasks.subscribe::<Utterance>(&mut node, "transcript", node::event_qos())?;
    let say_goals = node
        .create_action_server::<r2r::voice_agent::action::Say::Action>("say")
        .map_err(|e| anyhow::anyhow!("cannot serve the say action: {e}"))?;
    let (text_tx, text_rx) = sync_channel::<TextJob>(TEXT_QUEUE);
    let (audio_tx, audio_rx) = sync_channel(AUDIO_QUEUE);
    {
        let (ctl, updates, slot) = (ctl.clone(), params.updates.clone(), slot.clone());
        tasks.thread("tts-synth", move || {
            synth::synthesize(text_rx, audio_tx, &slot, updates, &ctl)
        })?;
    }
    {
        let (ctl, updates) = (ctl.clone(), params.updates.clone());
        tasks.thread("tts-out", move || {
            output::output(audio_rx, out, speaker, updates, &ctl)
        })?;
    }
    {
        let (tx, ctl, log, gate) = (text_tx.clone(), ctl.clone(), log.clone(), gate.clone());
        tasks.each("reply/chunk", chunks, move |c| {
            if gate.admit() && !ctl.is_cancelled_turn(&c.turn_id) {
                ctl.note_reply(&c);
                enqueue(&tx, TextJob::from_chunk(c), &ctl, &log);
            }
        });
    }
    {
        // a first chunk prepared before its turn is confirmed: synthesized
        // and held; when the queue is full it is not (counted as discarded)
        let (tx, ctl, gate) = (text_tx.clone(), ctl.clone(), gate.clone());
        tasks.each("reply/tentative", tentative, move |c| {
            if gate.admit() && !ctl.is_cancelled_turn(&c.turn_id) {
                let job = TextJob {
                    tentative: true,
                    ..TextJob::from_chunk(c)
                };
                if tx.try_send(job).is_err() {
                    ctl.held_discarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tasks.task(
        "say action",
        say_action::serve(
            say_goals,
            text_tx.clone(),
            ctl.clone(),
            gate.clone(),
            log.clone(),
        ),
    );
    {
        let (tx, ctl, log, gate) = (text_tx, ctl.clone(), log.clone(), gate.clone());
        let mut n = 0u64;
        tasks.each("say", says, move |m| {
            if !gate.admit() {
                return;
            }
            let mut text = m.data;
            if text.chars().count() > MAX_SAY_CHARS {
                log.warn(format!(
                    "say text of {} chars cut to {MAX_SAY_CHARS}",
                    text.chars().count()
                ));
                text = text.chars().take(MAX_SAY_CHARS).collect();
            }
            n += 1;
            enqueue(&tx, TextJob::say(format!("say-{n}"), text), &ctl, &log);
        });
    }
    {
        let ctl = ctl.clone();
        tasks.each("interrupt", interrupts, move |m| {
            ctl.interrupt(
                voice_ros::interrupt::cut(&m),
                &voice_ros::interrupt::describe(&m),
            )
        });
    }
    {
        let ctl = ctl.clone();
        tasks.each("transcript", transcripts, move |u| ctl.remember_stt(&u));
    }
    {
        let ctl = ctl.clone();
        tasks.diagnostics(&mut node, move || {
            let hw = engine_name
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Report::new(&fq, &hw)
                .kv("engine", &hw)
                .kv("lifecycle_state", gate.label())
                .kv("ignored_while_inactive", gate.ignored())
                .kv(
                    "dropped_unconfigured",
                    ctl.unconfigured.load(Ordering::Relaxed),
                )
                .kv("speaking", ctl.speaking.load(Ordering::Relaxed))
                .kv("sentences", ctl.sentences.load(Ordering::Relaxed))
                .kv("audio_s", format!("{:.2}", ctl.audio_s()))
                .kv("real_time_factor", format!("{:.3}", ctl.rtf()))
                .kv("interrupts", ctl.interrupts.load(Ordering::Relaxed))
                .kv("dropped", ctl.dropped.load(Ordering::Relaxed))
                .kv(
                    "superseded_sentences",
                    ctl.superseded.load(Ordering::Relaxed),
                )
                .kv("held_prepared", ctl.held_prepared.load(Ordering::Relaxed))
                .kv("held_released", ctl.held_released.load(Ordering::Relaxed))
                .kv("held_discarded", ctl.held_discarded.load(Ordering::Relaxed))
                .kv(
                    "held_wasted_synthesis_ms",
                    ctl.held_wasted_ms.load(Ordering::Relaxed),
                )
                .into_array()
        })?;
    }

    tasks.spin(
        node,
        "ready: listening on reply/chunk, reply/tentative and say (topic and action)",
        move || {
            ctl.stop.store(true, Ordering::SeqCst);
            ctl.cancel_now.store(true, Ordering::SeqCst);
        },
    )
}
