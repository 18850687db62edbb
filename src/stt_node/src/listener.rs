//! The listener thread of stt_node: frames -> 16 kHz -> VAD -> utterances,
//! partial transcripts while the user speaks, and the end of each turn.
//!
//! A pause of `vad.min_silence_ms` is a *tentative* end: its transcript goes
//! out on `transcript/partial` with `tentative_end`, llm_node answers on
//! `end_of_turn` with the probability that the user is done (computing it
//! pre-fills the reply's prompt). The turn ends once the silence reaches
//! what that probability asks for (`voice_core::turn::required_silence_ms`),
//! at the latest after `vad.max_silence_ms`. Speech before that resumes the
//! same utterance: a sentence with pauses stays one turn.
//!
//! Silence is also counted by the clock: when frames stop arriving while a
//! turn is pending (a bag that ended, a driver that stopped) for longer than
//! `stream_gap_ms` beyond the last frame's length, the missing time is fed
//! as silence, so the turn ends as it would have with a microphone that
//! heard silence. (Not closed at once: a driver that stalls mid-sentence and
//! resumes keeps the user's sentence one turn, as a real pause would.)

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use r2r::voice_agent::msg::AudioFrame;
use voice_core::endpoint::{Event, Segment};
use voice_core::ingest::Ingest;
use voice_core::interrupt::Target;
use voice_core::turn::{fuse, required_silence_ms, Judge};
use voice_ros::frames;

use crate::engine::Detector;
use crate::params::SttConfig;
use voice_ros::lifecycle::Handoff;

use crate::shared::{Publishers, Shared, TurnMeta, Updates, Work};
use crate::smart_turn::SmartTurn;

/// Poll period of the worker threads for the stop flag.
pub const POLL: Duration = Duration::from_millis(100);

/// Silence up to this still counts as speaking, for partials [ms] (two VAD windows).
const SPEAKING_MS: u32 = 64;

/// How often the listener looks at the clock when no frame comes (stream gaps, answers).
const GAP_POLL: Duration = Duration::from_millis(50);

/// An end-of-turn answer from llm_node: turn id, revision, probability.
pub type Answer = (String, u32, f32);

/// The utterance being heard.
struct Utt {
    n: u64,
    start: SystemTime,
    /// Pauses (tentative ends) so far.
    pauses: u32,
    /// The decision score of the current pause (`turn.judge`'s).
    score: Option<f32>,
    /// The words' and the voice's scores of the current pause.
    text_score: Option<f32>,
    audio_score: Option<f32>,
    /// Audio (16 kHz samples) heard since the last partial.
    since_partial: usize,
    while_robot_spoke: bool,
}

struct Listener<'a> {
    shared: &'a Shared,
    pubs: Publishers,
    cfg: std::sync::Arc<SttConfig>,
    ingest: Ingest<Detector, SystemTime>,
    /// The audio end-of-turn model, when loaded.
    audio_judge: Option<SmartTurn>,
    utt: Option<Utt>,
    next_utt: u64,
    /// Arrival of the newest speech sample of the utterance.
    speech_end: SystemTime,
    /// Barge-in already sent while the robot is audible.
    barged: bool,
    /// The stream's audio is accounted for up to here (arrival of the last
    /// frame, or silence fed for a stopped stream), and that frame's length.
    heard_until: Instant,
    last_frame: Duration,
    /// Silence is being fed for a stopped stream.
    in_gap: bool,
}

/// Listener thread.
/// Listener thread: runs with the engines each configuration hands over
/// (lifecycle), until the node stops.
pub fn listen(
    frames: Receiver<AudioFrame>,
    answers: Receiver<Answer>,
    engines: &Handoff<(Detector, Option<SmartTurn>)>,
    mut updates: Updates,
    shared: &Shared,
    pubs: Publishers,
) {
    while let Some((detector, audio_judge)) = engines.take(&shared.stop) {
        let recalled = || engines.recalled();
        listen_with(
            &frames,
            &answers,
            detector,
            audio_judge,
            &mut updates,
            shared,
            pubs.clone(),
            &recalled,
        );
        // the engines are dropped
        engines.released();
    }
}

/// Listens with one configuration's engines until the node stops or the
/// engines are recalled (cleanup).
#[allow(clippy::too_many_arguments)]
fn listen_with(
    frames: &Receiver<AudioFrame>,
    answers: &Receiver<Answer>,
    detector: Detector,
    audio_judge: Option<SmartTurn>,
    updates: &mut Updates,
    shared: &Shared,
    pubs: Publishers,
    recalled: &dyn Fn() -> bool,
) {
    let cfg = updates.borrow_and_update().clone();
    shared.set_judge(cfg.judge);
    let mut l = Listener {
        shared,
        pubs,
        ingest: Ingest::new(detector, cfg.endpoint.clone()),
        audio_judge,
        cfg,
        utt: None,
        next_utt: 1,
        speech_end: SystemTime::now(),
        barged: false,
        heard_until: Instant::now(),
        last_frame: Duration::ZERO,
        in_gap: false,
    };
    while !shared.stop.load(Ordering::SeqCst) && !recalled() {
        let msg = match frames.recv_timeout(GAP_POLL) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if updates.has_changed().unwrap_or(false) {
            l.cfg = updates.borrow_and_update().clone();
            l.ingest.set_config(l.cfg.endpoint.clone());
            shared.set_judge(l.cfg.judge);
        }
        match msg {
            Some(m) => l.frame(&m),
            None => l.gap(),
        }
        while let Ok(a) = answers.try_recv() {
            l.answer(a);
        }
        l.maybe_end_turn();
    }
}

impl Listener<'_> {
    fn frame(&mut self, msg: &AudioFrame) {
        let shared = self.shared;
        let arrived = SystemTime::now();
        let frame = match frames::decode(msg, self.cfg.max_frame_s) {
            Ok(f) => f,
            Err(e) => {
                shared.drop_frame(&format!("dropped audio frame: {e}"));
                return;
            }
        };
        let (audible, listen) = self.listening();
        let out = match self
            .ingest
            .push(frame.sample_rate, &frame.samples, arrived, listen)
        {
            Ok(o) => o,
            Err(e) => {
                shared.drop_frame(&format!("dropped audio frame: {e}"));
                return;
            }
        };
        self.heard_until = Instant::now();
        self.last_frame = Duration::from_secs_f64(
            frame.samples.len() as f64 / f64::from(frame.sample_rate.max(1)),
        );
        self.in_gap = false;
        if let (Some(publ), false) = (&self.pubs.normalized, out.normalized.is_empty()) {
            let mut f = frames::mono_s16(
                &out.normalized,
                voice_core::PIPELINE_RATE,
                &msg.header.frame_id,
                "",
            );
            f.header.stamp = msg.header.stamp.clone();
            let _ = publ.publish(&f);
        }
        self.process(out, arrived, audible, listen);
    }

    /// Whether the robot is audible, and whether to listen meanwhile.
    fn listening(&mut self) -> (bool, bool) {
        let audible = self.shared.robot_audible(self.cfg.echo_guard);
        if !audible {
            self.barged = false;
        }
        // Half-duplex only when asked for: by default speech over the robot
        // is heard (and echo-checked), never silently dropped.
        let listen = !audible || self.cfg.barge_in || self.cfg.hear_while_speaking;
        (audible, listen)
    }

    /// No frame came: while a turn is pending and the stream has stopped
    /// (nothing for `stream_gap_ms` beyond the last frame's length), the
    /// time since the last audio is fed as silence.
    fn gap(&mut self) {
        let Some(gap) = self.cfg.stream_gap else {
            return;
        };
        let since = self.heard_until.elapsed();
        let stalled = self.in_gap || since > self.last_frame + gap;
        if !stalled || !self.ingest.in_speech() {
            return;
        }
        if !self.in_gap {
            self.in_gap = true;
            self.shared.stream_gaps.fetch_add(1, Ordering::Relaxed);
            self.shared.log.info(format!(
                "no audio for {:.0} ms while a turn is pending (the stream stopped): counting the time as silence",
                since.as_secs_f64() * 1e3
            ));
        }
        let samples = (since.as_secs_f64() * f64::from(voice_core::PIPELINE_RATE)) as usize;
        self.heard_until = Instant::now();
        self.shared
            .silence_filled_ms
            .fetch_add((since.as_secs_f64() * 1e3) as u64, Ordering::Relaxed);
        let (audible, listen) = self.listening();
        let now = SystemTime::now();
        match self.ingest.push_silence(samples, now, listen) {
            Ok(out) => self.process(out, now, audible, listen),
            Err(e) => self
                .shared
                .warn_throttled(&format!("silence for a stopped stream: {e}")),
        }
    }

    /// The 16 kHz audio and endpointing events of a frame (or of silence fed
    /// for a stopped stream).
    fn process(
        &mut self,
        out: voice_core::ingest::Output<SystemTime>,
        arrived: SystemTime,
        audible: bool,
        listen: bool,
    ) {
        let shared = self.shared;
        if !listen {
            shared
                .samples_ignored_while_speaking
                .fetch_add(out.normalized.len() as u64, Ordering::Relaxed);
            if self.utt.take().is_some() {
                *shared.tentative.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
        if let Some(u) = self.utt.as_mut() {
            u.since_partial += out.normalized.len();
            u.while_robot_spoke |= audible;
        }
        for (event, when) in out.events {
            let when = when.unwrap_or(arrived);
            match event {
                Event::SpeechStart { .. } => self.speech_start(when, audible),
                Event::Resume { .. } => {
                    if let Some(u) = self.utt.as_mut() {
                        u.score = None;
                        u.text_score = None;
                        u.audio_score = None;
                        shared.resumed.fetch_add(1, Ordering::Relaxed);
                    }
                    *shared.tentative.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                Event::Pause(seg) => {
                    self.speech_end = when;
                    self.pause(seg, audible);
                }
                Event::Segment(seg) if seg.is_last => {
                    self.speech_end = when;
                    self.end(seg, None);
                }
                Event::Segment(seg) => {
                    // a long utterance cut at vad.max_utterance_s
                    let utt = self.utt.as_ref().map_or(0, |u| u.n);
                    if !shared.work.push(Work::Piece {
                        utt,
                        audio: seg.audio,
                    }) {
                        shared.segments_dropped.fetch_add(1, Ordering::Relaxed);
                        shared
                            .warn_throttled("speech piece dropped: Whisper is behind (queue full)");
                    }
                }
            }
        }
        self.maybe_partial(audible);
    }

    fn speech_start(&mut self, when: SystemTime, audible: bool) {
        let n = self.next_utt;
        self.next_utt += 1;
        self.utt = Some(Utt {
            n,
            start: when,
            pauses: 0,
            score: None,
            text_score: None,
            audio_score: None,
            since_partial: 0,
            while_robot_spoke: audible,
        });
        if audible && self.cfg.barge_in && !self.barged {
            self.barged = true;
            self.shared.interrupts.fetch_add(1, Ordering::Relaxed);
            self.shared
                .log
                .info("barge-in: user speech while speaking, publishing interrupt");
            let _ = self
                .pubs
                .interrupt
                .publish(&voice_ros::interrupt::raise(&Target::All, "barge_in"));
        }
    }

    /// A partial transcript every `turn.partial_interval_ms` of speech (not
    /// while the robot is audible: that may be its own voice), and only
    /// while the user is audibly speaking: a silence may be the start of a
    /// pause, whose tentative end must not wait behind a partial.
    fn maybe_partial(&mut self, audible: bool) {
        let interval =
            self.cfg.partial_interval_ms as usize * voice_core::PIPELINE_RATE as usize / 1000;
        let Some(u) = self.utt.as_mut() else { return };
        if interval == 0
            || audible
            || u.since_partial < interval
            || self.ingest.in_pause()
            || self.ingest.silence_ms() > SPEAKING_MS
        {
            return;
        }
        u.since_partial = 0;
        let audio = self.ingest.current_audio();
        if audio.is_empty() {
            return;
        }
        self.shared.work.offer_partial(Work::Partial {
            utt: u.n,
            audio,
            pause: None,
            newest: Instant::now(),
        });
    }

    /// A tentative end: its transcript is judged (unless the robot is audible).
    fn pause(&mut self, seg: Segment, audible: bool) {
        let Some(u) = self.utt.as_mut() else { return };
        u.pauses += 1;
        u.score = None;
        u.text_score = None;
        u.audio_score = None;
        u.since_partial = 0;
        self.shared.tentative_ends.fetch_add(1, Ordering::Relaxed);
        if audible && !self.cfg.barge_in {
            return; // ends by silence alone; may be the robot's own voice
        }
        // the voice is judged here, at once (~50 ms); the words after Whisper
        // and llm_node (a few hundred ms)
        if let (Some(judge), true) = (self.audio_judge.as_mut(), self.cfg.judge != Judge::Text) {
            let t = Instant::now();
            match judge.score(&seg.audio) {
                Ok(p) => {
                    self.shared.note_audio_judgement(t.elapsed());
                    u.audio_score = Some(p);
                    u.score = fuse(self.cfg.judge, u.text_score, u.audio_score, self.cfg.fusion);
                    self.shared
                        .note_scores(u.text_score, u.audio_score, u.score);
                }
                Err(e) => self.shared.audio_judge_failed(&e.to_string()),
            }
        }
        self.shared.work.offer_partial(Work::Partial {
            utt: u.n,
            audio: seg.audio,
            pause: Some(u.pauses),
            newest: Instant::now(),
        });
    }

    /// An end-of-turn answer: kept when it is for the pause going on now.
    fn answer(&mut self, (turn, revision, p): Answer) {
        let Some(u) = self.utt.as_mut() else { return };
        let t = *self
            .shared
            .tentative
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let current = t.is_some_and(|t| {
            t.utt == u.n && t.pause == u.pauses && t.revision == revision && !t.open
        });
        if current && turn == self.shared.turn_id(u.n) && self.ingest.in_pause() && p >= 0.0 {
            u.text_score = Some(p);
            u.score = fuse(self.cfg.judge, u.text_score, u.audio_score, self.cfg.fusion);
            self.shared
                .note_scores(u.text_score, u.audio_score, u.score);
        }
    }

    /// Ends the turn at the current pause once the silence is what its
    /// score asks for.
    fn maybe_end_turn(&mut self) {
        let Some(u) = self.utt.as_ref() else { return };
        let Some(score) = u.score else { return };
        if !self.ingest.in_pause() {
            return;
        }
        let e = &self.cfg.endpoint;
        let need = required_silence_ms(
            Some(score),
            self.cfg.end_threshold,
            e.min_silence_ms,
            e.max_silence_ms,
        );
        if self.ingest.silence_ms() < need {
            return;
        }
        if let Some(seg) = self.ingest.finish_now() {
            self.end(seg, Some(score));
        } else {
            self.utt = None;
        }
    }

    /// The utterance ended: its last piece goes to Whisper as the final.
    fn end(&mut self, seg: Segment, score: Option<f32>) {
        let Some(u) = self.utt.take() else { return };
        *self
            .shared
            .tentative
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        let counter = if score.is_some() {
            &self.shared.ended_by_score
        } else {
            &self.shared.ended_by_silence
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.in_gap {
            self.shared.ended_in_gap.fetch_add(1, Ordering::Relaxed);
        }
        let wait_ms = self
            .speech_end
            .elapsed()
            .map_or(0.0, |d| d.as_secs_f32() * 1e3);
        let meta = TurnMeta {
            speech_start: u.start,
            speech_end: self.speech_end,
            decided: Instant::now(),
            score,
            text_score: u.text_score,
            audio_score: u.audio_score,
            wait_ms,
            while_robot_spoke: u.while_robot_spoke,
        };
        if !self.shared.work.push(Work::Final {
            utt: u.n,
            audio: seg.audio,
            pause: (u.pauses > 0).then_some(u.pauses),
            meta,
        }) {
            self.shared.segments_dropped.fetch_add(1, Ordering::Relaxed);
            self.shared
                .warn_throttled("utterance dropped: Whisper is behind (queue full)");
        }
    }
}
