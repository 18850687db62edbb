//! The synthesis and output threads of tts_node and the control state they
//! share with the subscription tasks (interrupt epoch, counters).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use r2r::std_msgs::msg::Bool;
use r2r::voice_agent::msg::{AudioFrame, ReplyChunk, TurnStats, Utterance};
use voice_core::chunker::{Chunker, ChunkerConfig};
use voice_core::normalize::normalize;
use voice_core::resample::resample_clip;
use voice_ros::log::Log;
use voice_ros::stamp;

use crate::engine::Engine;
use crate::params::TtsConfig;

/// Accepted runtime parameter sets.
pub type Updates = tokio::sync::watch::Receiver<std::sync::Arc<TtsConfig>>;
use crate::playback::Speaker;

/// Synthesized sentences waiting for output.
pub const AUDIO_QUEUE: usize = 16;
/// Turns whose chunks are ignored after an interrupt / whose stats are tracked.
const TURN_MEMORY: usize = 32;
/// How far audio_out may run ahead of real time [s].
const LEAD_S: f64 = 0.2;
const POLL: Duration = Duration::from_millis(20);

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
    turn_id: String,
    samples: Vec<f32>,
    rate: u32,
    meta: Option<ReplyChunk>,
    received: Instant,
    epoch: u64,
}

pub struct Publishers {
    pub audio: r2r::Publisher<AudioFrame>,
    pub speaking: r2r::Publisher<Bool>,
    pub stats: r2r::Publisher<TurnStats>,
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
    audio_compute: Mutex<(f64, f64)>,
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
    fn superseded(&self, meta: Option<&ReplyChunk>) -> bool {
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

    fn note_turn(&self, turn: &str) {
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

    fn stt_of(&self, turn: &str) -> SttFigures {
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
struct SttFigures {
    compute_ms: f32,
    end_of_turn_score: f32,
    end_of_turn_wait_ms: f32,
    partial_lag_ms: f32,
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

/// Synthesis thread: text -> sentences -> audio.
pub fn synthesize(
    jobs: Receiver<TextJob>,
    out: SyncSender<AudioJob>,
    mut engine: Engine,
    mut updates: Updates,
    ctl: &Control,
) {
    let rate = engine.sample_rate();
    let mut p = updates.borrow_and_update().clone();
    while !ctl.stop.load(Ordering::SeqCst) {
        let job = match jobs.recv_timeout(POLL * 5) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // a set that arrived before this text applies to it
        if updates.has_changed().unwrap_or(false) {
            p = updates.borrow_and_update().clone();
            engine.set_voice(p.voice);
        }
        let out_rate = p.output_sample_rate.unwrap_or(rate);
        let silence = (p.sentence_silence * out_rate as f32) as usize;
        if job.epoch < ctl.epoch() {
            continue; // queued before an interrupt
        }
        ctl.cancel_now.store(false, Ordering::SeqCst);
        // `say` text may hold many sentences: speak the first as soon as it is ready
        let mut splitter = Chunker::new(ChunkerConfig::default());
        let mut sentences = splitter.push(&job.text);
        sentences.push(splitter.finish());
        sentences.retain(|s| !s.trim().is_empty());
        let n = sentences.len();
        if n == 0 {
            if job.meta.is_some() {
                // a final chunk with no text still closes the turn
                let _ = out.send(AudioJob {
                    turn_id: job.turn_id,
                    samples: Vec::new(),
                    rate: out_rate,
                    meta: job.meta,
                    received: job.received,
                    epoch: job.epoch,
                });
            }
            continue;
        }
        for (k, sentence) in sentences.into_iter().enumerate() {
            if job.epoch < ctl.epoch()
                || ctl.stop.load(Ordering::SeqCst)
                || ctl.superseded(job.meta.as_ref())
            {
                break;
            }
            let text = normalize(&sentence);
            let t0 = Instant::now();
            let mut samples = match engine.synthesize(&text, &ctl.cancel_now) {
                Ok(s) => s,
                Err(e) => {
                    ctl.log.warn(format!(
                        "synthesis failed for {:?}: {e}",
                        truncate(&text, 80)
                    ));
                    Vec::new()
                }
            };
            let compute = t0.elapsed().as_secs_f64();
            if out_rate != rate && !samples.is_empty() {
                samples = resample_clip(rate, out_rate, &samples).unwrap_or_default();
            }
            for s in &mut samples {
                *s = (*s * p.volume).clamp(-1.0, 1.0);
            }
            if !samples.is_empty() {
                samples.extend(std::iter::repeat_n(0.0, silence));
            }
            if let Ok(mut a) = ctl.audio_compute.lock() {
                a.0 += samples.len() as f64 / f64::from(out_rate);
                a.1 += compute;
            }
            ctl.sentences.fetch_add(1, Ordering::Relaxed);
            let meta = job.meta.clone().map(|mut m| {
                // only the job's last sentence may close the turn
                m.is_final = m.is_final && k + 1 == n;
                m
            });
            if out
                .send(AudioJob {
                    turn_id: job.turn_id.clone(),
                    samples,
                    rate: out_rate,
                    meta,
                    received: job.received,
                    epoch: job.epoch,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Per-turn figures gathered until the stats can be published.
#[derive(Default)]
struct TurnTrack {
    first_chunk: Option<(ReplyChunk, Instant)>,
    first_audio: Option<(Instant, SystemTime)>,
    last: Option<ReplyChunk>,
    published: bool,
}

/// Output thread: frames at real-time pace, playback, speaking, turn stats.
pub fn output(
    jobs: Receiver<AudioJob>,
    pubs: Publishers,
    speaker: Option<Speaker>,
    mut updates: Updates,
    ctl: &Control,
) {
    let mut p = updates.borrow_and_update().clone();
    // audio of the current stretch of speech ends at this instant
    let mut speech_end: Option<Instant> = None;
    let mut seen_epoch = ctl.epoch();
    let mut turns: HashMap<String, TurnTrack> = HashMap::new();
    let set_speaking = |on: bool| {
        if ctl.speaking.swap(on, Ordering::SeqCst) != on {
            let _ = pubs.speaking.publish(&Bool { data: on });
        }
    };
    // a latched state topic has a value from the start, not only after the first change
    let _ = pubs.speaking.publish(&Bool { data: false });
    while !ctl.stop.load(Ordering::SeqCst) {
        if ctl.epoch() != seen_epoch {
            seen_epoch = ctl.epoch();
            if let Some(s) = &speaker {
                s.stop();
            }
            speech_end = None;
            set_speaking(false);
        }
        let job = match jobs.recv_timeout(POLL) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => {
                let played = speaker.as_ref().is_none_or(Speaker::idle);
                if speech_end.is_some_and(|e| Instant::now() >= e) && played {
                    speech_end = None;
                    set_speaking(false);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if job.epoch < ctl.epoch() {
            continue;
        }
        if ctl.superseded(job.meta.as_ref()) {
            // the rest of this reply goes unspoken; a turn that was heard
            // still gets its stats (with the chunk figures it had)
            if let Some(t) = turns.get_mut(&job.turn_id) {
                if t.first_audio.is_some() && !t.published {
                    if let Some(m) = &job.meta {
                        t.last = Some(m.clone());
                    }
                    publish_stats(&job.turn_id, t, &pubs, ctl);
                }
            }
            continue;
        }
        if updates.has_changed().unwrap_or(false) {
            p = updates.borrow_and_update().clone();
        }
        let frame_ms = p.frame_ms.max(1) as usize;
        let track = turns.entry(job.turn_id.clone()).or_default();
        if let Some(m) = &job.meta {
            if track.first_chunk.is_none() {
                track.first_chunk = Some((m.clone(), job.received));
            }
            track.last = Some(m.clone());
        }
        if !job.samples.is_empty() {
            ctl.note_turn(&job.turn_id);
            if let Some(s) = &speaker {
                s.play(&job.samples, job.rate);
            }
            let start = match speech_end {
                Some(e) if e > Instant::now() => e,
                _ => Instant::now(),
            };
            let start_wall = SystemTime::now() + start.saturating_duration_since(Instant::now());
            let per_frame = (job.rate as usize * frame_ms / 1000).max(1);
            let mut interrupted = false;
            for (k, frame) in job.samples.chunks(per_frame).enumerate() {
                let offset = Duration::from_secs_f64((k * per_frame) as f64 / f64::from(job.rate));
                if p.realtime {
                    let due = (start + offset)
                        .checked_sub(Duration::from_secs_f64(LEAD_S))
                        .unwrap_or(start);
                    while Instant::now() < due {
                        if ctl.epoch() != seen_epoch || ctl.stop.load(Ordering::SeqCst) {
                            break;
                        }
                        std::thread::sleep(POLL.min(due.saturating_duration_since(Instant::now())));
                    }
                }
                if ctl.epoch() != seen_epoch || ctl.stop.load(Ordering::SeqCst) {
                    interrupted = true;
                    break;
                }
                set_speaking(true);
                let mut f = voice_ros::frames::mono_s16(frame, job.rate, "speaker", &job.turn_id);
                f.header.stamp = stamp::from_system(start_wall + offset);
                let _ = pubs.audio.publish(&f);
                if k == 0 && track.first_audio.is_none() {
                    track.first_audio = Some((Instant::now(), SystemTime::now()));
                }
            }
            if interrupted {
                continue;
            }
            let dur = Duration::from_secs_f64(job.samples.len() as f64 / f64::from(job.rate));
            speech_end = Some(if p.realtime {
                start + dur
            } else {
                Instant::now()
            });
        }
        if job.meta.as_ref().is_some_and(|m| m.is_final) {
            publish_stats(&job.turn_id, track, &pubs, ctl);
        }
        if turns.len() > TURN_MEMORY {
            // finished turns go first; `say` text (no chunk timing) and turns
            // whose final chunk never came go when they are the oldest left
            turns.retain(|_, t| !t.published && t.first_chunk.is_some());
            if turns.len() > TURN_MEMORY {
                turns.clear();
            }
        }
    }
    set_speaking(false);
}

fn publish_stats(turn: &str, t: &mut TurnTrack, pubs: &Publishers, ctl: &Control) {
    let (Some((first, first_rx)), Some((audio_at, audio_wall)), Some(last)) =
        (&t.first_chunk, t.first_audio, &t.last)
    else {
        return;
    };
    if t.published {
        return;
    }
    t.published = true;
    let audio_stamp = stamp::from_system(audio_wall);
    let e2e = if stamp::is_zero(&first.speech_end) {
        0.0
    } else {
        stamp::ms_between(&first.speech_end, &audio_stamp) as f32
    };
    let stt = ctl.stt_of(turn);
    let mut s = TurnStats {
        turn_id: turn.into(),
        conversation_id: first.conversation_id.clone(),
        stt_ms: first.stt_ms,
        stt_compute_ms: stt.compute_ms,
        end_of_turn_score: stt.end_of_turn_score,
        end_of_turn_wait_ms: stt.end_of_turn_wait_ms,
        partial_lag_ms: stt.partial_lag_ms,
        prefilled_tokens: first.prefilled_tokens,
        llm_first_token_ms: first.first_token_ms,
        llm_first_chunk_ms: first.first_chunk_ms,
        tokens_per_s: last.tokens_per_s,
        prompt_tokens: last.prompt_tokens,
        generated_tokens: last.generated_tokens,
        tts_first_audio_ms: audio_at.saturating_duration_since(*first_rx).as_secs_f32() * 1e3,
        end_of_speech_to_first_audio_ms: e2e,
        ..Default::default()
    };
    s.header.stamp = audio_stamp;
    ctl.log.info(format!(
        "turn {turn}: end of speech -> first audio {:.0} ms (end of turn after {:.0} ms of silence, score {:.3}; stt {:.0}, llm first chunk {:.0} ({} prompt tokens pre-filled), tts first audio {:.0}; {:.1} tok/s)",
        s.end_of_speech_to_first_audio_ms, s.end_of_turn_wait_ms, s.end_of_turn_score, s.stt_ms, s.llm_first_chunk_ms, s.prefilled_tokens, s.tts_first_audio_ms, s.tokens_per_s
    ));
    let _ = pubs.stats.publish(&s);
}
