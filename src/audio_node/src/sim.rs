//! The simulated room backend: a 10 ms clock drives the same block
//! processing as a sound card would. The microphone signal is the talker
//! (audio received on `sim/talker`, as a person standing near the robot)
//! plus the echo of what the node plays (voice_core::room) plus noise.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use voice_core::room::{EchoPath, Room};

use crate::params::TalkerScript;
use crate::process::BLOCK_MS;
use crate::shared::{Capture, Shared};

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
    let clip = voice_core::wav::read_mono(std::path::Path::new(&t.wav), rate)?;
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
    let (mut played, mut talker, mut mic) = (vec![0.0; blk], vec![0.0; blk], vec![0.0; blk]);
    shared.set_state(format!(
        "sim: echo {:.0} ms, gain {:.2}, reverb {:.0} ms, noise {:.0} dBFS",
        path.delay_ms, path.gain, path.rir_ms, noise_dbfs
    ));
    // the stamps' anchor and the block clock start together
    let mut capture = Capture::new(&shared, frame_ms);
    let start = Instant::now();
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
            capture.reanchor(); // the skipped time is a gap in the capture
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
        capture.block(&shared, &played, &mic, &mut emit);
    }
}
