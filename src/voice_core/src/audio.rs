//! Decoding and validation of self-describing PCM frames (`AudioFrame`).
//!
//! Everything that arrives on the audio topic is outside data: every check here
//! returns a typed error instead of panicking, so the node can drop the frame,
//! count it and carry on.

use std::fmt;

/// Sample encodings an `AudioFrame` may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Signed 16-bit little endian.
    S16Le,
    /// IEEE 754 32-bit float little endian, nominal range -1.0..1.0.
    F32Le,
}

impl Encoding {
    /// Parses the `encoding` field (case-insensitive, as "S16LE" / "F32LE").
    pub fn parse(s: &str) -> Result<Self, FrameError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "S16LE" => Ok(Self::S16Le),
            "F32LE" => Ok(Self::F32Le),
            _ => Err(FrameError::UnknownEncoding(truncate(s, 32))),
        }
    }

    /// Name as written in the message field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S16Le => "S16LE",
            Self::F32Le => "F32LE",
        }
    }

    /// Bytes per sample of one channel.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            Self::S16Le => 2,
            Self::F32Le => 4,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown encoding {0:?} (expected S16LE or F32LE)")]
    UnknownEncoding(String),
    #[error("sample_rate {0} Hz outside the accepted {min}..={max} Hz", min = MIN_RATE, max = MAX_RATE)]
    BadRate(u32),
    #[error("channels is {0} (expected 1..={max})", max = MAX_CHANNELS)]
    BadChannels(u16),
    #[error("{len} data bytes is not a whole number of {channels}-channel {encoding} frames")]
    PartialFrame {
        len: usize,
        channels: u16,
        encoding: Encoding,
    },
    #[error(
        "frame holds {seconds:.2} s of audio, more than the {max:.2} s allowed in one message"
    )]
    TooLong { seconds: f64, max: f64 },
    #[error("frame contains a NaN or infinite sample")]
    NonFinite,
    #[error("frame contains no samples")]
    Empty,
}

/// Lowest sample rate accepted [Hz].
pub const MIN_RATE: u32 = 8_000;
/// Highest sample rate accepted [Hz].
pub const MAX_RATE: u32 = 48_000;
/// Most interleaved channels accepted in one frame.
pub const MAX_CHANNELS: u16 = 32;
/// Default cap on the audio one message may hold [s] (a microphone sends 10-100 ms).
pub const DEFAULT_MAX_FRAME_S: f64 = 5.0;

/// A validated frame, downmixed to mono `f32` at its own rate.
#[derive(Debug, Clone, PartialEq)]
pub struct MonoFrame {
    pub sample_rate: u32,
    pub samples: Vec<f32>,
}

impl MonoFrame {
    /// Duration of the frame [s].
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate)
    }
}

/// Validates a frame and converts it to mono `f32` (channels averaged).
///
/// `max_frame_s` bounds the audio one message may carry; anything longer is
/// rejected before a single sample is converted.
pub fn decode_frame(
    sample_rate: u32,
    channels: u16,
    encoding: &str,
    data: &[u8],
    max_frame_s: f64,
) -> Result<MonoFrame, FrameError> {
    let encoding = Encoding::parse(encoding)?;
    if !(MIN_RATE..=MAX_RATE).contains(&sample_rate) {
        return Err(FrameError::BadRate(sample_rate));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(FrameError::BadChannels(channels));
    }
    let frame_bytes = encoding.bytes_per_sample() * usize::from(channels);
    if !data.len().is_multiple_of(frame_bytes) {
        return Err(FrameError::PartialFrame {
            len: data.len(),
            channels,
            encoding,
        });
    }
    let n_frames = data.len() / frame_bytes;
    if n_frames == 0 {
        return Err(FrameError::Empty);
    }
    let seconds = n_frames as f64 / f64::from(sample_rate);
    if seconds > max_frame_s {
        return Err(FrameError::TooLong {
            seconds,
            max: max_frame_s,
        });
    }
    let ch = usize::from(channels);
    let scale = 1.0 / ch as f32;
    let mut out = Vec::with_capacity(n_frames);
    match encoding {
        Encoding::S16Le => {
            for frame in data.chunks_exact(frame_bytes) {
                let sum: f32 = frame
                    .chunks_exact(2)
                    .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                    .sum();
                out.push(sum * scale);
            }
        }
        Encoding::F32Le => {
            for frame in data.chunks_exact(frame_bytes) {
                let mut sum = 0.0f32;
                for b in frame.chunks_exact(4) {
                    let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if !v.is_finite() {
                        return Err(FrameError::NonFinite);
                    }
                    sum += v;
                }
                // Out-of-range floats are clipped, not rejected: some drivers overshoot.
                out.push((sum * scale).clamp(-1.0, 1.0));
            }
        }
    }
    Ok(MonoFrame {
        sample_rate,
        samples: out,
    })
}

/// Encodes mono `f32` samples as S16LE bytes (clipped to -1.0..1.0).
pub fn encode_s16le(samples: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Encodes mono `f32` samples as F32LE bytes.
pub fn encode_f32le(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Root mean square level of `samples` in dBFS (-120 for silence).
pub fn rms_dbfs(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return -120.0;
    }
    let ms = samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32;
    (10.0 * ms.max(1e-12).log10()).max(-120.0)
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s16_stereo_is_averaged() {
        let mut data = Vec::new();
        for (l, r) in [(16384i16, 0i16), (-32768, -32768)] {
            data.extend_from_slice(&l.to_le_bytes());
            data.extend_from_slice(&r.to_le_bytes());
        }
        let f = decode_frame(16_000, 2, "S16LE", &data, 1.0).unwrap();
        assert_eq!(f.samples, vec![0.25, -1.0]);
    }

    #[test]
    fn f32_round_trip_and_clip() {
        let data = encode_f32le(&[0.5, -0.25, 3.0]);
        let f = decode_frame(48_000, 1, "f32le", &data, 1.0).unwrap();
        assert_eq!(f.samples, vec![0.5, -0.25, 1.0]);
    }

    #[test]
    fn s16_encode_decode_round_trip() {
        let x = [0.0f32, 0.5, -0.5, 0.999];
        let f = decode_frame(16_000, 1, "S16LE", &encode_s16le(&x), 1.0).unwrap();
        for (a, b) in x.iter().zip(&f.samples) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert!(matches!(
            decode_frame(16_000, 1, "S16LE", &[1, 2, 3], 1.0),
            Err(FrameError::PartialFrame { .. })
        ));
        assert!(matches!(
            decode_frame(16_000, 2, "S16LE", &[0; 6], 1.0),
            Err(FrameError::PartialFrame { .. })
        ));
        assert!(matches!(
            decode_frame(16_000, 1, "MP3", &[0; 4], 1.0),
            Err(FrameError::UnknownEncoding(_))
        ));
        assert_eq!(
            decode_frame(0, 1, "S16LE", &[0; 4], 1.0),
            Err(FrameError::BadRate(0))
        );
        assert_eq!(
            decode_frame(16_000, 0, "S16LE", &[0; 4], 1.0),
            Err(FrameError::BadChannels(0))
        );
        assert_eq!(
            decode_frame(16_000, 1, "S16LE", &[], 1.0),
            Err(FrameError::Empty)
        );
        assert!(matches!(
            decode_frame(8_000, 1, "S16LE", &[0; 2 * 8_001], 1.0),
            Err(FrameError::TooLong { .. })
        ));
        assert_eq!(
            decode_frame(16_000, 1, "F32LE", &f32::NAN.to_le_bytes(), 1.0),
            Err(FrameError::NonFinite)
        );
        assert_eq!(
            decode_frame(16_000, 1, "F32LE", &f32::INFINITY.to_le_bytes(), 1.0),
            Err(FrameError::NonFinite)
        );
    }

    #[test]
    fn long_garbage_encoding_is_truncated_in_error() {
        let e = Encoding::parse(&"x".repeat(10_000)).unwrap_err();
        assert!(e.to_string().len() < 100);
    }
}
