//! `interrupt` messages (voice_agent/Interrupt) to and from
//! [`voice_core::interrupt`]'s cut: what to stop, raised when.

use std::time::{Instant, SystemTime};

use r2r::std_msgs::msg::Header;
use r2r::voice_agent::msg::Interrupt;
use voice_core::interrupt::{instant_of, Cut, Target};

use crate::stamp;

/// An interrupt raised now.
pub fn raise(target: &Target, reason: &str) -> Interrupt {
    Interrupt {
        header: Header {
            stamp: stamp::now(),
            ..Default::default()
        },
        target: target.to_message(),
        reason: reason.into(),
    }
}

/// How this process applies a received interrupt: its target and when it
/// was raised (an unstamped one: now, on arrival).
pub fn cut(m: &Interrupt) -> Cut {
    let now = Instant::now();
    let raised = if stamp::is_zero(&m.header.stamp) {
        now
    } else {
        instant_of(to_system(&m.header.stamp), now, SystemTime::now())
    };
    Cut {
        target: Target::parse(&m.target),
        raised,
    }
}

/// What an interrupt says of itself in a log line.
pub fn describe(m: &Interrupt) -> String {
    match (m.target.is_empty(), m.reason.is_empty()) {
        (true, true) => "everything".into(),
        (true, false) => m.reason.clone(),
        (false, true) => m.target.clone(),
        (false, false) => format!("{} ({})", m.target, m.reason),
    }
}

fn to_system(t: &r2r::builtin_interfaces::msg::Time) -> SystemTime {
    let d = std::time::Duration::new(
        u64::try_from(t.sec).unwrap_or(0),
        t.nanosec.min(999_999_999),
    );
    SystemTime::UNIX_EPOCH + d
}
