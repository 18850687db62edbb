//! Wall-clock stamps and durations between them.
//!
//! Latency figures compare stamps taken on the same machine by different
//! processes, so they use the system clock (not sim time): a replayed bag with
//! `use_sim_time` still gets real compute latencies.

use std::time::{SystemTime, UNIX_EPOCH};

use r2r::builtin_interfaces::msg::Time;

/// Current wall-clock time as a ROS stamp.
pub fn now() -> Time {
    from_system(SystemTime::now())
}

pub fn from_system(t: SystemTime) -> Time {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Time {
        sec: i32::try_from(d.as_secs()).unwrap_or(i32::MAX),
        nanosec: d.subsec_nanos(),
    }
}

/// Seconds since the epoch as f64.
pub fn to_secs(t: &Time) -> f64 {
    f64::from(t.sec) + f64::from(t.nanosec) * 1e-9
}

/// True for the zero stamp (unset).
pub fn is_zero(t: &Time) -> bool {
    t.sec == 0 && t.nanosec == 0
}

/// `to - from` in milliseconds (negative if `to` is earlier).
pub fn ms_between(from: &Time, to: &Time) -> f64 {
    (to_secs(to) - to_secs(from)) * 1e3
}

/// A ROS stamp as the engines carry it (voice_core knows no ROS types).
pub fn to_core(t: &Time) -> voice_core::scheduler::Stamp {
    voice_core::scheduler::Stamp {
        sec: t.sec,
        nanosec: t.nanosec,
    }
}

pub fn from_core(s: voice_core::scheduler::Stamp) -> Time {
    Time {
        sec: s.sec,
        nanosec: s.nanosec,
    }
}
