//! tts_node's control state, shared by the subscription tasks and both
//! threads: the interrupts (what they stop: what was asked for before they
//! were raised), cancelled turns, counters, the figures remembered for turn
//! stats; and the jobs that travel between them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use r2r::voice_agent::msg::{ReplyChunk, Utterance};
use voice_core::interrupt::{Cut, Target};
use voice_ros::log::Log;

use crate::params::TtsConfig;

/// Accepted runtime parameter sets.
pub type Updates = tokio::sync::watch::Receiver<std::sync::Arc<TtsConfig>>;

/// Synthesized sentences waiting for output.
pub const AUDIO_QUEUE: usize = 16;
/// Turns whose chunks are ignored after an interrupt / whose stats are tracked.
pub const TURN_MEMORY: usize = 32;
/// Interrupts remembered (what they stop is checked against each of them).
const CUTS: usize = 16;
/// How far audio_out may run ahead of real time [s].
pub const LEAD_S: f64 = 0.2;
pub const POLL: Duration = Duration::from_millis(20);

/// Text to speak.
pub struct TextJob {
    pub turn_id: String,
    pub text: String,
    /// The reply chunk (text taken out: LLM timing for the turn stats);
    /// absent for `say`.
    pub meta: Option<ReplyChunk>,
    pub received: Instant,
    /// Output gain for this text (a `say` goal's); `None` = the `volume` parameter.
    pub volume: Option<f32>,
    /// Speaking rate for this text (a `say` goal's: 1 = the voice's pace);
    /// `None` = the `length_scale` parameter.
    pub rate: Option<f32>,
    /// The language to speak this text in (a `say` goal's: an espeak-ng
    /// voice name, checked on admission); `None` = the node's voice.
    pub language: Option<String>,
    /// A first chunk prepared before its turn is confirmed
    /// (`reply/tentative`): synthesized and held, not spoken.
    pub tentative: bool,
}

impl TextJob {
    /// A reply chunk's text; the rest of the message (LLM timing) rides along
    /// for the turn's stats.
    pub fn from_chunk(mut c: ReplyChunk) -> Self {
        Self {
            turn_id: c.turn_id.clone(),
            text: std::mem::take(&mut c.text),
            meta: Some(c),
            received: Instant::now(),
            volume: None,
            rate: None,
            language: None,
            tentative: false,
        }
    }

    pub fn say(turn_id: String, text: String) -> Self {
        Self {
            turn_id,
            text,
            meta: None,
            received: Instant::now(),
            volume: None,
            rate: None,
            language: None,
            tentative: false,
        }
    }
}

/// The audio of a reply's first chunk synthesized before its turn was
/// confirmed: sent when the turn's first chunk comes with the same words.
pub struct Held {
    pub turn_id: String,
    pub conversation_id: String,
    pub text: String,
    /// Per sentence, at `rate`.
    pub audio: Vec<Vec<f32>>,
    pub rate: u32,
    pub synth_ms: f64,
    pub received: Instant,
}

/// What an interrupt is checked against: the text a job came from.
pub trait Asked {
    fn turn_id(&self) -> &str;
    fn received(&self) -> Instant;
    /// The reply's conversation (`None` for `say` text).
    fn conversation(&self) -> Option<&str>;
}

/// Text and audio jobs answer from the same fields: the turn, when its
/// text was received, and the reply chunk it came from (none for `say`).
macro_rules! asked_from_fields {
    ($($job:ty),*) => {$(
        impl Asked for $job {
            fn turn_id(&self) -> &str {
                &self.turn_id
            }
            fn received(&self) -> Instant {
                self.received
            }
            fn conversation(&self) -> Option<&str> {
                self.meta.as_ref().map(|m| m.conversation_id.as_str())
            }
        }
    )*};
}

asked_from_fields!(TextJob, AudioJob);

/// What an interrupt needs to know of a job, kept after its audio is gone.
#[derive(Debug, Clone)]
pub struct Key {
    turn_id: String,
    received: Instant,
    conversation: Option<String>,
}

impl Key {
    pub fn of(job: &impl Asked) -> Self {
        Self {
            turn_id: job.turn_id().to_string(),
            received: job.received(),
            conversation: job.conversation().map(str::to_string),
        }
    }
}

impl Asked for Key {
    fn turn_id(&self) -> &str {
        &self.turn_id
    }
    fn received(&self) -> Instant {
        self.received
    }
    fn conversation(&self) -> Option<&str> {
        self.conversation.as_deref()
    }
}

/// One synthesized sentence (possibly empty: a final chunk with no text).
pub struct AudioJob {
    pub turn_id: String,
    pub samples: Vec<f32>,
    pub rate: u32,
    pub meta: Option<ReplyChunk>,
    pub received: Instant,
    /// The last sentence of its text.
    pub last: bool,
}

/// How far a watched text (a `say` goal's) has gone out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Audio out [s].
    pub seconds: f64,
    /// Sentences out.
    pub sentences: u32,
    /// Its last sentence went out; it has been heard by this instant (real-time pacing).
    pub done_at: Option<Instant>,
}

/// Shared control state.
pub struct Control {
    pub log: Log,
    pub stop: AtomicBool,
    /// Set on an interrupt that stops the text being synthesized;
    /// espeak-ng's callback polls it.
    pub cancel_now: AtomicBool,
    /// Counts interrupts: the threads check what they hold when it moves.
    epoch: AtomicU64,
    /// Recent interrupts.
    cuts: Mutex<VecDeque<Cut>>,
    /// The text being synthesized.
    synthesizing: Mutex<Option<Key>>,
    pub speaking: AtomicBool,
    pub interrupts: AtomicU64,
    pub dropped: AtomicU64,
    pub sentences: AtomicU64,
    pub audio_compute: Mutex<(f64, f64)>,
    /// Reply turns heard of: turn, conversation, first chunk received (an
    /// interrupt that covers that chunk cancels the turn's later chunks too).
    reply_turns: Mutex<VecDeque<(String, String, Instant)>>,
    cancelled: Mutex<VecDeque<String>>,
    stt: Mutex<VecDeque<(String, SttFigures)>>,
    /// Newest reply turn per conversation.
    latest: Mutex<VecDeque<(String, String)>>,
    /// Sentences of older replies dropped unspoken because a newer reply of
    /// the same conversation came.
    pub superseded: AtomicU64,
    /// Text that reached the synthesizer while no engine was loaded (lifecycle).
    pub unconfigured: AtomicU64,
    /// The loaded voice's language and whether a goal may choose another
    /// (espeak-ng: yes; a Piper voice speaks one); `None` while unconfigured.
    pub voice: Mutex<Option<(String, bool)>>,
    /// Texts whose output is watched (the `say` action's goals), by turn.
    watched: Mutex<HashMap<String, Progress>>,
    /// A reply's first chunk synthesized ahead (`reply/tentative`).
    held: Mutex<Option<Held>>,
    /// Held first chunks: synthesized, spoken when their turn was
    /// confirmed, discarded (with their synthesis time [ms]).
    pub held_prepared: AtomicU64,
    pub held_released: AtomicU64,
    pub held_discarded: AtomicU64,
    pub held_wasted_ms: AtomicU64,
}

impl Control {
    pub fn new(log: Log) -> Self {
        Self {
            log,
            stop: AtomicBool::new(false),
            cancel_now: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            cuts: Mutex::new(VecDeque::new()),
            synthesizing: Mutex::new(None),
            speaking: AtomicBool::new(false),
            interrupts: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sentences: AtomicU64::new(0),
            audio_compute: Mutex::new((0.0, 0.0)),
            reply_turns: Mutex::new(VecDeque::new()),
            cancelled: Mutex::new(VecDeque::new()),
            stt: Mutex::new(VecDeque::new()),
            latest: Mutex::new(VecDeque::new()),
            superseded: AtomicU64::new(0),
            unconfigured: AtomicU64::new(0),
            voice: Mutex::new(None),
            watched: Mutex::new(HashMap::new()),
            held: Mutex::new(None),
            held_prepared: AtomicU64::new(0),
            held_released: AtomicU64::new(0),
            held_discarded: AtomicU64::new(0),
            held_wasted_ms: AtomicU64::new(0),
        }
    }

    /// Keeps `h` until its turn's first chunk comes (an older one is discarded).
    pub fn hold(&self, h: Held) {
        self.held_prepared.fetch_add(1, Ordering::Relaxed);
        self.log.debug(format!(
            "turn {}: first chunk {:?} synthesized ahead ({:.0} ms), held until the turn is confirmed",
            h.turn_id, h.text, h.synth_ms
        ));
        let old = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(h);
        if let Some(old) = old {
            self.discard_held(old, "a newer one was prepared");
        }
    }

    pub fn take_held(&self) -> Option<Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Counts and logs a held first chunk that will never be spoken.
    pub fn discard_held(&self, h: Held, why: &str) {
        self.held_discarded.fetch_add(1, Ordering::Relaxed);
        self.held_wasted_ms
            .fetch_add(h.synth_ms.round() as u64, Ordering::Relaxed);
        self.log.info(format!(
            "turn {}: first chunk synthesized ahead discarded ({why}; {:.0} ms of synthesis): {:?}",
            h.turn_id, h.synth_ms, h.text
        ));
    }

    /// Watches the output of `turn` (a `say` goal's text).
    pub fn watch(&self, turn: &str) {
        if let Ok(mut w) = self.watched.lock() {
            w.insert(turn.to_string(), Progress::default());
        }
    }

    pub fn unwatch(&self, turn: &str) {
        if let Ok(mut w) = self.watched.lock() {
            w.remove(turn);
        }
    }

    /// Updates the progress of `turn` when it is watched.
    fn on_watched(&self, turn: &str, f: impl FnOnce(&mut Progress)) {
        if let Some(p) = self
            .watched
            .lock()
            .ok()
            .as_mut()
            .and_then(|w| w.get_mut(turn))
        {
            f(p);
        }
    }

    /// A frame of `turn` went out (`seconds` of audio).
    pub fn note_frame(&self, turn: &str, seconds: f64) {
        self.on_watched(turn, |p| p.seconds += seconds);
    }

    /// A sentence of `turn` went out whole (`spoken`: it had audio; `last`:
    /// its text's last, heard by `heard_at`).
    pub fn note_sentence(&self, turn: &str, spoken: bool, last: bool, heard_at: Instant) {
        self.on_watched(turn, |p| {
            if spoken {
                p.sentences += 1;
            }
            if last {
                p.done_at = Some(heard_at);
            }
        });
    }

    pub fn progress(&self, turn: &str) -> Option<Progress> {
        self.watched.lock().ok().and_then(|w| w.get(turn).copied())
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// An interrupt: stops at once the speech and text it covers, i.e.
    /// what matches its target and was received before it was raised (a
    /// `say` published after it, even one that arrives first, is spoken).
    /// Chunks of the reply turns it stops that arrive later are ignored too.
    pub fn interrupt(&self, cut: Cut, what: &str) {
        if let (Ok(turns), Ok(mut c)) = (self.reply_turns.lock(), self.cancelled.lock()) {
            for (turn, conv, first) in turns.iter() {
                if cut.covers(*first, turn, Some(conv)) && !c.contains(turn) {
                    push_bounded(&mut c, turn.clone());
                }
            }
            if let Target::Turn(t) = &cut.target {
                if !c.contains(t) {
                    push_bounded(&mut c, t.clone());
                }
            }
        }
        let stops_synthesis = self.synthesizing.lock().is_ok_and(|s| {
            s.as_ref()
                .is_some_and(|k| cut.covers(k.received, &k.turn_id, k.conversation()))
        });
        let held = {
            let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
            h.take_if(|h| cut.covers(h.received, &h.turn_id, Some(&h.conversation_id)))
        };
        if let Some(h) = held {
            self.discard_held(h, "interrupted");
        }
        if let Ok(mut cuts) = self.cuts.lock() {
            if cuts.len() >= CUTS {
                cuts.pop_front();
            }
            cuts.push_back(cut);
        }
        if stops_synthesis {
            self.cancel_now.store(true, Ordering::SeqCst);
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.interrupts.fetch_add(1, Ordering::Relaxed);
        self.log.info(format!(
            "interrupt ({what}): speech and text asked for before it stopped"
        ));
    }

    /// Whether an interrupt stopped what `job` asks for (it was received
    /// before an interrupt covering it was raised, or its turn was cancelled).
    pub fn cleared(&self, job: &impl Asked) -> bool {
        let turn = job.turn_id();
        let cut = self.cuts.lock().is_ok_and(|cuts| {
            cuts.iter()
                .any(|c| c.covers(job.received(), turn, job.conversation()))
        });
        cut || self.is_cancelled_turn(turn)
    }

    /// Marks `job` as being synthesized (`None`: done); an interrupt that
    /// covers it cancels the synthesis. Returns false when it is already
    /// cleared (then nothing is marked).
    pub fn synthesizing(&self, job: Option<&TextJob>) -> bool {
        if let Ok(mut s) = self.synthesizing.lock() {
            *s = job.map(Key::of);
        }
        match job {
            Some(j) if self.cleared(j) => {
                if let Ok(mut s) = self.synthesizing.lock() {
                    *s = None;
                }
                false
            }
            _ => true,
        }
    }

    /// Notes the newest reply turn of its conversation (from its first chunk).
    pub fn note_reply(&self, c: &ReplyChunk) {
        if let Ok(mut t) = self.reply_turns.lock() {
            if !t.iter().any(|(turn, _, _)| turn == &c.turn_id) {
                if t.len() >= TURN_MEMORY {
                    t.pop_front();
                }
                t.push_back((c.turn_id.clone(), c.conversation_id.clone(), Instant::now()));
            }
        }
        if let Ok(mut l) = self.latest.lock() {
            if l.iter().any(|(_, t)| t == &c.turn_id) {
                return;
            }
            l.retain(|(conv, _)| conv != &c.conversation_id);
            if l.len() >= TURN_MEMORY {
                l.pop_front();
            }
            l.push_back((c.conversation_id.clone(), c.turn_id.clone()));
        }
    }

    /// Whether a newer reply of the same conversation came: this one's
    /// unspoken text is stale (the user went on talking) and is dropped.
    pub fn superseded(&self, meta: Option<&ReplyChunk>) -> bool {
        let Some(m) = meta else { return false };
        let newer = self.latest.lock().is_ok_and(|l| {
            l.iter()
                .any(|(conv, t)| conv == &m.conversation_id && t != &m.turn_id)
        });
        if newer {
            self.superseded.fetch_add(1, Ordering::Relaxed);
            self.log.debug(format!(
                "turn {}: unspoken text dropped, a newer reply came",
                m.turn_id
            ));
        }
        newer
    }

    pub fn is_cancelled_turn(&self, turn: &str) -> bool {
        self.cancelled
            .lock()
            .is_ok_and(|c| c.iter().any(|t| t == turn))
    }

    /// Keeps a transcript's figures for the turn's stats.
    pub fn remember_stt(&self, u: &Utterance) {
        if let Ok(mut m) = self.stt.lock() {
            if m.len() >= TURN_MEMORY {
                m.pop_front();
            }
            m.push_back((
                u.turn_id.clone(),
                SttFigures {
                    compute_ms: u.stt_compute_ms,
                    end_of_turn_score: u.end_of_turn_score,
                    end_of_turn_text_score: u.end_of_turn_text_score,
                    end_of_turn_audio_score: u.end_of_turn_audio_score,
                    end_of_turn_wait_ms: u.end_of_turn_wait_ms,
                    partial_lag_ms: u.partial_lag_ms,
                },
            ));
        }
    }

    pub fn stt_of(&self, turn: &str) -> SttFigures {
        self.stt
            .lock()
            .ok()
            .and_then(|m| m.iter().find(|(t, _)| t == turn).map(|(_, v)| *v))
            .unwrap_or_default()
    }

    pub fn audio_s(&self) -> f64 {
        self.audio_compute.lock().map(|v| v.0).unwrap_or(0.0)
    }

    pub fn rtf(&self) -> f64 {
        self.audio_compute
            .lock()
            .map(|v| if v.0 > 0.0 { v.1 / v.0 } else { 0.0 })
            .unwrap_or(0.0)
    }
}

/// A transcript's figures that go into its turn's stats.
#[derive(Debug, Clone, Copy)]
pub struct SttFigures {
    pub compute_ms: f32,
    pub end_of_turn_score: f32,
    pub end_of_turn_text_score: f32,
    pub end_of_turn_audio_score: f32,
    pub end_of_turn_wait_ms: f32,
    pub partial_lag_ms: f32,
}

impl Default for SttFigures {
    fn default() -> Self {
        Self {
            compute_ms: 0.0,
            end_of_turn_score: -1.0,
            end_of_turn_text_score: -1.0,
            end_of_turn_audio_score: -1.0,
            end_of_turn_wait_ms: 0.0,
            partial_lag_ms: 0.0,
        }
    }
}

fn push_bounded(q: &mut VecDeque<String>, v: String) {
    if q.len() >= TURN_MEMORY {
        q.pop_front();
    }
    q.push_back(v);
}
