//! The two synthesis engines behind the `engine` parameter.

use std::sync::atomic::AtomicBool;

use crate::espeak;
use crate::params::TtsParams;
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

impl Engine {
    pub fn load(p: &TtsParams) -> Result<Self, PiperError> {
        match p.engine.as_str() {
            "espeak" => {
                let sample_rate = espeak::sample_rate(&p.espeak_voice)?;
                let scale = if p.length_scale > 0.0 {
                    p.length_scale
                } else {
                    1.0
                };
                Ok(Self::Espeak {
                    voice: p.espeak_voice.clone(),
                    wpm: (ESPEAK_WPM / scale).clamp(80.0, 450.0) as u32,
                    sample_rate,
                })
            }
            _ => Ok(Self::Piper {
                voice: Box::new(PiperVoice::load(
                    &p.voice_path,
                    &p.onnxruntime_path,
                    p.n_threads as usize,
                )?),
                settings: Settings {
                    length_scale: p.length_scale,
                    noise_scale: p.noise_scale,
                    noise_w: p.noise_w,
                    speaker_id: i64::from(p.speaker_id),
                },
            }),
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

    pub fn sample_rate(&self) -> u32 {
        match self {
            Self::Piper { voice, .. } => voice.sample_rate,
            Self::Espeak { sample_rate, .. } => *sample_rate,
        }
    }

    /// One sentence (already normalized) to mono f32 at [`Engine::sample_rate`].
    pub fn synthesize(
        &mut self,
        sentence: &str,
        cancel: &AtomicBool,
    ) -> Result<Vec<f32>, PiperError> {
        match self {
            Self::Piper { voice, settings } => voice.synthesize(sentence, settings),
            Self::Espeak { voice, wpm, .. } => Ok(espeak::synth(voice, sentence, *wpm, cancel)?
                .into_iter()
                .map(|s| f32::from(s) / 32768.0)
                .collect()),
        }
    }
}
