//! What the ROS side and the audio thread share: the bounded queues, the
//! processing settings (live parameters) and the counters for /diagnostics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::params::Processing;
use crate::process::{Framer, Processor, SampleQueue, BLOCK_MS};

/// Most audio waiting to be played [s] (tts_node runs at most ~1 s ahead).
pub const PLAYOUT_MAX_S: u32 = 10;
/// Most simulated talker audio waiting to be "spoken" into the room [s].
pub const TALKER_MAX_S: u32 = 120;

pub struct Shared {
    pub rate: u32,
    pub playout: Mutex<SampleQueue>,
    pub talker: Mutex<SampleQueue>,
    pub processing: Mutex<Processing>,
    pub stop: AtomicBool,
    /// The devices are being closed (lifecycle cleanup): the backend returns.
    pub closing: AtomicBool,
    pub frames: AtomicU64,
    pub played_samples: AtomicU64,
    /// Capture samples lost (device callback ahead of processing).
    pub capture_dropped: AtomicU64,
    /// Time spent in audio processing [ns] and audio processed [samples].
    pub proc_ns: AtomicU64,
    pub proc_samples: AtomicU64,
    pub proc_errors: AtomicU64,
    /// Blocks processed late (the simulated clock fell behind).
    pub late_blocks: AtomicU64,
    pub reopens: AtomicU64,
    /// The echo canceller's own estimates (ERLE x100 [dB], delay [ms]).
    pub erle_centi_db: AtomicU64,
    pub echo_delay_ms: AtomicU64,
    /// What the backend is doing, for /diagnostics ("open: ...", "no device: ...").
    pub state: Mutex<String>,
}

impl Shared {
    pub fn new(rate: u32, processing: Processing) -> Self {
        Self {
            rate,
            playout: Mutex::new(SampleQueue::new((rate * PLAYOUT_MAX_S) as usize)),
            talker: Mutex::new(SampleQueue::new((rate * TALKER_MAX_S) as usize)),
            processing: Mutex::new(processing),
            stop: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            frames: AtomicU64::new(0),
            played_samples: AtomicU64::new(0),
            capture_dropped: AtomicU64::new(0),
            proc_ns: AtomicU64::new(0),
            proc_samples: AtomicU64::new(0),
            proc_errors: AtomicU64::new(0),
            late_blocks: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            erle_centi_db: AtomicU64::new(0),
            echo_delay_ms: AtomicU64::new(0),
            state: Mutex::new("starting".into()),
        }
    }

    pub fn set_state(&self, s: impl Into<String>) {
        if let Ok(mut st) = self.state.lock() {
            *st = s.into();
        }
    }

    pub fn state(&self) -> String {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn processing(&self) -> Processing {
        *self.processing.lock().expect("processing lock")
    }

    /// Whether the backend is to return: the node stops, or the devices
    /// are being closed.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.closing.load(Ordering::Relaxed)
    }

    /// Share of one core the audio processing takes (time / audio time).
    pub fn load(&self) -> f64 {
        let s = self.proc_samples.load(Ordering::Relaxed) as f64 / f64::from(self.rate);
        if s > 0.0 {
            self.proc_ns.load(Ordering::Relaxed) as f64 * 1e-9 / s
        } else {
            0.0
        }
    }
}

/// Stamps for published frames: the capture time of each frame's first
/// sample, from the sample count since an anchor, never going backwards
/// (a reopened device re-anchors at the later of now and the last end).
pub struct Stamper {
    anchor: SystemTime,
    samples: u64,
    rate: u32,
}

impl Stamper {
    pub fn new(rate: u32) -> Self {
        Self {
            anchor: SystemTime::now(),
            samples: 0,
            rate,
        }
    }

    fn at(&self, samples: u64) -> SystemTime {
        self.anchor + Duration::from_secs_f64(samples as f64 / f64::from(self.rate))
    }

    /// The stamp of a frame of `n` samples; advances past it.
    pub fn next(&mut self, n: usize) -> SystemTime {
        let t = self.at(self.samples);
        self.samples += n as u64;
        t
    }

    /// After a gap (device reopened): continue from now, or from the end of
    /// the last frame if that is later.
    pub fn reanchor(&mut self) {
        let end = self.at(self.samples);
        self.anchor = SystemTime::now().max(end);
        self.samples = 0;
    }
}

/// What both backends do with each 10 ms block: the audio processing with
/// the live settings, its cost counted, frames of `frame_ms` stamped with
/// their capture time, the canceller's own figures copied for /diagnostics.
pub struct Capture {
    proc: Processor,
    framer: Framer,
    stamps: Stamper,
    blocks: u64,
}

impl Capture {
    pub fn new(shared: &Shared, frame_ms: u32) -> Self {
        let blk = (shared.rate * BLOCK_MS / 1000) as usize;
        Self {
            proc: Processor::new(shared.rate, shared.processing()),
            framer: Framer::new(blk * (frame_ms / BLOCK_MS) as usize),
            stamps: Stamper::new(shared.rate),
            blocks: 0,
        }
    }

    /// One block: `played` (the echo reference) and `mic`; a full frame
    /// goes to `emit` with the capture time of its first sample.
    pub fn block(
        &mut self,
        shared: &Shared,
        played: &[f32],
        mic: &[f32],
        emit: &mut impl FnMut(Vec<f32>, SystemTime),
    ) {
        self.proc.set(shared.processing());
        let t = Instant::now();
        let out = self.proc.block(played, mic);
        shared
            .proc_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        shared
            .proc_samples
            .fetch_add(mic.len() as u64, Ordering::Relaxed);
        if let Some(frame) = self.framer.push(out) {
            let stamp = self.stamps.next(frame.len());
            emit(frame, stamp);
        }
        self.blocks += 1;
        if self.blocks.is_multiple_of(100) {
            let (erle, delay) = self.proc.echo_stats();
            shared.erle_centi_db.store(
                erle.map_or(0, |e| (e.max(0.0) * 100.0) as u64),
                Ordering::Relaxed,
            );
            shared
                .echo_delay_ms
                .store(delay.map_or(0, |d| d.max(0) as u64), Ordering::Relaxed);
            shared
                .proc_errors
                .store(self.proc.errors, Ordering::Relaxed);
        }
    }

    /// After a gap in the capture (a reopened device, a clock that skipped).
    pub fn reanchor(&mut self) {
        self.stamps.reanchor();
    }
}
