//! What stt_node's threads share: publishers, counters, the robot's recent
//! words (for the echo check), the tentative end being judged, and the
//! bounded work queue between the listener and Whisper.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use r2r::diagnostic_msgs::msg::DiagnosticArray;
use r2r::std_msgs::msg::String as StringMsg;
use r2r::voice_agent::msg::{AudioFrame, Interrupt, PartialTranscript, Utterance};
use voice_ros::diag::{Level, Report};
use voice_ros::log::{Log, Throttle};

use crate::params::SttConfig;

/// Accepted runtime parameter sets.
pub type Updates = tokio::sync::watch::Receiver<std::sync::Arc<SttConfig>>;

/// Incoming frames waiting for the listener (at 20 ms frames: 10 s).
pub const FRAME_QUEUE: usize = 500;
/// Pieces and final utterances waiting for Whisper (partials do not queue:
/// only the newest is kept).
pub const WORK_QUEUE: usize = 8;
/// How often a warning about dropped input may be logged.
const WARN_PERIOD: Duration = Duration::from_secs(5);
/// How long the robot's own words are remembered for the echo check.
const ROBOT_WORDS_FOR: Duration = Duration::from_secs(60);
/// Most texts remembered for the echo check.
const ROBOT_TEXTS: usize = 64;

/// The node's publishers; each worker thread owns a clone (r2r publishers are Send, not Sync).
#[derive(Clone)]
pub struct Publishers {
    pub utterance: r2r::Publisher<Utterance>,
    pub text: r2r::Publisher<StringMsg>,
    pub partial: r2r::Publisher<PartialTranscript>,
    pub interrupt: r2r::Publisher<Interrupt>,
    pub normalized: Option<r2r::Publisher<AudioFrame>>,
    /// hri_msgs/LiveSpeech (ROS4HRI), when live_speech_topic is set.
    #[cfg(hri)]
    pub live_speech: Option<r2r::Publisher<r2r::hri_msgs::msg::LiveSpeech>>,
}

/// How a turn ended, carried to the Whisper thread with its audio.
#[derive(Debug, Clone)]
pub struct TurnMeta {
    pub speech_start: SystemTime,
    pub speech_end: SystemTime,
    /// When the end was decided.
    pub decided: Instant,
    /// The end-of-turn score that ended it; `None` = silence alone.
    pub score: Option<f32>,
    /// The words' and the voice's scores at the last pause.
    pub text_score: Option<f32>,
    pub audio_score: Option<f32>,
    /// Silence after the speech before the turn ended [ms].
    pub wait_ms: f32,
    /// The utterance overlapped the robot's own speech.
    pub while_robot_spoke: bool,
}

/// Work for the Whisper thread. `utt` numbers utterances (the turn id's suffix).
pub enum Work {
    /// A piece of a long utterance cut at vad.max_utterance_s.
    Piece { utt: u64, audio: Vec<f32> },
    /// The current piece so far, while the user speaks (`pause` is set at a
    /// tentative end: the pause's number within the utterance).
    Partial {
        utt: u64,
        audio: Vec<f32>,
        pause: Option<u32>,
        newest: Instant,
    },
    /// The utterance ended: its last piece, and the pause it ended in (a
    /// hypothesis of that pause covers the same speech).
    Final {
        utt: u64,
        audio: Vec<f32>,
        pause: Option<u32>,
        meta: TurnMeta,
    },
}

impl Work {
    /// The utterance the work belongs to.
    pub fn utt(&self) -> u64 {
        match self {
            Work::Piece { utt, .. } | Work::Partial { utt, .. } | Work::Final { utt, .. } => *utt,
        }
    }
}

/// Pieces and finals in order (bounded; a full queue drops and counts),
/// plus one slot for the newest partial.
#[derive(Default)]
pub struct WorkQueue {
    inner: Mutex<(VecDeque<Work>, Option<Work>)>,
    ready: Condvar,
}

impl WorkQueue {
    /// Queues a piece or final; false when the queue is full (dropped).
    pub fn push(&self, w: Work) -> bool {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if q.0.len() >= WORK_QUEUE {
            return false;
        }
        if matches!(w, Work::Final { .. }) && q.1.as_ref().is_some_and(|p| p.utt() == w.utt()) {
            q.1 = None; // a partial of a finished utterance is moot
        }
        q.0.push_back(w);
        self.ready.notify_one();
        true
    }

    /// Offers a partial; it replaces an older one unless that one is a
    /// tentative end of the same utterance and this one is not.
    pub fn offer_partial(&self, w: Work) {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let keep_old = matches!(
            (&q.1, &w),
            (Some(Work::Partial { utt: a, pause: Some(_), .. }), Work::Partial { utt: b, pause: None, .. }) if a == b
        );
        if !keep_old {
            q.1 = Some(w);
            self.ready.notify_one();
        }
    }

    /// The next work: pieces and finals first, else the newest partial.
    pub fn pop(&self, timeout: Duration) -> Option<Work> {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if q.0.is_empty() && q.1.is_none() {
            q = self
                .ready
                .wait_timeout(q, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        q.0.pop_front().or_else(|| q.1.take())
    }
}

/// The tentative end currently out for judgement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tentative {
    pub utt: u64,
    pub pause: u32,
    pub revision: u32,
    /// The transcript ends open ("..., and", "to the"), or loops: no need to ask.
    pub open: bool,
}

/// Counters and state shared by the subscription tasks and worker threads.
pub struct Shared {
    pub log: Log,
    /// engine openai: the transcription server's figures.
    pub server: std::sync::Arc<crate::remote::ServerStats>,
    pub run_id: u128,
    pub stop: AtomicBool,
    pub frames_in: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub segments_dropped: AtomicU64,
    pub utterances: AtomicU64,
    pub rejected_non_speech: AtomicU64,
    /// Transcripts that were a word or two repeated (Whisper's loop), not turns.
    pub rejected_repetition: AtomicU64,
    /// Transcripts that were a longer phrase repeated (Whisper's loop), taken once.
    pub collapsed_repetition: AtomicU64,
    /// 16 kHz samples not listened to while the robot spoke (turn.hear_while_speaking false).
    pub samples_ignored_while_speaking: AtomicU64,
    pub heard_while_speaking: AtomicU64,
    pub echo_rejected: AtomicU64,
    /// Turns whose start was the robot's own words heard back, taken off.
    pub echo_removed: AtomicU64,
    pub interrupts: AtomicU64,
    pub partials: AtomicU64,
    pub tentative_ends: AtomicU64,
    /// Tentative ends after which the user went on speaking.
    pub resumed: AtomicU64,
    /// Turns ended by the judge's score / by silence alone.
    pub ended_by_score: AtomicU64,
    pub ended_by_silence: AtomicU64,
    /// Turns that continued (and replaced) the one before.
    pub continued: AtomicU64,
    /// Of those, continued because that turn's words were unfinished (not by
    /// "and/but/so").
    pub continued_unfinished: AtomicU64,
    /// Times the stream stopped while a turn was pending; silence fed for
    /// them [ms]; turns that ended during such silence.
    pub stream_gaps: AtomicU64,
    pub silence_filled_ms: AtomicU64,
    pub ended_in_gap: AtomicU64,
    /// Utterances without a wake word outside the follow-up window.
    pub not_addressed: AtomicU64,
    pub tentative: Mutex<Option<Tentative>>,
    /// The last pause's scores: words, voice, decision.
    last_scores: Mutex<[Option<f32>; 3]>,
    /// Audio end-of-turn judgements, their compute time [µs], failures.
    pub audio_judged: AtomicU64,
    audio_judge_us: AtomicU64,
    pub audio_judge_errors: AtomicU64,
    /// `turn.judge` in force, for /diagnostics.
    pub judge: Mutex<String>,
    speaking: AtomicBool,
    speaking_ended: Mutex<Option<Instant>>,
    robot_words: Mutex<VecDeque<(Instant, Vec<String>)>>,
    audio_s: Mutex<f64>,
    compute_s: Mutex<f64>,
    throttle: Mutex<Throttle>,
    last_error: Mutex<String>,
    pub work: WorkQueue,
    /// The `listen` action's goals waiting for a turn.
    pub listening: std::sync::Arc<crate::listen_action::Listening>,
    /// The lifecycle state: audio is listened to only while active.
    pub gate: std::sync::Arc<voice_ros::lifecycle::Gate>,
    /// Transcription work dropped because the node had left active.
    pub work_inactive: AtomicU64,
}

impl Shared {
    pub fn new(log: Log) -> Self {
        Self {
            log,
            server: Default::default(),
            run_id: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() % 1_000_000_000)
                .unwrap_or(0),
            stop: AtomicBool::new(false),
            frames_in: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            segments_dropped: AtomicU64::new(0),
            utterances: AtomicU64::new(0),
            rejected_non_speech: AtomicU64::new(0),
            rejected_repetition: AtomicU64::new(0),
            collapsed_repetition: AtomicU64::new(0),
            samples_ignored_while_speaking: AtomicU64::new(0),
            heard_while_speaking: AtomicU64::new(0),
            echo_rejected: AtomicU64::new(0),
            echo_removed: AtomicU64::new(0),
            interrupts: AtomicU64::new(0),
            partials: AtomicU64::new(0),
            tentative_ends: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            ended_by_score: AtomicU64::new(0),
            ended_by_silence: AtomicU64::new(0),
            continued: AtomicU64::new(0),
            continued_unfinished: AtomicU64::new(0),
            stream_gaps: AtomicU64::new(0),
            silence_filled_ms: AtomicU64::new(0),
            ended_in_gap: AtomicU64::new(0),
            not_addressed: AtomicU64::new(0),
            tentative: Mutex::new(None),
            last_scores: Mutex::new([None; 3]),
            audio_judged: AtomicU64::new(0),
            audio_judge_us: AtomicU64::new(0),
            audio_judge_errors: AtomicU64::new(0),
            judge: Mutex::new(String::new()),
            speaking: AtomicBool::new(false),
            speaking_ended: Mutex::new(None),
            robot_words: Mutex::new(VecDeque::new()),
            audio_s: Mutex::new(0.0),
            compute_s: Mutex::new(0.0),
            throttle: Mutex::new(Throttle::new(WARN_PERIOD)),
            last_error: Mutex::new(String::new()),
            work: WorkQueue::default(),
            listening: Default::default(),
            gate: Default::default(),
            work_inactive: AtomicU64::new(0),
        }
    }

    /// The turn id of utterance `utt`.
    pub fn turn_id(&self, utt: u64) -> String {
        format!("{}-{utt}", self.run_id)
    }

    /// Counts a dropped frame and warns, throttled.
    pub fn drop_frame(&self, why: &str) {
        self.frames_dropped.fetch_add(1, Ordering::Relaxed);
        self.warn_throttled(why);
    }

    pub fn warn_throttled(&self, why: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = why.chars().take(200).collect();
        }
        let ready = self.throttle.lock().ok().and_then(|mut t| t.ready());
        if let Some(suppressed) = ready {
            let more = if suppressed > 0 {
                format!(" ({suppressed} similar suppressed)")
            } else {
                String::new()
            };
            self.log.warn(format!("{why}{more}"));
        }
    }

    pub fn set_speaking(&self, on: bool) {
        let was = self.speaking.swap(on, Ordering::SeqCst);
        if was && !on {
            if let Ok(mut t) = self.speaking_ended.lock() {
                *t = Some(Instant::now());
            }
        }
    }

    pub fn speaking(&self) -> bool {
        self.speaking.load(Ordering::SeqCst)
    }

    /// True while the robot speaks or within the echo guard after it stopped.
    pub fn robot_audible(&self, echo_guard: Duration) -> bool {
        self.speaking()
            || self
                .speaking_ended
                .lock()
                .ok()
                .and_then(|t| *t)
                .is_some_and(|t| t.elapsed() < echo_guard)
    }

    /// Remembers text the robot says (reply chunks, `say`) for the echo check.
    pub fn robot_said(&self, text: &str) {
        let words = voice_core::transcript::normalize_words(text);
        if words.is_empty() {
            return;
        }
        if let Ok(mut q) = self.robot_words.lock() {
            while q.len() >= ROBOT_TEXTS
                || q.front()
                    .is_some_and(|(t, _)| t.elapsed() > ROBOT_WORDS_FOR)
            {
                q.pop_front();
            }
            q.push_back((Instant::now(), words));
        }
    }

    /// The robot's texts of the last minute, as said (normalized words).
    pub fn robot_texts(&self) -> Vec<Vec<String>> {
        self.robot_words
            .lock()
            .map(|q| {
                q.iter()
                    .filter(|(t, _)| t.elapsed() <= ROBOT_WORDS_FOR)
                    .map(|(_, w)| w.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The robot's words of the last minute.
    pub fn robot_words(&self) -> HashSet<String> {
        self.robot_words
            .lock()
            .map(|q| {
                q.iter()
                    .filter(|(t, _)| t.elapsed() <= ROBOT_WORDS_FOR)
                    .flat_map(|(_, w)| w.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn note_compute(&self, audio_s: f64, compute_s: f64) {
        if let (Ok(mut a), Ok(mut c)) = (self.audio_s.lock(), self.compute_s.lock()) {
            *a += audio_s;
            *c += compute_s;
        }
    }

    /// A pause's scores (words, voice, decision) for /diagnostics.
    pub fn note_scores(&self, text: Option<f32>, audio: Option<f32>, decided: Option<f32>) {
        if let Ok(mut s) = self.last_scores.lock() {
            *s = [text, audio, decided];
        }
    }

    pub fn set_judge(&self, j: voice_core::turn::Judge) {
        if let Ok(mut s) = self.judge.lock() {
            *s = j.as_str().to_string();
        }
    }

    pub fn note_audio_judgement(&self, took: std::time::Duration) {
        self.audio_judged.fetch_add(1, Ordering::Relaxed);
        self.audio_judge_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The audio judge failed: counted, logged (throttled); the pause is
    /// judged as if it had no voice score (`both` then waits to the maximum).
    pub fn audio_judge_failed(&self, why: &str) {
        self.audio_judge_errors.fetch_add(1, Ordering::Relaxed);
        self.warn_throttled(&format!("audio end-of-turn judgement failed: {why}"));
    }

    pub fn report(&self, name: &str, hardware: &str, compute: &str) -> DiagnosticArray {
        let audio = self.audio_s.lock().map(|v| *v).unwrap_or(0.0);
        let compute_s = self.compute_s.lock().map(|v| *v).unwrap_or(0.0);
        let rtf = if audio > 0.0 { compute_s / audio } else { 0.0 };
        let dropped = self.frames_dropped.load(Ordering::Relaxed);
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut r = Report::new(name, hardware)
            .kv("lifecycle_state", self.gate.label())
            .kv("ignored_while_inactive", self.gate.ignored())
            .kv("work_dropped_inactive", n(&self.work_inactive));
        if dropped > 0 || n(&self.segments_dropped) > 0 {
            let last = self
                .last_error
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            r = r.level(Level::Warn, format!("dropped input; last: {last}"));
        }
        let scores = self.last_scores.lock().map(|s| *s).unwrap_or_default();
        let show = |p: Option<f32>| p.map_or_else(|| "none".to_string(), |p| format!("{p:.4}"));
        let judged = n(&self.audio_judged);
        let judge_ms = if judged > 0 {
            n(&self.audio_judge_us) as f64 / judged as f64 / 1e3
        } else {
            0.0
        };
        let judge = self.judge.lock().map(|j| j.clone()).unwrap_or_default();
        if let Some(url) = self.server.url.lock().ok().and_then(|u| u.clone()) {
            let s = &self.server;
            r = r
                .kv("engine", "openai")
                .kv("server", url)
                .kv(
                    "server_state",
                    if s.up.load(Ordering::Relaxed) {
                        "answering"
                    } else {
                        "failed (fallback)"
                    },
                )
                .kv("server_transcriptions", n(&s.transcribed))
                .kv("fallback_transcriptions", n(&s.fallback))
                .kv("server_errors", n(&s.errors))
                .kv("partials_skipped", n(&s.partials_skipped))
                .kv(
                    "server_last_ms",
                    format!("{:.0}", s.last_ms.lock().map(|v| *v).unwrap_or(0.0)),
                )
                .kv(
                    "server_last_error",
                    s.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
                );
        }
        r.kv("model", hardware)
            .kv("compute", compute)
            .kv("frames_in", n(&self.frames_in))
            .kv("frames_dropped", dropped)
            .kv("segments_dropped", n(&self.segments_dropped))
            .kv("utterances", n(&self.utterances))
            .kv("rejected_non_speech", n(&self.rejected_non_speech))
            .kv("rejected_repetition", n(&self.rejected_repetition))
            .kv("collapsed_repetition", n(&self.collapsed_repetition))
            .kv("partials", n(&self.partials))
            .kv("tentative_ends", n(&self.tentative_ends))
            .kv("tentative_ends_resumed", n(&self.resumed))
            .kv("turns_ended_by_score", n(&self.ended_by_score))
            .kv("turns_ended_by_silence", n(&self.ended_by_silence))
            .kv("turns_continued", n(&self.continued))
            .kv("turns_continued_unfinished", n(&self.continued_unfinished))
            .kv("stream_gaps", n(&self.stream_gaps))
            .kv(
                "silence_filled_s",
                format!("{:.2}", n(&self.silence_filled_ms) as f64 / 1e3),
            )
            .kv("turns_ended_in_stream_gap", n(&self.ended_in_gap))
            .kv("not_addressed", n(&self.not_addressed))
            .kv("turn_judge", judge)
            .kv("last_end_of_turn_score", show(scores[2]))
            .kv("last_end_of_turn_text_score", show(scores[0]))
            .kv("last_end_of_turn_audio_score", show(scores[1]))
            .kv("audio_judgements", judged)
            .kv("audio_judge_mean_ms", format!("{judge_ms:.1}"))
            .kv("audio_judge_errors", n(&self.audio_judge_errors))
            .kv("heard_while_speaking", n(&self.heard_while_speaking))
            .kv("echo_rejected", n(&self.echo_rejected))
            .kv("echo_removed_from_turns", n(&self.echo_removed))
            .kv(
                "ignored_while_speaking_s",
                format!(
                    "{:.2}",
                    n(&self.samples_ignored_while_speaking) as f64
                        / f64::from(voice_core::PIPELINE_RATE)
                ),
            )
            .kv("listen_goals_waiting", self.listening.waiting())
            .kv("listen_events_missed", n(&self.listening.lagged))
            .kv("interrupts", n(&self.interrupts))
            .kv("speaking", self.speaking())
            .kv("mean_real_time_factor", format!("{rtf:.3}"))
            .into_array()
    }
}
