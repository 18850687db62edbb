//! The audio end-of-turn judge: Smart Turn v3.2 (CPU ONNX, int8) through
//! onnxruntime. It hears the voice, not the words: the probability that the
//! speaker has finished, from the intonation and rhythm of the last <= 8 s
//! of the utterance (Whisper log-mel features, `voice_core::melspec`).

use std::path::Path;
use std::time::Instant;

use ort::session::Session;
use ort::value::Tensor;
use voice_core::melspec::{LogMel, N_MELS};
use voice_core::model_file::{self, Format, ModelFileError};

/// Audio the model reads: the last 8 s at 16 kHz.
pub const WINDOW_SAMPLES: usize = 8 * 16_000;

#[derive(Debug, thiserror::Error)]
pub enum SmartTurnError {
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    #[error("onnxruntime_path: could not load onnxruntime from {path}: {msg}")]
    Runtime { path: String, msg: String },
    #[error("turn.audio_model_path: onnxruntime could not load {path}: {msg}")]
    Load { path: String, msg: String },
    #[error("audio end-of-turn inference failed: {0}")]
    Inference(String),
}

pub struct SmartTurn {
    session: Session,
    _env: ort::environment::Environment,
    mel: LogMel,
    /// The first inference at start [ms].
    pub warm_up_ms: f64,
}

impl SmartTurn {
    pub fn load(model_path: &str, onnxruntime_path: &str) -> Result<Self, SmartTurnError> {
        model_file::check("onnxruntime_path", onnxruntime_path, Format::Any)?;
        model_file::check("turn.audio_model_path", model_path, Format::Onnx)?;
        let rt = |msg: String| SmartTurnError::Runtime {
            path: onnxruntime_path.into(),
            msg,
        };
        let env = crate::onnx_runtime::environment(onnxruntime_path, "stt_node").map_err(rt)?;
        let load_err = |e: ort::Error| SmartTurnError::Load {
            path: model_path.into(),
            msg: e.to_string(),
        };
        // One thread: a call is ~40-50 ms on one core, and Whisper has the others.
        let session = Session::builder(&env)
            .map_err(load_err)?
            .with_intra_threads(1)
            .map_err(|e| load_err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| load_err(e.into()))?
            .with_intra_op_spinning(false)
            .map_err(|e| load_err(e.into()))?
            .commit_from_file(Path::new(model_path))
            .map_err(load_err)?;
        let mut me = Self {
            session,
            _env: env,
            mel: LogMel::new(WINDOW_SAMPLES),
            warm_up_ms: 0.0,
        };
        let t = Instant::now();
        me.score(&[0.0; 16_000])?;
        me.warm_up_ms = t.elapsed().as_secs_f64() * 1e3;
        Ok(me)
    }

    /// P(the speaker has finished) after `audio` (16 kHz mono, the utterance
    /// up to now: its last 8 s are read, shorter audio is padded in front).
    pub fn score(&mut self, audio: &[f32]) -> Result<f32, SmartTurnError> {
        let tail = &audio[audio.len().saturating_sub(WINDOW_SAMPLES)..];
        let mut window = vec![0.0f32; WINDOW_SAMPLES - tail.len()];
        window.extend_from_slice(tail);
        let features = self.mel.compute(&window);
        let err = |e: ort::Error| SmartTurnError::Inference(e.to_string());
        let input =
            Tensor::from_array(([1usize, N_MELS, self.mel.frames()], features)).map_err(err)?;
        let out = self
            .session
            .run(ort::inputs!["input_features" => input])
            .map_err(err)?;
        let (_, p) = out[0].try_extract_tensor::<f32>().map_err(err)?;
        let p = p.first().copied().unwrap_or(f32::NAN);
        if !p.is_finite() {
            return Err(SmartTurnError::Inference(format!("non-finite output {p}")));
        }
        Ok(p.clamp(0.0, 1.0))
    }
}
