//! The two worker threads of stt_node and the state they share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use r2r::diagnostic_msgs::msg::DiagnosticArray;
use r2r::std_msgs::msg::String as StringMsg;
use r2r::voice_agent::msg::{AudioFrame, Utterance};
use voice_core::endpoint::{Event, Segment};
use voice_core::ingest::Ingest;
use voice_core::queue::{offer, Offered};
use voice_core::transcript;
use voice_ros::diag::{Level, Report};
use voice_ros::log::{Log, Throttle};
use voice_ros::{frames, stamp};

use crate::engine::{Detector, Transcriber};
use crate::params::SttConfig;

/// Accepted runtime parameter sets.
pub type Updates = tokio::sync::watch::Receiver<std::sync::Arc<SttConfig>>;

/// Incoming frames waiting for the listener (at 20 ms frames: 10 s).
pub const FRAME_QUEUE: usize = 500;
/// Speech segments waiting for Whisper.
pub const SEGMENT_QUEUE: usize = 8;
/// How often a warning about dropped input may be logged.
const WARN_PERIOD: Duration = Duration::from_secs(5);
/// Poll period of the worker threads for the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// The node's publishers; each worker thread owns a clone (r2r publishers are Send, not Sync).
#[derive(Clone)]
pub struct Publishers {
    pub utterance: r2r::Publisher<Utterance>,
    pub text: r2r::Publisher<StringMsg>,
    pub interrupt: r2r::Publisher<StringMsg>,
    pub normalized: Option<r2r::Publisher<AudioFrame>>,
}

/// A segment handed to Whisper, with the wall-clock times of its speech.
pub struct Job {
    segment: Segment,
    speech_start: SystemTime,
    speech_end: SystemTime,
    /// When the endpoint (or max-length cut) was detected.
    detected: Instant,
}

/// Counters and state shared by the subscription tasks and worker threads.
pub struct Shared {
    pub log: Log,
    pub stop: AtomicBool,
    pub frames_in: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub segments_dropped: AtomicU64,
    pub utterances: AtomicU64,
    pub rejected_non_speech: AtomicU64,
    pub ignored_while_speaking: AtomicU64,
    pub interrupts: AtomicU64,
    speaking: AtomicBool,
    speaking_ended: Mutex<Option<Instant>>,
    audio_s: Mutex<f64>,
    compute_s: Mutex<f64>,
    throttle: Mutex<Throttle>,
    last_error: Mutex<String>,
}

impl Shared {
    pub fn new(log: Log) -> Self {
        Self {
            log,
            stop: AtomicBool::new(false),
            frames_in: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            segments_dropped: AtomicU64::new(0),
            utterances: AtomicU64::new(0),
            rejected_non_speech: AtomicU64::new(0),
            ignored_while_speaking: AtomicU64::new(0),
            interrupts: AtomicU64::new(0),
            speaking: AtomicBool::new(false),
            speaking_ended: Mutex::new(None),
            audio_s: Mutex::new(0.0),
            compute_s: Mutex::new(0.0),
            throttle: Mutex::new(Throttle::new(WARN_PERIOD)),
            last_error: Mutex::new(String::new()),
        }
    }

    /// Counts a dropped frame and warns, throttled.
    pub fn drop_frame(&self, why: &str) {
        self.frames_dropped.fetch_add(1, Ordering::Relaxed);
        self.warn_throttled(why);
    }

    fn warn_throttled(&self, why: &str) {
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
            self.log.warn(format!("dropped audio frame: {why}{more}"));
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
    fn robot_audible(&self, echo_guard: Duration) -> bool {
        self.speaking()
            || self
                .speaking_ended
                .lock()
                .ok()
                .and_then(|t| *t)
                .is_some_and(|t| t.elapsed() < echo_guard)
    }

    pub fn report(&self, name: &str, hardware: &str, compute: &str) -> DiagnosticArray {
        let audio = self.audio_s.lock().map(|v| *v).unwrap_or(0.0);
        let compute_s = self.compute_s.lock().map(|v| *v).unwrap_or(0.0);
        let rtf = if audio > 0.0 { compute_s / audio } else { 0.0 };
        let dropped = self.frames_dropped.load(Ordering::Relaxed);
        let mut r = Report::new(name, hardware);
        if dropped > 0 {
            let last = self
                .last_error
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            r = r.level(Level::Warn, format!("dropped frames; last: {last}"));
        }
        r.kv("model", hardware)
            .kv("compute", compute)
            .kv("frames_in", self.frames_in.load(Ordering::Relaxed))
            .kv("frames_dropped", dropped)
            .kv(
                "segments_dropped",
                self.segments_dropped.load(Ordering::Relaxed),
            )
            .kv("utterances", self.utterances.load(Ordering::Relaxed))
            .kv(
                "rejected_non_speech",
                self.rejected_non_speech.load(Ordering::Relaxed),
            )
            .kv(
                "ignored_while_speaking",
                self.ignored_while_speaking.load(Ordering::Relaxed),
            )
            .kv("interrupts", self.interrupts.load(Ordering::Relaxed))
            .kv("speaking", self.speaking())
            .kv("mean_real_time_factor", format!("{rtf:.3}"))
            .into_array()
    }
}

/// Listener thread: frames -> 16 kHz -> VAD -> segments for Whisper.
pub fn listen(
    frames: Receiver<AudioFrame>,
    segments: SyncSender<Job>,
    detector: Detector,
    mut updates: Updates,
    shared: &Shared,
    pubs: Publishers,
) {
    let mut cfg = updates.borrow_and_update().clone();
    let mut ingest: Ingest<Detector, SystemTime> = Ingest::new(detector, cfg.endpoint.clone());
    let mut interrupted_this_turn = false;
    let mut speech_start = SystemTime::now();
    while !shared.stop.load(Ordering::SeqCst) {
        let msg = match frames.recv_timeout(POLL) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if updates.has_changed().unwrap_or(false) {
            cfg = updates.borrow_and_update().clone();
            ingest.set_config(cfg.endpoint.clone());
        }
        let arrived = SystemTime::now();
        let frame = match frames::decode(&msg, cfg.max_frame_s) {
            Ok(f) => f,
            Err(e) => {
                shared.drop_frame(&e.to_string());
                continue;
            }
        };
        let audible = shared.robot_audible(cfg.echo_guard);
        if !audible {
            interrupted_this_turn = false;
        }
        // Half-duplex: ignore input while the robot is audible, unless barge-in.
        let listen = !audible || cfg.barge_in;
        if !listen && ingest.in_speech() {
            shared
                .ignored_while_speaking
                .fetch_add(1, Ordering::Relaxed);
        }
        let out = match ingest.push(frame.sample_rate, &frame.samples, arrived, listen) {
            Ok(o) => o,
            Err(e) => {
                shared.drop_frame(&e.to_string());
                continue;
            }
        };
        if let (Some(publ), false) = (&pubs.normalized, out.normalized.is_empty()) {
            let mut f = frames::mono_s16(
                &out.normalized,
                voice_core::PIPELINE_RATE,
                &msg.header.frame_id,
                "",
            );
            f.header.stamp = msg.header.stamp.clone();
            let _ = publ.publish(&f);
        }
        for (event, when) in out.events {
            match event {
                Event::SpeechStart { .. } => {
                    speech_start = when.unwrap_or(arrived);
                    if audible && cfg.barge_in && !interrupted_this_turn {
                        interrupted_this_turn = true;
                        shared.interrupts.fetch_add(1, Ordering::Relaxed);
                        shared
                            .log
                            .info("barge-in: user speech while speaking, publishing interrupt");
                        let _ = pubs.interrupt.publish(&StringMsg {
                            data: "barge_in".into(),
                        });
                    }
                }
                Event::Segment(segment) => {
                    let job = Job {
                        segment,
                        speech_start,
                        speech_end: when.unwrap_or(arrived),
                        detected: Instant::now(),
                    };
                    match offer(&segments, job, &shared.segments_dropped) {
                        Offered::Queued => {}
                        Offered::Dropped(_) => shared.warn_throttled(
                            "speech segment dropped: Whisper is behind (queue full)",
                        ),
                        Offered::Closed => return,
                    }
                }
            }
        }
    }
}

/// Whisper thread: segments -> text; pieces of one utterance are joined and
/// published as one turn when its last piece is done.
pub fn transcribe(
    jobs: Receiver<Job>,
    mut engine: Transcriber,
    mut updates: Updates,
    shared: &Shared,
    pubs: Publishers,
) {
    let mut cfg = updates.borrow_and_update().clone();
    let run_id = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000_000)
        .unwrap_or(0);
    let mut text = String::new();
    let mut audio_s = 0.0f32;
    let mut compute_ms = 0.0f64;
    let mut first_start: Option<SystemTime> = None;
    let mut language = cfg.decode.language.clone().unwrap_or_default();
    while !shared.stop.load(Ordering::SeqCst) {
        let job = match jobs.recv_timeout(POLL) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if updates.has_changed().unwrap_or(false) {
            cfg = updates.borrow_and_update().clone();
            engine.set_decode(cfg.decode.clone());
        }
        let start = *first_start.get_or_insert(job.speech_start);
        match engine.transcribe(&job.segment.audio) {
            Ok(t) => {
                if let Some(clean) = transcript::clean(&t.text) {
                    if !text.is_empty() {
                        text.push(' ');
                    }
                    text.push_str(&clean);
                }
                language = t.language;
                audio_s += job.segment.duration_s();
                compute_ms += t.compute_ms;
                if let (Ok(mut a), Ok(mut c)) = (shared.audio_s.lock(), shared.compute_s.lock()) {
                    *a += f64::from(job.segment.duration_s());
                    *c += t.compute_ms / 1e3;
                }
            }
            Err(e) => shared
                .log
                .error(format!("transcription failed, segment skipped: {e}")),
        }
        if !job.segment.is_last {
            continue;
        }
        let final_text = std::mem::take(&mut text);
        first_start = None;
        let (dur, comp) = (
            std::mem::take(&mut audio_s),
            std::mem::take(&mut compute_ms),
        );
        if final_text.is_empty() {
            shared.rejected_non_speech.fetch_add(1, Ordering::Relaxed);
            shared
                .log
                .debug("segment had no speech-like transcript; not a turn");
            continue;
        }
        let n = shared.utterances.fetch_add(1, Ordering::Relaxed) + 1;
        let mut u = Utterance {
            turn_id: format!("{run_id}-{n}"),
            conversation_id: cfg.conversation_id.clone(),
            text: final_text.clone(),
            language: language.clone(),
            audio_duration_s: dur,
            stt_compute_ms: comp as f32,
            speech_start: stamp::from_system(start),
            speech_end: stamp::from_system(job.speech_end),
            ..Default::default()
        };
        u.header.stamp = stamp::now();
        u.end_of_speech_to_transcript_ms = stamp::ms_between(&u.speech_end, &u.header.stamp) as f32;
        shared.log.info(format!(
            "turn {}: {:?} ({:.2} s audio, whisper {:.0} ms, speech end -> transcript {:.0} ms, endpoint -> transcript {:.0} ms)",
            u.turn_id,
            final_text,
            dur,
            comp,
            u.end_of_speech_to_transcript_ms,
            job.detected.elapsed().as_secs_f64() * 1e3
        ));
        let _ = pubs.utterance.publish(&u);
        let _ = pubs.text.publish(&StringMsg { data: final_text });
    }
}
