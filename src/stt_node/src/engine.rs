//! Whisper (transcription) and Silero (VAD) through whisper-rs.
//!
//! The model (`WhisperContext`) loads once; one `WhisperState` is reused for
//! every utterance, as whisper-rs intends.

use std::time::Instant;

use voice_core::endpoint::{SpeechDetector, WINDOW};
use voice_core::model_file::{self, Format, ModelFileError};
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
    WhisperVadContext, WhisperVadContextParams,
};

use crate::params::{AudioCtx, DecodeConfig, Strategy, WhisperModel};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    #[error("{param}: whisper.cpp could not load {path}: {err}")]
    Load {
        param: &'static str,
        path: String,
        err: whisper_rs::WhisperError,
    },
    #[error("whisper inference failed: {0}")]
    Inference(#[from] whisper_rs::WhisperError),
    #[error("{0}")]
    Config(String),
    #[error("the transcription server failed: {0}")]
    Server(voice_ros::server::Fault),
    /// A partial hypothesis not made (the server too slow for their cadence).
    #[error("partial hypothesis skipped")]
    PartialSkipped,
}

/// One transcription result.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub text: String,
    pub language: String,
    pub compute_ms: f64,
    /// The text tokens' probabilities: sum and count (for a confidence).
    pub tokens: TokenProbs,
}

/// Sum and count of token probabilities, added up over the decodes of an
/// utterance; their mean is its confidence.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenProbs {
    pub sum: f64,
    pub n: u32,
}

impl TokenProbs {
    pub fn add(self, o: TokenProbs) -> TokenProbs {
        TokenProbs {
            sum: self.sum + o.sum,
            n: self.n + o.n,
        }
    }

    /// The mean probability, 0 when there is none.
    pub fn mean(self) -> f32 {
        if self.n == 0 {
            0.0
        } else {
            (self.sum / f64::from(self.n)) as f32
        }
    }
}

pub struct Whisper {
    // `state` borrows nothing from `ctx` in whisper-rs (it holds an Arc), but
    // keep the context alive for the node's lifetime all the same.
    _ctx: WhisperContext,
    state: WhisperState,
    /// Token ids at and above this are special (timestamps, end of text).
    eot: whisper_rs::WhisperTokenId,
    n_threads: i32,
    decode: DecodeConfig,
    pub model_name: String,
    /// The first inference at start [ms].
    pub warm_up_ms: f64,
}

impl Whisper {
    pub fn load(m: &WhisperModel, decode: DecodeConfig) -> Result<Self, EngineError> {
        model_file::check("model_path", &m.path, Format::WhisperGgml)?;
        let cp = WhisperContextParameters {
            use_gpu: m.use_gpu,
            flash_attn: m.flash_attn,
            ..Default::default()
        };
        let load_err = |err| EngineError::Load {
            param: "model_path",
            path: m.path.clone(),
            err,
        };
        let ctx = WhisperContext::new_with_params(&m.path, cp).map_err(load_err)?;
        let state = ctx.create_state().map_err(load_err)?;
        let eot = ctx.token_eot();
        let model_name = std::path::Path::new(&m.path)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut t = Self {
            _ctx: ctx,
            state,
            eot,
            n_threads: m.n_threads,
            decode,
            model_name,
            warm_up_ms: 0.0,
        };
        // the first inference allocates and pages in the model: pay that
        // at start, not on the user's first turn (one bounded decode: what
        // the model says does not matter here)
        let t0 = Instant::now();
        t.transcribe_partial(&warm_up_audio())?;
        t.warm_up_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(t)
    }

    /// New decoding settings (a runtime parameter set), used from the next utterance.
    pub fn set_decode(&mut self, decode: DecodeConfig) {
        self.decode = decode;
    }

    /// Transcribes 16 kHz mono audio. Segments Whisper itself marks as
    /// no-speech are left out.
    /// Transcribes a hypothesis while the user speaks: one decode, no
    /// temperature fallback (a clip cut mid-word can fail Whisper's
    /// confidence checks and be decoded up to six times: seconds instead of
    /// ~0.2 s). The final transcript keeps the fallback.
    pub fn transcribe_partial(&mut self, audio: &[f32]) -> Result<Transcript, EngineError> {
        self.run(audio, false)
    }

    pub fn transcribe(&mut self, audio: &[f32]) -> Result<Transcript, EngineError> {
        self.run(audio, true)
    }

    fn run(&mut self, audio: &[f32], fallback: bool) -> Result<Transcript, EngineError> {
        let t0 = Instant::now();
        let d = &self.decode;
        let strategy = match d.strategy {
            Strategy::Beam { size } => SamplingStrategy::BeamSearch {
                beam_size: size,
                patience: -1.0,
            },
            Strategy::Greedy => SamplingStrategy::Greedy { best_of: 1 },
        };
        let mut fp = FullParams::new(strategy);
        fp.set_n_threads(self.n_threads);
        fp.set_translate(false);
        fp.set_no_context(true);
        fp.set_single_segment(false);
        fp.set_print_special(false);
        fp.set_print_progress(false);
        fp.set_print_realtime(false);
        fp.set_print_timestamps(false);
        fp.set_suppress_blank(true);
        fp.set_no_speech_thold(d.no_speech_threshold);
        if !fallback {
            fp.set_temperature_inc(0.0);
            // without the fallback nothing stops a repetition loop ("when you
            // get to the lab. When you get to the lab. ..."): bound the tokens
            // by the audio's length (speech is 3-4 tokens a second)
            let secs = audio.len() as f32 / voice_core::PIPELINE_RATE as f32;
            fp.set_single_segment(true);
            fp.set_max_tokens((secs * PARTIAL_TOKENS_PER_S) as i32 + 8);
        } else {
            // a final transcript: bounded per segment too, more loosely (a
            // hallucination loop on noise otherwise runs to Whisper's 224
            // tokens, on every temperature of the fallback)
            let secs = (audio.len() as f32 / voice_core::PIPELINE_RATE as f32).min(30.0);
            fp.set_max_tokens((secs * FINAL_TOKENS_PER_S) as i32 + 16);
        }
        match &d.language {
            None => {
                fp.set_language(None);
                fp.set_detect_language(false);
            }
            Some(l) => fp.set_language(Some(l)),
        }
        if !d.initial_prompt.is_empty() {
            fp.set_initial_prompt(&d.initial_prompt);
        }
        // Whisper works on >= 1 s windows; pad short clips with silence.
        let mut padded;
        let input = if audio.len() < 16_000 + 1_600 {
            padded = audio.to_vec();
            padded.resize(16_000 + 1_600, 0.0);
            &padded[..]
        } else {
            audio
        };
        let frames = match d.audio_ctx {
            AudioCtx::Full => None,
            AudioCtx::Frames(n) => Some(n),
            AudioCtx::Sized => Some(sized_audio_ctx(input.len())),
        };
        if let Some(n) = frames {
            fp.set_audio_ctx(n);
        }
        self.state.full(fp, input)?;
        let mut text = String::new();
        let mut tokens = TokenProbs::default();
        for seg in self.state.as_iter() {
            if seg.no_speech_probability() > self.decode.no_speech_threshold {
                continue;
            }
            if let Ok(s) = seg.to_str_lossy() {
                text.push_str(&s);
            }
            for t in (0..seg.n_tokens()).filter_map(|i| seg.get_token(i)) {
                if t.token_id() < self.eot {
                    tokens.sum += f64::from(t.token_probability());
                    tokens.n += 1;
                }
            }
        }
        let lang_id = self.state.full_lang_id_from_state();
        let language = whisper_rs::get_lang_str(lang_id)
            .or(self.decode.language.as_deref())
            .unwrap_or("")
            .to_string();
        Ok(Transcript {
            text: text.trim().to_string(),
            language,
            compute_ms: t0.elapsed().as_secs_f64() * 1e3,
            tokens,
        })
    }
}

/// Two seconds of voice-like sound (a buzzing vowel with syllable-rate
/// loudness changes), so the warm-up runs the decoder too, not only the
/// encoder on silence.
fn warm_up_audio() -> Vec<f32> {
    (0..2 * voice_core::PIPELINE_RATE as usize)
        .map(|i| {
            let t = i as f32 / voice_core::PIPELINE_RATE as f32;
            let syllables = 0.5 + 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
            let voice = (1..8)
                .map(|h| (2.0 * std::f32::consts::PI * 140.0 * h as f32 * t).sin() / h as f32)
                .sum::<f32>();
            0.1 * syllables * voice
        })
        .collect()
}

/// Most tokens a partial hypothesis may have per second of audio.
const PARTIAL_TOKENS_PER_S: f32 = 8.0;
/// Most tokens a final transcript may have per second of audio, per segment
/// (fast speech is 4-5 tokens a second).
const FINAL_TOKENS_PER_S: f32 = 12.0;

/// Encoder frames per second of audio (Whisper: 1500 for 30 s).
const CTX_PER_S: f64 = 50.0;
/// Frames added beyond the audio; the window is also rounded up to a
/// multiple of this, so similar lengths share one encoder graph size.
const CTX_MARGIN: i32 = 64;

/// The encoder window for `samples` of 16 kHz audio: the audio plus a
/// margin, rounded up, at most the full 30 s window.
pub fn sized_audio_ctx(samples: usize) -> i32 {
    let frames = (samples as f64 / f64::from(voice_core::PIPELINE_RATE) * CTX_PER_S).ceil() as i32;
    let n = (frames + 2 * CTX_MARGIN - 1) / CTX_MARGIN * CTX_MARGIN;
    n.min(1500)
}

/// Left context handed to Silero with each new batch [windows]: the LSTM
/// state is rebuilt from it on every call (whisper.cpp's VAD resets state).
const SILERO_CONTEXT_WINDOWS: usize = 16;

/// Silero VAD through whisper.cpp's VAD, streamed with a rolling context.
pub struct SileroDetector {
    vad: WhisperVadContext,
    history: Vec<f32>,
}

impl SileroDetector {
    pub fn load(path: &str) -> Result<Self, EngineError> {
        model_file::check("vad.model_path", path, Format::WhisperGgml)?;
        let mut cp = WhisperVadContextParams::new();
        // One thread: Silero is tiny, and ggml's spinning thread barriers
        // would fight Whisper's threads (and llm_node's) for the cores.
        cp.set_n_threads(1);
        cp.set_use_gpu(false);
        let vad = WhisperVadContext::new(path, cp).map_err(|err| EngineError::Load {
            param: "vad.model_path",
            path: path.into(),
            err,
        })?;
        Ok(Self {
            vad,
            history: Vec::new(),
        })
    }
}

impl SpeechDetector for SileroDetector {
    fn probabilities(&mut self, audio: &[f32]) -> Result<Vec<f32>, String> {
        let n_new = audio.len() / WINDOW;
        let mut input = std::mem::take(&mut self.history);
        let ctx_windows = input.len() / WINDOW;
        input.extend_from_slice(&audio[..n_new * WINDOW]);
        self.vad.detect_speech(&input).map_err(|e| e.to_string())?;
        let probs = self.vad.probabilities();
        let start = ctx_windows.min(probs.len());
        let mut out: Vec<f32> = probs[start..].iter().copied().take(n_new).collect();
        out.resize(n_new, 0.0);
        let keep = SILERO_CONTEXT_WINDOWS * WINDOW;
        let drop = input.len().saturating_sub(keep);
        input.drain(..drop);
        self.history = input;
        Ok(out)
    }

    fn reset(&mut self) {
        self.history.clear();
    }
}

/// The speech detector chosen by `vad.model_path`.
pub enum Detector {
    Silero(Box<SileroDetector>),
    Energy(voice_core::endpoint::EnergyDetector),
}

impl SpeechDetector for Detector {
    fn probabilities(&mut self, audio: &[f32]) -> Result<Vec<f32>, String> {
        match self {
            Detector::Silero(d) => d.probabilities(audio),
            Detector::Energy(d) => d.probabilities(audio),
        }
    }
    fn reset(&mut self) {
        match self {
            Detector::Silero(d) => d.reset(),
            Detector::Energy(d) => d.reset(),
        }
    }
}
