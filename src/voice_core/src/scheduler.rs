//! Which turn runs where, for llm_node: conversations (history, waiting
//! turns), the busy policy, the choice of a KV sequence ("slot") for a turn,
//! the replacement of a turn by its continuation and the eviction of old
//! conversations. No model and no ROS: every call returns what the engine
//! must do ([`Action`]) and the engine reports back when a slot's turn ended.
//!
//! The life of a turn: [`Scheduler::admit`] -> waiting -> [`Scheduler::next_start`]
//! gives it a slot -> the engine generates, calling [`Scheduler::mark_begun`] at
//! its first published chunk -> [`Scheduler::ended`] (answered: the exchange
//! enters the history and the conversation's next queued turn moves up; or
//! dropped) or [`Scheduler::start_failed`].

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::chat::History;

/// Conversations whose history is kept (least recently used forgotten first).
pub const MAX_CONVERSATIONS: usize = 64;
/// Turns waiting per conversation under the "queue" policy.
pub const QUEUE_PER_CONVERSATION: usize = 4;
/// Turns waiting for a free slot, all conversations together.
pub const WAITING_MAX: usize = 64;
/// Finished turns remembered for replacement by a continuation.
const RECENT_TURNS: usize = 16;

/// A time stamp carried through unchanged (seconds, nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    pub sec: i32,
    pub nanosec: u32,
}

/// One user turn to answer.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub turn_id: String,
    pub conversation_id: String,
    pub text: String,
    /// Copied into every chunk (end of user speech, zero for text prompts).
    pub speech_end: Stamp,
    /// Speech end -> transcript [ms], copied into every chunk.
    pub stt_ms: f32,
    pub received: Instant,
    /// A turn this one continues (its text included): that turn's reply is
    /// dropped or stopped and its exchange left out of the history.
    pub replaces: Option<String>,
}

impl TurnRequest {
    /// `new` joins this turn: the texts in order, the newest turn id and
    /// timing (the end of speech the reply answers is the newest).
    pub fn join(&mut self, new: TurnRequest) {
        self.text = format!("{} {}", self.text.trim_end(), new.text.trim_start());
        self.turn_id = new.turn_id;
        self.speech_end = new.speech_end;
        self.stt_ms = new.stt_ms;
        self.received = new.received;
    }
}

/// What to do with a new utterance while its conversation is being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyPolicy {
    /// Join it to the turn it follows: a reply not yet begun is dropped and
    /// the joined text answered at once; else the text waits (joined with
    /// any other waiting text) and is answered next. Bounded lag however
    /// long people talk.
    Merge,
    /// Answer it after the current reply (bounded queue per conversation).
    Queue,
    /// Stop the current reply and answer the new utterance.
    Interrupt,
    /// Ignore the new utterance.
    Drop,
}

/// Why a running reply is stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `interrupt` (barge-in or a stop request).
    Interrupted,
    /// busy_policy interrupt: the user said something new.
    NewUtterance,
    /// `~/reset`.
    Reset,
}

/// Why a running reply is dropped without a word more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscardReason {
    /// busy_policy merge: nothing of it was published and the user went on;
    /// the joined text (ending with turn `by`) is answered instead.
    Superseded { by: String },
    /// Its continuation (a turn naming it in `replaces`) is answered instead.
    Replaced,
}

/// Why a turn was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// busy_policy drop.
    Busy,
    /// busy_policy queue with QUEUE_PER_CONVERSATION turns queued.
    QueueFull,
    /// WAITING_MAX turns already wait for a slot.
    WaitingFull,
}

/// What the engine must do after a scheduler call, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// End the reply running on `slot` now: its final chunk goes out and
    /// its exchange enters the history. Report [`Scheduler::ended`] with it.
    Stop { slot: usize, why: StopReason },
    /// Drop the reply running on `slot`: an empty final chunk closes it,
    /// nothing enters the history; `stop_speech` when some of it was
    /// published already. The slot is free from this decision on.
    Discard {
        slot: usize,
        stop_speech: bool,
        why: DiscardReason,
    },
    /// A finished turn was replaced by its continuation: stop its speech
    /// (`forgot`: its exchange left the history).
    StopSpeech { turn_id: String, forgot: bool },
    /// The turn was not admitted (count it as dropped).
    Dropped { turn_id: String, why: DropReason },
    /// busy_policy merge took the turn in (count it as merged); `into`: the
    /// waiting turn it joined.
    Merged {
        turn_id: String,
        into: Option<String>,
    },
}

/// A turn to start on a slot. `rebound`: the slot held another
/// conversation, so what its KV cache holds is not this conversation's.
#[derive(Debug, Clone)]
pub struct Start {
    pub slot: usize,
    pub req: TurnRequest,
    pub rebound: bool,
}

#[derive(Debug)]
struct Running {
    req: TurnRequest,
    /// Some of its reply was published.
    begun: bool,
}

#[derive(Debug)]
struct Slot {
    conversation: Option<String>,
    running: Option<Running>,
    last_used: Instant,
}

#[derive(Debug)]
struct Conversation {
    history: History,
    queued: VecDeque<TurnRequest>,
    last_used: Instant,
}

#[derive(Debug)]
pub struct Scheduler {
    policy: BusyPolicy,
    history_turns: usize,
    slots: Vec<Slot>,
    conversations: HashMap<String, Conversation>,
    waiting: VecDeque<TurnRequest>,
    /// Recently answered turns (turn id, conversation, user text).
    recent: VecDeque<(String, String, String)>,
}

impl Scheduler {
    pub fn new(slots: usize, policy: BusyPolicy, history_turns: usize) -> Self {
        let now = Instant::now();
        Self {
            policy,
            history_turns,
            slots: (0..slots)
                .map(|_| Slot {
                    conversation: None,
                    running: None,
                    last_used: now,
                })
                .collect(),
            conversations: HashMap::new(),
            waiting: VecDeque::new(),
            recent: VecDeque::new(),
        }
    }

    /// Parameters that change at run time: later decisions use them.
    pub fn set_policy(&mut self, policy: BusyPolicy, history_turns: usize) {
        self.policy = policy;
        self.history_turns = history_turns;
        for c in self.conversations.values_mut() {
            c.history.set_max_turns(history_turns);
        }
    }

    /// Turns running or waiting.
    pub fn busy(&self) -> bool {
        !self.waiting.is_empty() || self.slots.iter().any(|s| s.running.is_some())
    }

    pub fn running(&self) -> usize {
        self.slots.iter().filter(|s| s.running.is_some()).count()
    }

    /// The conversation's history (created when new); fitting a prompt
    /// into the context forgets its oldest exchanges.
    pub fn history(&mut self, conversation_id: &str) -> &mut History {
        &mut self.conversation(conversation_id).history
    }

    /// A new turn: replaces the turn it continues, then the busy policy
    /// when its conversation is being answered, then it waits for a slot.
    pub fn admit(&mut self, req: TurnRequest) -> Vec<Action> {
        let mut acts = match req.replaces.clone() {
            Some(old) => self.replace(&old, &req.conversation_id),
            None => Vec::new(),
        };
        let conv = req.conversation_id.clone();
        let running = self.running_slot(&conv);
        let waiting = self.waiting.iter().any(|r| r.conversation_id == conv);
        if running.is_some() || waiting {
            match self.policy {
                BusyPolicy::Merge => {
                    acts.extend(self.merge(running, req));
                    return acts;
                }
                BusyPolicy::Drop => {
                    acts.push(Action::Dropped {
                        turn_id: req.turn_id,
                        why: DropReason::Busy,
                    });
                    return acts;
                }
                BusyPolicy::Interrupt => {
                    if let Some(slot) = running {
                        acts.push(Action::Stop {
                            slot,
                            why: StopReason::NewUtterance,
                        });
                    }
                    self.waiting.retain(|r| r.conversation_id != conv);
                    if let Some(c) = self.conversations.get_mut(&conv) {
                        c.queued.clear();
                    }
                }
                BusyPolicy::Queue => {
                    let c = self.conversation(&conv);
                    if c.queued.len() >= QUEUE_PER_CONVERSATION {
                        acts.push(Action::Dropped {
                            turn_id: req.turn_id,
                            why: DropReason::QueueFull,
                        });
                    } else {
                        c.queued.push_back(req);
                    }
                    return acts;
                }
            }
        }
        if self.waiting.len() >= WAITING_MAX {
            acts.push(Action::Dropped {
                turn_id: req.turn_id,
                why: DropReason::WaitingFull,
            });
        } else {
            self.waiting.push_back(req);
        }
        acts
    }

    /// busy_policy merge: the new utterance joins the turn it follows. A
    /// waiting turn takes it in; a reply of which nothing was published yet
    /// is discarded and the joined text answered at once; a reply already
    /// under way finishes and the text is queued, joined with any other
    /// queued text.
    fn merge(&mut self, running: Option<usize>, req: TurnRequest) -> Vec<Action> {
        let turn_id = req.turn_id.clone();
        let conv = req.conversation_id.clone();
        if let Some(w) = self.waiting.iter_mut().find(|r| r.conversation_id == conv) {
            let into = Some(w.turn_id.clone());
            w.join(req);
            return vec![Action::Merged { turn_id, into }];
        }
        let unpublished = running.and_then(|slot| {
            let r = self.slots[slot].running.as_ref()?;
            (!r.begun).then(|| (slot, r.req.clone()))
        });
        if let Some((slot, mut joined)) = unpublished {
            self.free(slot);
            joined.join(req);
            self.waiting.push_front(joined);
            return vec![
                Action::Merged {
                    turn_id: turn_id.clone(),
                    into: None,
                },
                Action::Discard {
                    slot,
                    stop_speech: false,
                    why: DiscardReason::Superseded { by: turn_id },
                },
            ];
        }
        let c = self.conversation(&conv);
        match c.queued.back_mut() {
            Some(q) => q.join(req),
            None => c.queued.push_back(req),
        }
        vec![Action::Merged {
            turn_id,
            into: None,
        }]
    }

    /// A turn the user went on with ("Go to the kitchen." ... "and bring me
    /// water"): its continuation carries both texts and is answered instead.
    /// A waiting turn is dropped; a running one discarded (its speech
    /// stopped if some was published); a finished one's speech is stopped
    /// and its exchange leaves the history.
    fn replace(&mut self, old: &str, conversation_id: &str) -> Vec<Action> {
        self.waiting.retain(|r| r.turn_id != old);
        if let Some(c) = self.conversations.get_mut(conversation_id) {
            c.queued.retain(|r| r.turn_id != old);
        }
        let running = self
            .slots
            .iter()
            .position(|s| s.running.as_ref().is_some_and(|r| r.req.turn_id == old));
        if let Some(slot) = running {
            let begun = self.free(slot).is_some_and(|r| r.begun);
            return vec![Action::Discard {
                slot,
                stop_speech: begun,
                why: DiscardReason::Replaced,
            }];
        }
        let Some(k) = self.recent.iter().position(|(t, _, _)| t == old) else {
            return Vec::new();
        };
        let (turn_id, conv, user) = self.recent.remove(k).unwrap_or_default();
        let forgot = self
            .conversations
            .get_mut(&conv)
            .is_some_and(|c| c.history.forget_last(&user));
        vec![Action::StopSpeech { turn_id, forgot }]
    }

    /// `interrupt`: stops the running replies of one conversation (or all)
    /// and drops their waiting and queued turns.
    pub fn interrupt(&mut self, which: Option<&str>, raised: Instant) -> Vec<Action> {
        // only turns asked for before the interrupt was raised: a turn that
        // reached the node after it (topics are not ordered with each
        // other) is answered
        let matches =
            |r: &TurnRequest| r.received <= raised && which.is_none_or(|w| w == r.conversation_id);
        let acts = self.stop_where(StopReason::Interrupted, |r| matches(&r.req));
        self.waiting.retain(|r| !matches(r));
        for c in self.conversations.values_mut() {
            c.queued.retain(|r| !matches(r));
        }
        acts
    }

    /// `~/reset`, first half: stop every running reply. After the engine
    /// ended them, [`Scheduler::clear`].
    pub fn stop_all(&mut self) -> Vec<Action> {
        self.stop_where(StopReason::Reset, |_| true)
    }

    /// `~/reset`, second half: forgets every conversation and waiting turn
    /// and unbinds every slot; returns how many conversations were forgotten.
    pub fn clear(&mut self) -> usize {
        let n = self.conversations.len();
        self.conversations.clear();
        self.waiting.clear();
        self.recent.clear();
        for s in &mut self.slots {
            s.conversation = None;
        }
        n
    }

    fn stop_where(&self, why: StopReason, pick: impl Fn(&Running) -> bool) -> Vec<Action> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.running.as_ref().is_some_and(&pick))
            .map(|(slot, _)| Action::Stop { slot, why })
            .collect()
    }

    /// The next waiting turn that can start: its conversation has no reply
    /// running and a slot is free. The slot is bound to it and running.
    pub fn next_start(&mut self) -> Option<Start> {
        let mut i = 0;
        while i < self.waiting.len() {
            let conv = self.waiting[i].conversation_id.clone();
            if self.running_slot(&conv).is_some() {
                i += 1;
                continue;
            }
            let slot = self.free_slot(&conv)?;
            let req = self.waiting.remove(i)?;
            let rebound = self.bind(slot, &conv);
            self.slots[slot].running = Some(Running {
                req: req.clone(),
                begun: false,
            });
            return Some(Start { slot, req, rebound });
        }
        None
    }

    /// A slot for judging a tentative end of `conversation_id`'s turn (its
    /// prompt is pre-filled there): `None` while the conversation is being
    /// answered or waits, or no slot is free. The slot is bound to it;
    /// the flag says it was rebound (see [`Start`]).
    pub fn judge_slot(&mut self, conversation_id: &str) -> Option<(usize, bool)> {
        let waiting = self
            .waiting
            .iter()
            .any(|r| r.conversation_id == conversation_id);
        if waiting || self.running_slot(conversation_id).is_some() {
            return None;
        }
        let slot = self.free_slot(conversation_id)?;
        let rebound = self.bind(slot, conversation_id);
        self.slots[slot].last_used = Instant::now();
        Some((slot, rebound))
    }

    /// Binds an idle slot to a conversation; true when it held another.
    pub fn bind(&mut self, slot: usize, conversation_id: &str) -> bool {
        let s = &mut self.slots[slot];
        if s.conversation.as_deref() == Some(conversation_id) {
            return false;
        }
        s.conversation = Some(conversation_id.to_string());
        true
    }

    /// The slot's turn published its first chunk.
    pub fn mark_begun(&mut self, slot: usize) {
        if let Some(r) = self.slots[slot].running.as_mut() {
            r.begun = true;
        }
    }

    /// The slot's turn ended and was answered (the exchange of user text
    /// and reply enters the history; the conversation's next queued turn is
    /// the next to start), or ended with nothing to keep (`None`).
    pub fn ended(&mut self, slot: usize, exchange: Option<(String, String)>) {
        let Some(run) = self.free(slot) else {
            return;
        };
        let Some((user, reply)) = exchange else {
            return;
        };
        let conv = run.req.conversation_id;
        if self.recent.len() >= RECENT_TURNS {
            self.recent.pop_front();
        }
        self.recent
            .push_back((run.req.turn_id, conv.clone(), user.clone()));
        let c = self.conversation(&conv);
        c.history.push(user, reply);
        if let Some(next) = c.queued.pop_front() {
            self.waiting.push_front(next);
        }
    }

    /// The slot's turn could not start (its prompt failed): the slot is
    /// free again and the conversation's next queued turn waits.
    pub fn start_failed(&mut self, slot: usize) {
        let Some(run) = self.slots[slot].running.take() else {
            return;
        };
        let next = self
            .conversations
            .get_mut(&run.req.conversation_id)
            .and_then(|c| c.queued.pop_front());
        if let Some(next) = next {
            self.waiting.push_back(next);
        }
    }

    fn free(&mut self, slot: usize) -> Option<Running> {
        let s = &mut self.slots[slot];
        s.last_used = Instant::now();
        s.running.take()
    }

    fn running_slot(&self, conversation_id: &str) -> Option<usize> {
        self.slots.iter().position(|s| {
            s.running
                .as_ref()
                .is_some_and(|r| r.req.conversation_id == conversation_id)
        })
    }

    /// The slot for a turn of `conv`: its own idle one (its KV cache holds
    /// the conversation), else an unused one, else the least recently used
    /// idle one. `None` when every slot is running.
    fn free_slot(&self, conv: &str) -> Option<usize> {
        let idle = |s: &&Slot| s.running.is_none();
        self.slots
            .iter()
            .position(|s| idle(&s) && s.conversation.as_deref() == Some(conv))
            .or_else(|| {
                self.slots
                    .iter()
                    .position(|s| idle(&s) && s.conversation.is_none())
            })
            .or_else(|| {
                self.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| idle(s))
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(k, _)| k)
            })
    }

    /// The conversation, created when new; beyond MAX_CONVERSATIONS the
    /// least recently used one not being answered is forgotten first.
    fn conversation(&mut self, id: &str) -> &mut Conversation {
        if !self.conversations.contains_key(id) && self.conversations.len() >= MAX_CONVERSATIONS {
            let busy: Vec<&str> = self
                .slots
                .iter()
                .filter(|s| s.running.is_some())
                .filter_map(|s| s.conversation.as_deref())
                .collect();
            let oldest = self
                .conversations
                .iter()
                .filter(|(k, _)| !busy.contains(&k.as_str()))
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.conversations.remove(&oldest);
            }
        }
        let turns = self.history_turns;
        let c = self
            .conversations
            .entry(id.to_string())
            .or_insert_with(|| Conversation {
                history: History::new(turns),
                queued: VecDeque::new(),
                last_used: Instant::now(),
            });
        c.last_used = Instant::now();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(turn_id: &str, conv: &str, text: &str) -> TurnRequest {
        TurnRequest {
            turn_id: turn_id.into(),
            conversation_id: conv.into(),
            text: text.into(),
            speech_end: Stamp::default(),
            stt_ms: 0.0,
            received: Instant::now(),
            replaces: None,
        }
    }

    fn start(s: &mut Scheduler) -> (usize, String, String) {
        let st = s.next_start().expect("a turn starts");
        (st.slot, st.req.turn_id, st.req.text)
    }

    fn answer(s: &mut Scheduler, slot: usize, user: &str) {
        s.ended(slot, Some((user.into(), format!("re: {user}"))));
    }

    #[test]
    fn queue_policy_answers_in_order_and_bounds_the_queue() {
        let mut s = Scheduler::new(2, BusyPolicy::Queue, 8);
        assert!(s.admit(req("t1", "a", "one")).is_empty());
        let (slot, id, _) = start(&mut s);
        assert_eq!(id, "t1");
        for k in 2..=5 {
            assert!(s.admit(req(&format!("t{k}"), "a", "more")).is_empty());
        }
        assert_eq!(
            s.admit(req("t6", "a", "too many")),
            vec![Action::Dropped {
                turn_id: "t6".into(),
                why: DropReason::QueueFull
            }]
        );
        // the conversation's next turn waits for its reply to end
        assert!(s.next_start().is_none());
        answer(&mut s, slot, "one");
        let (slot, id, _) = start(&mut s);
        assert_eq!((slot, id.as_str()), (0, "t2"));
        assert_eq!(s.history("a").len(), 1);
    }

    #[test]
    fn interrupt_policy_stops_the_reply_and_answers_the_new_turn() {
        let mut s = Scheduler::new(1, BusyPolicy::Interrupt, 8);
        s.admit(req("t1", "a", "one"));
        let (slot, _, _) = start(&mut s);
        let acts = s.admit(req("t2", "a", "two"));
        assert_eq!(
            acts,
            vec![Action::Stop {
                slot,
                why: StopReason::NewUtterance
            }]
        );
        assert!(s.next_start().is_none(), "t1 still runs until it ended");
        answer(&mut s, slot, "one");
        assert_eq!(start(&mut s).1, "t2");
    }

    #[test]
    fn drop_policy_drops_and_other_conversations_run_in_parallel() {
        let mut s = Scheduler::new(2, BusyPolicy::Drop, 8);
        s.admit(req("t1", "a", "one"));
        start(&mut s);
        assert_eq!(
            s.admit(req("t2", "a", "two")),
            vec![Action::Dropped {
                turn_id: "t2".into(),
                why: DropReason::Busy
            }]
        );
        assert!(s.admit(req("u1", "b", "hello")).is_empty());
        let (slot, id, _) = start(&mut s);
        assert_eq!((slot, id.as_str()), (1, "u1"));
        assert_eq!(s.running(), 2);
        // every slot busy: a third conversation waits
        s.admit(req("v1", "c", "hi"));
        assert!(s.next_start().is_none());
        assert!(s.busy());
    }

    #[test]
    fn merge_joins_waiting_turns_and_supersedes_an_unpublished_reply() {
        let mut s = Scheduler::new(1, BusyPolicy::Merge, 8);
        s.admit(req("t1", "a", "go to the"));
        // waiting: joined
        let acts = s.admit(req("t2", "a", "kitchen"));
        assert_eq!(
            acts,
            vec![Action::Merged {
                turn_id: "t2".into(),
                into: Some("t1".into())
            }]
        );
        let (slot, id, text) = start(&mut s);
        assert_eq!((id.as_str(), text.as_str()), ("t2", "go to the kitchen"));
        // running, nothing published: discarded and answered joined at once
        let acts = s.admit(req("t3", "a", "and the lab"));
        assert_eq!(
            acts[1],
            Action::Discard {
                slot,
                stop_speech: false,
                why: DiscardReason::Superseded { by: "t3".into() }
            }
        );
        let (slot, id, text) = start(&mut s);
        assert_eq!(
            (id.as_str(), text.as_str()),
            ("t3", "go to the kitchen and the lab")
        );
        assert_eq!(s.history("a").len(), 0, "a discarded reply is not history");
        // running and published: the new text waits, joined with later text
        s.mark_begun(slot);
        s.admit(req("t4", "a", "please"));
        s.admit(req("t5", "a", "now"));
        assert!(s.next_start().is_none());
        answer(&mut s, slot, "go to the kitchen and the lab");
        let (_, id, text) = start(&mut s);
        assert_eq!((id.as_str(), text.as_str()), ("t5", "please now"));
    }

    #[test]
    fn interrupt_stops_one_conversation_or_all() {
        let mut s = Scheduler::new(2, BusyPolicy::Queue, 8);
        s.admit(req("a1", "a", "x"));
        s.admit(req("b1", "b", "y"));
        let (sa, _, _) = start(&mut s);
        let (sb, _, _) = start(&mut s);
        s.admit(req("a2", "a", "queued"));
        assert_eq!(
            s.interrupt(Some("a"), Instant::now()),
            vec![Action::Stop {
                slot: sa,
                why: StopReason::Interrupted
            }]
        );
        answer(&mut s, sa, "x");
        assert!(s.next_start().is_none(), "a's queued turn was dropped");
        assert_eq!(
            s.interrupt(None, Instant::now()),
            vec![Action::Stop {
                slot: sb,
                why: StopReason::Interrupted
            }]
        );
    }

    #[test]
    fn an_interrupt_spares_turns_that_came_after_it_was_raised() {
        let mut s = Scheduler::new(2, BusyPolicy::Queue, 8);
        s.admit(req("a1", "a", "old"));
        let (sa, _, _) = start(&mut s);
        let raised = Instant::now();
        // asked for after the interrupt was raised, received before it arrived
        let mut later = req("b1", "b", "new");
        later.received = raised + std::time::Duration::from_millis(5);
        s.admit(later);
        let (_, id, _) = start(&mut s);
        assert_eq!(id, "b1");
        assert_eq!(
            s.interrupt(None, raised),
            vec![Action::Stop {
                slot: sa,
                why: StopReason::Interrupted
            }]
        );
    }

    #[test]
    fn slot_choice_prefers_the_conversations_own_then_unused_then_oldest() {
        let mut s = Scheduler::new(3, BusyPolicy::Queue, 8);
        for (t, c) in [("a1", "a"), ("b1", "b")] {
            s.admit(req(t, c, "x"));
            let (slot, _, _) = start(&mut s);
            answer(&mut s, slot, "x");
        }
        // b's own slot (1), not the unused one (2)
        s.admit(req("b2", "b", "x"));
        let st = s.next_start().unwrap();
        assert_eq!((st.slot, st.rebound), (1, false));
        answer(&mut s, 1, "x");
        // a new conversation takes the unused slot
        s.admit(req("c1", "c", "x"));
        let st = s.next_start().unwrap();
        assert_eq!((st.slot, st.rebound), (2, true));
        answer(&mut s, 2, "x");
        // then the least recently used one (a's)
        s.admit(req("d1", "d", "x"));
        let st = s.next_start().unwrap();
        assert_eq!((st.slot, st.rebound), (0, true));
    }

    #[test]
    fn old_conversations_are_evicted_but_not_a_running_one() {
        let mut s = Scheduler::new(1, BusyPolicy::Queue, 8);
        s.admit(req("t0", "c0", "x"));
        let (slot, _, _) = start(&mut s);
        s.history("c0");
        for k in 1..MAX_CONVERSATIONS {
            s.history(&format!("c{k}"));
        }
        s.history("new");
        assert_eq!(s.conversations.len(), MAX_CONVERSATIONS);
        assert!(s.conversations.contains_key("c0"), "running: kept");
        assert!(
            !s.conversations.contains_key("c1"),
            "oldest idle: forgotten"
        );
        answer(&mut s, slot, "x");
        assert_eq!(s.history("c0").len(), 1);
    }

    #[test]
    fn a_failed_start_frees_the_slot_and_the_next_queued_turn_starts() {
        let mut s = Scheduler::new(1, BusyPolicy::Queue, 8);
        s.admit(req("t1", "a", "x"));
        let (slot, _, _) = start(&mut s);
        s.admit(req("t2", "a", "y"));
        s.start_failed(slot);
        assert_eq!(start(&mut s).1, "t2");
        assert_eq!(s.history("a").len(), 0);
    }

    #[test]
    fn a_continuation_replaces_its_turn() {
        let mut s = Scheduler::new(1, BusyPolicy::Queue, 8);
        // running, some of it published: discarded, speech stopped
        s.admit(req("t1", "a", "go to the kitchen"));
        let (slot, _, _) = start(&mut s);
        s.mark_begun(slot);
        let mut cont = req("t2", "a", "go to the kitchen and bring water");
        cont.replaces = Some("t1".into());
        let acts = s.admit(cont);
        assert_eq!(
            acts[0],
            Action::Discard {
                slot,
                stop_speech: true,
                why: DiscardReason::Replaced
            }
        );
        let (slot, id, _) = start(&mut s);
        assert_eq!(id, "t2");
        answer(&mut s, slot, "go to the kitchen and bring water");
        // finished: speech stopped, exchange forgotten
        let mut cont = req("t3", "a", "go to the kitchen and bring water please");
        cont.replaces = Some("t2".into());
        let acts = s.admit(cont);
        assert_eq!(
            acts[0],
            Action::StopSpeech {
                turn_id: "t2".into(),
                forgot: true
            }
        );
        assert_eq!(s.history("a").len(), 0);
    }

    #[test]
    fn waiting_turns_are_bounded_and_reset_forgets_everything() {
        let mut s = Scheduler::new(1, BusyPolicy::Queue, 8);
        s.admit(req("t0", "c0", "x"));
        let (slot, _, _) = start(&mut s);
        for k in 1..=WAITING_MAX {
            assert!(s
                .admit(req(&format!("t{k}"), &format!("c{k}"), "x"))
                .is_empty());
        }
        let acts = s.admit(req("late", "late", "x"));
        assert!(matches!(
            acts[..],
            [Action::Dropped {
                why: DropReason::WaitingFull,
                ..
            }]
        ));
        assert_eq!(
            s.stop_all(),
            vec![Action::Stop {
                slot,
                why: StopReason::Reset
            }]
        );
        answer(&mut s, slot, "x");
        assert_eq!(
            s.clear(),
            1,
            "c0 answered; the waiting ones not yet started"
        );
        assert!(!s.busy());
        assert!(s.next_start().is_none());
    }
}
