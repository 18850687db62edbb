//! tts_node's control state, shared by the subscription tasks and both
//! threads: the interrupt epoch, cancelled turns, counters, the figures
//! remembered for turn stats; and the jobs that travel between them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use r2r::voice_agent::msg::{ReplyChunk, Utterance};
use voice_ros::log::Log;

use crate::params::TtsConfig;

/// Accepted runtime parameter sets.
pub type Updates = tokio::sync::watch::Receiver<std::sync::Arc<TtsConfig>>;

/// Synthesized sentences waiting for output.
pub const AUDIO_QUEUE: usize = 16;
/// Turns whose chunks are ignored after an interrupt / whose stats are tracked.
pub const TURN_MEMORY: usize = 32;
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
    pub epoch: u64,
}

impl TextJob {
    /// A reply chunk's text; the rest of the message (LLM timing) rides along
    /// for the turn's stats.
    pub fn from_chunk(mut c: ReplyChunk, epoch: u64) -> Self {
        Self {
            turn_id: c.turn_id.clone(),
            text: std::mem::take(&mut c.text),
            meta: Some(c),
            received: Instant::now(),
            epoch,
        }
    }

    pub fn say(turn_id: String, text: String, epoch: u64) -> Self {
        Self {
            turn_id,
            text,
            meta: None,
            received: Instant::now(),
            epoch,
        }
    }
}

/// One synthesized sentence (possibly empty: a final chunk with no text).
pub struct AudioJob {
    pub turn_id: String,
    pub samples: Vec<f32>,
    pub rate: u32,
    pub meta: Option<ReplyChunk>,
    pub received: Instant,
    pub epoch: u64,
}

/// Shared control state.
pub struct Control {
    pub log: Log,
    pub stop: AtomicBool,
    /// Set on interrupt; espeak-ng's callback polls it.
    pub cancel_now: AtomicBool,
    epoch: AtomicU64,
    pub speaking: AtomicBool,
    pub interrupts: AtomicU64,
    pub dropped: AtomicU64,
    pub sentences: AtomicU64,
    pub audio_compute: Mutex<(f64, f64)>,
    /// Turns being spoken (for cancelling their late chunks).
    current_turns: Mutex<VecDeque<String>>,
    cancelled: Mutex<VecDeque<String>>,
    stt: Mutex<VecDeque<(String, SttFigures)>>,
    /// Newest reply turn per conversation.
    latest: Mutex<VecDeque<(String, String)>>,
    /// Sentences of older replies dropped unspoken because a newer reply of
    /// the same conversation came.
    pub superseded: AtomicU64,
}

impl Control {
    pub fn new(log: Log) -> Self {
        Self {
            log,
            stop: AtomicBool::new(false),
            cancel_now: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            speaking: AtomicBool::new(false),
            interrupts: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sentences: AtomicU64::new(0),
            audio_compute: Mutex::new((0.0, 0.0)),
            current_turns: Mutex::new(VecDeque::new()),
            cancelled: Mutex::new(VecDeque::new()),
            stt: Mutex::new(VecDeque::new()),
            latest: Mutex::new(VecDeque::new()),
            superseded: AtomicU64::new(0),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Stops synthesis and output at once and drops everything queued. Chunks
    /// of the turns being spoken that arrive later are ignored too.
    pub fn interrupt(&self, reason: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cancel_now.store(true, Ordering::SeqCst);
        self.interrupts.fetch_add(1, Ordering::Relaxed);
        if let (Ok(cur), Ok(mut c)) = (self.current_turns.lock(), self.cancelled.lock()) {
            for t in cur.iter() {
                push_bounded(&mut c, t.clone());
            }
        }
        self.log.info(format!(
            "interrupt ({reason:?}): speech stopped, queue cleared"
        ));
    }

    /// Notes the newest reply turn of its conversation (from its first chunk).
    pub fn note_reply(&self, c: &ReplyChunk) {
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

    pub fn note_turn(&self, turn: &str) {
        if let Ok(mut cur) = self.current_turns.lock() {
            if !cur.iter().any(|t| t == turn) {
                push_bounded(&mut cur, turn.to_string());
            }
        }
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
    pub end_of_turn_wait_ms: f32,
    pub partial_lag_ms: f32,
}

impl Default for SttFigures {
    fn default() -> Self {
        Self {
            compute_ms: 0.0,
            end_of_turn_score: -1.0,
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
