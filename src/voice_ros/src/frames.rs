//! Conversion between `voice_agent/msg/AudioFrame` and samples.

use r2r::voice_agent::msg::AudioFrame;
use voice_core::audio::{self, FrameError, MonoFrame};

/// Validates and downmixes an incoming frame.
pub fn decode(msg: &AudioFrame, max_frame_s: f64) -> Result<MonoFrame, FrameError> {
    audio::decode_frame(
        msg.sample_rate,
        msg.channels,
        &msg.encoding,
        &msg.data,
        max_frame_s,
    )
}

/// Builds a mono S16LE frame.
pub fn mono_s16(samples: &[f32], sample_rate: u32, frame_id: &str, turn_id: &str) -> AudioFrame {
    let mut f = AudioFrame {
        sample_rate,
        channels: 1,
        encoding: "S16LE".into(),
        data: audio::encode_s16le(samples),
        turn_id: turn_id.into(),
        ..Default::default()
    };
    f.header.stamp = crate::stamp::now();
    f.header.frame_id = frame_id.into();
    f
}

/// A pause in a resampled stream after which its tail is flushed: longer
/// than the frame period of a real-time stream (tts_node: 40 ms).
pub const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_millis(120);

/// Reads AudioFrames until the stream ends, resampled to `rate`: each
/// frame's samples go to `sink` (after `gain`), undecodable frames to `bad`.
/// When no frame came for `idle`, the samples the resampler still holds are
/// flushed to `sink`: speech that stops must not keep its last syllable
/// until the next reply.
pub async fn resample_stream(
    mut frames: impl futures::Stream<Item = AudioFrame> + Unpin,
    rate: u32,
    idle: std::time::Duration,
    max_frame_s: f64,
    mut sink: impl FnMut(Vec<f32>),
    mut bad: impl FnMut(String),
) {
    use futures::StreamExt;
    let mut rs = voice_core::resample::StreamResampler::new(rate);
    loop {
        match tokio::time::timeout(idle, frames.next()).await {
            Ok(Some(m)) => match decode(&m, max_frame_s) {
                Ok(f) => match rs.push(f.sample_rate, &f.samples) {
                    Ok(x) if !x.is_empty() => sink(x),
                    Ok(_) => {}
                    Err(e) => bad(e.to_string()),
                },
                Err(e) => bad(e.to_string()),
            },
            Ok(None) => break,
            Err(_) if rs.holds_samples() => match rs.flush() {
                Ok(x) if !x.is_empty() => sink(x),
                Ok(_) => {}
                Err(e) => bad(e.to_string()),
            },
            Err(_) => {}
        }
    }
}
