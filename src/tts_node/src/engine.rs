//! The two synthesis engines behind the `engine` parameter.

use std::sync::atomic::AtomicBool;

use crate::espeak;
use crate::params::{EngineKind, TtsConfig};
use crate::piper::{PiperError, PiperVoice, Settings};

/// espeak-ng's default speaking rate [words per minute].
const ESPEAK_WPM: f32 = 175.0;

pub enum Engine {
    Piper {
        voice: Box<PiperVoice>,
        settings: Settings,
    },
    Espeak {
        voice: String,
        wpm: u32,
        sample_rate: u32,
    },
}

/// espeak-ng's rate for a length scale (>1 slower).
fn espeak_wpm(length_scale: Option<f32>) -> u32 {
    (ESPEAK_WPM / length_scale.unwrap_or(1.0)).clamp(80.0, 450.0) as u32
}

impl Engine {
    pub fn load(cfg: &TtsConfig) -> Result<Self, PiperError> {
        match &cfg.engine {
            EngineKind::Espeak { voice } => Ok(Self::Espeak {
                voice: voice.clone(),
                wpm: espeak_wpm(cfg.voice.length_scale),
                sample_rate: espeak::sample_rate(voice)?,
            }),
            EngineKind::Piper {
                voice_path,
                onnxruntime_path,
                n_threads,
            } => Ok(Self::Piper {
                voice: Box::new(PiperVoice::load(voice_path, onnxruntime_path, *n_threads)?),
                settings: cfg.voice,
            }),
        }
    }

    /// New voice settings (a runtime parameter set), used from the next sentence.
    pub fn set_voice(&mut self, new: Settings) {
        match self {
            Self::Piper { settings, .. } => *settings = new,
            Self::Espeak { wpm, .. } => *wpm = espeak_wpm(new.length_scale),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Piper { voice, .. } => {
                format!("piper ({}, {} Hz)", voice.espeak_voice, voice.sample_rate)
            }
            Self::Espeak {
                voice, sample_rate, ..
            } => format!("espeak-ng ({voice}, {sample_rate} Hz)"),
        }
    }

    /// The voice's language (an espeak-ng voice name), and whether a text
    /// may be spoken in another (espeak-ng: any of its voices; Piper: no).
    pub fn language(&self) -> (String, bool) {
        match self {
            Self::Piper { voice, .. } => (voice.espeak_voice.clone(), false),
            Self::Espeak { voice, .. } => (voice.clone(), true),
        }
    }

    pub fn sample_rate(&self) -> u32 {
        match self {
            Self::Piper { voice, .. } => voice.sample_rate,
            Self::Espeak { sample_rate, .. } => *sample_rate,
        }
    }

    /// One sentence (already normalized) to mono f32 at [`Engine::sample_rate`];
    /// `rate` (1 = the voice's pace) overrides the `length_scale` parameter,
    /// `language` (espeak-ng only; checked before) the voice.
    pub fn synthesize(
        &mut self,
        sentence: &str,
        rate: Option<f32>,
        language: Option<&str>,
        cancel: &AtomicBool,
    ) -> Result<Vec<f32>, PiperError> {
        let length_scale = rate.map(|r| 1.0 / r);
        match self {
            Self::Piper { voice, settings } => {
                let mut s = *settings;
                if length_scale.is_some() {
                    s.length_scale = length_scale;
                }
                voice.synthesize(sentence, &s)
            }
            Self::Espeak { voice, wpm, .. } => {
                let wpm = length_scale.map_or(*wpm, |l| espeak_wpm(Some(l)));
                Ok(
                    espeak::synth(language.unwrap_or(voice), sentence, wpm, cancel)?
                        .into_iter()
                        .map(|s| f32::from(s) / 32768.0)
                        .collect(),
                )
            }
        }
    }
}
