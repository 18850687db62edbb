//! audio_node: the robot's microphone and speaker, as a driver owns them.
//!
//! Wiring: sound card (or the simulated room) -> 10 ms blocks -> WebRTC
//! audio processing (AEC3 with what the speaker played as reference, noise
//! suppression, AGC2) -> `audio` (AudioFrame, `frame_ms`). `audio_out`
//! (tts_node's speech) -> resampled -> bounded playout queue -> speaker; an
//! `interrupt` empties the playout queue, so barge-in silences the robot at
//! once instead of after tts_node's lead. Backend "sim" takes the talker's
//! voice from `sim/talker`.

mod bench;
mod device;
mod params;
mod process;
mod shared;
mod sim;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use futures::StreamExt;
use r2r::voice_agent::msg::{AudioFrame, Interrupt};
use voice_core::lifecycle::Step;
use voice_ros::diag::Report;
use voice_ros::frames;
use voice_ros::lifecycle::{Gate, Handoff, Managed};
use voice_ros::node::{self, Tasks};

use crate::params::{AudioParams, Backend};
use crate::shared::Shared;

const NODE_NAME: &str = "audio_node";
/// Longest incoming audio_out / sim/talker frame accepted [s].
const MAX_FRAME_S: f64 = 2.0;

fn main() -> ExitCode {
    node::main::<AudioParams, _, _>(
        NODE_NAME,
        &[
            ("--list-devices", device::list),
            ("--bench-aec", bench::run),
        ],
        run,
    )
}

/// How long cleanup waits for the devices to close.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// audio_node's lifecycle steps: configure opens the devices (the audio
/// thread starts capturing), activate publishes the capture and plays
/// audio_out, deactivate stops both (queued speech dropped), cleanup (and
/// shutdown) closes the devices.
struct Lifecycle {
    devices: Arc<Handoff<()>>,
    shared: Arc<Shared>,
}

impl Lifecycle {
    fn drop_playout(&self) {
        if let Ok(mut q) = self.shared.playout.lock() {
            q.clear();
        }
    }
}

impl Managed for Lifecycle {
    fn step(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::Configure => {
                self.shared.closing.store(false, Ordering::SeqCst);
                self.devices.offer(());
            }
            Step::Activate => {}
            Step::Deactivate => self.drop_playout(),
            Step::Cleanup | Step::Shutdown => {
                self.shared.closing.store(true, Ordering::SeqCst);
                self.drop_playout();
                if !self.devices.recall(CLOSE_TIMEOUT) {
                    return Err(format!(
                        "the devices did not close within {} s",
                        CLOSE_TIMEOUT.as_secs()
                    ));
                }
                self.shared.set_state("closed");
            }
        }
        Ok(())
    }
}

async fn run() -> Result<()> {
    let (mut node, log, params) = node::start::<AudioParams>(NODE_NAME)?;
    let cfg = (*params.config).clone();
    let mut updates = params.updates.clone();
    let shared = Arc::new(Shared::new(cfg.sample_rate, cfg.processing));
    let bad_frames = Arc::new(AtomicU64::new(0));
    let mut tasks = Tasks::new(&log);

    let audio_pub = node.create_publisher::<AudioFrame>("audio", node::audio_qos(true, 50))?;
    let gate = Arc::new(Gate::default());
    let devices = Arc::new(Handoff::<()>::default());
    voice_ros::lifecycle::start(
        &mut node,
        &tasks,
        &log,
        params.values.managed,
        Lifecycle {
            devices: devices.clone(),
            shared: shared.clone(),
        },
        gate.clone(),
    )?;
    let audio_out =
        tasks.subscribe::<AudioFrame>(&mut node, "audio_out", node::audio_qos(true, 200))?;
    let interrupts = tasks.subscribe::<Interrupt>(&mut node, "interrupt", node::event_qos())?;
    let fq = node::fq_name(&node);

    let playback = cfg.playback;
    {
        // the robot's voice -> playout (dropped unplayed when playback is off:
        // another node plays it, and this one has no reference)
        let (shared, bad) = (shared.clone(), bad_frames.clone());
        let volume = params.updates.clone();
        let rate = shared.rate;
        let active = gate.clone();
        let frames = audio_out.filter(move |_| futures::future::ready(playback && active.admit()));
        tasks.task(
            "audio_out",
            frames::resample_stream(
                frames,
                rate,
                frames::IDLE_FLUSH,
                MAX_FRAME_S,
                move |mut x| {
                    let gain = volume.borrow().volume;
                    if gain != 1.0 {
                        x.iter_mut().for_each(|v| *v *= gain);
                    }
                    if let Ok(mut q) = shared.playout.lock() {
                        q.push(&x);
                    }
                },
                move |_| {
                    bad.fetch_add(1, Ordering::Relaxed);
                },
            ),
        );
    }
    {
        let (shared, log) = (shared.clone(), log.clone());
        tasks.each("interrupt", interrupts, move |m| {
            let n = shared.playout.lock().map_or(0, |mut q| {
                let n = q.len();
                q.clear();
                n
            });
            if n > 0 {
                log.info(format!(
                    "interrupt ({}): {:.0} ms of queued speech dropped",
                    voice_ros::interrupt::describe(&m),
                    n as f64 * 1e3 / f64::from(shared.rate)
                ));
            }
        });
    }
    if let Backend::Sim { .. } = cfg.backend {
        let talker =
            tasks.subscribe::<AudioFrame>(&mut node, "sim/talker", node::audio_qos(true, 500))?;
        let (shared, bad) = (shared.clone(), bad_frames.clone());
        let rate = shared.rate;
        tasks.task(
            "sim/talker",
            frames::resample_stream(
                talker,
                rate,
                frames::IDLE_FLUSH,
                MAX_FRAME_S,
                move |x| {
                    if let Ok(mut q) = shared.talker.lock() {
                        q.push(&x);
                    }
                },
                move |_| {
                    bad.fetch_add(1, Ordering::Relaxed);
                },
            ),
        );
    }
    {
        // live parameters: processing switches and volume apply at once
        let shared = shared.clone();
        tasks.task("parameters", async move {
            while updates.changed().await.is_ok() {
                let p = updates.borrow().processing;
                if let Ok(mut cur) = shared.processing.lock() {
                    *cur = p;
                }
            }
        });
    }

    // the simulated talker's recording, read before the node reports ready
    let talker = match &cfg.backend {
        Backend::Sim {
            talker: Some(t), ..
        } => Some(sim::load_talker(t, cfg.sample_rate)?),
        _ => None,
    };
    {
        let log = log.clone();
        let (rate, frame_id) = (cfg.sample_rate, cfg.frame_id.clone());
        let (counted, gate) = (shared.clone(), gate.clone());
        let mut emit = move |samples: Vec<f32>, stamp: std::time::SystemTime| {
            if !gate.admit() {
                return; // configured, not active: captured, not published
            }
            let mut f = frames::mono_s16(&samples, rate, &frame_id, "");
            f.header.stamp = voice_ros::stamp::from_system(stamp);
            if audio_pub.publish(&f).is_ok() {
                counted.frames.fetch_add(1, Ordering::Relaxed);
            }
        };
        let thread_shared = shared.clone();
        let backend = cfg.backend.clone();
        let frame_ms = cfg.frame_ms;
        // the devices are open from configure to cleanup (lifecycle)
        tasks.thread("audio", move || {
            while devices.take(&thread_shared.stop).is_some() {
                match backend.clone() {
                    Backend::Sim {
                        path,
                        noise_dbfs,
                        seed,
                        ..
                    } => sim::run(
                        thread_shared.clone(),
                        path,
                        noise_dbfs,
                        seed,
                        talker.clone(),
                        frame_ms,
                        &mut emit,
                    ),
                    Backend::Device {
                        capture,
                        playback: out,
                    } => device::run(
                        thread_shared.clone(),
                        capture,
                        playback.then_some(out),
                        frame_ms,
                        log.clone(),
                        &mut emit,
                    ),
                }
                devices.released();
            }
        })?;
    }
    {
        let (shared, bad) = (shared.clone(), bad_frames.clone());
        tasks.diagnostics(&mut node, move || {
            let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
            let p = shared.processing();
            let state = shared.state();
            let r = Report::new(&fq, &state)
                .kv("backend", &state)
                .kv("lifecycle_state", gate.label())
                .kv("ignored_while_inactive", gate.ignored())
                .kv("sample_rate", shared.rate)
                .kv("frames_published", n(&shared.frames))
                .kv(
                    "played_s",
                    format!(
                        "{:.1}",
                        n(&shared.played_samples) as f64 / f64::from(shared.rate)
                    ),
                )
                .kv("aec", p.aec)
                .kv("noise_suppression", p.noise_suppression)
                .kv("gain_control", p.gain_control)
                .kv(
                    "aec_erle_db",
                    format!("{:.1}", n(&shared.erle_centi_db) as f64 / 100.0),
                )
                .kv("aec_delay_ms", n(&shared.echo_delay_ms))
                .kv("processing_load", format!("{:.4}", shared.load()))
                .kv("processing_errors", n(&shared.proc_errors))
                .kv("capture_dropped", n(&shared.capture_dropped))
                .kv(
                    "playout_dropped",
                    shared.playout.lock().map_or(0, |q| q.dropped),
                )
                .kv(
                    "playout_queued_ms",
                    shared
                        .playout
                        .lock()
                        .map_or(0, |q| q.len() as u64 * 1000 / u64::from(shared.rate)),
                )
                .kv(
                    "talker_dropped",
                    shared.talker.lock().map_or(0, |q| q.dropped),
                )
                .kv("bad_frames", n(&bad))
                .kv("late_blocks", n(&shared.late_blocks))
                .kv("reopens", n(&shared.reopens));
            r.into_array()
        })?;
    }

    let ready = format!(
        "ready: {} Hz, {} ms frames on audio, playback {}, aec {}",
        cfg.sample_rate, cfg.frame_ms, cfg.playback, cfg.processing.aec
    );
    tasks.spin(node, &ready, move || {
        shared.stop.store(true, Ordering::SeqCst)
    })
}
