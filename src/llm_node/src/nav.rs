//! Nav2's NavigateToPose action, from llm_node's side: a spoken goal becomes
//! an action goal, its feedback the robot-state line of the prompt ("how far
//! is it?"), its outcome a sentence on `say`; a spoken stop cancels it and a
//! new goal replaces it (Nav2 preempts the running goal; its outcome is then
//! not spoken).
//!
//! r2r's action futures are not `Send`, so the client lives on its own
//! thread with a single-threaded runtime; the engine hands it requests
//! through a bounded channel ([`NavHandle`]) and never waits for it.
//!
//! Built without nav2_msgs (no `cfg(nav2)`), only the engine's end exists
//! and `nav_mode: action` is refused at start.
#![cfg_attr(not(nav2), allow(dead_code))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use r2r::geometry_msgs::msg::PoseStamped;

/// Goals and stops waiting for the client thread.
const NAV_QUEUE: usize = 8;

pub enum NavRequest {
    /// `pose` stamped with the node's ROS clock (use_sim_time).
    Go {
        place: String,
        pose: PoseStamped,
        turn_id: String,
    },
    Stop {
        turn_id: String,
    },
}

/// What became of the goals, for /diagnostics.
#[derive(Default)]
pub struct NavStats {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub arrived: AtomicU64,
    pub failed: AtomicU64,
    pub stopped: AtomicU64,
    pub replaced: AtomicU64,
    /// Requests lost because the queue to the client thread was full.
    pub dropped: AtomicU64,
}

impl NavStats {
    pub fn summary(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "sent {}, accepted {}, arrived {}, failed {}, stopped {}, replaced {}, dropped {}",
            n(&self.sent),
            n(&self.accepted),
            n(&self.arrived),
            n(&self.failed),
            n(&self.stopped),
            n(&self.replaced),
            n(&self.dropped)
        )
    }
}

/// The engine's end of the client: never blocks.
#[derive(Clone)]
pub struct NavHandle {
    tx: tokio::sync::mpsc::Sender<NavRequest>,
    pub stats: Arc<NavStats>,
    pub server: String,
}

impl NavHandle {
    /// Queues a request; false (counted) when the queue is full or the
    /// client thread has ended.
    pub fn request(&self, r: NavRequest) -> bool {
        let ok = self.tx.try_send(r).is_ok();
        if !ok {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// Why a goal did not arrive, in words for the spoken outcome: the server's
/// own message when it sent one, else the meaning of Nav2's error code.
pub fn reason(error_code: u16, error_msg: &str) -> String {
    let msg = error_msg.trim();
    if !msg.is_empty() {
        return msg.trim_end_matches('.').to_string();
    }
    match error_code {
        9001 => "navigation could not load its behavior tree",
        9002 => "navigation could not transform the goal",
        9003 => "navigation timed out",
        _ => "navigation gave up",
    }
    .to_string()
}

#[cfg(nav2)]
pub use client::spawn;

#[cfg(nav2)]
mod client {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use futures::StreamExt;
    use r2r::geometry_msgs::msg::PoseStamped;
    use r2r::nav2_msgs::action::NavigateToPose;
    use r2r::std_msgs::msg::String as StringMsg;
    use r2r::{ActionClient, ActionClientGoal, GoalStatus};
    use tokio::sync::watch;
    use voice_core::robot_state::Navigation;

    use super::{reason, NavHandle, NavRequest, NavStats, NAV_QUEUE};
    use crate::context::SharedState;
    use crate::params::LlmConfig;

    type Nav = NavigateToPose::Action;

    /// How long a goal waits for the action server to appear.
    const SERVER_WAIT: Duration = Duration::from_secs(3);
    /// How long a sent goal waits to be accepted or rejected.
    const ACCEPT_WAIT: Duration = Duration::from_secs(10);

    /// Creates the action client on `node` and starts its thread.
    pub fn spawn(
        node: &mut r2r::Node,
        server: &str,
        state: SharedState,
        updates: watch::Receiver<Arc<LlmConfig>>,
        log: voice_ros::log::Log,
    ) -> anyhow::Result<NavHandle> {
        let client = node.create_action_client::<Nav>(server)?;
        let say = node.create_publisher::<StringMsg>("say", voice_ros::node::event_qos())?;
        let (tx, rx) = tokio::sync::mpsc::channel(NAV_QUEUE);
        let stats = Arc::new(NavStats::default());
        let navigator = Navigator {
            client,
            say,
            state,
            updates,
            log,
            stats: stats.clone(),
            server: server.to_string(),
            current: Cell::new(0),
            stopped: Cell::new(0),
            active: RefCell::new(None),
        };
        std::thread::Builder::new()
            .name("nav2-client".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        navigator.log.error(format!("nav2 client: no runtime: {e}"));
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, Rc::new(navigator).run(rx));
            })?;
        Ok(NavHandle {
            tx,
            stats,
            server: server.to_string(),
        })
    }

    struct Navigator {
        client: ActionClient<Nav>,
        say: r2r::Publisher<StringMsg>,
        state: SharedState,
        updates: watch::Receiver<Arc<LlmConfig>>,
        log: voice_ros::log::Log,
        stats: Arc<NavStats>,
        server: String,
        /// Number of the goal whose outcome is spoken; bumped by every new
        /// goal and by a stop, so older goals end silently.
        current: Cell<u64>,
        /// The goal a spoken stop ended.
        stopped: Cell<u64>,
        /// The accepted goal that is still running, with its number.
        active: RefCell<Option<(u64, ActionClientGoal<Nav>)>>,
    }

    enum Outcome {
        Arrived,
        NotReached(String),
    }

    impl Navigator {
        async fn run(self: Rc<Self>, mut rx: tokio::sync::mpsc::Receiver<NavRequest>) {
            while let Some(r) = rx.recv().await {
                match r {
                    NavRequest::Go {
                        place,
                        pose,
                        turn_id,
                    } => {
                        let n = self.current.get() + 1;
                        self.current.set(n);
                        self.stats.sent.fetch_add(1, Ordering::Relaxed);
                        tokio::task::spawn_local(self.clone().drive(n, place, pose, turn_id));
                    }
                    NavRequest::Stop { turn_id } => {
                        let n = self.current.get();
                        self.stopped.set(n);
                        self.current.set(n + 1);
                        match self.active.borrow_mut().take() {
                            Some((_, goal)) => {
                                self.log.info(format!(
                                    "turn {turn_id}: stop: cancelling the goal on {}",
                                    self.server
                                ));
                                self.cancel(goal);
                            }
                            None => self.log.info(format!(
                                "turn {turn_id}: stop: no goal running on {}",
                                self.server
                            )),
                        }
                    }
                }
            }
        }

        fn cancel(&self, goal: ActionClientGoal<Nav>) {
            let log = self.log.clone();
            match goal.cancel() {
                Ok(f) => {
                    tokio::task::spawn_local(async move {
                        // a goal that already ended (preempted by Nav2) refuses
                        if let Ok(Err(e)) = tokio::time::timeout(ACCEPT_WAIT, f).await {
                            log.info(format!("cancel not applied: {e}"));
                        }
                    });
                }
                Err(e) => log.warn(format!("cancel request failed: {e}")),
            }
        }

        fn set_state(&self, n: u64, nav: Navigation) {
            if self.current.get() != n {
                return;
            }
            if let Ok(mut s) = self.state.lock() {
                s.nav = Some(nav);
            }
        }

        async fn drive(self: Rc<Self>, n: u64, name: String, pose: PoseStamped, turn_id: String) {
            self.set_state(
                n,
                Navigation::Sent {
                    place: name.clone(),
                },
            );
            let outcome = self.follow(n, &name, pose, &turn_id).await;
            if self.current.get() != n {
                // a stop or a newer goal ended it: nothing to say
                let counter = if self.stopped.get() == n {
                    if let Ok(mut s) = self.state.lock() {
                        if s.nav.as_ref().is_some_and(|v| v.place() == name) {
                            s.nav = Some(Navigation::Stopped {
                                place: name.clone(),
                            });
                        }
                    }
                    &self.stats.stopped
                } else {
                    &self.stats.replaced
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.log.info(format!(
                    "turn {turn_id}: goal to the {name} ended by a newer request"
                ));
                return;
            }
            let replies = self
                .updates
                .borrow()
                .intents
                .as_ref()
                .map(|i| i.replies.clone())
                .unwrap_or_default();
            let text = match outcome {
                Outcome::Arrived => {
                    self.stats.arrived.fetch_add(1, Ordering::Relaxed);
                    self.set_state(
                        n,
                        Navigation::Arrived {
                            place: name.clone(),
                        },
                    );
                    self.log
                        .info(format!("turn {turn_id}: arrived at the {name}"));
                    replies.outcome(&name, None)
                }
                Outcome::NotReached(why) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    self.set_state(
                        n,
                        Navigation::Failed {
                            place: name.clone(),
                            reason: why.clone(),
                        },
                    );
                    self.log
                        .warn(format!("turn {turn_id}: the {name} not reached: {why}"));
                    replies.outcome(&name, Some(&why))
                }
            };
            if let Err(e) = self.say.publish(&StringMsg { data: text }) {
                self.log.warn(format!("say publish failed: {e}"));
            }
        }

        /// Sends the goal and follows it to its end.
        async fn follow(&self, n: u64, place: &str, pose: PoseStamped, turn_id: &str) -> Outcome {
            let lost = |e: r2r::Error| Outcome::NotReached(format!("navigation failed ({e})"));
            let available = match r2r::Node::is_available(&self.client) {
                Ok(f) => f,
                Err(e) => return lost(e),
            };
            if !matches!(
                tokio::time::timeout(SERVER_WAIT, available).await,
                Ok(Ok(()))
            ) {
                return Outcome::NotReached("navigation is not running".into());
            }
            if self.current.get() != n {
                return Outcome::NotReached("replaced".into());
            }
            let goal = NavigateToPose::Goal {
                pose,
                behavior_tree: String::new(),
            };
            let sent = match self.client.send_goal_request(goal) {
                Ok(f) => f,
                Err(e) => return lost(e),
            };
            let (handle, result, mut feedback) = match tokio::time::timeout(ACCEPT_WAIT, sent).await
            {
                Ok(Ok(accepted)) => accepted,
                Ok(Err(r2r::Error::RCL_RET_ACTION_GOAL_REJECTED)) => {
                    return Outcome::NotReached("navigation refused the goal".into())
                }
                Ok(Err(e)) => return lost(e),
                Err(_) => return Outcome::NotReached("navigation did not answer".into()),
            };
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            if self.current.get() != n {
                // stopped or replaced while waiting for acceptance
                self.cancel(handle);
                return Outcome::NotReached("replaced".into());
            }
            self.log.info(format!(
                "turn {turn_id}: goal to the {place} accepted by {} ({})",
                self.server, handle.uuid
            ));
            if let Some((_, old)) = self.active.borrow_mut().replace((n, handle)) {
                // Nav2 preempts by itself; other servers may run both
                self.cancel(old);
            }
            self.set_state(
                n,
                Navigation::Driving {
                    place: place.to_string(),
                    remaining_m: None,
                    eta_s: None,
                },
            );
            let mut result = std::pin::pin!(result);
            let done = loop {
                tokio::select! {
                    r = &mut result => break r,
                    Some(f) = feedback.next() => {
                        let t = &f.estimated_time_remaining;
                        self.set_state(n, Navigation::Driving {
                            place: place.to_string(),
                            remaining_m: Some(f.distance_remaining),
                            eta_s: Some(t.sec as f32 + t.nanosec as f32 * 1e-9),
                        });
                    }
                }
            };
            {
                let mut active = self.active.borrow_mut();
                if active.as_ref().is_some_and(|(m, _)| *m == n) {
                    *active = None;
                }
            }
            match done {
                Ok((GoalStatus::Succeeded, _)) => Outcome::Arrived,
                Ok((GoalStatus::Aborted, r)) => {
                    Outcome::NotReached(reason(r.error_code, &r.error_msg))
                }
                Ok((GoalStatus::Canceled, _)) => {
                    Outcome::NotReached("the goal was cancelled".into())
                }
                Ok((status, _)) => Outcome::NotReached(format!("navigation ended ({status:?})")),
                Err(e) => lost(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_prefer_the_servers_message() {
        assert_eq!(reason(9000, "No valid path found."), "No valid path found");
        assert_eq!(reason(9003, "  "), "navigation timed out");
        assert_eq!(reason(0, ""), "navigation gave up");
    }

    #[test]
    fn a_full_queue_counts_the_drop() {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let h = NavHandle {
            tx,
            stats: Arc::default(),
            server: "navigate_to_pose".into(),
        };
        let stop = || NavRequest::Stop {
            turn_id: "t".into(),
        };
        assert!(h.request(stop()));
        assert!(!h.request(stop()));
        assert_eq!(h.stats.dropped.load(Ordering::Relaxed), 1);
        assert!(h.stats.summary().ends_with("dropped 1"));
    }
}
