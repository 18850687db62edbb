//! `audio_node --bench-aec [speech.wav ...]`: echo cancellation measured on
//! the simulated room, offline (no ROS, no clock): for a few echo paths, the
//! robot's speech is played into the room with the talker silent, and the
//! echo left in `audio` is compared with and without AEC (echo return loss
//! enhancement, ERLE, after 2 s of convergence), with the processing's cost
//! as a share of one core. Without files, a synthetic voice is used.

use std::time::Instant;

use anyhow::Result;
use voice_core::room::{erle_db, EchoPath, Room};

use crate::params::Processing;
use crate::process::Processor;

const RATE: u32 = 16_000;

fn read_wav(path: &str) -> Result<Vec<f32>> {
    Ok(voice_core::wav::read_mono(
        std::path::Path::new(path),
        RATE,
    )?)
}

fn synthetic(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = i as f32 / RATE as f32;
            let f0 = 120.0 + 40.0 * (t * 1.7).sin();
            let env = (t * 3.3 * std::f32::consts::PI).sin().abs();
            let ph = std::f32::consts::TAU * f0 * t;
            0.25 * env * (ph.sin() + 0.5 * (2.0 * ph).sin() + 0.25 * (3.0 * ph).sin())
        })
        .collect()
}

/// Runs `played` through the room; returns the processed microphone signal
/// and the processing time [s].
fn pass(played: &[f32], path: &EchoPath, p: Processing) -> (Vec<f32>, f64) {
    let mut room = Room::new(path, RATE, -65.0, 11);
    let mut proc = Processor::new(RATE, p);
    let blk = (RATE / 100) as usize;
    let silent = vec![0.0; blk];
    let mut mic = vec![0.0; blk];
    let mut out = Vec::with_capacity(played.len());
    let mut busy = 0.0;
    for x in played.chunks_exact(blk) {
        room.hear(x, &silent, &mut mic);
        let t = Instant::now();
        out.extend_from_slice(proc.block(x, &mic));
        busy += t.elapsed().as_secs_f64();
    }
    (out, busy)
}

pub fn run(args: &[String]) -> Result<()> {
    let mut played = Vec::new();
    for a in args {
        played.extend(read_wav(a)?);
        played.extend(std::iter::repeat_n(0.0, (RATE / 4) as usize));
    }
    if played.is_empty() {
        played = synthetic(RATE as usize * 12);
    }
    let secs = played.len() as f64 / f64::from(RATE);
    let source = if args.is_empty() {
        "synthetic voice".to_string()
    } else {
        args.join(", ")
    };
    println!("robot speech: {secs:.1} s ({source}), talker silent, room noise -65 dBFS, {RATE} Hz");
    let off = Processing {
        aec: false,
        noise_suppression: false,
        gain_control: false,
    };
    let on = Processing { aec: true, ..off };
    let skip = 2 * RATE as usize;
    println!("| echo path | ERLE | echo left (RMS dBFS) | AEC load (share of one core) |");
    println!("|---|---|---|---|");
    for (name, path) in [
        (
            "near: 20 ms, gain 0.3, 30 ms reverb",
            EchoPath {
                delay_ms: 20.0,
                gain: 0.3,
                rir_ms: 30.0,
                ..EchoPath::default()
            },
        ),
        (
            "default: 40 ms, gain 0.5, 60 ms reverb",
            EchoPath::default(),
        ),
        (
            "loud: 60 ms, gain 1.0, 120 ms reverb",
            EchoPath {
                delay_ms: 60.0,
                gain: 1.0,
                rir_ms: 120.0,
                ..EchoPath::default()
            },
        ),
        (
            "late: 150 ms, gain 0.5, 60 ms reverb",
            EchoPath {
                delay_ms: 150.0,
                ..EchoPath::default()
            },
        ),
    ] {
        let (raw, _) = pass(&played, &path, off);
        let (clean, busy) = pass(&played, &path, on);
        let n = raw.len().min(clean.len());
        let rms = |x: &[f32]| {
            let e = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len().max(1) as f64;
            20.0 * e.sqrt().max(1e-10).log10()
        };
        println!(
            "| {name} | {:.1} dB | {:.1} -> {:.1} | {:.3} |",
            erle_db(&raw[skip..n], &clean[skip..n]),
            rms(&raw[skip..n]),
            rms(&clean[skip..n]),
            busy / secs
        );
    }
    Ok(())
}
