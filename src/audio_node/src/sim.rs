//! The simulated room backend: a 10 ms clock drives the same block
//! processing as a sound card would. The microphone signal is the talker
//! (audio received on `sim/talker`, as a person standing near the robot)
//! plus the echo of what the node plays (voice_core::room) plus noise.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use voice_core::room::{EchoPath, Room};

use crate::params::TalkerScript;
use crate::process::{Framer, Processor, BLOCK_MS};
use crate::shared::{Shared, Stamper};

/// How far the clock may fall behind before it skips ahead instead of
/// catching up in a burst [blocks].
const MAX_BEHIND: u64 = 20;

/// A recording and when it is said next [block index].
struct Script {
    clip: Vec<f32>,
    next: u64,
    every: Option<u64>,
}

/// Reads the talker's recording at the room's rate.
pub fn load_talker(t: &TalkerScript, rate: u32) -> anyhow::Result<(Vec<f32>, u64, Option<u64>)> {
    use anyhow::Context as _;
    let mut r =
        hound::WavReader::open(&t.wav).with_context(|| format!("sim.talker_wav {}", t.wav))?;
    let spec = r.spec();
    let ch = usize::from(spec.channels.max(1));
    let raw: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Int => r
            .samples::<i32>()
            .map(|s| s.map(|v| v as f32 / (1u32 << (spec.bits_per_sample - 1)) as f32))
            .collect::<Result<_, _>>()?,
        hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>()?,
    };
    let mono: Vec<f32> = raw
        .chunks(ch)
        .map(|c| c.iter().sum::<f32>() / ch as f32)
        .collect();
    let clip = voice_core::resample::resample_clip(spec.sample_rate, rate, &mono)?;
    let blocks = |s: f32| (f64::from(s) * 1000.0 / f64::from(BLOCK_MS)) as u64;
    let every = (t.every_s > 0.0).then(|| blocks(t.every_s).max(1));
    Ok((clip, blocks(t.start_s), every))
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    shared: Arc<Shared>,
    path: EchoPath,
    noise_dbfs: f32,
    seed: u64,
    talker: Option<(Vec<f32>, u64, Option<u64>)>,
    frame_ms: u32,
    mut emit: impl FnMut(Vec<f32>, std::time::SystemTime),
) {
    let mut script = talker.map(|(clip, next, every)| Script { clip, next, every });
    let rate = shared.rate;
    let blk = (rate * BLOCK_MS / 1000) as usize;
    let mut room = Room::new(&path, rate, noise_dbfs, seed);
    let mut proc = Processor::new(rate, shared.processing());
    let mut framer = Framer::new(blk * (frame_ms / BLOCK_MS) as usize);
    let (mut played, mut talker, mut mic) = (vec![0.0; blk], vec![0.0; blk], vec![0.0; blk]);
    shared.set_state(format!(
        "sim: echo {:.0} ms, gain {:.2}, reverb {:.0} ms, noise {:.0} dBFS",
        path.delay_ms, path.gain, path.rir_ms, noise_dbfs
    ));
    let start = Instant::now();
    let mut stamps = Stamper::new(rate);
    let mut n: u64 = 0;
    while !shared.stopped() {
        // a block exists once its last sample is "captured": at its end
        let due = start + Duration::from_millis(u64::from(BLOCK_MS) * (n + 1));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_millis(u64::from(BLOCK_MS) * MAX_BEHIND) {
            shared.late_blocks.fetch_add(1, Ordering::Relaxed);
            n = (now - start).as_millis() as u64 / u64::from(BLOCK_MS);
            stamps.reanchor(); // the skipped time is a gap in the capture
        }
        if let Some(sc) = script.as_mut().filter(|sc| n >= sc.next) {
            if let Ok(mut q) = shared.talker.lock() {
                q.push(&sc.clip);
            }
            sc.next = sc.every.map_or(u64::MAX, |e| sc.next + e);
        }
        n += 1;
        let real = shared
            .playout
            .lock()
            .map_or(0, |mut q| q.pop_into(&mut played));
        shared
            .played_samples
            .fetch_add(real as u64, Ordering::Relaxed);
        if let Ok(mut q) = shared.talker.lock() {
            q.pop_into(&mut talker);
        }
        room.hear(&played, &talker, &mut mic);
        proc.set(shared.processing());
        let t = Instant::now();
        let out = proc.block(&played, &mic);
        shared
            .proc_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        shared.proc_samples.fetch_add(blk as u64, Ordering::Relaxed);
        if let Some(frame) = framer.push(out) {
            let stamp = stamps.next(frame.len());
            emit(frame, stamp);
        }
        if n.is_multiple_of(100) {
            report_echo(&shared, &proc);
        }
    }
}

/// Copies the canceller's own figures and error count into the counters.
pub fn report_echo(shared: &Shared, proc: &Processor) {
    let (erle, delay) = proc.echo_stats();
    shared.erle_centi_db.store(
        erle.map_or(0, |e| (e.max(0.0) * 100.0) as u64),
        Ordering::Relaxed,
    );
    shared
        .echo_delay_ms
        .store(delay.map_or(0, |d| d.max(0) as u64), Ordering::Relaxed);
    shared.proc_errors.store(proc.errors, Ordering::Relaxed);
}
