//! Streaming conversion of mono audio at any accepted rate to the pipeline
//! rate, with rubato's FFT resampler (band-limited, not sample dropping).

use rubato::{FftFixedInOut, Resampler};

/// Why the resampler could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("cannot build a resampler {from} Hz -> {to} Hz: {msg}")]
    Construction { from: u32, to: u32, msg: String },
    #[error("resampling failed: {0}")]
    Process(String),
}

/// Target length of one resampler block [s]; rubato rounds it to the rates' gcd.
const BLOCK_S: f64 = 0.02;

/// Feeds arbitrary-sized mono blocks at one input rate, returns audio at the
/// output rate as soon as a whole resampler block is available.
///
/// A change of input rate (another microphone, a bag with other settings)
/// flushes the old resampler and builds a new one.
pub struct StreamResampler {
    out_rate: u32,
    in_rate: u32,
    inner: Option<FftFixedInOut<f32>>,
    pending: Vec<f32>,
    /// Input went in since the last flush (a flush of nothing emits the
    /// filter's delay as silence: only flush when this is set).
    dirty: bool,
}

impl StreamResampler {
    pub fn new(out_rate: u32) -> Self {
        Self {
            out_rate,
            in_rate: out_rate,
            inner: None,
            pending: Vec::new(),
            dirty: false,
        }
    }

    /// Whether samples went in since the last flush: a stream that pauses
    /// (speech ends) should `flush` then, or its tail waits for the next input.
    pub fn holds_samples(&self) -> bool {
        self.dirty
    }

    /// Converts `samples` recorded at `in_rate`, returning whatever output is ready.
    pub fn push(&mut self, in_rate: u32, samples: &[f32]) -> Result<Vec<f32>, ResampleError> {
        let mut out = Vec::new();
        if in_rate != self.in_rate {
            out = self.flush()?;
            self.in_rate = in_rate;
            self.inner = None;
        }
        if in_rate == self.out_rate {
            out.extend_from_slice(samples);
            return Ok(out);
        }
        if self.inner.is_none() {
            let chunk = ((f64::from(in_rate) * BLOCK_S) as usize).max(1);
            let r = FftFixedInOut::<f32>::new(in_rate as usize, self.out_rate as usize, chunk, 1)
                .map_err(|e| ResampleError::Construction {
                from: in_rate,
                to: self.out_rate,
                msg: e.to_string(),
            })?;
            self.inner = Some(r);
        }
        self.pending.extend_from_slice(samples);
        self.dirty = true;
        let Some(r) = self.inner.as_mut() else {
            return Ok(out);
        };
        let mut start = 0;
        while self.pending.len() - start >= r.input_frames_next() {
            let n = r.input_frames_next();
            let block = &self.pending[start..start + n];
            let res = r
                .process(&[block], None)
                .map_err(|e| ResampleError::Process(e.to_string()))?;
            if let Some(ch) = res.into_iter().next() {
                out.extend_from_slice(&ch);
            }
            start += n;
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// Pushes out the samples still inside the resampler (end of stream).
    pub fn flush(&mut self) -> Result<Vec<f32>, ResampleError> {
        self.dirty = false;
        let Some(r) = self.inner.as_mut() else {
            self.pending.clear();
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            let block = std::mem::take(&mut self.pending);
            let res = r
                .process_partial(Some(&[block]), None)
                .map_err(|e| ResampleError::Process(e.to_string()))?;
            if let Some(ch) = res.into_iter().next() {
                out.extend_from_slice(&ch);
            }
        }
        let res = r
            .process_partial::<Vec<f32>>(None, None)
            .map_err(|e| ResampleError::Process(e.to_string()))?;
        if let Some(ch) = res.into_iter().next() {
            out.extend_from_slice(&ch);
        }
        r.reset();
        Ok(out)
    }
}

/// Resamples a whole clip at once (tests, benches, WAV input).
pub fn resample_clip(
    in_rate: u32,
    out_rate: u32,
    samples: &[f32],
) -> Result<Vec<f32>, ResampleError> {
    let mut r = StreamResampler::new(out_rate);
    let mut out = r.push(in_rate, samples)?;
    out.extend(r.flush()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, secs: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    /// Estimates the dominant frequency by zero crossings.
    fn zero_cross_hz(x: &[f32], rate: u32) -> f32 {
        let z = x.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        z as f32 * rate as f32 / x.len() as f32
    }

    #[test]
    fn rates_convert_with_length_and_pitch_kept() {
        for in_rate in [8_000u32, 22_050, 44_100, 48_000] {
            let x = sine(in_rate, 440.0, 1.0);
            // feed in odd-sized pieces like a real driver
            let mut r = StreamResampler::new(16_000);
            let mut y = Vec::new();
            for piece in x.chunks(317) {
                y.extend(r.push(in_rate, piece).unwrap());
            }
            y.extend(r.flush().unwrap());
            let expected = 16_000usize;
            assert!(
                (y.len() as i64 - expected as i64).abs() < 1_000,
                "{in_rate}: {} samples",
                y.len()
            );
            let core = &y[2_000..y.len().min(14_000)];
            let hz = zero_cross_hz(core, 16_000);
            assert!((hz - 440.0).abs() < 5.0, "{in_rate}: {hz} Hz");
        }
    }

    #[test]
    fn anti_aliasing_removes_content_above_nyquist() {
        // 12 kHz at 48 kHz cannot exist at 16 kHz: it must be filtered, not folded to 4 kHz.
        let x = sine(48_000, 12_000.0, 1.0);
        let y = resample_clip(48_000, 16_000, &x).unwrap();
        let core = &y[2_000..14_000];
        let rms = (core.iter().map(|s| s * s).sum::<f32>() / core.len() as f32).sqrt();
        assert!(rms < 0.01, "aliased energy rms {rms}");
    }

    #[test]
    fn same_rate_passes_through() {
        let x = sine(16_000, 300.0, 0.1);
        assert_eq!(resample_clip(16_000, 16_000, &x).unwrap(), x);
    }

    #[test]
    fn rate_change_mid_stream() {
        let mut r = StreamResampler::new(16_000);
        let a = r.push(48_000, &sine(48_000, 440.0, 0.5)).unwrap();
        let b = r.push(8_000, &sine(8_000, 440.0, 0.5)).unwrap();
        let c = r.flush().unwrap();
        let total = a.len() + b.len() + c.len();
        assert!((total as i64 - 16_000).abs() < 1_500, "{total}");
    }
}
