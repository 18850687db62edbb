//! The robot's latest known state (battery, position, navigation goal) as a
//! few plain sentences for the system prompt, so "how is your battery?" is
//! answered from data. Values are rounded (whole percent, 0.1 m) so the
//! prompt, and the KV cache behind it, changes only when the state does.

use std::time::{Duration, Instant};

use crate::places::Places;

/// sensor_msgs/BatteryState.power_supply_status, as far as it matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charging {
    Unknown,
    Charging,
    Discharging,
    NotCharging,
    Full,
}

impl Charging {
    /// From the message's POWER_SUPPLY_STATUS_* value.
    pub fn from_status(status: u8) -> Self {
        match status {
            1 => Self::Charging,
            2 => Self::Discharging,
            3 => Self::NotCharging,
            4 => Self::Full,
            _ => Self::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Battery {
    /// Charge [0, 1]; `None` when the driver does not measure it.
    pub fraction: Option<f32>,
    pub voltage: Option<f32>,
    pub charging: Charging,
}

impl Battery {
    /// From BatteryState fields; NaN means "not measured". Some drivers
    /// publish percentage as 0-100 instead of 0-1: taken as percent.
    pub fn from_msg(percentage: f32, voltage: f32, status: u8) -> Self {
        let fraction = if !percentage.is_finite() || percentage < 0.0 {
            None
        } else if percentage <= 1.0 {
            Some(percentage)
        } else if percentage <= 100.0 {
            Some(percentage / 100.0)
        } else {
            None
        };
        Self {
            fraction,
            voltage: (voltage.is_finite() && voltage > 0.0).then_some(voltage),
            charging: Charging::from_status(status),
        }
    }

    pub fn describe(&self) -> String {
        let mut s = match self.fraction {
            Some(f) => format!("Battery: {:.0} percent", f * 100.0),
            None => "Battery: charge not measured".to_string(),
        };
        if let Some(v) = self.voltage {
            s += &format!(", {v:.1} volts");
        }
        s += match self.charging {
            Charging::Charging => ", charging",
            Charging::Discharging => ", not plugged in",
            Charging::NotCharging => ", plugged in but not charging",
            Charging::Full => ", full",
            Charging::Unknown => "",
        };
        s + "."
    }
}

/// Where the robot is on the map (the heading is not told to the model).
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub frame_id: String,
    pub x: f64,
    pub y: f64,
}

/// What the robot knows about its last navigation goal. With Nav2's action
/// it follows the goal to its outcome; with a goal topic only `Sent` is
/// ever known.
#[derive(Debug, Clone, PartialEq)]
pub enum Navigation {
    /// A goal went out on a topic; nothing comes back.
    Sent {
        place: String,
    },
    /// Accepted and driving; `None` until the first feedback.
    Driving {
        place: String,
        remaining_m: Option<f32>,
        eta_s: Option<f32>,
    },
    Arrived {
        place: String,
    },
    Failed {
        place: String,
        reason: String,
    },
    /// Cancelled by a spoken stop.
    Stopped {
        place: String,
    },
}

impl Navigation {
    pub fn place(&self) -> &str {
        match self {
            Self::Sent { place }
            | Self::Driving { place, .. }
            | Self::Arrived { place }
            | Self::Failed { place, .. }
            | Self::Stopped { place } => place,
        }
    }

    /// One sentence for the prompt. Distances are whole metres and times
    /// whole seconds: feedback arrives many times a second, the prompt
    /// should change only when the answer to "how far is it?" does.
    pub fn describe(&self) -> String {
        match self {
            Self::Sent { place } => format!("Last navigation goal: the {place}."),
            Self::Driving {
                place,
                remaining_m,
                eta_s,
            } => {
                let mut s = format!("Navigation: driving to the {place}");
                if let Some(d) = remaining_m.filter(|d| d.is_finite() && *d >= 0.0) {
                    s += &format!(", {d:.0} m to go");
                }
                if let Some(t) = eta_s.filter(|t| t.is_finite() && *t > 0.0) {
                    s += &format!(", about {t:.0} seconds left");
                }
                s + "."
            }
            Self::Arrived { place } => format!("Navigation: arrived at the {place}."),
            Self::Failed { place, reason } => {
                format!("Navigation: could not reach the {place} ({reason}).")
            }
            Self::Stopped { place } => {
                format!("Navigation: stopped on the way to the {place}.")
            }
        }
    }
}

/// Latest values with the time they arrived.
#[derive(Debug, Clone, Default)]
pub struct RobotState {
    pub battery: Option<(Battery, Instant)>,
    pub pose: Option<(Position, Instant)>,
    /// The last navigation goal and what became of it (not aged out: the
    /// goal stays the robot's last goal until the next one).
    pub nav: Option<Navigation>,
}

/// A place counts as "here" within this distance [m].
pub const AT_PLACE_M: f64 = 1.0;

impl RobotState {
    /// Sentences for the system prompt, or `None` when nothing is known.
    /// Readings older than `max_age` are left out (a stale battery level is
    /// worse than none).
    pub fn describe(
        &self,
        places: Option<&Places>,
        now: Instant,
        max_age: Duration,
    ) -> Option<String> {
        let fresh = |t: &Instant| now.saturating_duration_since(*t) <= max_age;
        let mut lines = Vec::new();
        if let Some((b, t)) = &self.battery {
            if fresh(t) {
                lines.push(b.describe());
            }
        }
        if let Some((p, t)) = &self.pose {
            if fresh(t) && p.x.is_finite() && p.y.is_finite() {
                let mut s = format!(
                    "Position: x {:.1} m, y {:.1} m in the {} frame",
                    p.x, p.y, p.frame_id
                );
                if let Some((place, d)) = places.and_then(|pl| pl.nearest(&p.frame_id, p.x, p.y)) {
                    if d <= AT_PLACE_M {
                        s += &format!(", at the {}", place.name);
                    } else {
                        s += &format!(", {:.0} m from the {}", d, place.name);
                    }
                }
                lines.push(s + ".");
            }
        }
        if let Some(n) = &self.nav {
            lines.push(n.describe());
        }
        if lines.is_empty() {
            None
        } else {
            Some(format!("Robot state now:\n{}", lines.join("\n")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn battery_readings() {
        assert_eq!(
            Battery::from_msg(0.764, 12.23, 2).describe(),
            "Battery: 76 percent, 12.2 volts, not plugged in."
        );
        assert_eq!(Battery::from_msg(42.0, f32::NAN, 1).fraction, Some(0.42));
        assert_eq!(
            Battery::from_msg(f32::NAN, 0.0, 0).describe(),
            "Battery: charge not measured."
        );
        assert_eq!(Battery::from_msg(-1.0, -3.0, 9).fraction, None);
        assert_eq!(Battery::from_msg(1e9, 1.0, 4).fraction, None);
        assert_eq!(
            Battery::from_msg(1.0, 1.0, 4).describe(),
            "Battery: 100 percent, 1.0 volts, full."
        );
    }

    #[test]
    fn state_sentences_and_staleness() {
        let places = Places::parse(
            "places:\n  - name: kitchen\n    x: 4\n    y: 0\n  - name: lab\n    x: -5\n    y: 0\n",
            "t",
        )
        .unwrap();
        let now = Instant::now();
        let age = Duration::from_secs(30);
        assert_eq!(
            RobotState::default().describe(Some(&places), now, age),
            None
        );
        let mut s = RobotState {
            battery: Some((Battery::from_msg(0.42, f32::NAN, 2), now)),
            pose: Some((
                Position {
                    frame_id: "map".into(),
                    x: 3.5,
                    y: 0.2,
                },
                now,
            )),
            nav: Some(Navigation::Sent {
                place: "kitchen".into(),
            }),
        };
        let d = s.describe(Some(&places), now, age).unwrap();
        assert!(d.contains("Battery: 42 percent, not plugged in."), "{d}");
        assert!(
            d.contains("x 3.5 m, y 0.2 m in the map frame, at the kitchen."),
            "{d}"
        );
        assert!(d.contains("Last navigation goal: the kitchen."), "{d}");
        if let Some((p, _)) = s.pose.as_mut() {
            p.x = 0.0;
        }
        let d = s.describe(Some(&places), now, age).unwrap();
        assert!(d.contains("4 m from the kitchen"), "{d}");
        s.nav = Some(Navigation::Driving {
            place: "kitchen".into(),
            remaining_m: Some(3.46),
            eta_s: Some(7.6),
        });
        let d = s.describe(Some(&places), now, age).unwrap();
        assert!(
            d.contains("Navigation: driving to the kitchen, 3 m to go, about 8 seconds left."),
            "{d}"
        );
        let no_feedback = Navigation::Driving {
            place: "lab".into(),
            remaining_m: None,
            eta_s: Some(0.0),
        };
        assert_eq!(no_feedback.describe(), "Navigation: driving to the lab.");
        let failed = Navigation::Failed {
            place: "lab".into(),
            reason: "no valid path".into(),
        };
        assert_eq!(
            failed.describe(),
            "Navigation: could not reach the lab (no valid path)."
        );
        let later = now + Duration::from_secs(31);
        let d = s.describe(None, later, age).unwrap();
        assert!(!d.contains("Battery") && !d.contains("Position"), "{d}");
    }
}
