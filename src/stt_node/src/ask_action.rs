//! The `ask` action (voice_agent/action/Ask): a question said through
//! tts_node's `say` action, then the user's next turn as the answer. Built
//! from `say` and the listen machinery, so the question is heard like any of
//! the robot's speech (its echo is not a turn, the user may barge in) and
//! the answer needs no wake word.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use r2r::voice_agent::action::{Ask, Say};
use voice_ros::action::admit;
use voice_ros::log::Log;

use crate::listen_action::{end_goal, invalid_timeout, wait_for_turn, Hearing, Outcome, Turns};
use crate::shared::Shared;

/// Longest question [characters] (tts_node's `say` limit).
pub const MAX_CHARS: usize = 4_000;
/// How long tts_node's `say` server may take to be found.
const SAY_SERVER: Duration = Duration::from_secs(10);
/// How long it has to accept the question.
const SAY_ACCEPT: Duration = Duration::from_secs(5);

/// Why a goal is refused, or `None` when it is fine.
pub fn invalid(goal: &Ask::Goal) -> Option<String> {
    if goal.question.trim().is_empty() {
        return Some("question is empty".into());
    }
    let n = goal.question.chars().count();
    if n > MAX_CHARS {
        return Some(format!("question is {n} characters, at most {MAX_CHARS}"));
    }
    invalid_timeout(goal.timeout_s)
}

/// Serves the goals of `requests`, saying each question through `say`.
pub async fn serve(
    mut requests: impl Stream<Item = r2r::ActionServerGoalRequest<Ask::Action>> + Unpin,
    say: r2r::ActionClient<Say::Action>,
    shared: Arc<Shared>,
    log: Log,
) {
    while let Some(req) = requests.next().await {
        // hearing from before the question: an answer given over it counts
        let turns = Turns::new(&shared.listening, &[], &log);
        let Some((goal, handle, cancel)) = admit(req, &shared.gate, invalid, "ask", &log) else {
            continue;
        };
        log.info(format!(
            "ask goal {} accepted: {:?} (timeout {:.1} s)",
            turns.id(),
            goal.question,
            goal.timeout_s
        ));
        tokio::spawn(run_goal(
            handle,
            cancel,
            turns,
            goal,
            say.clone(),
            shared.clone(),
            log.clone(),
        ));
    }
}

fn feedback(stage: &str, turn_id: &str, partial: &str) -> Ask::Feedback {
    Ask::Feedback {
        stage: stage.into(),
        turn_id: turn_id.into(),
        partial: partial.into(),
    }
}

fn not_answered(reason: &str) -> Ask::Result {
    Ask::Result {
        reason: reason.into(),
        ..Default::default()
    }
}

/// How saying the question ended.
enum Asked {
    /// Said in full, or cut by the user's speech (barge-in): listen.
    Said,
    /// The user answered while it was said.
    Answered(crate::listen_action::Heard),
    Cancelled,
    NotSaid(String),
}

/// Cancels the question's say goal (bounded: tts_node may be gone).
async fn stop(said: &r2r::ActionClientGoal<Say::Action>) {
    if let Ok(f) = said.cancel() {
        let _ = tokio::time::timeout(SAY_ACCEPT, f).await;
    }
}

/// Says the question and waits for the say goal's end, hearing meanwhile.
async fn ask(
    g: &mut r2r::ActionServerGoal<Ask::Action>,
    cancel: &mut (impl Stream<Item = r2r::ActionServerCancelRequest> + Unpin),
    turns: &mut Turns,
    question: &str,
    say: &r2r::ActionClient<Say::Action>,
) -> Asked {
    // a goal sent before the server is discovered is lost: wait for it
    match r2r::Node::is_available(say) {
        Ok(found) => {
            if tokio::time::timeout(SAY_SERVER, found).await.is_err() {
                return Asked::NotSaid(format!(
                    "no say action server found in {} s (is tts_node running in this namespace?)",
                    SAY_SERVER.as_secs()
                ));
            }
        }
        Err(e) => return Asked::NotSaid(format!("say action client: {e}")),
    }
    let request = match say.send_goal_request(Say::Goal {
        text: question.into(),
        ..Default::default() // the node's volume and pace
    }) {
        Ok(r) => r,
        Err(e) => return Asked::NotSaid(format!("say goal not sent: {e}")),
    };
    let (said, result, _fb) = match tokio::time::timeout(SAY_ACCEPT, request).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => return Asked::NotSaid(format!("say goal refused: {e}")),
        Err(_) => {
            return Asked::NotSaid(format!(
                "no answer from the say action in {} s",
                SAY_ACCEPT.as_secs()
            ))
        }
    };
    tokio::pin!(result);
    let mut cancel_open = true;
    loop {
        tokio::select! {
            c = cancel.next(), if cancel_open => match c {
                Some(c) => {
                    c.accept();
                    stop(&said).await;
                    return Asked::Cancelled;
                }
                None => cancel_open = false,
            },
            r = &mut result => return match r {
                Ok((_, r)) if r.spoken || r.reason == "interrupted" => Asked::Said,
                Ok((status, r)) => Asked::NotSaid(format!("say goal ended {status:?}: {}", r.reason)),
                Err(e) => Asked::NotSaid(format!("say goal lost: {e}")),
            },
            h = turns.next() => match h {
                Some(Hearing::Partial { turn_id, text }) => {
                    let _ = g.publish_feedback(feedback("asking", &turn_id, &text));
                }
                Some(Hearing::Turn(h)) => {
                    // answered before the question was over: it stops
                    stop(&said).await;
                    return Asked::Answered(h);
                }
                None => return Asked::NotSaid("node stopping".into()),
            },
        }
    }
}

async fn run_goal(
    mut g: r2r::ActionServerGoal<Ask::Action>,
    mut cancel: impl Stream<Item = r2r::ActionServerCancelRequest> + Unpin,
    mut turns: Turns,
    goal: Ask::Goal,
    say: r2r::ActionClient<Say::Action>,
    shared: Arc<Shared>,
    log: Log,
) {
    let id = turns.id();
    // the question heard back is the robot's own words, not an answer
    shared.robot_said(&goal.question);
    let _ = g.publish_feedback(feedback("asking", "", ""));
    let outcome = match ask(&mut g, &mut cancel, &mut turns, &goal.question, &say).await {
        Asked::Said => {
            let _ = g.publish_feedback(feedback("listening", "", ""));
            let timeout = Duration::from_secs_f32(goal.timeout_s);
            let goal = &mut g; // owned by the closure: the future stays Send
            wait_for_turn(&mut turns, timeout, &mut cancel, move |turn_id, text| {
                let _ = goal.publish_feedback(feedback("listening", turn_id, text));
            })
            .await
        }
        Asked::Answered(h) => Outcome::Heard(h),
        Asked::Cancelled => Outcome::Cancelled,
        Asked::NotSaid(why) => {
            drop(turns);
            log.warn(format!("ask goal {id}: the question was not said: {why}"));
            if let Err(e) = g.abort(not_answered("not said")) {
                log.warn(format!("ask goal {id}: could not send its result: {e}"));
            }
            return;
        }
    };
    drop(turns);
    end_goal(
        &mut g,
        outcome,
        "ask",
        id,
        &log,
        |heard, reason| match heard {
            Some(h) => Ask::Result {
                answered: true,
                reason: String::new(),
                turn_id: h.turn_id,
                text: h.text,
                language: h.language,
                confidence: h.confidence,
                audio_duration_s: h.audio_duration_s,
            },
            None => not_answered(reason),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_are_validated_with_the_reason() {
        let goal = |q: &str, t: f32| Ask::Goal {
            question: q.into(),
            timeout_s: t,
        };
        assert_eq!(invalid(&goal("Which room?", 10.0)), None);
        assert!(invalid(&goal("  ", 10.0)).unwrap().contains("empty"));
        assert!(invalid(&goal(&"a".repeat(4001), 10.0)).is_some());
        assert!(invalid(&goal("Which room?", 0.0))
            .unwrap()
            .contains("timeout_s"));
    }
}
