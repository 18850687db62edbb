//! stt_node's ROS parameters (one typed struct; nested structs are dotted
//! names, e.g. `vad.threshold`) and their validation.

use r2r::RosParams;
use voice_core::endpoint::EndpointConfig;
pub use voice_core::params::ParamError;
use voice_core::params::{check, in_range};
use voice_core::turn::{Fusion, Judge};
use voice_ros::params::NodeParams;

/// Parameters of stt_node. Doc comments are what `ros2 param describe` shows.
#[derive(RosParams, Debug, Clone)]
pub struct SttParams {
    /// Who transcribes: "local" (Whisper in this process, model_path) or "openai" (an OpenAI-compatible transcription server at server.base_url: vLLM, faster-whisper servers); VAD, end of turn and barge-in stay here.
    pub engine: String,
    /// engine openai: the server.
    pub server: SttServerParams,
    /// engine openai: who transcribes when the server cannot: "local" (model_path, loaded at configure) or "none" (the turn is lost, with an error).
    pub fallback: String,
    /// Whisper model in whisper.cpp ggml format (e.g. ggml-tiny.en.bin); with engine openai, the fallback's (may be "" with fallback none).
    pub model_path: String,
    /// Spoken language as ISO 639-1 code, or "auto" to detect (multilingual models only).
    pub language: String,
    /// CPU threads for Whisper.
    pub n_threads: i32,
    /// Decoding strategy: "greedy" or "beam".
    pub strategy: String,
    /// Beam width when strategy is "beam".
    pub beam_size: i32,
    /// Text that primes Whisper's decoder (names, jargon the robot expects).
    pub initial_prompt: String,
    /// Segments whose no-speech probability is above this are discarded (0..1).
    pub no_speech_threshold: f32,
    /// Whisper encoder window [frames of 20 ms]: 0 = sized to each utterance
    /// (cost follows the audio's length), -1 = the full 30 s window (1500).
    pub audio_ctx: i32,
    /// Run Whisper on the GPU (needs a CUDA build).
    pub use_gpu: bool,
    /// Flash attention in Whisper (GPU builds).
    pub flash_attn: bool,
    /// Conversation key put on every Utterance (one per microphone / user); "" = default.
    pub conversation_id: String,
    /// Subscribe `audio` with reliable QoS instead of sensor-data (best effort).
    pub reliable_audio: bool,
    /// Largest audio block accepted in one AudioFrame [s]; longer frames are dropped.
    pub max_frame_s: f64,
    /// Publish the 16 kHz mono audio on ~/audio_16k (debugging, tests).
    pub publish_normalized: bool,
    /// Barge-in: speech while `speaking` is true publishes `interrupt` (the robot stops, the speech is the next turn).
    pub barge_in: bool,
    /// After `speaking` goes false, the robot counts as audible this long (speaker echo tail) [ms].
    pub echo_guard_ms: i32,
    /// No audio frame for this long while the user's turn is pending (a bag that ended, a driver that stopped) counts the missing time as silence, so the turn is judged and ends as if the silence had been heard [ms]; 0 = off (only heard silence counts).
    pub stream_gap_ms: i32,
    /// onnxruntime shared library (libonnxruntime.so...) for the audio end-of-turn model (turn.audio_model_path).
    pub onnxruntime_path: String,
    /// Publish hri_msgs/LiveSpeech (ROS4HRI) on this topic: the hypothesis while the user speaks (incremental), the turn's transcript at its end (final, confidence, language); "" = off. ROS4HRI's voice topic is /humans/voices/<voice_id>/speech. Needs a build with hri_msgs in the ROS prefix.
    pub live_speech_topic: String,
    /// Managed (lifecycle) node: start unconfigured and wait for a lifecycle manager (ros2 lifecycle set, Nav2's lifecycle_manager); false = configure and activate at start.
    pub managed: bool,
    /// Voice activity detection.
    pub vad: VadParams,
    /// Turn taking: partial transcripts, end of turn, speech over the robot.
    pub turn: TurnParams,
}

/// `turn.*`: when a turn ends, and what is heard while the robot speaks.
#[derive(RosParams, Debug, Clone)]
pub struct TurnParams {
    /// End-of-turn probability (llm_node's judgement at a pause) at or above which the turn ends after vad.min_silence_ms; lower scores wait longer, up to vad.max_silence_ms (0..1).
    pub end_threshold: f32,
    /// A partial transcript on transcript/partial every this much speech [ms]; 0 = only at pauses.
    pub partial_interval_ms: i32,
    /// Transcribe speech heard while the robot speaks (echo-checked against its own words) instead of ignoring it.
    pub hear_while_speaking: bool,
    /// Speech heard while the robot spoke whose words are at least this fraction the robot's own recent words is its echo, not a turn (0..1].
    pub echo_text_match: f32,
    /// An utterance starting this soon after the previous turn's speech with "and", "but", "so", ... continues it: published joined, replacing it [ms]; 0 = off.
    pub continuation_ms: i32,
    /// A turn whose words scored below this at the pause that ended it (the voice or the silence ended it while the words doubted), or that ends open ("go to the", "..., um,"), is continued by whatever is said within turn.continuation_ms, whatever its first word (0..1; 0 = only and/but/so ... and open endings).
    pub unfinished_below: f32,
    /// Wake words: comma-separated names the robot answers to (e.g. "robbie, hey robot"); a turn must begin with one, tolerant of spelling. "" = answer everything.
    pub wake_words: String,
    /// After the end of a turn's speech or of the robot's reply, follow-ups need no wake word for this long [s].
    pub follow_up_s: f64,
    /// Who judges a pause: "text" (llm_node's probability from the words), "audio" (the audio end-of-turn model, from the voice) or "both" (fused: log-odds averaged, a sure "not done" from either decides); audio and both need turn.audio_model_path.
    pub judge: String,
    /// Audio end-of-turn model (Smart Turn v3 ONNX: smart-turn-v3.2-cpu.onnx); "" = none (turn.judge must be "text").
    pub audio_model_path: String,
    /// turn.judge both: weight of the voice's log-odds against the words' (0..1).
    pub audio_weight: f32,
    /// turn.judge both: a judge scoring below this is sure the user is not done and decides alone (0..1).
    pub veto_below: f32,
}

impl Default for TurnParams {
    fn default() -> Self {
        Self {
            end_threshold: 0.2,
            partial_interval_ms: 1000,
            hear_while_speaking: true,
            echo_text_match: 0.6,
            continuation_ms: 2000,
            unfinished_below: 0.2,
            wake_words: String::new(),
            follow_up_s: 8.0,
            judge: "text".into(),
            audio_model_path: String::new(),
            audio_weight: Fusion::default().audio_weight,
            veto_below: Fusion::default().veto_below,
        }
    }
}

/// `vad.*`: endpointing.
#[derive(RosParams, Debug, Clone)]
pub struct VadParams {
    /// Silero VAD model in whisper.cpp VAD ggml format; "" = energy-based fallback.
    pub model_path: String,
    /// Speech probability threshold (0..1).
    pub threshold: f32,
    /// Silence that makes a tentative end of the turn, judged from the words [ms].
    pub min_silence_ms: i32,
    /// Silence that ends the turn whatever the words say [ms]; <= min_silence_ms = silence alone decides.
    pub max_silence_ms: i32,
    /// Audio kept before and after speech [ms].
    pub speech_pad_ms: i32,
    /// Shorter speech is ignored [ms].
    pub min_speech_ms: i32,
    /// Longer speech is transcribed in pieces of this length [s].
    pub max_utterance_s: f32,
}

/// stt_node's OpenAI-compatible transcription server (engine openai).
#[derive(RosParams, Debug, Clone)]
pub struct SttServerParams {
    /// Base URL up to and including the API version, e.g. http://gpu-server:8000/v1 (https:// for TLS); turns go to POST {base_url}/audio/transcriptions.
    pub base_url: String,
    /// Model name the server serves (the requests' "model").
    pub model: String,
    /// Name of the environment variable that holds the API key (sent as a bearer token); "" = no key. The key itself is never a parameter and is never logged.
    pub api_key_env: String,
    /// Longest wait for a transcription before the server counts as failed [s].
    pub timeout_s: f64,
    /// fallback local: how long the local model transcribes after a fault before the server is asked again [s].
    pub probe_interval_s: f64,
}

impl Default for SttServerParams {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8000/v1".into(),
            model: "whisper-1".into(),
            api_key_env: String::new(),
            timeout_s: 5.0,
            probe_interval_s: 5.0,
        }
    }
}

impl Default for SttParams {
    fn default() -> Self {
        Self {
            engine: "local".into(),
            server: SttServerParams::default(),
            fallback: "local".into(),
            model_path: String::new(),
            language: "en".into(),
            n_threads: 4,
            strategy: "greedy".into(),
            beam_size: 5,
            initial_prompt: String::new(),
            no_speech_threshold: 0.6,
            audio_ctx: 0,
            use_gpu: false,
            flash_attn: false,
            conversation_id: String::new(),
            reliable_audio: false,
            max_frame_s: voice_core::audio::DEFAULT_MAX_FRAME_S,
            publish_normalized: false,
            barge_in: false,
            echo_guard_ms: 300,
            stream_gap_ms: 300,
            onnxruntime_path: String::new(),
            live_speech_topic: String::new(),
            managed: false,
            vad: VadParams::default(),
            turn: TurnParams::default(),
        }
    }
}

impl Default for VadParams {
    fn default() -> Self {
        let d = EndpointConfig::default();
        Self {
            model_path: String::new(),
            threshold: d.threshold,
            min_silence_ms: d.min_silence_ms as i32,
            max_silence_ms: d.max_silence_ms as i32,
            speech_pad_ms: d.speech_pad_ms as i32,
            min_speech_ms: d.min_speech_ms as i32,
            max_utterance_s: d.max_utterance_s,
        }
    }
}

/// How Whisper decodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    Greedy,
    Beam { size: i32 },
}

/// Whisper's per-utterance settings (all applied at runtime).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeConfig {
    /// ISO 639-1 code; `None` = detect.
    pub language: Option<String>,
    pub strategy: Strategy,
    pub initial_prompt: String,
    pub no_speech_threshold: f32,
    pub audio_ctx: AudioCtx,
}

/// Whisper's encoder window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCtx {
    /// Sized to the audio (plus a margin): cost follows the utterance length.
    Sized,
    /// Whisper's full 30 s window, whatever the audio.
    Full,
    /// A fixed number of 20 ms frames.
    Frames(i32),
}

/// The Whisper model and how it runs (fixed at start).
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperModel {
    pub path: String,
    pub n_threads: i32,
    pub use_gpu: bool,
    pub flash_attn: bool,
}

/// stt_node's validated settings.
#[derive(Debug, Clone)]
pub struct SttConfig {
    /// engine openai: the server (None = engine local).
    pub remote: Option<SttRemote>,
    /// Whisper in this process: the engine, or the fallback (None: the server alone).
    pub model: Option<WhisperModel>,
    /// Silero VAD model; `None` = the energy-based endpointer.
    pub vad_model: Option<String>,
    pub reliable_audio: bool,
    pub publish_normalized: bool,
    pub decode: DecodeConfig,
    pub endpoint: EndpointConfig,
    pub conversation_id: String,
    pub max_frame_s: f64,
    pub barge_in: bool,
    pub echo_guard: std::time::Duration,
    /// Frames missing this long count as silence; `None` = off.
    pub stream_gap: Option<std::time::Duration>,
    pub end_threshold: f32,
    pub partial_interval_ms: u32,
    pub hear_while_speaking: bool,
    pub echo_text_match: f32,
    pub continuation: std::time::Duration,
    pub unfinished_below: f32,
    /// Wake phrases (normalized words); empty = every turn is for the robot.
    pub wake_words: Vec<Vec<String>>,
    pub follow_up: std::time::Duration,
    pub judge: Judge,
    pub fusion: Fusion,
    /// The audio end-of-turn model and the onnxruntime to run it; `None` = none.
    pub audio_model: Option<AudioModel>,
    /// Where hri_msgs/LiveSpeech goes; `None` = not published.
    pub live_speech_topic: Option<String>,
}

/// engine openai: the transcription server, and whether local Whisper
/// stands in for it.
#[derive(Debug, Clone, PartialEq)]
pub struct SttRemote {
    pub server: voice_ros::server::ServerConfig,
    pub fallback: bool,
}

/// The audio end-of-turn model (fixed at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioModel {
    pub path: String,
    pub onnxruntime_path: String,
}

impl NodeParams for SttParams {
    type Config = SttConfig;
    /// Fixed at start: the models, threads, GPU use and the topics' QoS.
    const READ_ONLY: &'static [&'static str] = &[
        "engine",
        "server.base_url",
        "server.model",
        "server.api_key_env",
        "fallback",
        "model_path",
        "n_threads",
        "use_gpu",
        "flash_attn",
        "reliable_audio",
        "publish_normalized",
        "vad.model_path",
        "turn.audio_model_path",
        "onnxruntime_path",
        "live_speech_topic",
        "managed",
    ];

    /// Checks ranges; returns the typed configuration.
    fn validate(&self) -> Result<SttConfig, ParamError> {
        use voice_ros::server;
        let remote = if server::remote_engine(&self.engine)? {
            let s = &self.server;
            Some(SttRemote {
                server: server::validate(server::ServerArgs {
                    base_url: &s.base_url,
                    model: &s.model,
                    api_key_env: &s.api_key_env,
                    timeout_s: s.timeout_s,
                    probe_interval_s: s.probe_interval_s,
                })?,
                fallback: server::local_fallback(&self.fallback)?,
            })
        } else {
            None
        };
        let local = remote.as_ref().is_none_or(|r| r.fallback);
        check(
            !local || !self.model_path.trim().is_empty(),
            "model_path",
            || {
                "not set (path to a whisper.cpp ggml model; with engine openai, fallback none needs none)"
                    .into()
            },
        )?;
        in_range(self.n_threads, 1..=64, "n_threads")?;
        let strategy = match self.strategy.as_str() {
            "greedy" => Strategy::Greedy,
            "beam" => Strategy::Beam {
                size: self.beam_size,
            },
            other => {
                return Err(ParamError {
                    name: "strategy",
                    msg: format!("must be \"greedy\" or \"beam\", got {other:?}"),
                })
            }
        };
        in_range(self.beam_size, 1..=16, "beam_size")?;
        in_range(self.no_speech_threshold, 0.0..=1.0, "no_speech_threshold")?;
        in_range(self.audio_ctx, -1..=1500, "audio_ctx")?;
        let audio_ctx = match self.audio_ctx {
            0 => AudioCtx::Sized,
            -1 => AudioCtx::Full,
            n => AudioCtx::Frames(n),
        };
        check(
            self.language == "auto" || whisper_rs::get_lang_id(&self.language).is_some(),
            "language",
            || {
                format!(
                    "unknown language code {:?} (use e.g. \"en\" or \"auto\")",
                    self.language
                )
            },
        )?;
        check(
            self.max_frame_s > 0.0 && self.max_frame_s <= 60.0,
            "max_frame_s",
            || format!("must be in (0, 60], got {}", self.max_frame_s),
        )?;
        in_range(self.echo_guard_ms, 0..=5_000, "echo_guard_ms")?;
        check(
            self.stream_gap_ms == 0 || (50..=10_000).contains(&self.stream_gap_ms),
            "stream_gap_ms",
            || format!("must be 0 (off) or 50..=10000, got {}", self.stream_gap_ms),
        )?;
        let non_neg = |name: &'static str, v: i32| -> Result<u32, ParamError> {
            u32::try_from(v).map_err(|_| ParamError {
                name,
                msg: format!("must be >= 0, got {v}"),
            })
        };
        let endpoint = EndpointConfig {
            threshold: self.vad.threshold,
            min_silence_ms: non_neg("vad.min_silence_ms", self.vad.min_silence_ms)?,
            max_silence_ms: non_neg("vad.max_silence_ms", self.vad.max_silence_ms)?,
            speech_pad_ms: non_neg("vad.speech_pad_ms", self.vad.speech_pad_ms)?,
            min_speech_ms: non_neg("vad.min_speech_ms", self.vad.min_speech_ms)?,
            max_utterance_s: self.vad.max_utterance_s,
        };
        endpoint.validate().map_err(|e| ParamError {
            name: e.param(),
            msg: e.to_string(),
        })?;
        in_range(self.turn.end_threshold, 0.0..=1.0, "turn.end_threshold")?;
        in_range(
            self.turn.partial_interval_ms,
            0..=10_000,
            "turn.partial_interval_ms",
        )?;
        check(
            self.turn.echo_text_match > 0.0 && self.turn.echo_text_match <= 1.0,
            "turn.echo_text_match",
            || format!("must be in (0, 1], got {}", self.turn.echo_text_match),
        )?;
        in_range(
            self.turn.continuation_ms,
            0..=10_000,
            "turn.continuation_ms",
        )?;
        in_range(
            self.turn.unfinished_below,
            0.0..=1.0,
            "turn.unfinished_below",
        )?;
        in_range(self.turn.follow_up_s, 0.0..=600.0, "turn.follow_up_s")?;
        let judge: Judge = self.turn.judge.parse().map_err(|msg| ParamError {
            name: "turn.judge",
            msg,
        })?;
        let audio_path = self.turn.audio_model_path.trim();
        check(
            judge == Judge::Text || !audio_path.is_empty(),
            "turn.judge",
            || {
                format!(
                    "{:?} needs the audio end-of-turn model (turn.audio_model_path, set at start); this node has none",
                    self.turn.judge
                )
            },
        )?;
        check(
            audio_path.is_empty() || !self.onnxruntime_path.trim().is_empty(),
            "onnxruntime_path",
            || "not set: turn.audio_model_path needs onnxruntime".into(),
        )?;
        in_range(self.turn.audio_weight, 0.0..=1.0, "turn.audio_weight")?;
        in_range(self.turn.veto_below, 0.0..=1.0, "turn.veto_below")?;
        let live_speech_topic = self.live_speech_topic.trim();
        check(
            live_speech_topic.is_empty() || cfg!(hri),
            "live_speech_topic",
            || {
                "this stt_node was built without hri_msgs (not in the ROS prefix at build time): \
                 rebuild with ROS4HRI's hri_msgs installed, or leave it empty"
                    .into()
            },
        )?;
        let vad_model = self.vad.model_path.trim();
        Ok(SttConfig {
            remote,
            model: local.then(|| WhisperModel {
                path: self.model_path.clone(),
                n_threads: self.n_threads,
                use_gpu: self.use_gpu,
                flash_attn: self.flash_attn,
            }),
            vad_model: (!vad_model.is_empty()).then(|| vad_model.to_string()),
            reliable_audio: self.reliable_audio,
            publish_normalized: self.publish_normalized,
            decode: DecodeConfig {
                language: (self.language != "auto").then(|| self.language.clone()),
                strategy,
                initial_prompt: self.initial_prompt.clone(),
                no_speech_threshold: self.no_speech_threshold,
                audio_ctx,
            },
            endpoint,
            conversation_id: self.conversation_id.clone(),
            max_frame_s: self.max_frame_s,
            barge_in: self.barge_in,
            echo_guard: std::time::Duration::from_millis(self.echo_guard_ms as u64),
            stream_gap: (self.stream_gap_ms > 0)
                .then(|| std::time::Duration::from_millis(self.stream_gap_ms as u64)),
            end_threshold: self.turn.end_threshold,
            partial_interval_ms: self.turn.partial_interval_ms as u32,
            hear_while_speaking: self.turn.hear_while_speaking,
            echo_text_match: self.turn.echo_text_match,
            continuation: std::time::Duration::from_millis(self.turn.continuation_ms as u64),
            unfinished_below: self.turn.unfinished_below,
            wake_words: voice_core::wake::parse(&self.turn.wake_words),
            follow_up: std::time::Duration::from_secs_f64(self.turn.follow_up_s),
            judge,
            fusion: Fusion {
                audio_weight: self.turn.audio_weight,
                veto_below: self.turn.veto_below,
            },
            audio_model: (!audio_path.is_empty()).then(|| AudioModel {
                path: audio_path.to_string(),
                onnxruntime_path: self.onnxruntime_path.trim().to_string(),
            }),
            live_speech_topic: (!live_speech_topic.is_empty()).then(|| live_speech_topic.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_model() -> SttParams {
        SttParams {
            model_path: "m.bin".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_audio_judge_needs_its_model_and_onnxruntime() {
        let mut p = with_model();
        assert_eq!(p.validate().unwrap().judge, Judge::Text);
        p.turn.judge = "both".into();
        let e = p.validate().unwrap_err();
        assert_eq!(e.name, "turn.judge");
        assert!(e.msg.contains("turn.audio_model_path"), "{}", e.msg);
        p.turn.audio_model_path = "smart-turn.onnx".into();
        assert_eq!(p.validate().unwrap_err().name, "onnxruntime_path");
        p.onnxruntime_path = "libonnxruntime.so".into();
        let c = p.validate().unwrap();
        assert_eq!(c.judge, Judge::Both);
        assert_eq!(
            c.audio_model,
            Some(AudioModel {
                path: "smart-turn.onnx".into(),
                onnxruntime_path: "libonnxruntime.so".into()
            })
        );
        for (name, bad) in [("turn.audio_weight", 1.5), ("turn.veto_below", -0.1)] {
            let mut q = p.clone();
            if name == "turn.audio_weight" {
                q.turn.audio_weight = bad;
            } else {
                q.turn.veto_below = bad;
            }
            assert_eq!(q.validate().unwrap_err().name, name);
        }
        p.turn.judge = "loudest".into();
        assert!(p.validate().unwrap_err().msg.contains("\"both\""));
    }
}
