//! The `say` action (voice_agent/action/Say): a text spoken, with feedback as
//! its sentences go out and a result when the last has been heard, or why
//! not: cancelled (the speech stops at once), preempted by a newer goal,
//! interrupted (barge-in, a stop). What a behaviour tree needs to wait for
//! speech; the `say` topic stays for fire and forget.

use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use r2r::voice_agent::action::Say;
use tokio::sync::oneshot;
use voice_core::interrupt::{Cut, Target};
use voice_core::queue::{offer, Offered};
use voice_ros::action::admit;
use voice_ros::lifecycle::Gate;
use voice_ros::log::Log;

use crate::control::{Control, Key, TextJob};

/// Longest text a goal may ask for [characters].
pub const MAX_CHARS: usize = 4_000;
/// How often a goal looks at its speech's progress.
const TICK: Duration = Duration::from_millis(20);

/// Why a goal is refused, or `None` when it is fine.
pub fn invalid(goal: &Say::Goal) -> Option<String> {
    let n = goal.text.chars().count();
    if goal.text.trim().is_empty() {
        return Some("text is empty".into());
    }
    if n > MAX_CHARS {
        return Some(format!("text is {n} characters, at most {MAX_CHARS}"));
    }
    if !(goal.volume.is_finite() && (0.0..=4.0).contains(&goal.volume)) {
        return Some(format!(
            "volume must be 0..4 (0 = the node's), got {}",
            goal.volume
        ));
    }
    if !(goal.rate == 0.0 || (goal.rate.is_finite() && (0.5..=2.0).contains(&goal.rate))) {
        return Some(format!(
            "rate must be 0.5..2 (0 = the node's), got {}",
            goal.rate
        ));
    }
    None
}

/// Whether `asked` names the language `voice` speaks: the same name, or
/// its primary subtag ("en" for "en-us").
fn same_language(asked: &str, voice: &str) -> bool {
    asked.eq_ignore_ascii_case(voice)
        || voice
            .split('-')
            .next()
            .is_some_and(|p| p.eq_ignore_ascii_case(asked))
}

/// Why a goal's `language` cannot be spoken with the loaded `voice`
/// (its language, and whether another may be chosen), or `None`.
fn language_refusal(language: &str, voice: Option<&(String, bool)>) -> Option<String> {
    let asked = language.trim();
    let (own, switchable) = voice?;
    if asked.is_empty() || same_language(asked, own) {
        return None;
    }
    if !switchable {
        return Some(format!(
            "language {asked:?}: this Piper voice speaks {own:?} only (load a Piper voice of that language)"
        ));
    }
    crate::espeak::sample_rate(asked)
        .err()
        .map(|e| format!("language {asked:?}: {e}"))
}

enum Outcome {
    Spoken,
    Cancelled,
    Preempted,
    Interrupted,
}

/// Serves the goals of `requests`: text queued to the synthesizer on `tx`.
pub async fn serve(
    mut requests: impl Stream<Item = r2r::ActionServerGoalRequest<Say::Action>> + Unpin,
    tx: SyncSender<TextJob>,
    ctl: Arc<Control>,
    gate: Arc<Gate>,
    log: Log,
) {
    let mut n = 0u64;
    // the goal being said, and how to preempt it
    let mut current: Option<oneshot::Sender<()>> = None;
    while let Some(req) = requests.next().await {
        let voice = ctl.voice.lock().map(|v| v.clone()).unwrap_or_default();
        let refuse = move |g: &Say::Goal| {
            invalid(g).or_else(|| language_refusal(&g.language, voice.as_ref()))
        };
        let Some((goal, mut handle, cancel)) = admit(req, &gate, refuse, "say", &log) else {
            continue;
        };
        // a newer goal preempts the one being said
        if let Some(older) = current.take() {
            let _ = older.send(());
        }
        n += 1;
        let turn = format!("say-goal-{n}");
        let mut job = TextJob::say(turn.clone(), goal.text);
        job.volume = (goal.volume > 0.0).then_some(goal.volume);
        job.rate = (goal.rate > 0.0).then_some(goal.rate);
        let own = ctl
            .voice
            .lock()
            .ok()
            .and_then(|v| v.as_ref().map(|(l, _)| l.clone()));
        let language = goal.language.trim();
        job.language = (!language.is_empty() && !own.is_some_and(|o| same_language(language, &o)))
            .then(|| language.to_string());
        let key = Key::of(&job);
        ctl.watch(&turn);
        if !matches!(offer(&tx, job, &ctl.dropped), Offered::Queued) {
            ctl.unwatch(&turn);
            log.warn(format!("say goal {turn}: text queue full, aborted"));
            let _ = handle.abort(result(false, "queue full", Default::default()));
            continue;
        }
        log.info(format!("say goal {turn} accepted"));
        let (preempt_tx, preempt) = oneshot::channel();
        current = Some(preempt_tx);
        tokio::spawn(run_goal(
            handle,
            cancel,
            preempt,
            key,
            ctl.clone(),
            log.clone(),
        ));
    }
}

fn result(spoken: bool, reason: &str, p: crate::control::Progress) -> Say::Result {
    Say::Result {
        spoken,
        reason: reason.into(),
        seconds: p.seconds as f32,
        sentences: p.sentences,
    }
}

/// Stops the speech of `key`'s text at once (what an interrupt of its turn does).
fn stop(ctl: &Control, key: &Key, why: &str) {
    use crate::control::Asked;
    ctl.interrupt(
        Cut {
            target: Target::Turn(key.turn_id().to_string()),
            raised: Instant::now(),
        },
        why,
    );
}

async fn run_goal(
    mut g: r2r::ActionServerGoal<Say::Action>,
    mut cancel: impl Stream<Item = r2r::ActionServerCancelRequest> + Unpin,
    mut preempt: oneshot::Receiver<()>,
    key: Key,
    ctl: Arc<Control>,
    log: Log,
) {
    use crate::control::Asked;
    let turn = key.turn_id().to_string();
    let mut tick = tokio::time::interval(TICK);
    let mut sent = 0u32;
    let mut cancel_open = true;
    let mut preempt_open = true;
    let outcome = loop {
        tokio::select! {
            c = cancel.next(), if cancel_open => match c {
                Some(c) => {
                    c.accept();
                    stop(&ctl, &key, "say goal cancelled");
                    break Outcome::Cancelled;
                }
                None => cancel_open = false,
            },
            p = &mut preempt, if preempt_open => match p {
                Ok(()) => {
                    stop(&ctl, &key, "say goal preempted by a newer goal");
                    break Outcome::Preempted;
                }
                Err(_) => preempt_open = false,
            },
            _ = tick.tick() => {
                let p = ctl.progress(&turn).unwrap_or_default();
                if p.sentences != sent {
                    sent = p.sentences;
                    let _ = g.publish_feedback(Say::Feedback {
                        seconds: p.seconds as f32,
                        sentences: p.sentences,
                    });
                }
                if p.done_at.is_some_and(|t| Instant::now() >= t) {
                    break Outcome::Spoken;
                }
                if ctl.cleared(&key) {
                    break Outcome::Interrupted;
                }
            }
        }
    };
    let p = ctl.progress(&turn).unwrap_or_default();
    ctl.unwatch(&turn);
    let sent = match outcome {
        Outcome::Spoken => g.succeed(result(true, "", p)),
        Outcome::Cancelled => g.cancel(result(false, "cancelled", p)),
        Outcome::Preempted => g.abort(result(false, "preempted", p)),
        Outcome::Interrupted => g.abort(result(false, "interrupted", p)),
    };
    match sent {
        Ok(()) => log.info(format!(
            "say goal {turn}: {} ({:.2} s, {} sentences out)",
            match outcome {
                Outcome::Spoken => "spoken",
                Outcome::Cancelled => "cancelled",
                Outcome::Preempted => "preempted",
                Outcome::Interrupted => "interrupted",
            },
            p.seconds,
            p.sentences
        )),
        Err(e) => log.warn(format!("say goal {turn}: could not send its result: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_are_validated_with_the_reason() {
        let goal = |text: &str, volume: f32, rate: f32| Say::Goal {
            text: text.into(),
            volume,
            rate,
            ..Default::default()
        };
        assert_eq!(invalid(&goal("Hello.", 0.0, 0.0)), None);
        assert_eq!(invalid(&goal("Hello.", 2.0, 0.5)), None);
        assert!(invalid(&goal(" ", 0.0, 0.0)).unwrap().contains("empty"));
        assert!(invalid(&goal("Hello.", 9.0, 0.0))
            .unwrap()
            .contains("volume"));
        for bad in [0.2, 3.0, -1.0, f32::NAN] {
            assert!(
                invalid(&goal("Hello.", 0.0, bad)).unwrap().contains("rate"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_piper_voice_speaks_its_own_language_only() {
        let piper = ("en-us".to_string(), false);
        for same in ["", "en-us", "EN-US", "en"] {
            assert_eq!(language_refusal(same, Some(&piper)), None, "{same}");
        }
        let why = language_refusal("de", Some(&piper)).unwrap();
        assert!(why.contains("\"de\"") && why.contains("en-us"), "{why}");
        // not configured: the lifecycle gate refuses the goal
        assert_eq!(language_refusal("de", None), None);
        assert!(!same_language("en-gb", "en-us") && same_language("en", "en-gb"));
    }
}
