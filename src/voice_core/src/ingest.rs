//! The listening front end of stt_node as plain logic: mono frames at any
//! rate in, 16 kHz audio and endpointing events out.
//!
//! resample -> whole VAD windows -> speech probabilities -> segmenter, with an
//! arrival clock so every event can be mapped back to when its audio arrived.

use crate::endpoint::{ArrivalClock, EndpointConfig, Event, Segmenter, SpeechDetector, WINDOW};
use crate::resample::{ResampleError, StreamResampler};
use crate::PIPELINE_RATE;

/// Windows handed to the detector at once (64 ms): fewer, larger detector calls.
pub const DETECT_BATCH_WINDOWS: usize = 2;
/// Arrival marks kept (at 20 ms frames: ~80 s of history).
const CLOCK_MARKS: usize = 4096;

/// What one pushed frame produced.
#[derive(Debug, Default)]
pub struct Output<T> {
    /// The frame's audio at 16 kHz (what was resampled so far).
    pub normalized: Vec<f32>,
    /// Endpointing events with the arrival time of their key sample
    /// (speech start: first speech sample; segment: last speech sample).
    pub events: Vec<(Event, Option<T>)>,
}

/// Errors of the front end.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Resample(#[from] ResampleError),
    #[error("speech detector failed: {0}")]
    Detector(String),
}

pub struct Ingest<D: SpeechDetector, T: Copy> {
    resampler: StreamResampler,
    pending: Vec<f32>,
    detector: D,
    segmenter: Segmenter,
    clock: ArrivalClock<T>,
    /// 16 kHz samples received so far.
    received: u64,
}

impl<D: SpeechDetector, T: Copy> Ingest<D, T> {
    pub fn new(detector: D, cfg: EndpointConfig) -> Self {
        Self {
            resampler: StreamResampler::new(PIPELINE_RATE),
            pending: Vec::new(),
            detector,
            segmenter: Segmenter::new(cfg),
            clock: ArrivalClock::new(CLOCK_MARKS),
            received: 0,
        }
    }

    /// Pushes one mono frame that arrived at time `t`. With `listen == false`
    /// (the robot is speaking, half-duplex) the audio is consumed but any
    /// utterance in progress is dropped and no events come out.
    pub fn push(
        &mut self,
        sample_rate: u32,
        samples: &[f32],
        t: T,
        listen: bool,
    ) -> Result<Output<T>, IngestError> {
        let normalized = self.resampler.push(sample_rate, samples)?;
        self.feed(normalized, t, listen)
    }

    /// Time passed with no audio (the stream stopped: a bag ended, a driver
    /// stalled): `samples` of silence at 16 kHz, at time `t`, so a pending
    /// turn is judged as if the silence had been heard. The resampler's
    /// held tail of the audio before goes first.
    pub fn push_silence(
        &mut self,
        samples: usize,
        t: T,
        listen: bool,
    ) -> Result<Output<T>, IngestError> {
        let mut x = if self.resampler.holds_samples() {
            self.resampler.flush()?
        } else {
            Vec::new()
        };
        x.resize(x.len() + samples, 0.0);
        self.feed(x, t, listen)
    }

    fn feed(&mut self, normalized: Vec<f32>, t: T, listen: bool) -> Result<Output<T>, IngestError> {
        self.received += normalized.len() as u64;
        self.clock.mark(self.received, t);
        self.pending.extend_from_slice(&normalized);
        let mut events = Vec::new();
        let batch = WINDOW * DETECT_BATCH_WINDOWS;
        let whole = self.pending.len() / batch * batch;
        if whole > 0 {
            let block: Vec<f32> = self.pending.drain(..whole).collect();
            if listen {
                let probs = self
                    .detector
                    .probabilities(&block)
                    .map_err(IngestError::Detector)?;
                for ev in self.segmenter.push(&block, &probs) {
                    let key = match &ev {
                        Event::SpeechStart { at } | Event::Resume { at } => *at,
                        Event::Segment(s) | Event::Pause(s) => s.speech_end.saturating_sub(1),
                    };
                    events.push((ev, self.clock.arrival_of(key)));
                }
            } else {
                if self.segmenter.in_speech() {
                    self.segmenter.abort();
                }
                // keep the segmenter's stream position in step with the audio
                let silent = vec![0.0; block.len() / WINDOW];
                self.segmenter.push(&block, &silent);
                self.detector.reset();
            }
        }
        Ok(Output { normalized, events })
    }

    pub fn in_speech(&self) -> bool {
        self.segmenter.in_speech()
    }

    /// Ends the utterance at its tentative end (the judge decided the turn
    /// is over); the final segment, see [`Segmenter::finish_now`].
    pub fn finish_now(&mut self) -> Option<crate::endpoint::Segment> {
        self.segmenter.finish_now()
    }

    /// The current piece of the utterance so far (for partial transcripts).
    pub fn current_audio(&self) -> Vec<f32> {
        self.segmenter.current_audio()
    }

    /// Inside an utterance, after a tentative end and no speech since.
    pub fn in_pause(&self) -> bool {
        self.segmenter.in_pause()
    }

    /// Silence since the last speech [ms] (0 when idle).
    pub fn silence_ms(&self) -> u32 {
        (self.segmenter.silence() * 1000 / u64::from(PIPELINE_RATE)) as u32
    }

    /// New endpointing parameters (a runtime parameter set).
    pub fn set_config(&mut self, cfg: EndpointConfig) {
        self.segmenter.set_config(cfg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::EnergyDetector;

    fn tone(rate: u32, secs: f32, amp: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (i as f32 * 2.0 * std::f32::consts::PI * 220.0 / rate as f32).sin() * amp)
            .collect()
    }

    fn feed(
        ing: &mut Ingest<EnergyDetector, usize>,
        rate: u32,
        x: &[f32],
        listen: bool,
    ) -> Vec<(Event, Option<usize>)> {
        let mut ev = Vec::new();
        let frame = rate as usize / 50;
        for (i, f) in x.chunks(frame).enumerate() {
            ev.extend(ing.push(rate, f, i, listen).unwrap().events);
        }
        ev
    }

    #[test]
    fn tone_bursts_at_48k_become_two_segments() {
        // silence alone ends utterances here (no tentative ends)
        let cfg = EndpointConfig {
            min_silence_ms: 500,
            max_silence_ms: 0,
            ..EndpointConfig::default()
        };
        let mut ing = Ingest::new(EnergyDetector::default(), cfg);
        let mut x = vec![0.0; 48_000];
        x.extend(tone(48_000, 1.0, 0.3));
        x.extend(vec![0.0; 48_000]);
        x.extend(tone(48_000, 0.8, 0.3));
        x.extend(vec![0.0; 48_000]);
        let ev = feed(&mut ing, 48_000, &x, true);
        let segs: Vec<_> = ev
            .iter()
            .filter_map(|(e, t)| match e {
                Event::Segment(s) => Some((s, t)),
                _ => None,
            })
            .collect();
        assert_eq!(segs.len(), 2);
        // 1 s of tone + 300 ms pad on each side
        assert!(
            (segs[0].0.duration_s() - 1.6).abs() < 0.1,
            "{}",
            segs[0].0.duration_s()
        );
        // arrival of the last speech sample: frame ~99 (2.0 s at 20 ms frames)
        let t = segs[0].1.unwrap();
        assert!((95..=105).contains(&t), "{t}");
    }

    #[test]
    fn silence_for_a_stopped_stream_ends_the_utterance() {
        // the stream stops 100 ms after the speech: without more frames no
        // segment; the missing time pushed as silence ends it
        let cfg = EndpointConfig {
            min_silence_ms: 300,
            max_silence_ms: 0,
            ..EndpointConfig::default()
        };
        let mut ing = Ingest::new(EnergyDetector::default(), cfg);
        let mut x = vec![0.0; 48_000];
        x.extend(tone(48_000, 1.0, 0.3));
        x.extend(vec![0.0; 4_800]);
        let ev = feed(&mut ing, 48_000, &x, true);
        assert!(!ev.iter().any(|(e, _)| matches!(e, Event::Segment(_))));
        assert!(ing.in_speech());
        let out = ing.push_silence(16_000 / 2, 999, true).unwrap();
        let seg = out.events.iter().find_map(|(e, t)| match e {
            Event::Segment(s) => Some((s, t)),
            _ => None,
        });
        let (seg, _) = seg.expect("the utterance ended");
        assert!(
            seg.is_last && (seg.duration_s() - 1.6).abs() < 0.1,
            "{}",
            seg.duration_s()
        );
        assert!(!ing.in_speech());
    }

    #[test]
    fn not_listening_drops_speech() {
        let mut ing = Ingest::new(EnergyDetector::default(), EndpointConfig::default());
        let mut x = vec![0.0; 16_000];
        x.extend(tone(16_000, 1.0, 0.3));
        x.extend(vec![0.0; 16_000]);
        assert!(feed(&mut ing, 16_000, &x, false).is_empty());
    }
}
