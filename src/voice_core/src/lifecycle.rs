//! The managed-node state machine of ROS 2 (rcl_lifecycle's default, as
//! rclcpp_lifecycle runs it), with the ids and labels of lifecycle_msgs, so
//! `ros2 lifecycle` and Nav2's lifecycle_manager drive the nodes as they
//! drive any managed node. Pure logic: the ROS services are in voice_ros.

/// A state: the four primary ones and the transition states between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Unconfigured,
    Inactive,
    Active,
    Finalized,
    Configuring,
    CleaningUp,
    ShuttingDown,
    Activating,
    Deactivating,
    ErrorProcessing,
}

impl State {
    /// Every state, as `get_available_states` lists them.
    pub const ALL: [State; 10] = [
        State::Unconfigured,
        State::Inactive,
        State::Active,
        State::Finalized,
        State::Configuring,
        State::CleaningUp,
        State::ShuttingDown,
        State::Activating,
        State::Deactivating,
        State::ErrorProcessing,
    ];

    /// lifecycle_msgs/State id.
    pub fn id(self) -> u8 {
        match self {
            State::Unconfigured => 1,
            State::Inactive => 2,
            State::Active => 3,
            State::Finalized => 4,
            State::Configuring => 10,
            State::CleaningUp => 11,
            State::ShuttingDown => 12,
            State::Activating => 13,
            State::Deactivating => 14,
            State::ErrorProcessing => 15,
        }
    }

    /// lifecycle_msgs/State label.
    pub fn label(self) -> &'static str {
        match self {
            State::Unconfigured => "unconfigured",
            State::Inactive => "inactive",
            State::Active => "active",
            State::Finalized => "finalized",
            State::Configuring => "configuring",
            State::CleaningUp => "cleaningup",
            State::ShuttingDown => "shuttingdown",
            State::Activating => "activating",
            State::Deactivating => "deactivating",
            State::ErrorProcessing => "errorprocessing",
        }
    }
}

/// What a transition asks the node to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Configure,
    Cleanup,
    Activate,
    Deactivate,
    Shutdown,
}

/// How the node's callback for a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The step did not happen; the node stays where it was.
    Failure,
    /// Something broke: error processing, then unconfigured (or finalized).
    Error,
}

/// A transition: lifecycle_msgs/Transition id and label, from and to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub id: u8,
    pub label: &'static str,
    pub start: State,
    pub goal: State,
}

const fn t(id: u8, label: &'static str, start: State, goal: State) -> Transition {
    Transition {
        id,
        label,
        start,
        goal,
    }
}

use State::*;

/// The requestable transitions (lifecycle_msgs/Transition ids 1-7).
const REQUESTABLE: [(Transition, Step); 7] = [
    (
        t(1, "configure", Unconfigured, Configuring),
        Step::Configure,
    ),
    (t(2, "cleanup", Inactive, CleaningUp), Step::Cleanup),
    (t(3, "activate", Inactive, Activating), Step::Activate),
    (t(4, "deactivate", Active, Deactivating), Step::Deactivate),
    (t(5, "shutdown", Unconfigured, ShuttingDown), Step::Shutdown),
    (t(6, "shutdown", Inactive, ShuttingDown), Step::Shutdown),
    (t(7, "shutdown", Active, ShuttingDown), Step::Shutdown),
];

/// The transitions out of the transition states, by callback outcome.
const RESULTS: [Transition; 18] = [
    t(10, "transition_success", Configuring, Inactive),
    t(11, "transition_failure", Configuring, Unconfigured),
    t(12, "transition_error", Configuring, ErrorProcessing),
    t(20, "transition_success", CleaningUp, Unconfigured),
    t(21, "transition_failure", CleaningUp, Inactive),
    t(22, "transition_error", CleaningUp, ErrorProcessing),
    t(30, "transition_success", Activating, Active),
    t(31, "transition_failure", Activating, Inactive),
    t(32, "transition_error", Activating, ErrorProcessing),
    t(40, "transition_success", Deactivating, Inactive),
    t(41, "transition_failure", Deactivating, Active),
    t(42, "transition_error", Deactivating, ErrorProcessing),
    t(50, "transition_success", ShuttingDown, Finalized),
    t(51, "transition_failure", ShuttingDown, Finalized),
    t(52, "transition_error", ShuttingDown, ErrorProcessing),
    t(60, "transition_success", ErrorProcessing, Unconfigured),
    t(61, "transition_failure", ErrorProcessing, Finalized),
    t(62, "transition_error", ErrorProcessing, Finalized),
];

/// Every transition (`get_transition_graph`).
pub fn graph() -> Vec<Transition> {
    REQUESTABLE
        .iter()
        .map(|(t, _)| *t)
        .chain(RESULTS.iter().copied())
        .collect()
}

/// The transitions that may be requested in `state` (`get_available_transitions`).
pub fn available(state: State) -> Vec<Transition> {
    REQUESTABLE
        .iter()
        .filter(|(t, _)| t.start == state)
        .map(|(t, _)| *t)
        .collect()
}

/// A requested transition (by `label` when it is not empty, else by `id`,
/// as rclcpp_lifecycle reads a ChangeState request): the transition and the
/// step the node must take, or why it is refused.
pub fn request(state: State, id: u8, label: &str) -> Result<(Transition, Step), String> {
    let found = REQUESTABLE.iter().find(|(t, _)| {
        t.start == state
            && if label.is_empty() {
                t.id == id
            } else {
                t.label == label
            }
    });
    found.copied().ok_or_else(|| {
        let asked = if label.is_empty() {
            format!("transition {id}")
        } else {
            format!("transition {label:?}")
        };
        let valid: Vec<String> = available(state)
            .iter()
            .map(|t| format!("{} ({})", t.label, t.id))
            .collect();
        format!(
            "{asked} is not available in state {}; available: {}",
            state.label(),
            if valid.is_empty() {
                "none".to_string()
            } else {
                valid.join(", ")
            }
        )
    })
}

/// The transition out of the transition state `from` for a callback's `outcome`.
pub fn complete(from: State, outcome: Outcome) -> Option<Transition> {
    let n = match outcome {
        Outcome::Success => 0,
        Outcome::Failure => 1,
        Outcome::Error => 2,
    };
    RESULTS.iter().filter(|t| t.start == from).nth(n).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_bring_up_and_down() {
        let (t, step) = request(Unconfigured, 1, "").unwrap();
        assert_eq!((t.goal, step), (Configuring, Step::Configure));
        assert_eq!(
            complete(Configuring, Outcome::Success).unwrap().goal,
            Inactive
        );
        let (t, _) = request(Inactive, 0, "activate").unwrap();
        assert_eq!(complete(t.goal, Outcome::Success).unwrap().goal, Active);
        let (t, _) = request(Active, 4, "").unwrap();
        assert_eq!(complete(t.goal, Outcome::Success).unwrap().goal, Inactive);
        let (t, _) = request(Inactive, 0, "cleanup").unwrap();
        assert_eq!(
            complete(t.goal, Outcome::Success).unwrap().goal,
            Unconfigured
        );
        // shutdown from every primary state but finalized, by label
        for s in [Unconfigured, Inactive, Active] {
            let (t, step) = request(s, 0, "shutdown").unwrap();
            assert_eq!(step, Step::Shutdown);
            assert_eq!(complete(t.goal, Outcome::Success).unwrap().goal, Finalized);
        }
    }

    #[test]
    fn failures_stay_errors_recover_and_invalid_requests_are_refused() {
        assert_eq!(
            complete(Configuring, Outcome::Failure).unwrap().goal,
            Unconfigured
        );
        assert_eq!(
            complete(Activating, Outcome::Failure).unwrap().goal,
            Inactive
        );
        assert_eq!(
            complete(Deactivating, Outcome::Failure).unwrap().goal,
            Active
        );
        let e = complete(Activating, Outcome::Error).unwrap();
        assert_eq!((e.id, e.goal), (32, ErrorProcessing));
        assert_eq!(
            complete(ErrorProcessing, Outcome::Success).unwrap().goal,
            Unconfigured
        );
        let why = request(Unconfigured, 3, "").unwrap_err();
        assert!(
            why.contains("unconfigured") && why.contains("configure (1)"),
            "{why}"
        );
        assert!(request(Active, 0, "configure").is_err());
        assert!(request(Finalized, 0, "shutdown").is_err());
        assert!(request(Configuring, 0, "activate").is_err());
        assert!(available(Finalized).is_empty());
    }

    #[test]
    fn ids_and_labels_are_lifecycle_msgs() {
        let ids: Vec<u8> = available(Inactive).iter().map(|t| t.id).collect();
        assert_eq!(ids, [2, 3, 6]);
        assert_eq!(graph().len(), 25);
        assert_eq!(
            State::ALL.map(|s| s.id()),
            [1, 2, 3, 4, 10, 11, 12, 13, 14, 15]
        );
    }
}
