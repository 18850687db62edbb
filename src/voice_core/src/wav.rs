//! Reading a recording (WAV: 8-32 bit integer or float, any rate, any
//! channel count) as mono `f32` at the rate a pipeline wants.

use std::path::Path;

use crate::resample::{resample_clip, ResampleError};

#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: hound::Error,
    },
    #[error("{path}: {source}")]
    Resample {
        path: String,
        #[source]
        source: ResampleError,
    },
}

/// The recording at `path`, channels averaged, resampled to `rate`.
pub fn read_mono(path: &Path, rate: u32) -> Result<Vec<f32>, WavError> {
    let read = |source| WavError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut r = hound::WavReader::open(path).map_err(read)?;
    let spec = r.spec();
    let ch = usize::from(spec.channels.max(1));
    let raw: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let scale = (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 / scale))
                .collect::<Result<_, _>>()
                .map_err(read)?
        }
        hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>().map_err(read)?,
    };
    let mono: Vec<f32> = raw
        .chunks(ch)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect();
    resample_clip(spec.sample_rate, rate, &mono).map_err(|source| WavError::Resample {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_48k_int16_becomes_mono_16k() {
        let dir = std::env::temp_dir().join(format!("va_wav_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for _ in 0..48_000 {
            w.write_sample(16_384i16).unwrap();
            w.write_sample(0i16).unwrap();
        }
        w.finalize().unwrap();
        let x = read_mono(&path, 16_000).unwrap();
        assert!((x.len() as i64 - 16_000).abs() < 1_000, "{}", x.len());
        assert!((x[8_000] - 0.25).abs() < 0.01, "{}", x[8_000]);
        assert!(matches!(
            read_mono(&dir.join("missing.wav"), 16_000),
            Err(WavError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
