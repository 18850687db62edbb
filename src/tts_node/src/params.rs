//! tts_node's ROS parameters and their validation.

use r2r::RosParams;
pub use voice_core::params::ParamError;
use voice_core::params::{check, in_range};
use voice_ros::params::NodeParams;

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
    /// Drop a reply's unspoken text when a newer reply of the same conversation comes (the user went on talking); false = speak every reply in full, in order (with llm_node busy_policy queue: every request answered aloud, e.g. to evaluate recordings).
    pub drop_superseded: bool,
    /// Managed (lifecycle) node: start unconfigured and wait for a lifecycle manager (ros2 lifecycle set, Nav2's lifecycle_manager); false = configure and activate at start.
    pub managed: bool,
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
            drop_superseded: true,
            managed: false,
        }
    }
}

/// The synthesis engine and what it loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineKind {
    Piper {
        voice_path: String,
        onnxruntime_path: String,
        n_threads: usize,
    },
    Espeak {
        voice: String,
    },
}

/// Voice settings applied per sentence; `None` = the voice's own default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceSettings {
    pub length_scale: Option<f32>,
    pub noise_scale: Option<f32>,
    pub noise_w: Option<f32>,
    pub speaker_id: i64,
}

/// tts_node's validated settings.
#[derive(Debug, Clone)]
pub struct TtsConfig {
    pub engine: EngineKind,
    pub voice: VoiceSettings,
    /// Silence after each sentence [s].
    pub sentence_silence: f32,
    pub volume: f32,
    /// `None` = the engine's own rate.
    pub output_sample_rate: Option<u32>,
    pub frame_ms: u32,
    pub realtime: bool,
    /// Speaker playback; `None` = off.
    pub playback: Option<Playback>,
    /// Drop the unspoken text of a reply a newer one of its conversation superseded.
    pub drop_superseded: bool,
}

/// Where speech is played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playback {
    /// Output device by name; `None` = the system default.
    pub device: Option<String>,
}

/// -1 (the voice's default) or a value in `range`.
fn default_or(
    v: f32,
    range: std::ops::RangeInclusive<f32>,
    name: &'static str,
) -> Result<Option<f32>, ParamError> {
    if v == -1.0 {
        return Ok(None);
    }
    check(range.contains(&v), name, || {
        format!(
            "must be -1 (the voice's default) or {}..={}, got {v}",
            range.start(),
            range.end()
        )
    })?;
    Ok(Some(v))
}

impl NodeParams for TtsParams {
    type Config = TtsConfig;
    /// Fixed at start: the engine, voice files, threads and the audio device.
    const READ_ONLY: &'static [&'static str] = &[
        "engine",
        "voice_path",
        "onnxruntime_path",
        "espeak_voice",
        "n_threads",
        "playback",
        "output_device",
        "managed",
    ];

    fn validate(&self) -> Result<TtsConfig, ParamError> {
        in_range(self.n_threads, 1..=64, "n_threads")?;
        let engine = match self.engine.as_str() {
            "piper" => EngineKind::Piper {
                voice_path: self.voice_path.clone(),
                onnxruntime_path: self.onnxruntime_path.clone(),
                n_threads: self.n_threads as usize,
            },
            "espeak" => EngineKind::Espeak {
                voice: self.espeak_voice.clone(),
            },
            other => {
                return Err(ParamError {
                    name: "engine",
                    msg: format!("must be \"piper\" or \"espeak\", got {other:?}"),
                })
            }
        };
        let voice = VoiceSettings {
            length_scale: default_or(self.length_scale, 0.1..=5.0, "length_scale")?,
            noise_scale: default_or(self.noise_scale, 0.0..=2.0, "noise_scale")?,
            noise_w: default_or(self.noise_w, 0.0..=2.0, "noise_w")?,
            speaker_id: i64::from(self.speaker_id),
        };
        in_range(self.sentence_silence, 0.0..=5.0, "sentence_silence")?;
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
        in_range(self.frame_ms, 10..=200, "frame_ms")?;
        check(self.speaker_id >= 0, "speaker_id", || {
            format!("must be >= 0, got {}", self.speaker_id)
        })?;
        Ok(TtsConfig {
            engine,
            voice,
            sentence_silence: self.sentence_silence,
            volume: self.volume,
            output_sample_rate: (self.output_sample_rate > 0)
                .then_some(self.output_sample_rate as u32),
            frame_ms: self.frame_ms as u32,
            realtime: self.realtime,
            drop_superseded: self.drop_superseded,
            playback: self.playback.then(|| {
                let d = self.output_device.trim();
                Playback {
                    device: (!d.is_empty()).then(|| d.to_string()),
                }
            }),
        })
    }
}
