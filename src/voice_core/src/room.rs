//! A simulated room for machines without sound cards: what a robot's
//! microphone hears is a talker's voice, plus the robot's own loudspeaker
//! output after the acoustic path from speaker to microphone (a delay, an
//! attenuation and a short reverberant tail), plus background noise.
//!
//! The echo path is an impulse response: the direct sound at `delay_ms` with
//! `gain`, then reflections for `rir_ms` as exponentially decaying noise
//! (a 60 dB decay over `rir_ms`, the usual RT60 model), holding `tail_ratio`
//! of the direct sound's energy. Deterministic for a given seed.

/// The speaker-to-microphone path.
#[derive(Debug, Clone, PartialEq)]
pub struct EchoPath {
    /// Direct sound delay [ms] (loudspeaker to microphone, plus the sound
    /// card's buffering on a real robot).
    pub delay_ms: f32,
    /// Direct sound amplitude relative to what the speaker plays.
    pub gain: f32,
    /// Reverberation length (60 dB decay) [ms]; 0 = direct sound only.
    pub rir_ms: f32,
    /// Energy of the reflections relative to the direct sound.
    pub tail_ratio: f32,
}

impl Default for EchoPath {
    fn default() -> Self {
        Self {
            delay_ms: 40.0,
            gain: 0.5,
            rir_ms: 60.0,
            tail_ratio: 0.5,
        }
    }
}

impl EchoPath {
    /// The impulse response at `rate` as (tap index, weight) pairs.
    pub fn taps(&self, rate: u32, seed: u64) -> Vec<(usize, f32)> {
        let per_ms = rate as f32 / 1000.0;
        let d = (self.delay_ms.max(0.0) * per_ms).round() as usize;
        let mut taps = vec![(d, self.gain)];
        let n = (self.rir_ms.max(0.0) * per_ms) as usize;
        if n == 0 || self.tail_ratio <= 0.0 {
            return taps;
        }
        let mut rng = Rng(seed | 1);
        // amplitude envelope 10^(-3 t / T): -60 dB at the end
        let tail: Vec<f32> = (1..=n)
            .map(|i| rng.gauss() * 10f32.powf(-3.0 * i as f32 / n as f32))
            .collect();
        let e: f32 = tail.iter().map(|x| x * x).sum();
        let scale = (self.tail_ratio * self.gain * self.gain / e.max(1e-12)).sqrt();
        taps.extend(tail.iter().enumerate().map(|(i, x)| (d + 1 + i, x * scale)));
        taps
    }
}

/// Gaussian noise at a level in dBFS (RMS relative to full scale 1.0).
pub fn dbfs_to_rms(dbfs: f32) -> f32 {
    10f32.powf(dbfs / 20.0)
}

/// The room, fed one block at a time.
pub struct Room {
    taps: Vec<(usize, f32)>,
    /// The last `len` samples the speaker played (ring).
    history: Vec<f32>,
    pos: usize,
    noise_rms: f32,
    rng: Rng,
}

impl Room {
    /// `noise_dbfs` below -120 means no noise.
    pub fn new(path: &EchoPath, rate: u32, noise_dbfs: f32, seed: u64) -> Self {
        let taps = path.taps(rate, seed);
        let len = taps.iter().map(|t| t.0).max().unwrap_or(0) + 1;
        Self {
            taps,
            history: vec![0.0; len],
            pos: 0,
            noise_rms: if noise_dbfs < -120.0 {
                0.0
            } else {
                dbfs_to_rms(noise_dbfs)
            },
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        }
    }

    /// The microphone signal for one block: `talker` (what the person says,
    /// as it arrives at the microphone) + the echo of `played` + noise.
    /// All three slices have the block's length.
    pub fn hear(&mut self, played: &[f32], talker: &[f32], mic: &mut [f32]) {
        let len = self.history.len();
        for (k, out) in mic.iter_mut().enumerate() {
            self.history[self.pos] = played.get(k).copied().unwrap_or(0.0);
            let mut echo = 0.0;
            for &(lag, w) in &self.taps {
                echo += w * self.history[(self.pos + len - lag) % len];
            }
            self.pos = (self.pos + 1) % len;
            let noise = if self.noise_rms > 0.0 {
                self.noise_rms * self.rng.gauss()
            } else {
                0.0
            };
            *out = talker.get(k).copied().unwrap_or(0.0) + echo + noise;
        }
    }

    /// The echo alone for one block (what `hear` adds for `played`), for
    /// measuring echo return loss enhancement; advances the room like `hear`.
    pub fn echo_only(&mut self, played: &[f32], out: &mut [f32]) {
        let noise = std::mem::replace(&mut self.noise_rms, 0.0);
        let silent = vec![0.0; out.len()];
        self.hear(played, &silent, out);
        self.noise_rms = noise;
    }
}

/// Echo return loss enhancement [dB]: how much weaker the echo is after the
/// canceller than before, from the energies of the two signals over the same
/// span (the talker silent).
pub fn erle_db(before: &[f32], after: &[f32]) -> f32 {
    let e = |x: &[f32]| x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>();
    (10.0 * (e(before).max(1e-20) / e(after).max(1e-20)).log10()) as f32
}

/// xorshift64* with a Box-Muller normal: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    fn gauss(&mut self) -> f32 {
        let (u, v) = (self.next_f32(), self.next_f32());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impulse_comes_back_delayed_and_attenuated() {
        let path = EchoPath {
            delay_ms: 10.0,
            gain: 0.5,
            rir_ms: 0.0,
            tail_ratio: 0.0,
        };
        let mut room = Room::new(&path, 16_000, -200.0, 1);
        let mut played = vec![0.0; 400];
        played[0] = 1.0;
        let mut mic = vec![0.0; 400];
        room.hear(&played, &[0.0; 400], &mut mic);
        let peak = mic
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        assert_eq!((peak.0, *peak.1), (160, 0.5));
    }

    #[test]
    fn the_tail_holds_its_share_of_energy_and_decays() {
        let path = EchoPath::default();
        let taps = path.taps(16_000, 7);
        let direct = taps[0].1 * taps[0].1;
        let tail: f32 = taps[1..].iter().map(|t| t.1 * t.1).sum();
        assert!((tail / direct - 0.5).abs() < 1e-3, "{}", tail / direct);
        let n = taps.len() - 1;
        let first: f32 = taps[1..=n / 10].iter().map(|t| t.1 * t.1).sum();
        let last: f32 = taps[n - n / 10..].iter().map(|t| t.1 * t.1).sum();
        assert!(first > 100.0 * last);
        // the same seed, the same room
        assert_eq!(taps, path.taps(16_000, 7));
    }

    #[test]
    fn blocks_continue_across_calls_and_noise_has_its_level() {
        let path = EchoPath::default();
        let x: Vec<f32> = (0..3200).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let mut whole = vec![0.0; 3200];
        Room::new(&path, 16_000, -200.0, 3).hear(&x, &vec![0.0; 3200], &mut whole);
        let mut room = Room::new(&path, 16_000, -200.0, 3);
        let mut parts = vec![0.0; 3200];
        for (i, o) in x.chunks(160).zip(parts.chunks_mut(160)) {
            room.hear(i, &[0.0; 160], o);
        }
        assert_eq!(whole, parts);
        let mut quiet = Room::new(&path, 16_000, -40.0, 3);
        let mut n = vec![0.0; 16_000];
        quiet.hear(&[], &[], &mut n);
        let rms = (n.iter().map(|v| v * v).sum::<f32>() / n.len() as f32).sqrt();
        assert!((rms / dbfs_to_rms(-40.0) - 1.0).abs() < 0.05, "{rms}");
        assert!((erle_db(&[1.0, 1.0], &[0.1, 0.1]) - 20.0).abs() < 1e-4);
    }
}
