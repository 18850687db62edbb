//! The `listen` action (voice_agent/action/Listen): the user's next turn, as
//! a result, for a behaviour tree that asked something and waits for the
//! answer. Whisper's thread tells the goals what it hears ([`Listening`]);
//! each goal picks the first turn that suits it (its own wake words), or
//! ends on its timeout or a cancel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use r2r::voice_agent::action::Listen;
use tokio::sync::broadcast;
use voice_ros::action::admit;
use voice_ros::log::Log;

/// Longest a goal may wait [s].
pub const MAX_TIMEOUT_S: f32 = 3600.0;
/// Most wake phrases a goal may give, and their longest [characters].
pub const MAX_WAKE_WORDS: usize = 16;
pub const MAX_WAKE_CHARS: usize = 100;
/// How much longer than its timeout a goal waits for a turn the user is
/// still speaking.
pub const GRACE: Duration = Duration::from_secs(15);
/// Events kept for goals that are behind.
const EVENTS: usize = 64;

/// A turn, as a goal's result gives it.
#[derive(Debug, Clone, Default)]
pub struct Heard {
    pub turn_id: String,
    pub text: String,
    pub language: String,
    pub confidence: f32,
    pub audio_duration_s: f32,
}

/// What Whisper's thread hears, for the goals.
#[derive(Debug, Clone)]
pub enum Event {
    /// A hypothesis of the turn being spoken.
    Partial { turn_id: String, text: String },
    /// A turn, published on `transcript`.
    Turn(Heard),
    /// What was spoken is not a turn (noise, echo, not addressed).
    NotATurn { turn_id: String },
}

/// The goals waiting, as Whisper's thread sees them.
pub struct Listening {
    events: broadcast::Sender<Event>,
    /// The wake phrases of each waiting goal (empty: any turn).
    waiting: Mutex<HashMap<u64, Vec<Vec<String>>>>,
    next: AtomicU64,
    /// Events a goal missed because it was behind.
    pub lagged: AtomicU64,
}

impl Default for Listening {
    fn default() -> Self {
        Self {
            events: broadcast::channel(EVENTS).0,
            waiting: Mutex::default(),
            next: AtomicU64::new(1),
            lagged: AtomicU64::new(0),
        }
    }
}

impl Listening {
    /// Tells the waiting goals (none listening: nothing to do).
    pub fn tell(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// Goals waiting now.
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    /// Whether a waiting goal takes `text` as its answer: one without wake
    /// words takes any turn, so the node's wake words are not needed for it.
    pub fn expects(&self, text: &str) -> bool {
        self.lock()
            .values()
            .any(|w| w.is_empty() || voice_core::wake::addressed(text, w))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<Vec<String>>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a goal: its id and its events from now on.
    fn register(&self, wake: Vec<Vec<String>>) -> (u64, broadcast::Receiver<Event>) {
        let rx = self.events.subscribe();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, wake);
        (id, rx)
    }

    fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// Why a goal's timeout is refused, or `None` when it is fine.
pub fn invalid_timeout(t: f32) -> Option<String> {
    (!(t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_S))
        .then(|| format!("timeout_s must be in (0, {MAX_TIMEOUT_S}] s, got {t}"))
}

/// Why a goal is refused, or `None` when it is fine.
pub fn invalid(goal: &Listen::Goal) -> Option<String> {
    if let Some(why) = invalid_timeout(goal.timeout_s) {
        return Some(why);
    }
    if goal.wake_words.len() > MAX_WAKE_WORDS {
        return Some(format!(
            "{} wake phrases, at most {MAX_WAKE_WORDS}",
            goal.wake_words.len()
        ));
    }
    for w in &goal.wake_words {
        let n = w.chars().count();
        if n > MAX_WAKE_CHARS {
            return Some(format!(
                "a wake phrase is {n} characters, at most {MAX_WAKE_CHARS}"
            ));
        }
        if voice_core::transcript::normalize_words(w).is_empty() {
            return Some(format!("wake phrase {w:?} has no word"));
        }
    }
    None
}

/// A goal's view of what is heard: registered while it lives (so the
/// node's wake words are not needed for it when it has none of its own).
pub struct Turns {
    id: u64,
    events: broadcast::Receiver<Event>,
    wake: Vec<Vec<String>>,
    /// The turn being spoken (a hypothesis seen, no turn or rejection since).
    speaking: Option<String>,
    listening: Arc<Listening>,
    log: Log,
}

/// What a goal hears next.
pub enum Hearing {
    /// A hypothesis of the turn being spoken.
    Partial { turn_id: String, text: String },
    /// A turn that suits the goal.
    Turn(Heard),
}

impl Turns {
    /// Starts hearing for a goal with these wake phrases (empty: any turn).
    pub fn new(listening: &Arc<Listening>, wake_words: &[String], log: &Log) -> Self {
        let wake: Vec<Vec<String>> = wake_words
            .iter()
            .map(|w| voice_core::transcript::normalize_words(w))
            .collect();
        let (id, events) = listening.register(wake.clone());
        Self {
            id,
            events,
            wake,
            speaking: None,
            listening: listening.clone(),
            log: log.clone(),
        }
    }

    /// The goal's number (for the log).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the user is speaking a turn now.
    pub fn user_speaking(&self) -> bool {
        self.speaking.is_some()
    }

    /// The next hypothesis or suitable turn; `None` when the node stops.
    pub async fn next(&mut self) -> Option<Hearing> {
        loop {
            match self.events.recv().await {
                Ok(Event::Partial { turn_id, text }) => {
                    self.speaking = Some(turn_id.clone());
                    return Some(Hearing::Partial { turn_id, text });
                }
                Ok(Event::Turn(h)) => {
                    self.speaking = None;
                    if self.wake.is_empty() || voice_core::wake::addressed(&h.text, &self.wake) {
                        return Some(Hearing::Turn(h));
                    }
                }
                Ok(Event::NotATurn { turn_id }) => {
                    if self.speaking.as_deref() == Some(turn_id.as_str()) {
                        self.speaking = None;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.listening.lagged.fetch_add(n, Ordering::Relaxed);
                    self.log
                        .warn(format!("goal {}: {n} events missed (goal behind)", self.id));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Turns {
    fn drop(&mut self) {
        self.listening.unregister(self.id);
    }
}

/// How waiting for a turn ended.
pub enum Outcome {
    Heard(Heard),
    Timeout,
    Cancelled,
}

/// Waits for a suitable turn until `timeout` has passed (and up to
/// [`GRACE`] more for a turn the user is speaking then), or a cancel;
/// `feedback` gets each hypothesis.
pub async fn wait_for_turn(
    turns: &mut Turns,
    timeout: Duration,
    cancel: &mut (impl Stream<Item = r2r::ActionServerCancelRequest> + Unpin),
    mut feedback: impl FnMut(&str, &str),
) -> Outcome {
    let deadline = tokio::time::Instant::now() + timeout;
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    let mut extended = false;
    let mut cancel_open = true;
    loop {
        tokio::select! {
            c = cancel.next(), if cancel_open => match c {
                Some(c) => {
                    c.accept();
                    return Outcome::Cancelled;
                }
                None => cancel_open = false,
            },
            () = &mut timer => {
                if turns.user_speaking() && !extended {
                    extended = true;
                    timer.as_mut().reset(deadline + GRACE);
                    continue;
                }
                return Outcome::Timeout;
            }
            h = turns.next() => match h {
                Some(Hearing::Partial { turn_id, text }) => feedback(&turn_id, &text),
                Some(Hearing::Turn(h)) => return Outcome::Heard(h),
                None => return Outcome::Timeout,
            },
        }
    }
}

/// Serves the goals of `requests`.
pub async fn serve(
    mut requests: impl Stream<Item = r2r::ActionServerGoalRequest<Listen::Action>> + Unpin,
    listening: Arc<Listening>,
    gate: Arc<voice_ros::lifecycle::Gate>,
    log: Log,
) {
    while let Some(req) = requests.next().await {
        // hearing before the goal is accepted: no turn published after the
        // client learns of the acceptance can be missed (a refused goal's
        // registration ends with it)
        let turns = Turns::new(&listening, &req.goal.wake_words, &log);
        let Some((goal, handle, cancel)) = admit(req, &gate, invalid, "listen", &log) else {
            continue;
        };
        log.info(format!(
            "listen goal {} accepted (timeout {:.1} s{})",
            turns.id(),
            goal.timeout_s,
            if goal.wake_words.is_empty() {
                String::new()
            } else {
                format!(", wake words {:?}", goal.wake_words)
            }
        ));
        let timeout = Duration::from_secs_f32(goal.timeout_s);
        tokio::spawn(run_goal(handle, cancel, turns, timeout, log.clone()));
    }
}

async fn run_goal(
    mut g: r2r::ActionServerGoal<Listen::Action>,
    mut cancel: impl Stream<Item = r2r::ActionServerCancelRequest> + Unpin,
    mut turns: Turns,
    timeout: Duration,
    log: Log,
) {
    // the closure owns a unique borrow of the goal: the future stays Send
    let goal = &mut g;
    let outcome = wait_for_turn(&mut turns, timeout, &mut cancel, move |turn_id, text| {
        let _ = goal.publish_feedback(Listen::Feedback {
            turn_id: turn_id.into(),
            partial: text.into(),
        });
    })
    .await;
    let id = turns.id();
    drop(turns);
    end_goal(
        &mut g,
        outcome,
        "listen",
        id,
        &log,
        |heard, reason| match heard {
            Some(h) => Listen::Result {
                heard: true,
                reason: String::new(),
                turn_id: h.turn_id,
                text: h.text,
                language: h.language,
                confidence: h.confidence,
                audio_duration_s: h.audio_duration_s,
            },
            None => Listen::Result {
                reason: reason.into(),
                ..Default::default()
            },
        },
    );
}

/// Sends a goal's end for `outcome`: succeeded with the turn, aborted on
/// the timeout, cancelled; `result` builds the action's result from the
/// turn or the reason. Logged as `name` goal `id`.
pub fn end_goal<A>(
    g: &mut r2r::ActionServerGoal<A>,
    outcome: Outcome,
    name: &str,
    id: u64,
    log: &Log,
    result: impl FnOnce(Option<Heard>, &str) -> A::Result,
) where
    A: r2r::WrappedActionTypeSupport + 'static,
{
    let (sent, what) = match outcome {
        Outcome::Heard(h) => {
            let what = format!("heard {:?} (turn {})", h.text, h.turn_id);
            (g.succeed(result(Some(h), "")), what)
        }
        Outcome::Timeout => (g.abort(result(None, "timeout")), "timeout".to_string()),
        Outcome::Cancelled => (g.cancel(result(None, "cancelled")), "cancelled".to_string()),
    };
    match sent {
        Ok(()) => log.info(format!("{name} goal {id}: {what}")),
        Err(e) => log.warn(format!("{name} goal {id}: could not send its result: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(t: f32, wake: &[&str]) -> Listen::Goal {
        Listen::Goal {
            timeout_s: t,
            wake_words: wake.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn goals_are_validated_with_the_reason() {
        assert_eq!(invalid(&goal(10.0, &[])), None);
        assert_eq!(invalid(&goal(5.0, &["robbie", "hey jarvis"])), None);
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY, 4000.0] {
            let why = invalid(&goal(bad, &[])).expect("rejected");
            assert!(why.contains("timeout_s"), "{why}");
        }
        assert!(invalid(&goal(5.0, &["  ,. "])).is_some());
        assert!(invalid(&goal(5.0, &[&"a".repeat(101)])).is_some());
        assert!(invalid(&goal(5.0, &["x"; 17])).is_some());
    }

    #[test]
    fn a_goal_without_wake_words_expects_any_turn() {
        let l = Listening::default();
        assert!(!l.expects("go to the kitchen"));
        let (a, _rx) = l.register(vec![vec!["robbie".into()]]);
        assert!(l.expects("Robby, go to the kitchen"));
        assert!(!l.expects("go to the kitchen"));
        let (b, _rx2) = l.register(vec![]);
        assert!(l.expects("go to the kitchen"));
        l.unregister(b);
        l.unregister(a);
        assert_eq!(l.waiting(), 0);
    }
}
