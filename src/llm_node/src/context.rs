//! Robot-state subscriptions (battery, pose) whose latest values go into the
//! system prompt. Each callback only overwrites one field of a shared state,
//! so nothing queues up however fast the topics publish.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use r2r::geometry_msgs::msg::PoseWithCovarianceStamped;
use r2r::sensor_msgs::msg::BatteryState;
use voice_core::robot_state::{Battery, Position, RobotState};

use crate::params::ContextConfig;

pub type SharedState = Arc<Mutex<RobotState>>;

/// Subscribes to the configured state topics; returns the shared state.
pub fn subscribe(
    node: &mut r2r::Node,
    cfg: &ContextConfig,
    log: &voice_ros::log::Log,
) -> anyhow::Result<SharedState> {
    let state = SharedState::default();
    if let Some(topic) = &cfg.battery_topic {
        // sensor data: latest value wins; best effort matches either kind of publisher
        let qos = r2r::QosProfile::sensor_data().keep_last(1);
        let mut sub = node.subscribe::<BatteryState>(topic, qos)?;
        let state = state.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let b = Battery::from_msg(m.percentage, m.voltage, m.power_supply_status);
                if let Ok(mut s) = state.lock() {
                    s.battery = Some((b, Instant::now()));
                }
            }
        });
        log.info(format!("robot state: battery from {topic}"));
    }
    if let Some(topic) = &cfg.pose_topic {
        // as AMCL publishes amcl_pose (reliable, transient local): the last
        // pose arrives at once, not only when the robot next moves
        let mut sub =
            node.subscribe::<PoseWithCovarianceStamped>(topic, voice_ros::node::state_qos())?;
        let state = state.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let p = &m.pose.pose.position;
                let pose = Position {
                    frame_id: m.header.frame_id.clone(),
                    x: p.x,
                    y: p.y,
                };
                if let Ok(mut s) = state.lock() {
                    s.pose = Some((pose, Instant::now()));
                }
            }
        });
        log.info(format!("robot state: pose from {topic}"));
    }
    Ok(state)
}
