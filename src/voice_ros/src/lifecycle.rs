//! Managed (lifecycle) nodes: the lifecycle_msgs services and
//! `~/transition_event`, over `voice_core::lifecycle`'s state machine
//! (rclcpp_lifecycle's), so `ros2 lifecycle` and Nav2's lifecycle_manager
//! drive the nodes.
//!
//! A node's interfaces (topics, services, actions) exist from the start, in
//! every state (r2r cannot take an action server down): what the states
//! change is the node's work. The node gives a [`Managed`] that takes each
//! step (configure loads the models, cleanup frees them, deactivate stops
//! what is under way), and reads a [`Gate`]: inputs that arrive while the
//! node is not active are ignored and counted.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use futures::StreamExt;
use r2r::lifecycle_msgs::msg::{
    State as StateMsg, Transition as TransitionMsg, TransitionDescription, TransitionEvent,
};
use r2r::lifecycle_msgs::srv::{
    ChangeState, GetAvailableStates, GetAvailableTransitions, GetState,
};
use voice_core::lifecycle::{self as machine, Outcome, State, Step, Transition};

use crate::log::Log;

/// What a node does at each lifecycle step. `Err(why)` is a failure: the
/// node stays in the state it was in (rclcpp's `FAILURE`); a panic is an
/// error (error processing: cleanup, then unconfigured).
pub trait Managed: Send + 'static {
    fn step(&mut self, step: Step) -> Result<(), String>;
}

/// The node's lifecycle state as its working parts see it.
#[derive(Debug)]
pub struct Gate {
    active: AtomicBool,
    state: AtomicU8,
    ignored: AtomicU64,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            active: AtomicBool::new(false),
            state: AtomicU8::new(State::Unconfigured.id()),
            ignored: AtomicU64::new(0),
        }
    }
}

impl Gate {
    /// Whether the node is active.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Whether an input may be worked on; when not (the node is not
    /// active) it is counted as ignored.
    pub fn admit(&self) -> bool {
        let active = self.is_active();
        if !active {
            self.ignored.fetch_add(1, Ordering::Relaxed);
        }
        active
    }

    /// Inputs ignored because the node was not active.
    pub fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }

    /// The current lifecycle state's label.
    pub fn label(&self) -> &'static str {
        let id = self.state.load(Ordering::SeqCst);
        State::ALL
            .iter()
            .find(|s| s.id() == id)
            .map_or("unknown", |s| s.label())
    }

    /// Why an action goal is refused when the node is not active.
    pub fn inactive_reason(&self) -> Option<String> {
        (!self.is_active()).then(|| {
            format!(
                "the node is not active (lifecycle state {}): activate it first",
                self.label()
            )
        })
    }

    fn set(&self, s: State) {
        self.state.store(s.id(), Ordering::SeqCst);
        if s != State::Active {
            self.active.store(false, Ordering::SeqCst);
        }
    }

    fn open(&self) {
        self.active.store(true, Ordering::SeqCst);
    }
}

/// A node's lifecycle: the state machine, the node's steps, the gate.
pub struct Lifecycle<M: Managed> {
    state: Mutex<State>,
    node: Mutex<M>,
    gate: Arc<Gate>,
    /// r2r's publisher is Send, not Sync: one user at a time.
    events: Mutex<r2r::Publisher<TransitionEvent>>,
    log: Log,
}

impl<M: Managed> Lifecycle<M> {
    /// Creates `~/transition_event` and the lifecycle services on `node`;
    /// the node starts unconfigured. Serve the services with the returned
    /// future (a task).
    pub fn new(
        node: &mut r2r::Node,
        log: &Log,
        steps: M,
        gate: Arc<Gate>,
    ) -> Result<(Arc<Self>, impl std::future::Future<Output = ()> + Send)> {
        let events = node.create_publisher::<TransitionEvent>(
            "~/transition_event",
            r2r::QosProfile::default().reliable().keep_last(10),
        )?;
        let lc = Arc::new(Self {
            state: Mutex::new(State::Unconfigured),
            node: Mutex::new(steps),
            gate,
            events: Mutex::new(events),
            log: log.clone(),
        });
        let serve = services(node, lc.clone())?;
        Ok((lc, serve))
    }

    /// The current state.
    pub fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Configures and activates (an unmanaged node starts so); the first
    /// failure's reason.
    pub fn bring_up(&self) -> Result<(), String> {
        for label in ["configure", "activate"] {
            // the caller reports a failure (the node does not start)
            self.transition(0, label, false)?;
        }
        Ok(())
    }

    /// Takes the transition asked for by `label` (or `id` when the label is
    /// empty), running the node's step on the calling thread (it may load
    /// models: call it where blocking is fine). `Ok` when the transition
    /// succeeded, else why not.
    pub fn change(&self, id: u8, label: &str) -> Result<(), String> {
        self.transition(id, label, true)
    }

    /// [`Self::change`]; a failure is logged when `log_failure`.
    fn transition(&self, id: u8, label: &str, log_failure: bool) -> Result<(), String> {
        let (t, step) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (t, step) = machine::request(*state, id, label).inspect_err(|why| {
                if log_failure {
                    self.log.warn(format!("lifecycle: refused: {why}"));
                }
            })?;
            *state = t.goal;
            (t, step)
        };
        // nothing new is worked on from the moment the node leaves active
        self.gate.set(t.goal);
        self.publish(t);
        self.log
            .debug(format!("lifecycle: {} -> {}", t.label, t.goal.label()));
        let (outcome, why) = match self.run_step(step) {
            Ok(()) => (Outcome::Success, String::new()),
            Err(Some(why)) => {
                if log_failure {
                    self.log
                        .error(format!("lifecycle: {} failed: {why}", t.label));
                }
                (Outcome::Failure, why)
            }
            Err(None) => (Outcome::Error, "the step panicked".to_string()),
        };
        let done = self.finish(t.goal, outcome);
        if done.goal == State::ErrorProcessing {
            // rclcpp's on_error: the node cleans up, then is unconfigured
            let cleaned = match self.run_step(Step::Cleanup) {
                Ok(()) => Outcome::Success,
                Err(_) => Outcome::Failure,
            };
            self.finish(State::ErrorProcessing, cleaned);
        }
        match outcome {
            Outcome::Success => Ok(()),
            // the node is where the state machine put it: back where it
            // was, or unconfigured after an error
            _ => Err(format!("{}: {why}", t.label)),
        }
    }

    /// The node's step; `Err(Some(why))` a failure, `Err(None)` a panic.
    fn run_step(&self, step: Step) -> Result<(), Option<String>> {
        let run = std::panic::AssertUnwindSafe(|| {
            self.node
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .step(step)
        });
        match std::panic::catch_unwind(run) {
            Ok(r) => r.map_err(Some),
            Err(_) => {
                self.log
                    .error(format!("lifecycle: the node's {step:?} step panicked"));
                Err(None)
            }
        }
    }

    /// Completes the transition out of `from`; the transition taken.
    fn finish(&self, from: State, outcome: Outcome) -> Transition {
        let done = machine::complete(from, outcome).expect("every transition state completes");
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = done.goal;
        self.gate.set(done.goal);
        if done.goal == State::Active {
            self.gate.open();
        }
        self.publish(done);
        self.log.info(format!("lifecycle: {}", done.goal.label()));
        done
    }

    fn publish(&self, t: Transition) {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let e = TransitionEvent {
            timestamp,
            transition: transition_msg(&t),
            start_state: state_msg(t.start),
            goal_state: state_msg(t.goal),
        };
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = events.publish(&e) {
            self.log
                .debug(format!("~/transition_event publish failed: {e}"));
        }
    }
}

fn state_msg(s: State) -> StateMsg {
    StateMsg {
        id: s.id(),
        label: s.label().into(),
    }
}

fn transition_msg(t: &Transition) -> TransitionMsg {
    TransitionMsg {
        id: t.id,
        label: t.label.into(),
    }
}

fn descriptions(ts: Vec<Transition>) -> Vec<TransitionDescription> {
    ts.iter()
        .map(|t| TransitionDescription {
            transition: transition_msg(t),
            start_state: state_msg(t.start),
            goal_state: state_msg(t.goal),
        })
        .collect()
}

/// A node's lifecycle, started: the services served (a task of `tasks`);
/// a `managed` node waits unconfigured for a manager, any other is
/// configured and activated here (its models loaded before it returns; the
/// failure's reason otherwise).
pub fn start<M: Managed>(
    node: &mut r2r::Node,
    tasks: &crate::node::Tasks,
    log: &Log,
    managed: bool,
    steps: M,
    gate: Arc<Gate>,
) -> Result<Arc<Lifecycle<M>>> {
    let (lc, services) = Lifecycle::new(node, log, steps, gate)?;
    if managed {
        log.info("managed: unconfigured, waiting for a lifecycle manager (configure, activate)");
    } else {
        // may load models for seconds: the runtime's other tasks go on
        tokio::task::block_in_place(|| lc.bring_up()).map_err(anyhow::Error::msg)?;
    }
    tasks.task("lifecycle", services);
    Ok(lc)
}

/// The five lifecycle services, served until the node goes.
fn services<M: Managed>(
    node: &mut r2r::Node,
    lc: Arc<Lifecycle<M>>,
) -> Result<impl std::future::Future<Output = ()> + Send> {
    let qos = r2r::QosProfile::services_default;
    let mut change = node.create_service::<ChangeState::Service>("~/change_state", qos())?;
    let mut get = node.create_service::<GetState::Service>("~/get_state", qos())?;
    let mut states =
        node.create_service::<GetAvailableStates::Service>("~/get_available_states", qos())?;
    let mut available = node
        .create_service::<GetAvailableTransitions::Service>("~/get_available_transitions", qos())?;
    let mut graph =
        node.create_service::<GetAvailableTransitions::Service>("~/get_transition_graph", qos())?;
    Ok(async move {
        loop {
            tokio::select! {
                Some(r) = change.next() => {
                    // a step may load a model for seconds: off the runtime,
                    // and the other services keep answering meanwhile
                    let lc = lc.clone();
                    tokio::spawn(async move {
                        let t = r.message.transition.clone();
                        let lc2 = lc.clone();
                        let done = tokio::task::spawn_blocking(move || lc2.change(t.id, &t.label))
                            .await
                            .unwrap_or_else(|_| Err("the transition panicked".into()));
                        let _ = r.respond(ChangeState::Response { success: done.is_ok() });
                    });
                }
                Some(r) = get.next() => {
                    let _ = r.respond(GetState::Response { current_state: state_msg(lc.state()) });
                }
                Some(r) = states.next() => {
                    let available_states = State::ALL.iter().map(|s| state_msg(*s)).collect();
                    let _ = r.respond(GetAvailableStates::Response { available_states });
                }
                Some(r) = available.next() => {
                    let available_transitions = descriptions(machine::available(lc.state()));
                    let _ = r.respond(GetAvailableTransitions::Response { available_transitions });
                }
                Some(r) = graph.next() => {
                    let available_transitions = descriptions(machine::graph());
                    let _ = r.respond(GetAvailableTransitions::Response { available_transitions });
                }
                else => break,
            }
        }
    })
}

/// Hands a node's loaded engine(s) from the lifecycle step that loads them
/// (configure) to the thread that runs them, and back for freeing
/// (cleanup): the thread drops them itself, where they live.
pub struct Handoff<T> {
    slot: Mutex<Option<T>>,
    /// A thread holds the engines.
    held: AtomicBool,
    /// The step wants them back.
    recalled: AtomicBool,
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Self {
            slot: Mutex::new(None),
            held: AtomicBool::new(false),
            recalled: AtomicBool::new(false),
        }
    }
}

/// How often a waiting thread or step looks again.
const HANDOFF_POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl<T> Handoff<T> {
    /// Offers loaded engines to the thread (configure).
    pub fn offer(&self, engines: T) {
        self.recalled.store(false, Ordering::SeqCst);
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(engines);
    }

    /// The thread: waits for engines, `None` once `stop` is set.
    pub fn take(&self, stop: &AtomicBool) -> Option<T> {
        while !stop.load(Ordering::SeqCst) {
            // held is set under the slot's lock: a recall sees it
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = slot.take() {
                self.held.store(true, Ordering::SeqCst);
                return Some(t);
            }
            drop(slot);
            std::thread::sleep(HANDOFF_POLL);
        }
        None
    }

    /// The thread: whether to stop running and drop the engines.
    pub fn recalled(&self) -> bool {
        self.recalled.load(Ordering::SeqCst)
    }

    /// The thread: the engines are dropped.
    pub fn released(&self) {
        self.held.store(false, Ordering::SeqCst);
    }

    /// The step (cleanup, shutdown): takes the engines back and waits, at
    /// most `timeout`, until the thread has dropped them; whether it did.
    pub fn recall(&self, timeout: std::time::Duration) -> bool {
        self.recalled.store(true, Ordering::SeqCst);
        drop(self.slot.lock().unwrap_or_else(|e| e.into_inner()).take());
        let end = std::time::Instant::now() + timeout;
        while self.held.load(Ordering::SeqCst) {
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(HANDOFF_POLL);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine that says when it is dropped.
    struct Engine(Arc<AtomicBool>);
    impl Drop for Engine {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn engines_go_to_the_thread_and_are_dropped_there_on_recall() {
        let handoff = Arc::new(Handoff::<Engine>::default());
        let stop = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(AtomicU64::new(0));
        let thread = {
            let (handoff, stop, runs) = (handoff.clone(), stop.clone(), runs.clone());
            std::thread::spawn(move || {
                while let Some(engine) = handoff.take(&stop) {
                    runs.fetch_add(1, Ordering::SeqCst);
                    while !handoff.recalled() && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    drop(engine);
                    handoff.released();
                }
            })
        };
        for round in 1..=2 {
            let dropped = Arc::new(AtomicBool::new(false));
            handoff.offer(Engine(dropped.clone()));
            while runs.load(Ordering::SeqCst) < round {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert!(!dropped.load(Ordering::SeqCst));
            assert!(handoff.recall(std::time::Duration::from_secs(5)));
            assert!(
                dropped.load(Ordering::SeqCst),
                "recall returned before the drop"
            );
        }
        // nothing held: a recall returns at once; an engine never taken is dropped by it
        assert!(handoff.recall(std::time::Duration::ZERO));
        stop.store(true, Ordering::SeqCst);
        thread.join().unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        handoff.offer(Engine(dropped.clone()));
        assert!(handoff.recall(std::time::Duration::ZERO));
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn the_gate_counts_what_comes_while_not_active() {
        let g = Gate::default();
        assert_eq!(g.label(), "unconfigured");
        assert!(!g.admit() && !g.admit());
        assert_eq!(g.ignored(), 2);
        assert!(g.inactive_reason().unwrap().contains("unconfigured"));
        g.set(State::Active);
        g.open();
        assert!(g.admit() && g.inactive_reason().is_none());
        g.set(State::Deactivating);
        assert!(!g.is_active() && g.label() == "deactivating");
    }
}
