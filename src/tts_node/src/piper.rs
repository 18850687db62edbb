//! Piper VITS voices through onnxruntime (`ort`, loaded at run time from the
//! library the `onnxruntime_path` parameter names). Phonemes come from
//! espeak-ng; sample rate, phoneme ids and inference defaults from the voice's
//! .onnx.json.

use std::collections::HashMap;
use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;
use voice_core::model_file::{self, Format, ModelFileError};

use crate::espeak;

#[derive(Debug, thiserror::Error)]
pub enum PiperError {
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    #[error("onnxruntime_path: cannot load onnxruntime from {path}: {msg}")]
    Runtime { path: String, msg: String },
    #[error("voice_path: {path}.json is not a Piper voice config: {msg}")]
    Config { path: String, msg: String },
    #[error("voice_path: onnxruntime cannot load {path}: {msg}")]
    Load { path: String, msg: String },
    #[error("espeak-ng: {0}")]
    Espeak(#[from] espeak::EspeakError),
    #[error("inference failed: {0}")]
    Inference(String),
}

#[derive(Debug, Deserialize)]
struct VoiceConfig {
    audio: AudioConfig,
    espeak: EspeakConfig,
    #[serde(default)]
    inference: InferenceConfig,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    num_speakers: u32,
}

#[derive(Debug, Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Debug, Deserialize)]
struct EspeakConfig {
    voice: String,
}

#[derive(Debug, Deserialize, Clone, Copy)]
pub struct InferenceConfig {
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            noise_scale: 0.667,
            length_scale: 1.0,
            noise_w: 0.8,
        }
    }
}

pub use crate::params::VoiceSettings as Settings;

pub struct PiperVoice {
    session: Session,
    _env: ort::environment::Environment,
    ids: HashMap<char, Vec<i64>>,
    pub sample_rate: u32,
    pub espeak_voice: String,
    defaults: InferenceConfig,
    num_speakers: u32,
    pad: Vec<i64>,
    bos: Vec<i64>,
    eos: Vec<i64>,
    has_sid: bool,
}

impl PiperVoice {
    pub fn load(
        voice_path: &str,
        onnxruntime_path: &str,
        threads: usize,
    ) -> Result<Self, PiperError> {
        model_file::check("onnxruntime_path", onnxruntime_path, Format::Any)?;
        model_file::check("voice_path", voice_path, Format::Onnx)?;
        let cfg_path = format!("{voice_path}.json");
        model_file::check("voice_path (its .onnx.json)", &cfg_path, Format::Json)?;
        let cfg_err = |msg: String| PiperError::Config {
            path: voice_path.into(),
            msg,
        };
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| cfg_err(e.to_string()))?;
        let cfg: VoiceConfig = serde_json::from_str(&text).map_err(|e| cfg_err(e.to_string()))?;
        let mut ids = HashMap::new();
        for (k, v) in &cfg.phoneme_id_map {
            let mut chars = k.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                ids.insert(c, v.clone());
            }
        }
        let get = |c: char| {
            ids.get(&c)
                .cloned()
                .ok_or_else(|| cfg_err(format!("phoneme_id_map lacks {c:?}")))
        };
        let (pad, bos, eos) = (get('_')?, get('^')?, get('$')?);
        let env =
            crate::onnx_runtime::environment(onnxruntime_path, "tts_node").map_err(|msg| {
                PiperError::Runtime {
                    path: onnxruntime_path.into(),
                    msg,
                }
            })?;
        let load_err = |e: ort::Error| PiperError::Load {
            path: voice_path.into(),
            msg: e.to_string(),
        };
        let session = Session::builder(&env)
            .map_err(load_err)?
            .with_intra_threads(threads.max(1))
            .map_err(|e| load_err(e.into()))?
            // No spin-waiting after a sentence: on a small robot CPU the LLM is
            // generating the next sentence on the same cores meanwhile.
            .with_intra_op_spinning(false)
            .map_err(|e| load_err(e.into()))?
            // No growing arena or cached memory patterns: sentence lengths vary,
            // and a robot running for hours needs flat memory more than the
            // last few percent of speed.
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
            .map_err(|e| load_err(e.into()))?
            .with_memory_pattern(false)
            .map_err(|e| load_err(e.into()))?
            .commit_from_file(Path::new(voice_path))
            .map_err(load_err)?;
        let has_sid = session.inputs().iter().any(|i| i.name() == "sid");
        Ok(Self {
            session,
            _env: env,
            ids,
            sample_rate: cfg.audio.sample_rate,
            espeak_voice: cfg.espeak.voice,
            defaults: cfg.inference,
            num_speakers: cfg.num_speakers,
            pad,
            bos,
            eos,
            has_sid,
        })
    }

    /// Phoneme ids of one sentence: BOS, each phoneme followed by a pad, EOS.
    fn ids_of(&self, phonemes: &str) -> Vec<i64> {
        let mut out = self.bos.clone();
        out.extend_from_slice(&self.pad);
        for c in phonemes.chars() {
            if let Some(id) = self.ids.get(&c) {
                out.extend_from_slice(id);
                out.extend_from_slice(&self.pad);
            }
        }
        out.extend_from_slice(&self.eos);
        out
    }

    /// Synthesizes one sentence to mono f32 at [`PiperVoice::sample_rate`].
    pub fn synthesize(&mut self, sentence: &str, s: &Settings) -> Result<Vec<f32>, PiperError> {
        let clauses = espeak::phonemize(&self.espeak_voice, sentence)?;
        if clauses.is_empty() {
            return Ok(Vec::new());
        }
        let mut phonemes = clauses.join(", ");
        match sentence.trim_end().chars().last() {
            Some(p @ ('.' | '?' | '!')) => phonemes.push(p),
            _ => phonemes.push('.'),
        }
        let ids = self.ids_of(&phonemes);
        let n = ids.len();
        let scales = vec![
            s.noise_scale.unwrap_or(self.defaults.noise_scale),
            s.length_scale.unwrap_or(self.defaults.length_scale),
            s.noise_w.unwrap_or(self.defaults.noise_w),
        ];
        let err = |e: ort::Error| PiperError::Inference(e.to_string());
        let input = Tensor::from_array(([1usize, n], ids)).map_err(err)?;
        let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?;
        let scales = Tensor::from_array(([3usize], scales)).map_err(err)?;
        let outputs = if self.has_sid {
            let sid = s
                .speaker_id
                .clamp(0, i64::from(self.num_speakers.max(1)) - 1);
            let sid = Tensor::from_array(([1usize], vec![sid])).map_err(err)?;
            self.session
                .run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales, "sid" => sid])
                .map_err(err)?
        } else {
            self.session
                .run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales])
                .map_err(err)?
        };
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        Ok(audio.to_vec())
    }
}
