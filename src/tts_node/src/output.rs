//! tts_node's output thread: audio frames on `audio_out` paced at real time,
//! the speaker, `speaking` and `turn_stats`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use r2r::std_msgs::msg::Bool;
use r2r::voice_agent::msg::{AudioFrame, ReplyChunk, TurnStats};
use voice_ros::stamp;

use crate::control::{AudioJob, Control, Key, Updates, LEAD_S, POLL, TURN_MEMORY};
use crate::playback::Speaker;

pub struct Publishers {
    pub audio: r2r::Publisher<AudioFrame>,
    pub speaking: r2r::Publisher<Bool>,
    pub stats: r2r::Publisher<TurnStats>,
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
    // the text whose audio went out last (an interrupt that covers it stops the speech)
    let mut playing: Option<Key> = None;
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
            if playing.as_ref().is_some_and(|j| ctl.cleared(j)) {
                playing = None;
                if let Some(s) = &speaker {
                    s.stop();
                }
                speech_end = None;
                set_speaking(false);
            }
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
        if ctl.cleared(&job) {
            continue;
        }
        if p.drop_superseded && ctl.superseded(job.meta.as_ref()) {
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
                if ctl.epoch() != seen_epoch {
                    // an interrupt came: it may be about other speech
                    seen_epoch = ctl.epoch();
                    interrupted = ctl.cleared(&job);
                }
                if interrupted || ctl.stop.load(Ordering::SeqCst) {
                    interrupted = true;
                    break;
                }
                set_speaking(true);
                let mut f = voice_ros::frames::mono_s16(frame, job.rate, "speaker", &job.turn_id);
                f.header.stamp = stamp::from_system(start_wall + offset);
                let _ = pubs.audio.publish(&f);
                ctl.note_frame(&job.turn_id, frame.len() as f64 / f64::from(job.rate));
                if k == 0 && track.first_audio.is_none() {
                    track.first_audio = Some((Instant::now(), SystemTime::now()));
                }
            }
            if interrupted {
                if let Some(s) = &speaker {
                    s.stop();
                }
                playing = None;
                speech_end = None;
                set_speaking(false);
                continue;
            }
            let dur = Duration::from_secs_f64(job.samples.len() as f64 / f64::from(job.rate));
            speech_end = Some(if p.realtime {
                start + dur
            } else {
                Instant::now()
            });
            playing = Some(Key::of(&job));
        }
        // a `say` goal's progress (its result waits until the last is heard)
        ctl.note_sentence(
            &job.turn_id,
            !job.samples.is_empty(),
            job.last,
            speech_end.unwrap_or_else(Instant::now),
        );
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
        end_of_turn_text_score: stt.end_of_turn_text_score,
        end_of_turn_audio_score: stt.end_of_turn_audio_score,
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
