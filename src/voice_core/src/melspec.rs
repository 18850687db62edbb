//! Whisper's log-mel features, as the Smart Turn end-of-turn model reads
//! them: 80 Slaney mel bands of the power spectrum (400-sample periodic Hann
//! window, hop 160, centred frames with reflect padding) of 16 kHz audio
//! normalized to zero mean and unit variance, in log10, floored 8 decades
//! below the loudest value, scaled as `(x + 4) / 4`. The formula of
//! `transformers.WhisperFeatureExtractor` (`do_normalize`, 8 s chunks).

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Samples per analysis window.
pub const N_FFT: usize = 400;
/// Samples between frames.
pub const HOP: usize = 160;
/// Mel bands.
pub const N_MELS: usize = 80;
const N_BINS: usize = N_FFT / 2 + 1;
const RATE: f64 = 16_000.0;

/// Log-mel feature extractor for a fixed number of samples (plans and
/// filters made once).
pub struct LogMel {
    samples: usize,
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
    /// Per mel band: the first bin with weight and the weights from there.
    filters: Vec<(usize, Vec<f64>)>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("samples", &self.samples)
            .finish()
    }
}

fn hz_to_mel(f: f64) -> f64 {
    if f >= 1000.0 {
        15.0 + (f / 1000.0).ln() * 27.0 / 6.4f64.ln()
    } else {
        3.0 * f / 200.0
    }
}

fn mel_to_hz(m: f64) -> f64 {
    if m >= 15.0 {
        1000.0 * ((m - 15.0) * 6.4f64.ln() / 27.0).exp()
    } else {
        200.0 * m / 3.0
    }
}

/// Slaney-normalized triangular filters from 0 Hz to Nyquist.
fn mel_filters() -> Vec<(usize, Vec<f64>)> {
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(RATE / 2.0));
    let edges: Vec<f64> = (0..N_MELS + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64))
        .collect();
    let bin_hz = |k: usize| (RATE / 2.0) * k as f64 / (N_BINS - 1) as f64;
    (0..N_MELS)
        .map(|m| {
            let (l, c, r) = (edges[m], edges[m + 1], edges[m + 2]);
            let norm = 2.0 / (r - l);
            let w: Vec<f64> = (0..N_BINS)
                .map(|k| {
                    let f = bin_hz(k);
                    let down = (f - l) / (c - l);
                    let up = (r - f) / (r - c);
                    down.min(up).max(0.0) * norm
                })
                .collect();
            let first = w.iter().position(|&v| v > 0.0).unwrap_or(0);
            let last = w.iter().rposition(|&v| v > 0.0).unwrap_or(first);
            (first, w[first..=last].to_vec())
        })
        .collect()
}

impl LogMel {
    /// An extractor for `samples` 16 kHz samples (Smart Turn: 128 000, 8 s).
    pub fn new(samples: usize) -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        let window = (0..N_FFT)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos())
            .collect();
        Self {
            samples,
            fft,
            window,
            filters: mel_filters(),
        }
    }

    /// Frames in the output (the last centred frame is dropped, as Whisper does).
    pub fn frames(&self) -> usize {
        self.samples / HOP
    }

    /// Features of `audio` (cut or zero-padded at the end to the extractor's
    /// length), row-major `[mel][frame]`, `N_MELS * frames()` values.
    pub fn compute(&self, audio: &[f32]) -> Vec<f32> {
        let n = self.samples;
        let mut x: Vec<f64> = audio.iter().take(n).map(|&v| f64::from(v)).collect();
        x.resize(n, 0.0);
        let mean = x.iter().sum::<f64>() / n as f64;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let sd = (var + 1e-7).sqrt();
        x.iter_mut().for_each(|v| *v = (*v - mean) / sd);
        // centred frames: reflect padding of half a window at both ends
        let pad = N_FFT / 2;
        let at = |i: isize| -> f64 {
            let len = n as isize;
            let j = if i < 0 {
                -i
            } else if i >= len {
                2 * (len - 1) - i
            } else {
                i
            };
            x[j.clamp(0, len - 1) as usize]
        };
        let frames = self.frames();
        let mut out = vec![0.0f64; N_MELS * frames];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f64; N_BINS];
        for f in 0..frames {
            let start = (f * HOP) as isize - pad as isize;
            for (k, v) in input.iter_mut().enumerate() {
                *v = at(start + k as isize) * self.window[k];
            }
            if self
                .fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .is_err()
            {
                continue; // lengths are the plan's own: cannot happen
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, (first, w)) in self.filters.iter().enumerate() {
                let e: f64 = w.iter().zip(&power[*first..]).map(|(a, b)| a * b).sum();
                out[m * frames + f] = e.max(1e-10).log10();
            }
        }
        let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out.iter()
            .map(|&v| ((v.max(max - 8.0) + 4.0) / 4.0) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test signal of the reference values: 2 s of silence, then a
    /// 440 Hz tone with a rising chirp, its level switching every 0.25 s.
    fn signal() -> Vec<f32> {
        (0..128_000)
            .map(|n| {
                if n < 32_000 {
                    return 0.0;
                }
                let t = n as f64 / 16_000.0;
                let x = 0.5 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                    + 0.2 * (2.0 * std::f64::consts::PI * (200.0 * t + 1500.0 * t * t / 8.0)).sin();
                let gain = if (n / 4000) % 2 == 0 { 1.0 } else { 0.3 };
                (x * gain) as f32
            })
            .collect()
    }

    #[test]
    fn matches_the_reference_features() {
        // values from the reference formula (numpy, float64 spectrogram:
        // transformers' WhisperFeatureExtractor as vendored in pipecat's
        // Smart Turn v3 analyzer) on the same signal
        let reference: &[(usize, usize, f32)] = &[
            (0, 0, -0.254_997_13),
            (0, 100, -0.254_997_13),
            (5, 250, 1.140_565_3),
            (10, 400, 1.587_772_8),
            (20, 799, 0.376_321_5),
            (40, 500, 0.834_456_4),
            (60, 650, 0.586_111_2),
            (79, 799, -0.254_997_13),
            (3, 199, 0.678_566_04),
            (30, 201, 0.457_502_5),
        ];
        let mel = LogMel::new(128_000);
        assert_eq!(mel.frames(), 800);
        let f = mel.compute(&signal());
        assert_eq!(f.len(), 80 * 800);
        for &(m, k, want) in reference {
            let got = f[m * 800 + k];
            assert!((got - want).abs() < 2e-4, "[{m}][{k}]: {got} vs {want}");
        }
        let row7 = f[7 * 800..8 * 800]
            .iter()
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / 800.0;
        assert!((row7 - -0.159_158_08).abs() < 1e-4, "row 7 mean {row7}");
        let col: f64 = (0..80).map(|m| f64::from(f[m * 800 + 555])).sum::<f64>() / 80.0;
        assert!((col - -0.091_769_49).abs() < 1e-4, "column 555 mean {col}");
    }

    #[test]
    fn short_audio_is_padded_and_silence_is_finite() {
        let mel = LogMel::new(16_000);
        let f = mel.compute(&[0.1; 100]);
        assert_eq!(f.len(), 80 * 100);
        assert!(f.iter().all(|v| v.is_finite()));
        let silent = mel.compute(&[]);
        assert!(silent.iter().all(|v| v.is_finite()));
    }
}
