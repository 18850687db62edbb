//! tts_node's synthesis thread: text jobs -> normalized sentences -> audio jobs.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Instant;

use voice_core::chunker::{Chunker, ChunkerConfig};
use voice_core::normalize::normalize;
use voice_core::resample::resample_clip;

use crate::control::{AudioJob, Control, Held, TextJob, Updates, POLL};
use crate::engine::Engine;

/// Synthesis thread: text -> sentences -> audio.
/// The engine while the node is configured (lifecycle); `None` otherwise.
pub type EngineSlot = std::sync::Mutex<Option<Engine>>;

/// Synthesis thread: text -> sentences -> audio, with the engine in `slot`
/// (text that comes while there is none is dropped and counted).
pub fn synthesize(
    jobs: Receiver<TextJob>,
    out: SyncSender<AudioJob>,
    slot: &EngineSlot,
    mut updates: Updates,
    ctl: &Control,
) {
    let mut p = updates.borrow_and_update().clone();
    while !ctl.stop.load(Ordering::SeqCst) {
        let job = match jobs.recv_timeout(POLL * 5) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut loaded = slot.lock().unwrap_or_else(|e| e.into_inner());
        let Some(engine) = loaded.as_mut() else {
            ctl.unconfigured.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let rate = engine.sample_rate();
        // a set that arrived before this text applies to it
        if updates.has_changed().unwrap_or(false) {
            p = updates.borrow_and_update().clone();
            engine.set_voice(p.voice);
        }
        let out_rate = p.output_sample_rate.unwrap_or(rate);
        let silence = (p.sentence_silence * out_rate as f32) as usize;
        ctl.cancel_now.store(false, Ordering::SeqCst);
        if !ctl.synthesizing(Some(&job)) {
            continue; // asked for before an interrupt
        }
        let voice = Voice {
            rate,
            out_rate,
            silence,
            volume: job.volume.unwrap_or(p.volume),
        };
        if job.tentative {
            hold(engine, &job, &voice, ctl);
            ctl.synthesizing(None);
            continue;
        }
        let superseded = p.drop_superseded && ctl.superseded(job.meta.as_ref());
        if !superseded && release_held(&job, &out, ctl) {
            ctl.synthesizing(None);
            continue;
        }
        // `say` text may hold many sentences: speak the first as soon as it is ready
        let sentences = sentences_of(&job.text);
        let n = sentences.len();
        if n == 0 {
            // a final chunk with no text still closes the turn, and a `say`
            // goal with nothing speakable still ends
            let _ = out.send(AudioJob {
                turn_id: job.turn_id,
                samples: Vec::new(),
                rate: out_rate,
                meta: job.meta,
                received: job.received,
                last: true,
            });
            ctl.synthesizing(None);
            continue;
        }
        for (k, sentence) in sentences.into_iter().enumerate() {
            if ctl.cleared(&job)
                || ctl.stop.load(Ordering::SeqCst)
                || (p.drop_superseded && ctl.superseded(job.meta.as_ref()))
            {
                break;
            }
            let samples = render(engine, &sentence, &job, &voice, ctl);
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
                    last: k + 1 == n,
                })
                .is_err()
            {
                return;
            }
        }
        ctl.synthesizing(None);
    }
}

/// How the node's voice renders text now (rates, pause, gain).
struct Voice {
    /// The engine's rate and the output's [Hz].
    rate: u32,
    out_rate: u32,
    /// Samples of silence after a sentence.
    silence: usize,
    volume: f32,
}

/// A text's sentences, in order (empty ones left out).
fn sentences_of(text: &str) -> Vec<String> {
    let mut splitter = Chunker::new(ChunkerConfig::default());
    let mut sentences = splitter.push(text);
    sentences.push(splitter.finish());
    sentences.retain(|s| !s.trim().is_empty());
    sentences
}

/// One sentence's audio at the output rate, with the node's gain and the
/// pause after a whole sentence; the compute is counted.
fn render(
    engine: &mut Engine,
    sentence: &str,
    job: &TextJob,
    v: &Voice,
    ctl: &Control,
) -> Vec<f32> {
    let text = normalize(sentence);
    let t0 = Instant::now();
    let mut samples =
        match engine.synthesize(&text, job.rate, job.language.as_deref(), &ctl.cancel_now) {
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
    if v.out_rate != v.rate && !samples.is_empty() {
        samples = resample_clip(v.rate, v.out_rate, &samples).unwrap_or_default();
    }
    for s in &mut samples {
        *s = (*s * v.volume).clamp(-1.0, 1.0);
    }
    // the pause after a sentence; a chunk cut inside one (a reply's first
    // words, a clause) runs on into the next without it
    if !samples.is_empty() && ends_sentence(sentence) {
        samples.extend(std::iter::repeat_n(0.0, v.silence));
    }
    if let Ok(mut a) = ctl.audio_compute.lock() {
        a.0 += samples.len() as f64 / f64::from(v.out_rate);
        a.1 += compute;
    }
    ctl.sentences.fetch_add(1, Ordering::Relaxed);
    samples
}

/// A reply's first chunk prepared before its turn is confirmed
/// (`reply/tentative`): synthesized into the held buffer, never sent.
fn hold(engine: &mut Engine, job: &TextJob, v: &Voice, ctl: &Control) {
    let t0 = Instant::now();
    let mut audio = Vec::new();
    for sentence in sentences_of(&job.text) {
        if ctl.cleared(job) || ctl.stop.load(Ordering::SeqCst) {
            return;
        }
        audio.push(render(engine, &sentence, job, v, ctl));
    }
    ctl.hold(Held {
        turn_id: job.turn_id.clone(),
        conversation_id: job
            .meta
            .as_ref()
            .map(|m| m.conversation_id.clone())
            .unwrap_or_default(),
        text: job.text.clone(),
        audio,
        rate: v.out_rate,
        synth_ms: t0.elapsed().as_secs_f64() * 1e3,
        received: job.received,
    });
}

/// A reply's first chunk whose audio is held (the same turn, the same
/// words): sent at once. Any other reply chunk discards what is held.
/// Returns whether `job` was spoken from the held audio.
fn release_held(job: &TextJob, out: &SyncSender<AudioJob>, ctl: &Control) -> bool {
    let Some(meta) = job.meta.as_ref() else {
        return false; // a `say` leaves the held reply for its turn
    };
    let Some(h) = ctl.take_held() else {
        return false;
    };
    let same = meta.index == 0
        && !h.audio.is_empty()
        && h.turn_id == job.turn_id
        && h.text.split_whitespace().eq(job.text.split_whitespace());
    if !same {
        ctl.discard_held(h, "its turn came with another first chunk");
        return false;
    }
    ctl.held_released.fetch_add(1, Ordering::Relaxed);
    ctl.log.debug(format!(
        "turn {}: first chunk spoken from the audio held since its pause ({:.0} ms of synthesis saved)",
        h.turn_id, h.synth_ms
    ));
    let n = h.audio.len();
    for (k, samples) in h.audio.into_iter().enumerate() {
        let mut m = meta.clone();
        m.is_final = m.is_final && k + 1 == n;
        if out
            .send(AudioJob {
                turn_id: job.turn_id.clone(),
                samples,
                rate: h.rate,
                meta: Some(m),
                received: job.received,
                last: k + 1 == n,
            })
            .is_err()
        {
            break;
        }
    }
    true
}

/// Whether a chunk ends a sentence (terminal punctuation, maybe quoted).
fn ends_sentence(chunk: &str) -> bool {
    chunk
        .trim_end()
        .trim_end_matches(['"', '\'', ')', '\u{201d}', '\u{2019}'])
        .ends_with([
            '.', '!', '?', '\u{2026}', '\u{3002}', '\u{ff01}', '\u{ff1f}',
        ])
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sentence_ends() {
        for t in [
            "Going now. ",
            "Really?",
            "He said \"stop.\" ",
            "Well\u{2026}",
        ] {
            assert!(super::ends_sentence(t), "{t}");
        }
        for t in [
            "This is a classic idiom that ",
            "When you get to the lab, ",
            "",
        ] {
            assert!(!super::ends_sentence(t), "{t}");
        }
    }
}
