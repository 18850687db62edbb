//! audio_node's ROS parameters and their validation.

use r2r::RosParams;
pub use voice_core::params::ParamError;
use voice_core::params::{check, in_range};
use voice_core::room::EchoPath;
use voice_ros::params::NodeParams;

/// Parameters of audio_node. Doc comments are what `ros2 param describe` shows.
#[derive(RosParams, Debug, Clone)]
pub struct AudioParams {
    /// Where sound comes from and goes to: "device" (sound card, via ALSA/cpal) or "sim" (a simulated room, for machines without sound cards).
    pub backend: String,
    /// Sample rate of `audio` and of the processing [Hz]: 16000, 32000 or 48000.
    pub sample_rate: i32,
    /// Audio per published frame [ms], a multiple of 10.
    pub frame_ms: i32,
    /// Capture device: a name (or part of one, as `--list-devices` prints it), "#<index>", or "" for the system default.
    pub capture_device: String,
    /// Playback device, as capture_device.
    pub playback_device: String,
    /// Play `audio_out` (the robot's voice) on the speaker. Turn off when another node plays it (then there is no echo reference).
    pub playback: bool,
    /// Acoustic echo cancellation (WebRTC AEC3) with the played audio as reference.
    pub aec: bool,
    /// WebRTC noise suppression on the captured audio.
    pub noise_suppression: bool,
    /// WebRTC automatic gain control (AGC2) on the captured audio.
    pub gain_control: bool,
    /// frame_id of the published audio.
    pub frame_id: String,
    /// Playback gain (1.0 = as received).
    pub volume: f32,
    /// Managed (lifecycle) node: start unconfigured and wait for a lifecycle manager (ros2 lifecycle set, Nav2's lifecycle_manager); configure opens the devices, activate publishes capture and plays audio_out, cleanup closes them. false = open and active at start.
    pub managed: bool,
    /// The simulated room (backend "sim").
    pub sim: SimParams,
}

/// `sim.*`: the simulated room.
#[derive(RosParams, Debug, Clone)]
pub struct SimParams {
    /// Speaker-to-microphone delay of the direct sound [ms].
    pub echo_delay_ms: f32,
    /// Direct sound amplitude at the microphone relative to what is played.
    pub echo_gain: f32,
    /// Reverberation length (60 dB decay) [ms].
    pub rir_ms: f32,
    /// Background noise level [dBFS]; below -120 = none.
    pub noise_dbfs: f32,
    /// Seed of the room's reflections and noise.
    pub seed: i32,
    /// A recording the talker says into the room (WAV, any rate); "" = none. With sim/talker, both are heard.
    pub talker_wav: String,
    /// When the recording is first said [s after start].
    pub talker_start_s: f32,
    /// Said again every this many seconds; 0 = once.
    pub talker_every_s: f32,
}

impl Default for AudioParams {
    fn default() -> Self {
        Self {
            backend: "device".into(),
            sample_rate: 16_000,
            frame_ms: 20,
            capture_device: String::new(),
            playback_device: String::new(),
            playback: true,
            aec: true,
            noise_suppression: false,
            gain_control: false,
            frame_id: "microphone".into(),
            volume: 1.0,
            managed: false,
            sim: SimParams::default(),
        }
    }
}

impl Default for SimParams {
    fn default() -> Self {
        let p = EchoPath::default();
        Self {
            echo_delay_ms: p.delay_ms,
            echo_gain: p.gain,
            rir_ms: p.rir_ms,
            noise_dbfs: -60.0,
            seed: 1,
            talker_wav: String::new(),
            talker_start_s: 2.0,
            talker_every_s: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    Device {
        capture: DeviceChoice,
        playback: DeviceChoice,
    },
    Sim {
        path: EchoPath,
        noise_dbfs: f32,
        seed: u64,
        talker: Option<TalkerScript>,
    },
}

/// The simulated room's recorded talker (a Rust-only feeder for the loop).
#[derive(Debug, Clone, PartialEq)]
pub struct TalkerScript {
    pub wav: String,
    pub start_s: f32,
    pub every_s: f32,
}

/// A sound device as the parameter names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    Default,
    Index(usize),
    Name(String),
}

impl DeviceChoice {
    fn parse(s: &str) -> Self {
        let s = s.trim();
        if s.is_empty() || s == "default" {
            Self::Default
        } else if let Some(i) = s.strip_prefix('#').and_then(|i| i.parse().ok()) {
            Self::Index(i)
        } else {
            Self::Name(s.to_string())
        }
    }
}

/// The processing the captured audio goes through; changes apply at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processing {
    pub aec: bool,
    pub noise_suppression: bool,
    pub gain_control: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudioConfig {
    pub backend: Backend,
    pub sample_rate: u32,
    pub frame_ms: u32,
    pub playback: bool,
    pub processing: Processing,
    pub frame_id: String,
    pub volume: f32,
}

impl NodeParams for AudioParams {
    type Config = AudioConfig;
    /// Fixed at start: the devices, the rate and frame, and the room.
    const READ_ONLY: &'static [&'static str] = &[
        "backend",
        "sample_rate",
        "frame_ms",
        "capture_device",
        "playback_device",
        "playback",
        "frame_id",
        "sim.echo_delay_ms",
        "sim.echo_gain",
        "sim.rir_ms",
        "sim.noise_dbfs",
        "sim.seed",
        "sim.talker_wav",
        "sim.talker_start_s",
        "sim.talker_every_s",
        "managed",
    ];

    fn validate(&self) -> Result<AudioConfig, ParamError> {
        check(
            [16_000, 32_000, 48_000].contains(&self.sample_rate),
            "sample_rate",
            || format!("must be 16000, 32000 or 48000, got {}", self.sample_rate),
        )?;
        in_range(self.frame_ms, 10..=100, "frame_ms")?;
        check(self.frame_ms % 10 == 0, "frame_ms", || {
            format!("must be a multiple of 10, got {}", self.frame_ms)
        })?;
        in_range(self.volume, 0.0..=4.0, "volume")?;
        let backend = match self.backend.as_str() {
            "device" => Backend::Device {
                capture: DeviceChoice::parse(&self.capture_device),
                playback: DeviceChoice::parse(&self.playback_device),
            },
            "sim" => {
                let s = &self.sim;
                in_range(s.echo_delay_ms, 0.0..=500.0, "sim.echo_delay_ms")?;
                in_range(s.echo_gain, 0.0..=4.0, "sim.echo_gain")?;
                in_range(s.rir_ms, 0.0..=1000.0, "sim.rir_ms")?;
                in_range(s.noise_dbfs, -200.0..=0.0, "sim.noise_dbfs")?;
                in_range(s.seed, 0..=i32::MAX, "sim.seed")?;
                in_range(s.talker_start_s, 0.0..=86_400.0, "sim.talker_start_s")?;
                in_range(s.talker_every_s, 0.0..=86_400.0, "sim.talker_every_s")?;
                let wav = s.talker_wav.trim();
                check(
                    wav.is_empty() || std::path::Path::new(wav).is_file(),
                    "sim.talker_wav",
                    || format!("{wav}: not found"),
                )?;
                Backend::Sim {
                    path: EchoPath {
                        delay_ms: s.echo_delay_ms,
                        gain: s.echo_gain,
                        rir_ms: s.rir_ms,
                        ..EchoPath::default()
                    },
                    noise_dbfs: s.noise_dbfs,
                    seed: s.seed as u64,
                    talker: (!wav.is_empty()).then(|| TalkerScript {
                        wav: wav.to_string(),
                        start_s: s.talker_start_s,
                        every_s: s.talker_every_s,
                    }),
                }
            }
            other => {
                return Err(ParamError {
                    name: "backend",
                    msg: format!("must be \"device\" or \"sim\", got {other:?}"),
                })
            }
        };
        Ok(AudioConfig {
            backend,
            sample_rate: self.sample_rate as u32,
            frame_ms: self.frame_ms as u32,
            playback: self.playback,
            processing: Processing {
                aec: self.aec,
                noise_suppression: self.noise_suppression,
                gain_control: self.gain_control,
            },
            frame_id: self.frame_id.clone(),
            volume: self.volume,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_devices_parse() {
        let c = AudioParams::default().validate().unwrap();
        assert_eq!((c.sample_rate, c.frame_ms), (16_000, 20));
        assert!(c.processing.aec && c.playback);
        assert_eq!(DeviceChoice::parse("#2"), DeviceChoice::Index(2));
        assert_eq!(
            DeviceChoice::parse("ReSpeaker"),
            DeviceChoice::Name("ReSpeaker".into())
        );
        assert_eq!(DeviceChoice::parse(" "), DeviceChoice::Default);
    }

    #[test]
    fn nonsense_is_refused_with_the_parameter_name() {
        let ok = AudioParams::default;
        let sim = |s: SimParams| AudioParams {
            backend: "sim".into(),
            sim: s,
            ..ok()
        };
        let cases = [
            (
                AudioParams {
                    sample_rate: 44_100,
                    ..ok()
                },
                "sample_rate",
            ),
            (
                AudioParams {
                    frame_ms: 25,
                    ..ok()
                },
                "frame_ms",
            ),
            (
                AudioParams {
                    frame_ms: 0,
                    ..ok()
                },
                "frame_ms",
            ),
            (
                AudioParams {
                    backend: "alsa".into(),
                    ..ok()
                },
                "backend",
            ),
            (
                AudioParams {
                    volume: -1.0,
                    ..ok()
                },
                "volume",
            ),
            (
                sim(SimParams {
                    echo_delay_ms: -5.0,
                    ..SimParams::default()
                }),
                "sim.echo_delay_ms",
            ),
            (
                sim(SimParams {
                    noise_dbfs: 10.0,
                    ..SimParams::default()
                }),
                "sim.noise_dbfs",
            ),
        ];
        for (p, name) in cases {
            assert_eq!(p.validate().unwrap_err().name, name);
        }
    }
}
