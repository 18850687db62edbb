//! tts_node's synthesis thread: text jobs -> normalized sentences -> audio jobs.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Instant;

use voice_core::chunker::{Chunker, ChunkerConfig};
use voice_core::normalize::normalize;
use voice_core::resample::resample_clip;

use crate::control::{AudioJob, Control, TextJob, Updates, POLL};
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
        // `say` text may hold many sentences: speak the first as soon as it is ready
        let mut splitter = Chunker::new(ChunkerConfig::default());
        let mut sentences = splitter.push(&job.text);
        sentences.push(splitter.finish());
        sentences.retain(|s| !s.trim().is_empty());
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
            let text = normalize(&sentence);
            let t0 = Instant::now();
            let mut samples = match engine.synthesize(
                &text,
                job.rate,
                job.language.as_deref(),
                &ctl.cancel_now,
            ) {
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
                *s = (*s * job.volume.unwrap_or(p.volume)).clamp(-1.0, 1.0);
            }
            // the pause after a sentence; a chunk cut inside one (a reply's
            // first words, a clause) runs on into the next without it
            if !samples.is_empty() && ends_sentence(&sentence) {
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
