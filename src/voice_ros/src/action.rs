//! Action servers' shared admission: a goal is validated, a refused one is
//! rejected with the reason in the node's log, an accepted one gives its
//! handle and cancel requests.

use futures::Stream;

use crate::lifecycle::Gate;
use crate::log::Log;

/// An admitted goal: what it asks, its handle and its cancel requests.
pub type Admitted<A, C> = (
    <A as r2r::WrappedActionTypeSupport>::Goal,
    r2r::ActionServerGoal<A>,
    C,
);

/// Admits the goal of `req` unless the node is not active (`gate`) or
/// `invalid` says why not (then it is rejected). `name` names the action in
/// the log lines.
pub fn admit<A>(
    req: r2r::ActionServerGoalRequest<A>,
    gate: &Gate,
    invalid: impl FnOnce(&A::Goal) -> Option<String>,
    name: &str,
    log: &Log,
) -> Option<Admitted<A, impl Stream<Item = r2r::ActionServerCancelRequest> + Unpin>>
where
    A: r2r::WrappedActionTypeSupport + 'static,
    A::Goal: Clone,
{
    if let Some(why) = gate.inactive_reason().or_else(|| invalid(&req.goal)) {
        log.warn(format!("{name} goal rejected: {why}"));
        req.reject()
            .unwrap_or_else(|e| log.warn(format!("{name} goal: could not reject: {e}")));
        return None;
    }
    let goal = req.goal.clone();
    match req.accept() {
        Ok((handle, cancel)) => Some((goal, handle, cancel)),
        Err(e) => {
            log.warn(format!("{name} goal: could not accept: {e}"));
            None
        }
    }
}
