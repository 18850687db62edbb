//! What happens to every 10 ms of sound, whatever the backend: the block the
//! speaker played is the echo canceller's reference, the block the
//! microphone captured goes through WebRTC's audio processing (AEC3, noise
//! suppression, AGC2: sonora, a pure-Rust port) and into frames of
//! `frame_ms` for `audio`. Nothing here knows ROS.

use std::collections::VecDeque;

use sonora::config::{EchoCanceller, GainController2, NoiseSuppression};
use sonora::{AudioProcessing, Config, StreamConfig};

use crate::params::Processing;

/// The processing unit of WebRTC's audio processing [ms].
pub const BLOCK_MS: u32 = 10;

/// WebRTC audio processing for one mono stream.
pub struct Processor {
    apm: AudioProcessing,
    settings: Processing,
    out: Vec<f32>,
    /// Blocks the processor refused (counted, the raw capture is used).
    pub errors: u64,
}

fn apm_config(p: Processing) -> Config {
    Config {
        echo_canceller: p.aec.then(EchoCanceller::default),
        noise_suppression: p.noise_suppression.then(NoiseSuppression::default),
        gain_controller2: p.gain_control.then(|| GainController2 {
            adaptive_digital: Some(Default::default()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Processor {
    pub fn new(rate: u32, settings: Processing) -> Self {
        let stream = StreamConfig::new(rate, 1);
        let apm = AudioProcessing::builder()
            .config(apm_config(settings))
            .capture_config(stream)
            .render_config(stream)
            .build();
        Self {
            apm,
            settings,
            out: vec![0.0; (rate * BLOCK_MS / 1000) as usize],
            errors: 0,
        }
    }

    /// Applies new settings (parameters set at runtime); the echo
    /// canceller keeps what it learned when it stays on.
    pub fn set(&mut self, settings: Processing) {
        if settings != self.settings {
            self.apm.apply_config(apm_config(settings));
            self.settings = settings;
        }
    }

    /// One 10 ms block: `played` what the speaker played (the reference),
    /// `mic` what the microphone captured. Returns the cleaned block.
    pub fn block(&mut self, played: &[f32], mic: &[f32]) -> &[f32] {
        let s = self.settings;
        if !(s.aec || s.noise_suppression || s.gain_control) {
            self.out.copy_from_slice(mic);
            return &self.out;
        }
        if s.aec {
            let mut sink = vec![0.0; played.len()];
            if self
                .apm
                .process_render_f32(&[played], &mut [&mut sink])
                .is_err()
            {
                self.errors += 1;
            }
        }
        if self
            .apm
            .process_capture_f32(&[mic], &mut [&mut self.out])
            .is_err()
        {
            self.errors += 1;
            self.out.copy_from_slice(mic);
        }
        &self.out
    }

    /// The canceller's own estimate of its echo return loss enhancement [dB]
    /// and the echo delay it found [ms], when it has them.
    pub fn echo_stats(&self) -> (Option<f64>, Option<i32>) {
        let s = self.apm.statistics();
        (s.echo_return_loss_enhancement, s.delay_ms)
    }
}

/// Bounded sample queue (playout, the simulated talker, device capture):
/// samples beyond `cap` are dropped and counted, never queued without limit.
pub struct SampleQueue {
    q: VecDeque<f32>,
    cap: usize,
    pub dropped: u64,
}

impl SampleQueue {
    pub fn new(cap: usize) -> Self {
        Self {
            q: VecDeque::new(),
            cap,
            dropped: 0,
        }
    }

    pub fn push(&mut self, x: &[f32]) {
        let room = self.cap.saturating_sub(self.q.len());
        self.q.extend(&x[..x.len().min(room)]);
        self.dropped += x.len().saturating_sub(room) as u64;
    }

    /// Fills `out` from the queue, zeros after it runs dry; returns how many
    /// samples were real.
    pub fn pop_into(&mut self, out: &mut [f32]) -> usize {
        let n = out.len().min(self.q.len());
        for (o, v) in out.iter_mut().zip(self.q.drain(..n)) {
            *o = v;
        }
        out[n..].fill(0.0);
        n
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn clear(&mut self) {
        self.q.clear();
    }
}

/// Collects processed blocks into frames of a fixed length.
pub struct Framer {
    buf: Vec<f32>,
    frame: usize,
}

impl Framer {
    pub fn new(frame: usize) -> Self {
        Self {
            buf: Vec::with_capacity(frame),
            frame,
        }
    }

    /// Adds a block; returns a full frame when there is one.
    pub fn push(&mut self, block: &[f32]) -> Option<Vec<f32>> {
        self.buf.extend_from_slice(block);
        (self.buf.len() >= self.frame).then(|| {
            let rest = self.buf.split_off(self.frame);
            std::mem::replace(&mut self.buf, rest)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voice_core::room::{erle_db, EchoPath, Room};

    /// Speech-like test signal: voiced harmonics plus breath noise under a
    /// syllable envelope (broadband, as speech is; a pure tone would not
    /// let the canceller see the whole echo path).
    fn voice(n: usize, rate: f32) -> Vec<f32> {
        let mut seed = 0x1234_5678_u32;
        (0..n)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let noise = seed as f32 / u32::MAX as f32 - 0.5;
                let t = i as f32 / rate;
                let f0 = 140.0 + 30.0 * (t * 2.1).sin();
                let env = (t * 4.0 * std::f32::consts::PI).sin().abs();
                let ph = std::f32::consts::TAU * f0 * t;
                0.2 * env * (ph.sin() + 0.5 * (2.0 * ph).sin() + 0.6 * noise)
            })
            .collect()
    }

    #[test]
    fn aec_removes_most_of_the_echo_of_what_was_played() {
        let rate = 16_000;
        let blk = 160;
        let played = voice(rate as usize * 6, rate as f32);
        let run = |aec: bool| {
            let mut room = Room::new(&EchoPath::default(), rate, -70.0, 5);
            let mut p = Processor::new(
                rate,
                Processing {
                    aec,
                    noise_suppression: false,
                    gain_control: false,
                },
            );
            let mut out = Vec::new();
            let mut mic = vec![0.0; blk];
            for x in played.chunks(blk) {
                room.hear(x, &[0.0; 160], &mut mic);
                out.extend_from_slice(p.block(x, &mic));
            }
            out
        };
        let (raw, cleaned) = (run(false), run(true));
        // after the first 2 s of convergence
        let tail = 2 * rate as usize;
        let erle = erle_db(&raw[tail..], &cleaned[tail..]);
        assert!(erle > 20.0, "ERLE {erle:.1} dB");
    }

    #[test]
    fn queues_are_bounded_and_frames_fixed() {
        let mut q = SampleQueue::new(5);
        q.push(&[1.0; 8]);
        assert_eq!((q.len(), q.dropped), (5, 3));
        let mut out = [9.0; 7];
        assert_eq!(q.pop_into(&mut out), 5);
        assert_eq!(out, [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        let mut f = Framer::new(320);
        assert!(f.push(&[0.0; 160]).is_none());
        assert_eq!(f.push(&[0.0; 160]).map(|v| v.len()), Some(320));
        assert!(f.push(&[0.0; 160]).is_none());
    }
}
