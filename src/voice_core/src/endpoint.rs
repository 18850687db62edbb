//! VAD endpointing: turns a stream of 16 kHz samples plus per-window speech
//! probabilities into utterances.
//!
//! The probabilities come from a [`SpeechDetector`]: Silero (whisper.cpp's VAD,
//! in stt_node) or the [`EnergyDetector`] fallback here. The [`Segmenter`]
//! state machine is shared: hysteresis on the threshold, pre-roll so the first
//! syllable is kept, a silence hangover that ends the utterance, a minimum
//! speech length that rejects clicks, and a maximum length that cuts long
//! speech into pieces.

use std::collections::VecDeque;

use crate::PIPELINE_RATE;

/// Samples per VAD window at 16 kHz (Silero's native window, 32 ms).
pub const WINDOW: usize = 512;

/// Produces one speech probability (0..1) per [`WINDOW`] samples.
pub trait SpeechDetector {
    /// `audio.len()` is a multiple of [`WINDOW`]; returns `audio.len() / WINDOW` values.
    fn probabilities(&mut self, audio: &[f32]) -> Result<Vec<f32>, String>;
    /// Forgets internal state (after an interruption of the stream).
    fn reset(&mut self) {}
}

/// Endpointing parameters (the node's `vad.*` parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Probability at or above which a window is speech.
    pub threshold: f32,
    /// Silence that makes a *tentative* end of the utterance [ms]: the
    /// transcript so far is judged, and the turn may end here.
    pub min_silence_ms: u32,
    /// Silence that ends the utterance whatever the judge says [ms]. At or
    /// below `min_silence_ms` every pause of `min_silence_ms` ends it.
    pub max_silence_ms: u32,
    /// Audio kept before the first and after the last speech window [ms].
    pub speech_pad_ms: u32,
    /// Shorter speech is dropped as noise [ms].
    pub min_speech_ms: u32,
    /// Longer speech is cut and delivered in pieces [s].
    pub max_utterance_s: f32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_silence_ms: 250,
            max_silence_ms: 1200,
            speech_pad_ms: 300,
            min_speech_ms: 250,
            max_utterance_s: 15.0,
        }
    }
}

/// Why an endpointing configuration is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("vad.threshold must be in (0, 1), got {0}")]
    Threshold(f32),
    #[error("vad.min_silence_ms must be 32..=10000, got {0}")]
    MinSilence(u32),
    #[error("vad.max_silence_ms must be 0..=20000, got {0}")]
    MaxSilence(u32),
    #[error("vad.speech_pad_ms must be <= 2000, got {0}")]
    SpeechPad(u32),
    #[error("vad.min_speech_ms must be <= 10000, got {0}")]
    MinSpeech(u32),
    #[error("vad.max_utterance_s must be 1..=30 s (Whisper's window), got {0}")]
    MaxUtterance(f32),
}

impl ConfigError {
    /// The parameter at fault (its full name).
    pub fn param(&self) -> &'static str {
        match self {
            ConfigError::Threshold(_) => "vad.threshold",
            ConfigError::MinSilence(_) => "vad.min_silence_ms",
            ConfigError::MaxSilence(_) => "vad.max_silence_ms",
            ConfigError::SpeechPad(_) => "vad.speech_pad_ms",
            ConfigError::MinSpeech(_) => "vad.min_speech_ms",
            ConfigError::MaxUtterance(_) => "vad.max_utterance_s",
        }
    }
}

impl EndpointConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(ConfigError::Threshold(self.threshold));
        }
        if !(32..=10_000).contains(&self.min_silence_ms) {
            return Err(ConfigError::MinSilence(self.min_silence_ms));
        }
        if self.max_silence_ms > 20_000 {
            return Err(ConfigError::MaxSilence(self.max_silence_ms));
        }
        if self.speech_pad_ms > 2_000 {
            return Err(ConfigError::SpeechPad(self.speech_pad_ms));
        }
        if self.min_speech_ms > 10_000 {
            return Err(ConfigError::MinSpeech(self.min_speech_ms));
        }
        if !(1.0..=30.0).contains(&self.max_utterance_s) {
            return Err(ConfigError::MaxUtterance(self.max_utterance_s));
        }
        Ok(())
    }
}

/// Something the segmenter noticed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Speech began; `at` is the stream sample index of the first speech window.
    SpeechStart { at: u64 },
    /// The speaker paused for `min_silence_ms` inside an utterance: a
    /// tentative end. `audio` is the current piece up to the end of speech
    /// plus padding (what a final segment would hold if the turn ended now).
    Pause(Segment),
    /// Speech went on after a [`Event::Pause`]: that tentative end is void.
    Resume { at: u64 },
    /// A piece of speech to transcribe.
    Segment(Segment),
}

/// Audio of (part of) an utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// 16 kHz mono samples, padding included.
    pub audio: Vec<f32>,
    /// Stream sample index of `audio[0]`.
    pub start: u64,
    /// Stream sample index just after the last speech window. For the last
    /// piece of an utterance cut at max length this can precede `start`
    /// (the speech ended right at the cut; the piece is the trailing pad).
    pub speech_end: u64,
    /// True when the utterance ended (silence); false for a piece cut at max length.
    pub is_last: bool,
}

impl Segment {
    /// Duration of the audio [s].
    pub fn duration_s(&self) -> f32 {
        self.audio.len() as f32 / PIPELINE_RATE as f32
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Idle,
    Speech,
}

/// The endpointing state machine. Feed it windows with [`Segmenter::push`].
#[derive(Debug)]
pub struct Segmenter {
    cfg: EndpointConfig,
    state: State,
    /// Stream sample index of the next window.
    pos: u64,
    /// Pre-roll while idle; the utterance audio while in speech.
    buf: VecDeque<f32>,
    /// Stream index of `buf[0]`.
    buf_start: u64,
    /// Stream index just after the last speech window.
    last_speech: u64,
    /// Speech windows in the current utterance [samples].
    speech_samples: u64,
    /// Whether this utterance already delivered a piece (max-length cut).
    delivered_piece: bool,
    /// A tentative end was announced for the current pause.
    paused: bool,
}

fn ms_to_samples(ms: u32) -> u64 {
    u64::from(ms) * u64::from(PIPELINE_RATE) / 1000
}

impl Segmenter {
    pub fn new(cfg: EndpointConfig) -> Self {
        Self {
            cfg,
            state: State::Idle,
            pos: 0,
            buf: VecDeque::new(),
            buf_start: 0,
            last_speech: 0,
            speech_samples: 0,
            delivered_piece: false,
            paused: false,
        }
    }

    /// Silence since the last speech window [samples] (0 when idle).
    pub fn silence(&self) -> u64 {
        match self.state {
            State::Speech => self.pos - self.last_speech,
            State::Idle => 0,
        }
    }

    /// The current piece of the utterance so far (empty when idle).
    pub fn current_audio(&self) -> Vec<f32> {
        match self.state {
            State::Speech => self.buf.iter().copied().collect(),
            State::Idle => Vec::new(),
        }
    }

    /// True while inside an utterance after a tentative end ([`Event::Pause`]).
    pub fn in_pause(&self) -> bool {
        self.state == State::Speech && self.paused
    }

    /// Ends the utterance now (the judge decided the turn is over): the
    /// final segment, or `None` when not in an utterance or it was too
    /// short to be speech.
    pub fn finish_now(&mut self) -> Option<Segment> {
        if self.state != State::Speech {
            return None;
        }
        let mut events = Vec::new();
        self.finish_utterance(&mut events);
        events.into_iter().find_map(|e| match e {
            Event::Segment(s) => Some(s),
            _ => None,
        })
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// New parameters; an utterance in progress continues under them.
    pub fn set_config(&mut self, cfg: EndpointConfig) {
        self.cfg = cfg;
    }

    /// True while inside an utterance.
    pub fn in_speech(&self) -> bool {
        self.state == State::Speech
    }

    /// Stream sample index of the next window to push.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Drops any utterance in progress (e.g. the robot started speaking).
    /// The stream position keeps counting.
    pub fn abort(&mut self) {
        self.state = State::Idle;
        self.buf.clear();
        self.buf_start = self.pos;
        self.speech_samples = 0;
        self.delivered_piece = false;
        self.paused = false;
    }

    /// Pushes whole windows (`audio.len() == probs.len() * WINDOW`).
    pub fn push(&mut self, audio: &[f32], probs: &[f32]) -> Vec<Event> {
        let mut events = Vec::new();
        let n = probs.len().min(audio.len() / WINDOW);
        for (i, &p) in probs.iter().take(n).enumerate() {
            let win = &audio[i * WINDOW..(i + 1) * WINDOW];
            self.push_window(win, p, &mut events);
        }
        events
    }

    fn push_window(&mut self, win: &[f32], p: f32, events: &mut Vec<Event>) {
        let pad = ms_to_samples(self.cfg.speech_pad_ms);
        // Hysteresis: once in speech, stay until clearly below the threshold.
        let neg_threshold = (self.cfg.threshold - 0.15).max(0.01);
        let win_start = self.pos;
        self.buf.extend(win.iter().copied());
        self.pos += WINDOW as u64;
        match self.state {
            State::Idle => {
                if p >= self.cfg.threshold {
                    self.state = State::Speech;
                    self.speech_samples = WINDOW as u64;
                    self.last_speech = self.pos;
                    self.delivered_piece = false;
                    self.paused = false;
                    events.push(Event::SpeechStart { at: win_start });
                } else {
                    // keep only the pre-roll
                    let keep = pad as usize;
                    while self.buf.len() > keep {
                        self.buf.pop_front();
                        self.buf_start += 1;
                    }
                }
            }
            State::Speech => {
                // after a tentative end, speech must be clear again (not the
                // hysteresis level) to resume the utterance
                let level = if self.paused {
                    self.cfg.threshold
                } else {
                    neg_threshold
                };
                if p >= level {
                    self.last_speech = self.pos;
                    self.speech_samples += WINDOW as u64;
                    if std::mem::take(&mut self.paused) {
                        events.push(Event::Resume { at: win_start });
                    }
                }
                let silence = self.pos - self.last_speech;
                let tentative = ms_to_samples(self.cfg.min_silence_ms);
                let hard = ms_to_samples(self.cfg.max_silence_ms).max(tentative);
                if silence >= hard {
                    self.finish_utterance(events);
                    return;
                }
                let long_enough = self.speech_samples >= ms_to_samples(self.cfg.min_speech_ms)
                    || self.delivered_piece;
                if silence >= tentative && !self.paused && long_enough {
                    self.paused = true;
                    events.push(Event::Pause(self.snapshot(false)));
                }
                let max = (self.cfg.max_utterance_s * PIPELINE_RATE as f32) as usize;
                if self.buf.len() >= max {
                    self.cut_piece(events);
                }
            }
        }
    }

    /// The current piece up to the end of speech plus padding.
    fn snapshot(&self, is_last: bool) -> Segment {
        let pad = ms_to_samples(self.cfg.speech_pad_ms);
        let end = (self.last_speech + pad).min(self.pos).max(self.buf_start);
        let len = (end - self.buf_start) as usize;
        Segment {
            audio: self.buf.iter().take(len).copied().collect(),
            start: self.buf_start,
            speech_end: self.last_speech,
            is_last,
        }
    }

    fn finish_utterance(&mut self, events: &mut Vec<Event>) {
        let pad = ms_to_samples(self.cfg.speech_pad_ms);
        // after a max-length cut the speech may have ended before this piece began
        let end = (self.last_speech + pad).min(self.pos).max(self.buf_start);
        let len = (end - self.buf_start) as usize;
        let audio: Vec<f32> = self.buf.iter().take(len).copied().collect();
        let long_enough = self.speech_samples >= ms_to_samples(self.cfg.min_speech_ms);
        if long_enough || self.delivered_piece {
            events.push(Event::Segment(Segment {
                audio,
                start: self.buf_start,
                speech_end: self.last_speech,
                is_last: true,
            }));
        }
        // the tail after the utterance becomes the next pre-roll
        let drop = len.min(self.buf.len());
        self.buf.drain(..drop);
        self.buf_start += drop as u64;
        while self.buf.len() > pad as usize {
            self.buf.pop_front();
            self.buf_start += 1;
        }
        self.state = State::Idle;
        self.speech_samples = 0;
        self.delivered_piece = false;
        self.paused = false;
    }

    fn cut_piece(&mut self, events: &mut Vec<Event>) {
        let audio: Vec<f32> = self.buf.drain(..).collect();
        let start = self.buf_start;
        self.buf_start = self.pos;
        self.delivered_piece = true;
        self.paused = false;
        events.push(Event::Segment(Segment {
            audio,
            start,
            speech_end: self.last_speech,
            is_last: false,
        }));
    }
}

/// Energy-based speech detector, used when no VAD model is configured.
///
/// A window is speech when its level is well above a slowly tracked noise
/// floor and above an absolute floor. The result is a soft probability so the
/// segmenter's threshold and hysteresis apply unchanged.
#[derive(Debug, Clone)]
pub struct EnergyDetector {
    noise_floor_db: f32,
}

/// Level below which nothing counts as speech [dBFS].
pub const ENERGY_ABSOLUTE_FLOOR_DB: f32 = -50.0;
/// How far above the noise floor speech must be [dB].
pub const ENERGY_MARGIN_DB: f32 = 12.0;
/// Width of the soft transition around the decision level [dB].
pub const ENERGY_SOFTNESS_DB: f32 = 3.0;

impl Default for EnergyDetector {
    fn default() -> Self {
        Self {
            noise_floor_db: -70.0,
        }
    }
}

impl SpeechDetector for EnergyDetector {
    fn probabilities(&mut self, audio: &[f32]) -> Result<Vec<f32>, String> {
        Ok(audio
            .chunks_exact(WINDOW)
            .map(|w| {
                let db = crate::audio::rms_dbfs(w);
                // the floor follows quiet windows quickly and loud ones very slowly
                let rate = if db < self.noise_floor_db { 0.3 } else { 0.002 };
                self.noise_floor_db += (db - self.noise_floor_db) * rate;
                let level = (self.noise_floor_db + ENERGY_MARGIN_DB).max(ENERGY_ABSOLUTE_FLOOR_DB);
                1.0 / (1.0 + (-(db - level) / ENERGY_SOFTNESS_DB).exp())
            })
            .collect())
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Remembers when stream samples arrived, so the node can tell the wall-clock
/// time at which the last speech sample reached it. Bounded.
#[derive(Debug)]
pub struct ArrivalClock<T: Copy> {
    marks: VecDeque<(u64, T)>,
    cap: usize,
}

impl<T: Copy> ArrivalClock<T> {
    pub fn new(cap: usize) -> Self {
        Self {
            marks: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Records that the stream reached sample index `end` at time `t`.
    pub fn mark(&mut self, end: u64, t: T) {
        if self.marks.len() == self.cap {
            self.marks.pop_front();
        }
        self.marks.push_back((end, t));
    }

    /// Time at which sample `idx` had arrived (the first mark at or past it).
    pub fn arrival_of(&self, idx: u64) -> Option<T> {
        self.marks
            .iter()
            .find(|(end, _)| *end >= idx)
            .or(self.marks.back())
            .map(|(_, t)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: usize = 16;

    fn cfg() -> EndpointConfig {
        EndpointConfig {
            threshold: 0.5,
            min_silence_ms: 300,
            max_silence_ms: 0,
            speech_pad_ms: 96,
            min_speech_ms: 200,
            max_utterance_s: 3.0,
        }
    }

    /// Runs windows with given probabilities (audio = window index as value).
    fn run(seg: &mut Segmenter, probs: &[f32]) -> Vec<Event> {
        let mut ev = Vec::new();
        for &p in probs {
            let idx = (seg.position() / WINDOW as u64) as f32;
            ev.extend(seg.push(&[idx; WINDOW], &[p]));
        }
        ev
    }

    fn segments(ev: &[Event]) -> Vec<&Segment> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Segment(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_utterance_with_preroll_and_hangover() {
        let mut seg = Segmenter::new(cfg());
        let mut probs = vec![0.0; 20];
        probs.extend(vec![0.9; 20]); // 640 ms speech
        probs.extend(vec![0.0; 20]);
        let ev = run(&mut seg, &probs);
        assert!(matches!(ev[0], Event::SpeechStart { at } if at == 20 * WINDOW as u64));
        let s = segments(&ev);
        assert_eq!(s.len(), 1);
        let s = s[0];
        assert!(s.is_last);
        // pre-roll: 96 ms = 1536 samples = 3 windows before speech
        assert_eq!(s.start, 20 * WINDOW as u64 - 96 * MS as u64);
        assert_eq!(s.speech_end, 40 * WINDOW as u64);
        // padded end
        assert_eq!(
            s.audio.len() as u64,
            s.speech_end + 96 * MS as u64 - s.start
        );
        // first samples are pre-roll (window 17's tail), i.e. audio before speech is kept
        assert!(s.audio[0] < 20.0);
    }

    #[test]
    fn short_clicks_are_dropped_and_two_utterances_split() {
        let mut seg = Segmenter::new(cfg());
        let mut probs = vec![0.0; 10];
        probs.extend([0.9, 0.9]); // 64 ms click
        probs.extend(vec![0.0; 20]);
        probs.extend(vec![0.9; 15]);
        probs.extend(vec![0.0; 15]);
        probs.extend(vec![0.9; 15]);
        probs.extend(vec![0.0; 15]);
        let s = run(&mut seg, &probs);
        assert_eq!(segments(&s).len(), 2);
    }

    #[test]
    fn hysteresis_keeps_dips_inside_speech() {
        let mut seg = Segmenter::new(cfg());
        let mut probs = vec![0.9; 10];
        probs.extend(vec![0.4; 20]); // below threshold but above threshold - 0.15
        probs.extend(vec![0.9; 10]);
        probs.extend(vec![0.0; 15]);
        assert_eq!(segments(&run(&mut seg, &probs)).len(), 1);
    }

    #[test]
    fn long_speech_is_cut_into_pieces() {
        let mut seg = Segmenter::new(cfg());
        let mut probs = vec![0.9; 250]; // 8 s > 3 s max
        probs.extend(vec![0.0; 15]);
        let ev = run(&mut seg, &probs);
        let s = segments(&ev);
        assert_eq!(s.len(), 3);
        assert!(!s[0].is_last && !s[1].is_last && s[2].is_last);
        for p in &s[..2] {
            assert!(p.duration_s() <= 3.0 + 0.04);
        }
        // pieces are contiguous
        assert_eq!(s[1].start, s[0].start + s[0].audio.len() as u64);
        let total: usize = s.iter().map(|p| p.audio.len()).sum();
        assert!(total as u64 >= 250 * WINDOW as u64);
    }

    #[test]
    fn speech_ending_at_the_cut_closes_the_utterance() {
        // found by the property tests: the last piece is only trailing pad
        let mut seg = Segmenter::new(cfg());
        let n = (3.0 * 16_000.0 / WINDOW as f32).ceil() as usize;
        let mut probs = vec![0.9; n];
        probs.extend(vec![0.0; 20]);
        let ev = run(&mut seg, &probs);
        let s = segments(&ev);
        assert_eq!(s.len(), 2);
        assert!(!s[0].is_last && s[1].is_last);
        assert!(s[1].speech_end <= s[1].start + s[1].audio.len() as u64);
    }

    #[test]
    fn abort_drops_the_utterance() {
        let mut seg = Segmenter::new(cfg());
        run(&mut seg, &[0.9; 10]);
        assert!(seg.in_speech());
        seg.abort();
        assert!(segments(&run(&mut seg, &[0.0; 20])).is_empty());
    }

    #[test]
    fn a_pause_is_tentative_and_speech_resumes_the_utterance() {
        let mut seg = Segmenter::new(EndpointConfig {
            max_silence_ms: 900,
            ..cfg()
        });
        let mut probs = vec![0.0; 5];
        probs.extend(vec![0.9; 20]); // speech
        probs.extend(vec![0.0; 15]); // 480 ms pause: tentative end at 300 ms
        probs.extend(vec![0.9; 20]); // more speech: the same utterance
        probs.extend(vec![0.0; 35]); // 1120 ms: the hard end at 900 ms
        let ev = run(&mut seg, &probs);
        let kinds: Vec<&str> = ev
            .iter()
            .map(|e| match e {
                Event::SpeechStart { .. } => "start",
                Event::Pause(_) => "pause",
                Event::Resume { .. } => "resume",
                Event::Segment(_) => "segment",
            })
            .collect();
        assert_eq!(
            kinds,
            ["start", "pause", "resume", "pause", "segment"],
            "{kinds:?}"
        );
        // the tentative snapshot held the speech so far; the segment holds both parts
        let first_pause = ev
            .iter()
            .find_map(|e| match e {
                Event::Pause(s) => Some(s.audio.len()),
                _ => None,
            })
            .unwrap();
        let s = segments(&ev)[0];
        assert!(s.is_last && s.audio.len() > first_pause + 20 * WINDOW);
    }

    #[test]
    fn finish_now_ends_the_utterance_at_a_pause() {
        let mut seg = Segmenter::new(EndpointConfig {
            max_silence_ms: 2000,
            ..cfg()
        });
        let mut probs = vec![0.9; 20];
        probs.extend(vec![0.0; 12]);
        let ev = run(&mut seg, &probs);
        let pause = ev
            .iter()
            .find_map(|e| match e {
                Event::Pause(s) => Some(s.clone()),
                _ => None,
            })
            .expect("a tentative end");
        assert!(seg.in_pause());
        let s = seg.finish_now().expect("the final segment");
        assert!(s.is_last && !seg.in_speech());
        assert_eq!(s.audio, pause.audio);
        assert!(seg.finish_now().is_none());
        // the next speech is a new utterance
        let ev = run(&mut seg, &[0.9; 10]);
        assert!(matches!(ev[0], Event::SpeechStart { .. }));
    }

    #[test]
    fn config_validation() {
        assert!(cfg().validate().is_ok());
        let bad = EndpointConfig {
            threshold: 1.5,
            ..cfg()
        };
        assert_eq!(bad.validate(), Err(ConfigError::Threshold(1.5)));
        let bad = EndpointConfig {
            max_utterance_s: 60.0,
            ..cfg()
        };
        assert!(bad.validate().is_err());
        let bad = EndpointConfig {
            threshold: f32::NAN,
            ..cfg()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn energy_detector_finds_a_tone_in_noise() {
        let mut det = EnergyDetector::default();
        let mut rng = 12345u32;
        let mut noise = || {
            rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((rng >> 16) as f32 / 32768.0 - 1.0) * 0.003
        };
        let quiet: Vec<f32> = (0..WINDOW * 30).map(|_| noise()).collect();
        let loud: Vec<f32> = (0..WINDOW * 10)
            .map(|i| (i as f32 * 0.1).sin() * 0.3 + noise())
            .collect();
        let pq = det.probabilities(&quiet).unwrap();
        let pl = det.probabilities(&loud).unwrap();
        assert!(pq[10..].iter().all(|&p| p < 0.5), "{pq:?}");
        assert!(pl.iter().all(|&p| p > 0.5), "{pl:?}");
    }

    #[test]
    fn arrival_clock_is_bounded_and_finds_the_frame() {
        let mut c = ArrivalClock::new(3);
        for (i, t) in [(320u64, 1), (640, 2), (960, 3), (1280, 4)] {
            c.mark(i, t);
        }
        assert_eq!(c.arrival_of(700), Some(3));
        assert_eq!(c.arrival_of(10), Some(2)); // oldest kept
        assert_eq!(c.arrival_of(99_999), Some(4));
    }
}
