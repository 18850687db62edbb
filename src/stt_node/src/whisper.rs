//! The Whisper thread of stt_node: pieces, partial hypotheses and final
//! utterances -> `transcript/partial`, `transcript`, `transcript/text`.
//!
//! The encoder window is sized to each clip (`audio_ctx`), so a partial
//! of two seconds costs what two seconds cost, not a 30 s window. At a
//! tentative end the hypothesis is kept: when the turn then ends at that
//! pause (no speech since), the final turn reuses it instead of decoding the
//! same audio again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use r2r::std_msgs::msg::String as StringMsg;
use r2r::voice_agent::msg::{PartialTranscript, Utterance};
use voice_core::partial::Agreement;
use voice_core::transcript;
use voice_ros::lifecycle::Handoff;
use voice_ros::stamp;

use crate::engine::{EngineError, TokenProbs};
use crate::listen_action::{Event, Heard};
use crate::listener::POLL;
use crate::remote::Transcriber;
use crate::shared::{Publishers, Shared, Tentative, TurnMeta, Updates, Work};

/// The last published turn, for joining a continuation to it.
pub struct LastTurn {
    turn_id: String,
    text: String,
    speech_end: std::time::SystemTime,
    /// The words' end-of-turn score at the pause that ended it.
    text_score: Option<f32>,
}

/// One utterance's transcription state.
#[derive(Default)]
struct UttText {
    utt: u64,
    /// Text of the pieces before the current one.
    pieces: String,
    agreement: Agreement,
    revision: u32,
    partials: u32,
    lag_ms_sum: f64,
    /// The hypothesis of the last tentative end: its pause, text of the
    /// current piece, its compute [ms], its tokens' probabilities.
    tentative: Option<(u32, String, f64, TokenProbs)>,
    /// Audio of the pieces before the current one [s].
    pieces_audio_s: f32,
    /// Whisper compute of the utterance, partials included [ms].
    compute_ms: f64,
    /// Compute of the last decode [ms].
    last_ms: f64,
    /// Token probabilities of the pieces before the current one, and of the last decode.
    pieces_tokens: TokenProbs,
    last_tokens: TokenProbs,
    language: String,
}

impl UttText {
    fn joined(&self, piece: &str) -> String {
        match (self.pieces.is_empty(), piece.is_empty()) {
            (true, _) => piece.to_string(),
            (false, true) => self.pieces.clone(),
            (false, false) => format!("{} {piece}", self.pieces),
        }
    }
}

/// Whisper thread: runs with the model each configuration hands over
/// (lifecycle), until the node stops.
pub fn transcribe(
    models: &Handoff<Transcriber>,
    mut updates: Updates,
    shared: &Shared,
    pubs: Publishers,
) {
    while let Some(engine) = models.take(&shared.stop) {
        transcribe_with(engine, &mut updates, shared, &pubs, &|| models.recalled());
        // the model is dropped
        models.released();
    }
}

/// Transcribes with one configuration's model until the node stops or the
/// model is recalled (cleanup). Work that comes while the node is not
/// active is dropped (deactivate: no new turns).
fn transcribe_with(
    mut engine: Transcriber,
    updates: &mut Updates,
    shared: &Shared,
    pubs: &Publishers,
    recalled: &dyn Fn() -> bool,
) {
    let mut cfg = updates.borrow_and_update().clone();
    let mut last: Option<LastTurn> = None;
    let mut cur = UttText::default();
    // utterances whose turn was published: late partials of them are moot
    let mut finished: u64 = 0;
    while !shared.stop.load(Ordering::SeqCst) && !recalled() {
        let Some(work) = shared.work.pop(POLL) else {
            engine.idle();
            continue;
        };
        if !shared.gate.is_active() {
            shared.work_inactive.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if updates.has_changed().unwrap_or(false) {
            cfg = updates.borrow_and_update().clone();
            engine.set_decode(cfg.decode.clone(), cfg.partial_interval_ms);
        }
        let utt = work.utt();
        if utt <= finished {
            continue;
        }
        if cur.utt != utt {
            cur = UttText {
                utt,
                language: cfg.decode.language.clone().unwrap_or_default(),
                ..Default::default()
            };
        }
        match work {
            Work::Piece { audio, .. } => {
                if let Some(text) = run(&mut engine, &audio, shared, &mut cur, true) {
                    cur.pieces = cur.joined(&text);
                    cur.pieces_tokens = cur.pieces_tokens.add(cur.last_tokens);
                }
                cur.pieces_audio_s += audio.len() as f32 / voice_core::PIPELINE_RATE as f32;
                cur.tentative = None;
            }
            Work::Partial {
                audio,
                pause,
                newest,
                ..
            } => {
                let Some(text) = run(&mut engine, &audio, shared, &mut cur, false) else {
                    continue;
                };
                let full = cur.joined(&text);
                // an unfinished clause, or Whisper looping on a short clip:
                // not worth judging, the turn waits for more speech
                let open = voice_core::turn::open_ending(&full) || transcript::repeats(&full);
                if let Some(p) = pause {
                    cur.tentative = Some((p, text, cur.last_ms, cur.last_tokens));
                }
                let revision = publish_partial(
                    pubs,
                    shared,
                    &mut cur,
                    &full,
                    PartialKind::Hypothesis {
                        tentative: pause.is_some() && !open,
                        audio_s: audio.len() as f32 / voice_core::PIPELINE_RATE as f32,
                        lag: newest.elapsed(),
                    },
                    &cfg.conversation_id,
                );
                if let Some(pause) = pause {
                    *shared.tentative.lock().unwrap_or_else(|e| e.into_inner()) = Some(Tentative {
                        utt,
                        pause,
                        revision,
                        open,
                    });
                }
            }
            Work::Final {
                audio, pause, meta, ..
            } => {
                finished = utt;
                let (text, final_ms, tokens) = match cur.tentative.take() {
                    // the turn ended in the pause that was transcribed: the
                    // same speech (plus silence), the same text
                    Some((p, text, ms, tokens)) if Some(p) == pause => (Some(text), ms, tokens),
                    // none (Whisper was behind, or the pause was not judged):
                    // the decode a tentative end gets (bounded, no fallback)
                    // first; the temperature fallback only when it gives
                    // nothing or noise (a phrase it loops on is taken once,
                    // as for any transcript). The fallback can turn a short
                    // clip into a loop of variants, six decodes long (seen
                    // under load: 25 s for a 2 s command).
                    _ => match run(&mut engine, &audio, shared, &mut cur, false) {
                        Some(text)
                            if !text.is_empty()
                                && transcript::repetition(&text)
                                    != transcript::Repetition::Noise =>
                        {
                            (Some(text), cur.last_ms, cur.last_tokens)
                        }
                        _ => {
                            let text = run(&mut engine, &audio, shared, &mut cur, true);
                            (text, cur.last_ms, cur.last_tokens)
                        }
                    },
                };
                let full = cur.joined(text.as_deref().unwrap_or(""));
                let audio_s =
                    cur.pieces_audio_s + audio.len() as f32 / voice_core::PIPELINE_RATE as f32;
                let confidence = cur.pieces_tokens.add(tokens).mean();
                let turn = (full, meta, (audio_s, final_ms, confidence));
                let published = shared.utterances.load(Ordering::Relaxed);
                last = finish(pubs, shared, &mut cur, turn, &cfg, last.take());
                if shared.utterances.load(Ordering::Relaxed) == published {
                    shared.listening.tell(Event::NotATurn {
                        turn_id: shared.turn_id(utt),
                    });
                }
            }
        }
    }
}

/// Transcribes `audio`; the cleaned text, `None` on failure. Counts compute.
fn run(
    engine: &mut Transcriber,
    audio: &[f32],
    shared: &Shared,
    cur: &mut UttText,
    last: bool,
) -> Option<String> {
    let result = if last {
        engine.transcribe(audio)
    } else {
        engine.transcribe_partial(audio)
    };
    match result {
        Ok(t) => {
            let audio_s = audio.len() as f64 / f64::from(voice_core::PIPELINE_RATE);
            shared.note_compute(audio_s, t.compute_ms / 1e3);
            cur.compute_ms += t.compute_ms;
            cur.last_ms = t.compute_ms;
            cur.last_tokens = t.tokens;
            if !t.language.is_empty() {
                cur.language = t.language;
            }
            Some(transcript::clean(&t.text).unwrap_or_default())
        }
        Err(EngineError::PartialSkipped) => None,
        // the server's fault was said once, when it was lost
        Err(EngineError::Server(f)) => {
            shared.log.debug(format!("audio not transcribed: {f}"));
            None
        }
        Err(e) => {
            shared
                .log
                .error(format!("transcription failed, audio skipped: {e}"));
            None
        }
    }
}

/// ROS4HRI: a hypothesis (`incremental`) or a turn's transcript (`final`)
/// as hri_msgs/LiveSpeech, when live_speech_topic is set. `locale` stays
/// empty: Whisper gives the language, not the region.
#[cfg(hri)]
fn live_speech(
    pubs: &Publishers,
    incremental: &str,
    final_: &str,
    confidence: f32,
    language: &str,
) {
    if let Some(p) = &pubs.live_speech {
        let mut m = r2r::hri_msgs::msg::LiveSpeech {
            incremental: incremental.into(),
            final_: final_.into(),
            confidence: f64::from(confidence),
            language: language.into(),
            ..Default::default()
        };
        m.header.stamp = stamp::now();
        let _ = p.publish(&m);
    }
}

#[cfg(not(hri))]
fn live_speech(_: &Publishers, _: &str, _: &str, _: f32, _: &str) {}

enum PartialKind {
    Hypothesis {
        tentative: bool,
        audio_s: f32,
        lag: Duration,
    },
    Final,
}

/// Publishes a revision of the utterance's hypothesis; returns its number.
fn publish_partial(
    pubs: &Publishers,
    shared: &Shared,
    cur: &mut UttText,
    full: &str,
    kind: PartialKind,
    conversation_id: &str,
) -> u32 {
    let p = cur.agreement.push(full);
    cur.revision += 1;
    let mut m = PartialTranscript {
        turn_id: shared.turn_id(cur.utt),
        conversation_id: conversation_id.into(),
        revision: cur.revision,
        text: full.into(),
        stable: p.stable,
        unstable: p.unstable,
        ..Default::default()
    };
    match kind {
        PartialKind::Hypothesis {
            tentative,
            audio_s,
            lag,
        } => {
            m.tentative_end = tentative;
            m.audio_duration_s = audio_s;
            m.compute_ms = cur.compute_ms as f32;
            m.lag_ms = lag.as_secs_f32() * 1e3;
            cur.partials += 1;
            cur.lag_ms_sum += f64::from(m.lag_ms);
            shared.partials.fetch_add(1, Ordering::Relaxed);
        }
        PartialKind::Final => m.is_final = true,
    }
    if !m.is_final {
        shared.listening.tell(Event::Partial {
            turn_id: m.turn_id.clone(),
            text: full.into(),
        });
        live_speech(pubs, full, "", 0.0, &cur.language);
    }
    m.header.stamp = stamp::now();
    shared.log.debug(format!(
        "partial {} r{} ({:.0} ms of Whisper){}: {:?} + {:?}",
        m.turn_id,
        m.revision,
        cur.last_ms,
        if m.tentative_end {
            " (tentative end)"
        } else {
            ""
        },
        m.stable,
        m.unstable
    ));
    let _ = pubs.partial.publish(&m);
    cur.revision
}

/// Publishes the turn (unless nothing speech-like was heard, or it was the
/// robot's own voice heard back).
fn finish(
    pubs: &Publishers,
    shared: &Shared,
    cur: &mut UttText,
    (text, meta, (audio_s, final_ms, confidence)): (String, TurnMeta, (f32, f64, f32)),
    cfg: &crate::params::SttConfig,
    last: Option<LastTurn>,
) -> Option<LastTurn> {
    let turn_id = shared.turn_id(cur.utt);
    if text.is_empty() {
        shared.rejected_non_speech.fetch_add(1, Ordering::Relaxed);
        shared
            .log
            .debug("utterance had no speech-like transcript; not a turn");
        return last;
    }
    let text = match transcript::repetition(&text) {
        transcript::Repetition::None => text,
        transcript::Repetition::Noise => {
            shared.rejected_repetition.fetch_add(1, Ordering::Relaxed);
            shared.log.info(format!(
                "utterance {:?} is a word or two repeated over and over (Whisper looping on echo or noise): not a turn",
                text.chars().take(120).collect::<String>()
            ));
            return last;
        }
        transcript::Repetition::Phrase(once) => {
            shared.collapsed_repetition.fetch_add(1, Ordering::Relaxed);
            shared.log.info(format!(
                "utterance {:?} is one phrase repeated over and over (Whisper looping): taken as {once:?}",
                text.chars().take(120).collect::<String>()
            ));
            once
        }
        transcript::Repetition::Twice(once) => {
            shared.collapsed_repetition.fetch_add(1, Ordering::Relaxed);
            shared.log.info(format!(
                "utterance {:?} says a clause twice back to back (Whisper repeating it): taken as {once:?}",
                text.chars().take(120).collect::<String>()
            ));
            once
        }
    };
    let mut text = text;
    if meta.while_robot_spoke {
        let robot = shared.robot_words();
        let echo = transcript::overlap(&text, &robot);
        if echo >= cfg.echo_text_match {
            // a person who answered while the robot's voice still came back
            // is heard after it, in the same utterance
            let rest = transcript::without_echo(&text, &shared.robot_texts())
                .filter(|rest| transcript::overlap(rest, &robot) < cfg.echo_text_match);
            let Some(rest) = rest else {
                shared.echo_rejected.fetch_add(1, Ordering::Relaxed);
                shared.log.info(format!(
                    "utterance {text:?} heard while the robot spoke is {:.0}% its own words: echo, not a turn",
                    echo * 100.0
                ));
                return last;
            };
            shared.echo_removed.fetch_add(1, Ordering::Relaxed);
            shared.log.info(format!(
                "utterance {text:?} begins with the robot's own words heard back: the turn is {rest:?}"
            ));
            text = rest;
        }
        shared.heard_while_speaking.fetch_add(1, Ordering::Relaxed);
    }
    // wake words: a turn must address the robot, unless the user began it
    // within the follow-up window after the last turn's speech (the user's
    // clock, not how long Whisper took) or the robot's reply
    if !cfg.wake_words.is_empty() {
        let began_within = |t: std::time::SystemTime| {
            meta.speech_start
                .duration_since(t)
                .map_or(true, |d| d <= cfg.follow_up)
        };
        // a listen goal waiting for this answer: the robot asked
        let attentive = last.as_ref().is_some_and(|l| began_within(l.speech_end))
            || shared.robot_audible(cfg.follow_up)
            || shared.listening.expects(&text);
        if !attentive && !voice_core::wake::addressed(&text, &cfg.wake_words) {
            shared.not_addressed.fetch_add(1, Ordering::Relaxed);
            shared.log.info(format!(
                "utterance {text:?} does not address the robot (no wake word): not a turn"
            ));
            return last;
        }
    }
    // "... and bring me water" right after "Go to the kitchen.", or "What
    // your country can do for you." after "ask not." that the voice ended
    // while the words doubted: one request
    let continued = last.as_ref().and_then(|l| {
        let within = meta
            .speech_start
            .duration_since(l.speech_end)
            .is_ok_and(|gap| gap <= cfg.continuation);
        (within && !cfg.continuation.is_zero())
            .then(|| {
                voice_core::turn::continuation(&l.text, l.text_score, cfg.unfinished_below, &text)
            })
            .flatten()
    });
    let (text, replaces) = match (continued, last) {
        (Some(how), Some(l)) => {
            shared.continued.fetch_add(1, Ordering::Relaxed);
            if how == voice_core::turn::Continues::Unfinished {
                shared.continued_unfinished.fetch_add(1, Ordering::Relaxed);
            }
            (format!("{} {text}", l.text), l.turn_id)
        }
        _ => (text, String::new()),
    };
    publish_partial(
        pubs,
        shared,
        cur,
        &text,
        PartialKind::Final,
        &cfg.conversation_id,
    );
    shared.utterances.fetch_add(1, Ordering::Relaxed);
    let mut u = Utterance {
        turn_id: turn_id.clone(),
        conversation_id: cfg.conversation_id.clone(),
        text: text.clone(),
        language: cur.language.clone(),
        confidence,
        audio_duration_s: audio_s,
        // the decode the turn waited for (the partials ran while the user spoke)
        stt_compute_ms: final_ms as f32,
        speech_start: stamp::from_system(meta.speech_start),
        speech_end: stamp::from_system(meta.speech_end),
        end_of_turn_score: meta.score.unwrap_or(-1.0),
        end_of_turn_text_score: meta.text_score.unwrap_or(-1.0),
        end_of_turn_audio_score: meta.audio_score.unwrap_or(-1.0),
        end_of_turn_wait_ms: meta.wait_ms,
        partials: cur.partials,
        partial_lag_ms: if cur.partials > 0 {
            (cur.lag_ms_sum / f64::from(cur.partials)) as f32
        } else {
            0.0
        },
        while_robot_spoke: meta.while_robot_spoke,
        replaces: replaces.clone(),
        ..Default::default()
    };
    u.header.stamp = stamp::now();
    u.end_of_speech_to_transcript_ms = stamp::ms_between(&u.speech_end, &u.header.stamp) as f32;
    let show = |p: Option<f32>| p.map_or_else(|| "-".to_string(), |p| format!("{p:.3}"));
    let mut ended = match meta.score {
        Some(p) => format!(
            "end-of-turn score {p:.4} (words {}, voice {})",
            show(meta.text_score),
            show(meta.audio_score)
        ),
        None => format!(
            "silence (last pause: words {}, voice {})",
            show(meta.text_score),
            show(meta.audio_score)
        ),
    };
    if let Some(how) = continued.filter(|_| !replaces.is_empty()) {
        let why = match how {
            voice_core::turn::Continues::FirstWord => "its first word",
            voice_core::turn::Continues::Unfinished => "that turn's words were unfinished",
        };
        ended += &format!("; continues and replaces turn {replaces} ({why})");
    }
    shared.log.info(format!(
        "turn {turn_id}: {text:?} ({:.2} s audio, confidence {confidence:.2}, whisper {:.0} ms after the speech ({:.0} ms in all), {} partials; ended by {ended} after {:.0} ms of silence; speech end -> transcript {:.0} ms, decided -> transcript {:.0} ms)",
        audio_s,
        final_ms,
        cur.compute_ms,
        cur.partials,
        meta.wait_ms,
        u.end_of_speech_to_transcript_ms,
        meta.decided.elapsed().as_secs_f64() * 1e3
    ));
    let _ = pubs.utterance.publish(&u);
    let _ = pubs.text.publish(&StringMsg { data: text.clone() });
    live_speech(pubs, "", &text, confidence, &u.language);
    shared.listening.tell(Event::Turn(Heard {
        turn_id: turn_id.clone(),
        text: text.clone(),
        language: u.language.clone(),
        confidence,
        audio_duration_s: audio_s,
    }));
    Some(LastTurn {
        turn_id,
        text,
        speech_end: meta.speech_end,
        text_score: meta.text_score,
    })
}
