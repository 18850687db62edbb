//! The `chat` action (voice_agent/action/Chat): the robot's LLM for other
//! nodes, without speaking. A goal is a turn like any other on the engine
//! (same model, scheduler and history), whose output [`Chats`] routes to the
//! goal instead of `reply/chunk` / `reply/text`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use r2r::voice_agent::action::Chat;
use tokio::sync::mpsc;
use voice_core::scheduler::TurnRequest;
use voice_ros::action::admit;
use voice_ros::log::Log;

use crate::engine::Command;
use crate::turn::Chunk;

/// Longest prompt a goal may give [characters].
pub const MAX_CHARS: usize = 8_000;
/// After a final chunk, how long a goal waits for the whole reply before it
/// takes the chunks as the reply (a turn closed without one).
const REPLY_AFTER_FINAL: Duration = Duration::from_secs(1);

/// How long a cancelled goal waits for its turn's end.
const CANCEL_BOUND: Duration = Duration::from_secs(5);

/// What the engine produced for a goal's turn.
#[derive(Debug)]
pub enum Event {
    Chunk(Chunk),
    /// The whole reply (after the final chunk).
    Reply(String),
    /// The turn ended without a reply (dropped, superseded, merged, failed).
    Ended(String),
}

/// The turns of waiting goals, by turn id.
#[derive(Default)]
pub struct Chats {
    routes: Mutex<HashMap<String, mpsc::UnboundedSender<Event>>>,
    next: AtomicU64,
}

impl Chats {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Event>>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `turn_id` is a goal's (its output is not published).
    pub fn owns(&self, turn_id: &str) -> bool {
        self.lock().contains_key(turn_id)
    }

    /// Gives `e` to the goal of `turn_id`; false when it is no goal's.
    pub fn deliver(&self, turn_id: &str, e: Event) -> bool {
        match self.lock().get(turn_id) {
            Some(tx) => {
                let _ = tx.send(e);
                true
            }
            None => false,
        }
    }

    fn open(&self) -> (String, mpsc::UnboundedReceiver<Event>) {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let turn_id = format!("chat-goal-{}-{n}", std::process::id());
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(turn_id.clone(), tx);
        (turn_id, rx)
    }

    fn close(&self, turn_id: &str) {
        self.lock().remove(turn_id);
    }
}

/// Why a goal is refused, or `None` when it is fine.
pub fn invalid(goal: &Chat::Goal) -> Option<String> {
    if goal.prompt.trim().is_empty() {
        return Some("prompt is empty".into());
    }
    let n = goal.prompt.chars().count();
    if n > MAX_CHARS {
        return Some(format!("prompt is {n} characters, at most {MAX_CHARS}"));
    }
    None
}

/// Serves the goals of `requests`: each a turn sent to the engine by `command`.
pub async fn serve(
    mut requests: impl Stream<Item = r2r::ActionServerGoalRequest<Chat::Action>> + Unpin,
    chats: Arc<Chats>,
    command: impl Fn(Command) + Clone + Send + 'static,
    gate: Arc<voice_ros::lifecycle::Gate>,
    log: Log,
) {
    while let Some(req) = requests.next().await {
        let Some((goal, handle, cancel)) = admit(req, &gate, invalid, "chat", &log) else {
            continue;
        };
        let (turn_id, events) = chats.open();
        let conversation_id = if goal.conversation_id.is_empty() {
            turn_id.clone()
        } else {
            goal.conversation_id.clone()
        };
        log.info(format!(
            "chat goal {turn_id} accepted (conversation {conversation_id:?})"
        ));
        let received = Instant::now();
        command(Command::Turn(TurnRequest {
            turn_id: turn_id.clone(),
            conversation_id: conversation_id.clone(),
            text: goal.prompt,
            speech_end: Default::default(),
            stt_ms: 0.0,
            received,
            replaces: None,
        }));
        tokio::spawn(run_goal(
            handle,
            cancel,
            events,
            turn_id,
            conversation_id,
            received,
            chats.clone(),
            command.clone(),
            log.clone(),
        ));
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_goal(
    mut g: r2r::ActionServerGoal<Chat::Action>,
    mut cancel: impl Stream<Item = r2r::ActionServerCancelRequest> + Unpin,
    mut events: mpsc::UnboundedReceiver<Event>,
    turn_id: String,
    conversation_id: String,
    received: Instant,
    chats: Arc<Chats>,
    command: impl Fn(Command),
    log: Log,
) {
    let mut result = Chat::Result::default();
    let mut said: Vec<String> = Vec::new();
    let mut cancelled = false;
    let mut cancel_open = true;
    // bounds on the wait once the turn is over or cancelled (the engine
    // ends every turn with a final chunk; these only guard a lost one)
    let mut final_at: Option<tokio::time::Instant> = None;
    let mut cancelled_at: Option<tokio::time::Instant> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
    let ended: Option<String> = loop {
        let until = [
            final_at.map(|t| t + REPLY_AFTER_FINAL),
            cancelled_at.map(|t| t + CANCEL_BOUND),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(far);
        let wait = tokio::time::sleep_until(until);
        tokio::select! {
            c = cancel.next(), if cancel_open && !cancelled => match c {
                Some(c) => {
                    c.accept();
                    cancelled = true;
                    cancelled_at = Some(tokio::time::Instant::now());
                    // stops its conversation's generation; the reply so far ends it
                    command(Command::Interrupt {
                        which: Some(conversation_id.clone()),
                        raised: Instant::now(),
                    });
                }
                None => cancel_open = false,
            },
            e = events.recv() => match e {
                Some(Event::Chunk(c)) => {
                    if c.index == 0 && !c.text.is_empty() {
                        result.first_chunk_ms = received.elapsed().as_secs_f32() * 1e3;
                    }
                    result.generated_tokens = result.generated_tokens.max(c.generated_tokens);
                    if !c.text.is_empty() {
                        result.chunks += 1;
                        said.push(c.text.clone());
                        let _ = g.publish_feedback(Chat::Feedback { index: c.index, chunk: c.text });
                    }
                    if c.is_final {
                        final_at = Some(tokio::time::Instant::now());
                    }
                }
                Some(Event::Reply(text)) => {
                    result.reply = text;
                    break None;
                }
                Some(Event::Ended(why)) => break Some(why),
                None => break Some("failed".into()),
            },
            () = wait => break Some("failed".into()),
        }
    };
    chats.close(&turn_id);
    if result.reply.is_empty() {
        result.reply = said.join(" ");
    }
    let sent = match (cancelled, ended) {
        (true, _) => {
            result.reason = "cancelled".into();
            g.cancel(result.clone())
        }
        (false, None) => {
            result.complete = true;
            g.succeed(result.clone())
        }
        (false, Some(why)) => {
            result.reason = why;
            g.abort(result.clone())
        }
    };
    match sent {
        Ok(()) => log.info(format!(
            "chat goal {turn_id}: {} ({} chunks, {} tokens)",
            if result.complete {
                "complete"
            } else {
                result.reason.as_str()
            },
            result.chunks,
            result.generated_tokens
        )),
        Err(e) => log.warn(format!(
            "chat goal {turn_id}: could not send its result: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_are_validated_and_routed_by_turn() {
        let goal = |p: &str| Chat::Goal {
            prompt: p.into(),
            conversation_id: String::new(),
        };
        assert_eq!(invalid(&goal("What is two plus two?")), None);
        assert!(invalid(&goal(" \n")).unwrap().contains("empty"));
        assert!(invalid(&goal(&"a".repeat(8001))).is_some());
        let chats = Chats::default();
        let (turn, mut rx) = chats.open();
        assert!(chats.owns(&turn) && !chats.owns("turn-1"));
        assert!(chats.deliver(&turn, Event::Reply("four".into())));
        assert!(matches!(rx.try_recv(), Ok(Event::Reply(t)) if t == "four"));
        assert!(!chats.deliver("turn-1", Event::Reply("x".into())));
        chats.close(&turn);
        assert!(!chats.owns(&turn));
    }
}
