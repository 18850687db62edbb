//! tts_node's ROS parameters and their validation.

use r2r::RosParams;
pub use voice_core::params::ParamError;
use voice_core::params::{check, in_range};

/// Parameters of tts_node. Doc comments are what `ros2 param describe` shows.
#[derive(RosParams, Debug, Clone)]
pub struct TtsParams {
    /// Synthesis engine: "piper" (neural, needs voice_path + onnxruntime_path) or "espeak" (formant, instant).
    pub engine: String,
    /// Piper voice model (.onnx, with its .onnx.json beside it).
    pub voice_path: String,
    /// onnxruntime shared library (libonnxruntime.so...) for the piper engine.
    pub onnxruntime_path: String,
    /// espeak-ng voice name for the espeak engine (e.g. "en-us").
    pub espeak_voice: String,
    /// Speaker of a multi-speaker Piper voice.
    pub speaker_id: i32,
    /// Speaking rate: >1 slower, <1 faster; -1 = the voice's default.
    pub length_scale: f32,
    /// Piper generator noise; -1 = the voice's default.
    pub noise_scale: f32,
    /// Piper phoneme-duration noise; -1 = the voice's default.
    pub noise_w: f32,
    /// Silence after each sentence [s].
    pub sentence_silence: f32,
    /// Output gain (1.0 = unchanged).
    pub volume: f32,
    /// Sample rate of audio_out [Hz]; 0 = the engine's own rate (resampled otherwise).
    pub output_sample_rate: i32,
    /// Audio per AudioFrame on audio_out [ms].
    pub frame_ms: i32,
    /// Publish audio_out at real-time pace (as a speaker plays it); false = as fast as synthesized.
    pub realtime: bool,
    /// Play the speech on the robot's speaker (rodio).
    pub playback: bool,
    /// Output device name for playback; "" = the system default.
    pub output_device: String,
    /// CPU threads for Piper inference.
    pub n_threads: i32,
}

impl Default for TtsParams {
    fn default() -> Self {
        Self {
            engine: "piper".into(),
            voice_path: String::new(),
            onnxruntime_path: String::new(),
            espeak_voice: "en-us".into(),
            speaker_id: 0,
            length_scale: -1.0,
            noise_scale: -1.0,
            noise_w: -1.0,
            sentence_silence: 0.2,
            volume: 1.0,
            output_sample_rate: 0,
            frame_ms: 40,
            realtime: true,
            playback: false,
            output_device: String::new(),
            n_threads: 2,
        }
    }
}

impl TtsParams {
    pub fn validate(&self) -> Result<(), ParamError> {
        check(
            matches!(self.engine.as_str(), "piper" | "espeak"),
            "engine",
            || format!("must be \"piper\" or \"espeak\", got {:?}", self.engine),
        )?;
        check(
            self.length_scale == -1.0 || (0.1..=5.0).contains(&self.length_scale),
            "length_scale",
            || format!("must be -1 or 0.1..=5, got {}", self.length_scale),
        )?;
        check(
            self.noise_scale == -1.0 || (0.0..=2.0).contains(&self.noise_scale),
            "noise_scale",
            || format!("must be -1 or 0..=2, got {}", self.noise_scale),
        )?;
        check(
            self.noise_w == -1.0 || (0.0..=2.0).contains(&self.noise_w),
            "noise_w",
            || format!("must be -1 or 0..=2, got {}", self.noise_w),
        )?;
        check(
            (0.0..=5.0).contains(&self.sentence_silence),
            "sentence_silence",
            || format!("must be 0..=5 s, got {}", self.sentence_silence),
        )?;
        in_range(self.volume, 0.0..=4.0, "volume")?;
        check(
            self.output_sample_rate == 0 || (8_000..=48_000).contains(&self.output_sample_rate),
            "output_sample_rate",
            || {
                format!(
                    "must be 0 or 8000..=48000 Hz, got {}",
                    self.output_sample_rate
                )
            },
        )?;
        check((10..=200).contains(&self.frame_ms), "frame_ms", || {
            format!("must be 10..=200 ms, got {}", self.frame_ms)
        })?;
        in_range(self.n_threads, 1..=64, "n_threads")?;
        check(self.speaker_id >= 0, "speaker_id", || {
            format!("must be >= 0, got {}", self.speaker_id)
        })?;
        Ok(())
    }
}
