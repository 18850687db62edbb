//! stt_node's transcription server (`engine: openai`): each turn's audio is
//! sent as a WAV file to an OpenAI-compatible `/audio/transcriptions`
//! endpoint (vLLM, faster-whisper servers, OpenAI's own); local Whisper, when
//! loaded, stands in while the server cannot answer. VAD, the end of turn,
//! barge-in and echo handling stay on the robot: only finished audio goes
//! out.
//!
//! [`Transcriber`] is what the Whisper thread calls, whichever engine
//! answers. Partial hypotheses go to the server only while it keeps up with
//! their cadence (`turn.partial_interval_ms`); otherwise local Whisper makes
//! them, or there are none (finals only).

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::blocking::multipart::{Form, Part};
use serde::Deserialize;
use voice_ros::log::Log;
use voice_ros::server::{self, Fault, ServerConfig};

use crate::engine::{EngineError, TokenProbs, Transcript, Whisper};
use crate::params::{DecodeConfig, SttConfig};

/// Figures of the transcription server (in /diagnostics).
#[derive(Default)]
pub struct ServerStats {
    /// The server's base URL; `None` with engine local.
    pub url: Mutex<Option<String>>,
    pub up: AtomicBool,
    /// Transcriptions (hypotheses and finals) the server made, and local
    /// Whisper made in its place (failed, or too slow for the partials' cadence).
    pub transcribed: AtomicU64,
    pub fallback: AtomicU64,
    pub errors: AtomicU64,
    /// Partial hypotheses not made (the server too slow for their cadence, no local model).
    pub partials_skipped: AtomicU64,
    pub last_ms: Mutex<f64>,
    pub last_error: Mutex<String>,
}

/// The transcription engine of one configuration: the server, local
/// Whisper, or the server with Whisper as the fallback.
pub struct Transcriber {
    local: Option<Whisper>,
    server: Option<ServerStt>,
    pub model_name: String,
    /// The local model's first inference at start [ms] (0 without one).
    pub warm_up_ms: f64,
}

impl Transcriber {
    pub fn load(
        cfg: &SttConfig,
        stats: std::sync::Arc<ServerStats>,
        log: &Log,
    ) -> Result<Self, EngineError> {
        let local = cfg
            .model
            .as_ref()
            .map(|m| Whisper::load(m, cfg.decode.clone()))
            .transpose()?;
        let server = cfg
            .remote
            .as_ref()
            .map(|r| ServerStt::new(&r.server, cfg, stats, log.clone()))
            .transpose()?;
        let model_name = match (&server, &local) {
            (Some(s), Some(l)) => format!("{} (server; fallback {})", s.cfg.model, l.model_name),
            (Some(s), None) => format!("{} (server)", s.cfg.model),
            (None, Some(l)) => l.model_name.clone(),
            (None, None) => "none".into(),
        };
        Ok(Self {
            warm_up_ms: local.as_ref().map_or(0.0, |l| l.warm_up_ms),
            local,
            server,
            model_name,
        })
    }

    /// New decoding settings (a runtime parameter set), used from the next utterance.
    pub fn set_decode(&mut self, decode: DecodeConfig, partial_interval_ms: u32) {
        if let Some(s) = self.server.as_mut() {
            s.decode = decode.clone();
            s.partial_interval_ms = partial_interval_ms;
        }
        if let Some(l) = self.local.as_mut() {
            l.set_decode(decode);
        }
    }

    /// Nothing to transcribe: a failed server is asked again when it is
    /// time (in the background), so the next turn finds it answering.
    pub fn idle(&mut self) {
        if let Some(s) = self.server.as_mut() {
            s.maybe_probe();
        }
    }

    /// A hypothesis while the user speaks.
    pub fn transcribe_partial(&mut self, audio: &[f32]) -> Result<Transcript, EngineError> {
        self.run(audio, true)
    }

    /// The turn's transcript.
    pub fn transcribe(&mut self, audio: &[f32]) -> Result<Transcript, EngineError> {
        self.run(audio, false)
    }

    fn run(&mut self, audio: &[f32], partial: bool) -> Result<Transcript, EngineError> {
        let has_local = self.local.is_some();
        if let Some(s) = self.server.as_mut() {
            if s.worth_asking(partial, has_local) {
                match s.transcribe(audio) {
                    Ok(t) => return Ok(t),
                    Err(f) => {
                        s.failed(&f, has_local);
                        if !has_local {
                            return Err(EngineError::Server(f));
                        }
                    }
                }
            } else if !has_local {
                s.stats.partials_skipped.fetch_add(1, Ordering::Relaxed);
                return Err(EngineError::PartialSkipped);
            }
            s.stats.fallback.fetch_add(1, Ordering::Relaxed);
        }
        match self.local.as_mut() {
            Some(w) if partial => w.transcribe_partial(audio),
            Some(w) => w.transcribe(audio),
            None => Err(EngineError::PartialSkipped),
        }
    }
}

/// The server's side of a transcription.
struct ServerStt {
    cfg: ServerConfig,
    /// Always `Some` until dropped (see the `Drop`).
    client: Option<reqwest::blocking::Client>,
    key: Option<String>,
    decode: DecodeConfig,
    partial_interval_ms: u32,
    /// Recent request -> answer times (exponential average) [ms].
    latency_ms: Option<f64>,
    /// While the server is failed: when it is asked again.
    retry_at: Option<Instant>,
    /// A probe is under way.
    probing: std::sync::Arc<AtomicBool>,
    stats: std::sync::Arc<ServerStats>,
    log: Log,
}

#[derive(Deserialize)]
struct Verbose {
    text: String,
    language: Option<String>,
    segments: Option<Vec<Segment>>,
}

#[derive(Deserialize)]
struct Segment {
    text: String,
    avg_logprob: Option<f64>,
    no_speech_prob: Option<f64>,
}

impl Drop for ServerStt {
    /// reqwest's blocking client owns a runtime, which must not be dropped
    /// on an async task (a lifecycle step or the node's shutdown may drop
    /// the transcriber there): it goes on a thread of its own.
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = std::thread::Builder::new()
                .name("stt-http-drop".into())
                .spawn(move || drop(c));
        }
    }
}

/// A request whether the server answers at all.
struct Probe {
    client: reqwest::blocking::Client,
    cfg: ServerConfig,
    key: Option<String>,
}

impl Probe {
    /// Any answer but a refused key or a 5xx counts (transcription servers
    /// do not all serve `GET /models`).
    fn run(&self) -> Result<(), Fault> {
        let mut req = self
            .client
            .get(format!("{}/models", self.cfg.base_url))
            .timeout(self.cfg.timeout.min(Duration::from_secs(2)));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .map_err(|e| Fault::of_request(e, self.cfg.timeout))?;
        let status = resp.status().as_u16();
        if matches!(status, 401 | 403) || status >= 500 {
            return Err(Fault::of_status(status, &resp.text().unwrap_or_default()));
        }
        Ok(())
    }
}

/// 16-bit PCM WAV of 16 kHz mono samples.
fn wav(audio: &[f32]) -> Result<Vec<u8>, hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: voice_core::PIPELINE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = Cursor::new(Vec::with_capacity(44 + 2 * audio.len()));
    {
        let mut w = hound::WavWriter::new(&mut out, spec)?;
        for &x in audio {
            w.write_sample((x.clamp(-1.0, 1.0) * 32767.0) as i16)?;
        }
        w.finalize()?;
    }
    Ok(out.into_inner())
}

/// An ISO 639-1 code from what a server says (OpenAI writes "english").
fn language_code(said: &str) -> String {
    let said = said.trim().to_lowercase();
    whisper_rs::get_lang_id(&said)
        .and_then(whisper_rs::get_lang_str)
        .map_or(said, str::to_string)
}

impl ServerStt {
    fn client(&self) -> &reqwest::blocking::Client {
        self.client.as_ref().expect("the client lives until drop")
    }

    fn new(
        cfg: &ServerConfig,
        stt: &SttConfig,
        stats: std::sync::Arc<ServerStats>,
        log: Log,
    ) -> Result<Self, EngineError> {
        let key = server::api_key(cfg).map_err(EngineError::Config)?;
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| EngineError::Config(format!("HTTP client: {e}")))?;
        *stats.url.lock().unwrap_or_else(|e| e.into_inner()) = Some(cfg.base_url.clone());
        stats.up.store(true, Ordering::Relaxed);
        let mut s = Self {
            cfg: cfg.clone(),
            client: Some(client),
            key,
            decode: stt.decode.clone(),
            partial_interval_ms: stt.partial_interval_ms,
            latency_ms: None,
            retry_at: None,
            probing: Default::default(),
            stats,
            log,
        };
        let first = Probe {
            client: s.client().clone(),
            cfg: s.cfg.clone(),
            key: s.key.clone(),
        }
        .run();
        match first {
            Ok(()) => s.log.info(format!(
                "transcription server {} answers (model {})",
                s.cfg.base_url, s.cfg.model
            )),
            Err(f) => s.failed(&f, stt.model.is_some()),
        }
        Ok(s)
    }

    /// Whether to send this audio to the server: while it answers (a
    /// partial only while it answers within half the partials' cadence);
    /// while it is failed, only when there is no local model (a final).
    fn worth_asking(&mut self, partial: bool, has_local: bool) -> bool {
        if !self.stats.up.load(Ordering::Relaxed) {
            self.maybe_probe();
            return !has_local && !partial;
        }
        !partial
            || self
                .latency_ms
                .is_none_or(|ms| ms < f64::from(self.partial_interval_ms) / 2.0)
    }

    /// A failed server is asked again every probe interval, on a thread of
    /// its own (a hung server must not hold up transcription); it is used
    /// again once it answers.
    fn maybe_probe(&mut self) {
        let due = self.retry_at.is_none_or(|t| Instant::now() >= t);
        if self.stats.up.load(Ordering::Relaxed)
            || !due
            || self.probing.swap(true, Ordering::SeqCst)
        {
            return;
        }
        self.retry_at = Some(Instant::now() + self.cfg.probe_interval);
        let probe = Probe {
            client: self.client().clone(),
            cfg: self.cfg.clone(),
            key: self.key.clone(),
        };
        let (stats, log, probing) = (self.stats.clone(), self.log.clone(), self.probing.clone());
        let spawned = std::thread::Builder::new()
            .name("stt-probe".into())
            .spawn(move || {
                match probe.run() {
                    Ok(()) => {
                        stats.up.store(true, Ordering::Relaxed);
                        log.info(format!(
                            "transcription server {} answers again: turns go to it",
                            probe.cfg.base_url
                        ));
                    }
                    Err(f) => log.debug(format!("transcription server still not answering: {f}")),
                }
                probing.store(false, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.probing.store(false, Ordering::SeqCst);
        }
    }

    fn transcribe(&mut self, audio: &[f32]) -> Result<Transcript, Fault> {
        let t0 = Instant::now();
        let file = wav(audio).map_err(|e| Fault::Malformed(format!("WAV encoding: {e}")))?;
        let mut form = Form::new()
            .part(
                "file",
                Part::bytes(file)
                    .file_name("turn.wav")
                    .mime_str("audio/wav")
                    .map_err(|e| Fault::Malformed(e.to_string()))?,
            )
            .text("model", self.cfg.model.clone())
            .text("response_format", "verbose_json")
            .text("temperature", "0");
        if let Some(l) = &self.decode.language {
            form = form.text("language", l.clone());
        }
        if !self.decode.initial_prompt.is_empty() {
            form = form.text("prompt", self.decode.initial_prompt.clone());
        }
        let mut req = self
            .client()
            .post(format!("{}/audio/transcriptions", self.cfg.base_url))
            .multipart(form);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .map_err(|e| Fault::of_request(e, self.cfg.timeout))?;
        let status = resp.status();
        let body = resp
            .text()
            .map_err(|e| Fault::of_request(e, self.cfg.timeout))?;
        if !status.is_success() {
            return Err(Fault::of_status(status.as_u16(), &body));
        }
        let v: Verbose = serde_json::from_str(&body)
            .map_err(|e| Fault::Malformed(format!("{e}: {:?}", server::quote(&body))))?;
        let mut tokens = TokenProbs::default();
        let text = match &v.segments {
            Some(segments) => {
                let mut text = String::new();
                for s in segments {
                    if s.no_speech_prob.unwrap_or(0.0) > f64::from(self.decode.no_speech_threshold)
                    {
                        continue;
                    }
                    text.push_str(&s.text);
                    if let Some(lp) = s.avg_logprob {
                        tokens.sum += lp.exp();
                        tokens.n += 1;
                    }
                }
                text
            }
            None => v.text.clone(),
        };
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        self.latency_ms = Some(self.latency_ms.map_or(ms, |l| 0.7 * l + 0.3 * ms));
        self.stats.transcribed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.stats.last_ms.lock() {
            *l = ms;
        }
        Ok(Transcript {
            text: text.trim().to_string(),
            language: self
                .decode
                .language
                .clone()
                .or_else(|| v.language.as_deref().map(language_code))
                .unwrap_or_default(),
            compute_ms: ms,
            tokens,
        })
    }

    /// A fault: the first while the server answered is the error line, the
    /// others are counted.
    fn failed(&mut self, fault: &Fault, has_local: bool) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.stats.last_error.lock() {
            *e = fault.to_string();
        }
        let was_up = self.stats.up.swap(false, Ordering::Relaxed);
        self.retry_at = Some(Instant::now() + self.cfg.probe_interval);
        if !was_up {
            self.log
                .debug(format!("transcription server fault again: {fault}"));
            return;
        }
        self.log.error(format!(
            "transcription server {} failed: {fault}; {}",
            self.cfg.base_url,
            if has_local {
                format!(
                    "local Whisper transcribes until it answers again (asked every {:.1} s)",
                    self.cfg.probe_interval.as_secs_f64()
                )
            } else {
                "no fallback (fallback none): turns are lost until it answers again".into()
            }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_audio_goes_out_as_16_bit_wav() {
        let audio: Vec<f32> = (0..1600).map(|i| (i as f32 / 100.0).sin() * 0.5).collect();
        let bytes = wav(&audio).unwrap();
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(bytes.len(), 44 + 2 * audio.len());
        let r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        assert_eq!((r.spec().sample_rate, r.spec().channels), (16_000, 1));
        let back: Vec<i16> = r.into_samples().map(Result::unwrap).collect();
        assert_eq!(back[100], (audio[100] * 32767.0) as i16);
    }

    #[test]
    fn languages_become_codes() {
        assert_eq!(language_code("english"), "en");
        assert_eq!(language_code("en"), "en");
        assert_eq!(language_code("German"), "de");
        assert_eq!(language_code("klingon"), "klingon");
    }
}
