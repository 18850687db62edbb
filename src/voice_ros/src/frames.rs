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
