//! What the intent layer does on ROS: a navigate_to becomes a NavigateToPose
//! goal (nav_mode action, see nav.rs) or a PoseStamped on the goal topic
//! (nav_mode topic), a stop cancels that goal or publishes std_msgs/Empty on
//! the stop topic, and every decision becomes an `Intent` message.

use std::sync::{Arc, Mutex};

use r2r::geometry_msgs::msg::{Point, Pose, PoseStamped, Quaternion};
use r2r::std_msgs::msg::Empty;
use r2r::voice_agent::msg::Intent;
use voice_core::intent::Decision;
use voice_core::places::{yaw_to_quaternion, Place};

use crate::engine::TurnInfo;
use crate::nav::{NavHandle, NavRequest};
use crate::params::{IntentConfig, NavOut};

/// Where goals and stops go.
pub enum GoalOut {
    Action(NavHandle),
    Topic {
        goal: r2r::Publisher<PoseStamped>,
        stop: r2r::Publisher<Empty>,
    },
}

pub struct ActionSink {
    pub out: GoalOut,
    pub intent: r2r::Publisher<Intent>,
    /// The node's ROS clock (follows use_sim_time), for goal stamps.
    pub clock: Arc<Mutex<r2r::Clock>>,
    pub log: voice_ros::log::Log,
}

impl ActionSink {
    /// `nav` is the action client, made by the caller when nav_mode is action.
    pub fn create(
        node: &mut r2r::Node,
        cfg: &IntentConfig,
        nav: Option<NavHandle>,
        log: &voice_ros::log::Log,
    ) -> anyhow::Result<Self> {
        let out = match (&cfg.nav, nav) {
            (NavOut::Action { .. }, Some(h)) => GoalOut::Action(h),
            (NavOut::Action { server }, None) => {
                anyhow::bail!("nav_mode action: no action client for {server}")
            }
            (NavOut::Topic { goal, stop }, _) => GoalOut::Topic {
                goal: node.create_publisher(goal, voice_ros::node::event_qos())?,
                stop: node.create_publisher(stop, voice_ros::node::event_qos())?,
            },
        };
        Ok(Self {
            out,
            intent: node.create_publisher("intent", voice_ros::node::event_qos())?,
            clock: node.get_ros_clock(),
            log: log.clone(),
        })
    }

    fn ros_now(&self) -> r2r::builtin_interfaces::msg::Time {
        self.clock
            .lock()
            .ok()
            .and_then(|mut c| c.get_now().ok())
            .map(|d| r2r::Clock::to_builtin_time(&d))
            .unwrap_or_default()
    }

    /// Carries out a decision and announces it; returns the goal's place name
    /// when a goal was sent on the goal topic (an action goal's state is
    /// kept by the action client).
    pub fn act(&self, d: &Decision<'_>, turn: &TurnInfo<'_>) -> Option<String> {
        let mut intent = Intent {
            turn_id: turn.turn_id.into(),
            conversation_id: turn.conversation_id.into(),
            action: d.action().into(),
            request: turn.request.into(),
            reply: d.say().into(),
            raw_output: turn.raw.into(),
            ..Default::default()
        };
        intent.header.stamp = voice_ros::stamp::now();
        let mut sent = None;
        match d {
            Decision::Navigate { place, .. } => {
                let goal = goal_for(place, self.ros_now());
                let (ok, to) = match &self.out {
                    GoalOut::Action(nav) => (
                        nav.request(NavRequest::Go {
                            place: place.name.clone(),
                            pose: goal.clone(),
                            turn_id: turn.turn_id.into(),
                        }),
                        nav.server.as_str(),
                    ),
                    GoalOut::Topic { goal: topic, .. } => match topic.publish(&goal) {
                        Ok(()) => (true, "the goal topic"),
                        Err(e) => {
                            self.log.error(format!("goal publish failed: {e}"));
                            (false, "")
                        }
                    },
                };
                if ok {
                    self.log.info(format!(
                        "turn {}: goal sent to {to}: {} ({:.2}, {:.2}, yaw {:.2}) in {}",
                        turn.turn_id, place.name, place.x, place.y, place.yaw, place.frame_id
                    ));
                    intent.goal_sent = true;
                    if matches!(self.out, GoalOut::Topic { .. }) {
                        sent = Some(place.name.clone());
                    }
                } else {
                    self.log.error(format!(
                        "turn {}: goal to the {} not sent",
                        turn.turn_id, place.name
                    ));
                }
                intent.place = place.name.clone();
                intent.goal = goal;
            }
            Decision::Unknown { place, .. } => {
                self.log.info(format!(
                    "turn {}: navigate_to {place:?} is not a known place: no goal sent",
                    turn.turn_id
                ));
                intent.place = place.clone();
            }
            Decision::Stop { .. } => match &self.out {
                GoalOut::Action(nav) => {
                    if !nav.request(NavRequest::Stop {
                        turn_id: turn.turn_id.into(),
                    }) {
                        self.log
                            .error(format!("turn {}: stop not passed on", turn.turn_id));
                    }
                }
                GoalOut::Topic { stop, .. } => {
                    if let Err(e) = stop.publish(&Empty::default()) {
                        self.log.error(format!("stop publish failed: {e}"));
                    }
                    self.log.info(format!("turn {}: stop sent", turn.turn_id));
                }
            },
            Decision::Answer { .. } => {}
        }
        if let Err(e) = self.intent.publish(&intent) {
            self.log.warn(format!("intent publish failed: {e}"));
        }
        sent
    }
}

pub fn goal_for(place: &Place, stamp: r2r::builtin_interfaces::msg::Time) -> PoseStamped {
    let [x, y, z, w] = yaw_to_quaternion(place.yaw);
    let mut goal = PoseStamped {
        pose: Pose {
            position: Point {
                x: place.x,
                y: place.y,
                z: 0.0,
            },
            orientation: Quaternion { x, y, z, w },
        },
        ..Default::default()
    };
    goal.header.frame_id = place.frame_id.clone();
    goal.header.stamp = stamp;
    goal
}
