//! What an interrupt asks to stop, and since when.
//!
//! An interrupt is raised at one instant (its stamp) and reaches each node a
//! little later, possibly after text or a turn that was asked for *after* it
//! was raised (topics from different publishers are not ordered with each
//! other). Each node therefore stops only what it received before the
//! interrupt was raised: [`Cut::covers`].

use std::time::Instant;

/// Messages that mean "everything" (the empty target, `*`, and the reason
/// stt_node used as its whole message before interrupts had a target).
const ALL: &[&str] = &["", "*", "barge_in"];
/// Prefix of a target that names one turn's speech.
pub const REPLACED_PREFIX: &str = "replaced:";

/// What an interrupt stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Everything the robot says or generates.
    All,
    /// One conversation's reply (and its speech).
    Conversation(String),
    /// The speech of one turn (a reply replaced by its continuation).
    Turn(String),
}

impl Target {
    /// Reads an `Interrupt.target` (see msg/Interrupt.msg).
    pub fn parse(target: &str) -> Self {
        let t = target.trim();
        if ALL.contains(&t) {
            Target::All
        } else if let Some(turn) = t.strip_prefix(REPLACED_PREFIX) {
            Target::Turn(turn.to_string())
        } else {
            Target::Conversation(t.to_string())
        }
    }

    /// The `Interrupt.target` text for this target.
    pub fn to_message(&self) -> String {
        match self {
            Target::All => String::new(),
            Target::Conversation(c) => c.clone(),
            Target::Turn(t) => format!("{REPLACED_PREFIX}{t}"),
        }
    }

    /// Whether the target covers speech of `turn_id` in `conversation_id`
    /// (`None`: text with no conversation, e.g. `say`).
    pub fn covers(&self, turn_id: &str, conversation_id: Option<&str>) -> bool {
        match self {
            Target::All => true,
            Target::Conversation(c) => conversation_id == Some(c.as_str()),
            Target::Turn(t) => t == turn_id,
        }
    }
}

/// One interrupt as a node applies it: what, and what was received before when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub target: Target,
    /// When the interrupt was raised, on this process's monotonic clock.
    pub raised: Instant,
}

impl Cut {
    /// Whether this interrupt stops something received at `received` for
    /// `turn_id` / `conversation_id`: it must match the target and have
    /// arrived before the interrupt was raised.
    pub fn covers(&self, received: Instant, turn_id: &str, conversation_id: Option<&str>) -> bool {
        received <= self.raised && self.target.covers(turn_id, conversation_id)
    }
}

/// The instant a wall-clock time was, on the monotonic clock: `now` minus
/// how long ago `then` was (a time in the future is now).
pub fn instant_of(
    then: std::time::SystemTime,
    now: Instant,
    wall_now: std::time::SystemTime,
) -> Instant {
    match wall_now.duration_since(then) {
        Ok(ago) => now.checked_sub(ago).unwrap_or(now),
        Err(_) => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn targets() {
        for all in ["", "*", "barge_in", " "] {
            assert_eq!(Target::parse(all), Target::All);
        }
        assert_eq!(Target::parse("replaced:42-7"), Target::Turn("42-7".into()));
        assert_eq!(
            Target::parse("kitchen_mic"),
            Target::Conversation("kitchen_mic".into())
        );
        for t in [
            Target::All,
            Target::Turn("a-1".into()),
            Target::Conversation("c".into()),
        ] {
            assert_eq!(Target::parse(&t.to_message()), t);
        }
        assert!(Target::Conversation("c".into()).covers("t", Some("c")));
        assert!(!Target::Conversation("c".into()).covers("t", None));
        assert!(!Target::Turn("t1".into()).covers("t2", Some("c")));
    }

    #[test]
    fn a_cut_stops_only_what_came_before_it_was_raised() {
        let t0 = Instant::now();
        let cut = Cut {
            target: Target::All,
            raised: t0 + Duration::from_millis(100),
        };
        assert!(cut.covers(t0, "say-1", None));
        // a `say` received after the interrupt was raised, even if the
        // interrupt itself arrives later still, is kept
        assert!(!cut.covers(t0 + Duration::from_millis(150), "say-2", None));
    }

    #[test]
    fn wall_clock_to_monotonic() {
        let (now, wall) = (Instant::now() + Duration::from_secs(10), SystemTime::now());
        assert_eq!(
            instant_of(wall - Duration::from_secs(2), now, wall),
            now - Duration::from_secs(2)
        );
        assert_eq!(instant_of(wall + Duration::from_secs(2), now, wall), now);
    }
}
