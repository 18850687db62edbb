//! The sound card backend (cpal: ALSA on Linux). The capture callback
//! queues what the microphone hears; the playback callback plays the
//! playout queue and records exactly what it wrote as the echo reference;
//! the audio thread processes both in 10 ms blocks. A device that is
//! missing, refuses the format or fails while running is reported once and
//! reopened every few seconds (a USB microphone array unplugged and
//! plugged back in).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use crate::params::DeviceChoice;
use crate::process::{SampleQueue, BLOCK_MS};
use crate::shared::{Capture, Shared};

/// Wait between attempts to open a missing or failed device.
const REOPEN_AFTER: Duration = Duration::from_secs(2);
/// Captured audio that may wait for processing [s].
const CAPTURE_MAX_S: u32 = 2;

/// `audio_node --list-devices`: the sound devices as capture_device /
/// playback_device take them.
pub fn list(_args: &[String]) -> Result<()> {
    let host = cpal::default_host();
    println!("host: {:?}", host.id());
    let default_in = host.default_input_device().and_then(|d| d.name().ok());
    let default_out = host.default_output_device().and_then(|d| d.name().ok());
    for (kind, devices, default) in [
        (
            "capture",
            host.input_devices().map(|d| d.collect::<Vec<_>>()),
            &default_in,
        ),
        (
            "playback",
            host.output_devices().map(|d| d.collect::<Vec<_>>()),
            &default_out,
        ),
    ] {
        let devices = devices.with_context(|| format!("listing {kind} devices"))?;
        println!("{kind} devices ({}):", devices.len());
        for (i, d) in devices.iter().enumerate() {
            let name = d.name().unwrap_or_else(|e| format!("<{e}>"));
            let mark = if Some(&name) == default.as_ref() {
                " (default)"
            } else {
                ""
            };
            println!("  #{i} {name}{mark}");
        }
    }
    Ok(())
}

fn pick(
    devices: Vec<cpal::Device>,
    default: Option<cpal::Device>,
    choice: &DeviceChoice,
    kind: &str,
) -> Result<cpal::Device> {
    let names = || {
        devices
            .iter()
            .enumerate()
            .map(|(i, d)| format!("#{i} {}", d.name().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match choice {
        DeviceChoice::Default => {
            default.ok_or_else(|| anyhow!("no default {kind} device (devices: [{}])", names()))
        }
        DeviceChoice::Index(i) => devices
            .get(*i)
            .cloned()
            .ok_or_else(|| anyhow!("no {kind} device #{i} (devices: [{}])", names())),
        DeviceChoice::Name(n) => {
            let want = n.to_lowercase();
            devices
                .iter()
                .find(|d| d.name().is_ok_and(|m| m.to_lowercase().contains(&want)))
                .cloned()
                .ok_or_else(|| anyhow!("no {kind} device named {n:?} (devices: [{}])", names()))
        }
    }
}

/// A stream at `rate` with the device's own channel count (mono when the
/// device does not say).
fn f32_config(
    default: Result<cpal::SupportedStreamConfig, cpal::DefaultStreamConfigError>,
    rate: u32,
) -> cpal::StreamConfig {
    cpal::StreamConfig {
        channels: default.map(|c| c.channels()).unwrap_or(1),
        sample_rate: cpal::SampleRate(rate),
        buffer_size: cpal::BufferSize::Default,
    }
}

/// The open streams; dropping them closes the devices.
struct Open {
    _capture: cpal::Stream,
    _playback: Option<cpal::Stream>,
    capture: Arc<Mutex<SampleQueue>>,
    render: Arc<Mutex<SampleQueue>>,
    failed: Arc<AtomicBool>,
    description: String,
}

fn open(
    shared: &Arc<Shared>,
    capture: &DeviceChoice,
    playback: Option<&DeviceChoice>,
) -> Result<Open> {
    let host = cpal::default_host();
    let rate = shared.rate;
    let failed = Arc::new(AtomicBool::new(false));
    let mic = pick(
        host.input_devices()?.collect(),
        host.default_input_device(),
        capture,
        "capture",
    )?;
    let mic_name = mic.name().unwrap_or_default();
    let config = f32_config(mic.default_input_config(), rate);
    let channels = config.channels;
    let captured = Arc::new(Mutex::new(SampleQueue::new(
        (rate * CAPTURE_MAX_S) as usize,
    )));
    let cap_stream = {
        let (q, f, ch) = (
            captured.clone(),
            failed.clone(),
            usize::from(channels.max(1)),
        );
        mic.build_input_stream::<f32, _, _>(
            &config,
            move |data, _| {
                let mono: Vec<f32> = data
                    .chunks(ch)
                    .map(|c| c.iter().sum::<f32>() / ch as f32)
                    .collect();
                if let Ok(mut q) = q.lock() {
                    q.push(&mono);
                }
            },
            move |_| f.store(true, Ordering::Relaxed),
            None,
        )
        .with_context(|| {
            format!("capture device {mic_name:?} at {rate} Hz, {channels} channels, f32")
        })?
    };
    cap_stream.play().context("starting capture")?;
    let render = Arc::new(Mutex::new(SampleQueue::new(
        (rate * CAPTURE_MAX_S) as usize,
    )));
    let mut description = format!("capture {mic_name:?}");
    let play_stream = match playback {
        None => None,
        Some(choice) => {
            let spk = pick(
                host.output_devices()?.collect(),
                host.default_output_device(),
                choice,
                "playback",
            )?;
            let spk_name = spk.name().unwrap_or_default();
            let config = f32_config(spk.default_output_config(), rate);
            let channels = config.channels;
            let (sh, r, f, ch) = (
                shared.clone(),
                render.clone(),
                failed.clone(),
                usize::from(channels.max(1)),
            );
            let mut mono = Vec::new();
            let s = spk
                .build_output_stream::<f32, _, _>(
                    &config,
                    move |data: &mut [f32], _| {
                        mono.resize(data.len() / ch, 0.0);
                        let real = sh.playout.lock().map_or(0, |mut q| q.pop_into(&mut mono));
                        sh.played_samples.fetch_add(real as u64, Ordering::Relaxed);
                        for (frame, v) in data.chunks_mut(ch).zip(&mono) {
                            frame.fill(v.clamp(-1.0, 1.0));
                        }
                        // the reference is exactly what went to the speaker
                        if let Ok(mut r) = r.lock() {
                            r.push(&mono);
                        }
                    },
                    move |_| f.store(true, Ordering::Relaxed),
                    None,
                )
                .with_context(|| {
                    format!("playback device {spk_name:?} at {rate} Hz, {channels} channels, f32")
                })?;
            s.play().context("starting playback")?;
            description += &format!(", playback {spk_name:?}");
            Some(s)
        }
    };
    Ok(Open {
        _capture: cap_stream,
        _playback: play_stream,
        capture: captured,
        render,
        failed,
        description: format!("{description}, {rate} Hz"),
    })
}

/// Runs until the node stops: opens the devices, processes, reopens.
pub fn run(
    shared: Arc<Shared>,
    capture: DeviceChoice,
    playback: Option<DeviceChoice>,
    frame_ms: u32,
    log: voice_ros::log::Log,
    mut emit: impl FnMut(Vec<f32>, std::time::SystemTime),
) {
    let rate = shared.rate;
    let blk = (rate * BLOCK_MS / 1000) as usize;
    let mut pipeline = Capture::new(&shared, frame_ms);
    let mut last_error = String::new();
    let (mut mic, mut played) = (vec![0.0; blk], vec![0.0; blk]);
    while !shared.stopped() {
        let dev = match open(&shared, &capture, playback.as_ref()) {
            Ok(d) => d,
            Err(e) => {
                let msg = format!("{e:#}");
                if msg != last_error {
                    log.error(format!(
                        "sound device: {msg}; retrying every {} s (audio_node --list-devices lists them)",
                        REOPEN_AFTER.as_secs()
                    ));
                    last_error = msg.clone();
                }
                shared.set_state(format!("no device: {msg}"));
                sleep_unless_stopped(&shared, REOPEN_AFTER);
                continue;
            }
        };
        if !last_error.is_empty() || shared.reopens.load(Ordering::Relaxed) > 0 {
            pipeline.reanchor();
        }
        last_error.clear();
        log.info(format!("sound device open: {}", dev.description));
        shared.set_state(format!("open: {}", dev.description));
        while !shared.stopped() && !dev.failed.load(Ordering::Relaxed) {
            let ready = dev.capture.lock().map_or(0, |q| q.len());
            if ready < blk {
                std::thread::sleep(Duration::from_millis(u64::from(BLOCK_MS) / 2));
                continue;
            }
            if let Ok(mut q) = dev.capture.lock() {
                q.pop_into(&mut mic);
                shared.capture_dropped.store(q.dropped, Ordering::Relaxed);
            }
            if let Ok(mut r) = dev.render.lock() {
                r.pop_into(&mut played);
            }
            pipeline.block(&shared, &played, &mic, &mut emit);
        }
        if !shared.stopped() {
            shared.reopens.fetch_add(1, Ordering::Relaxed);
            log.error(format!(
                "sound device failed ({}); reopening in {} s",
                dev.description,
                REOPEN_AFTER.as_secs()
            ));
            shared.set_state("device lost: reopening");
            drop(dev);
            sleep_unless_stopped(&shared, REOPEN_AFTER);
        }
    }
}

fn sleep_unless_stopped(shared: &Shared, d: Duration) {
    let end = Instant::now() + d;
    while !shared.stopped() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}
