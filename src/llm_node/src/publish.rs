//! Where the engine's output goes on ROS: `reply/chunk`, `reply/text`,
//! `end_of_turn`, `interrupt` (a replaced reply's speech) and with intents
//! the action topics / Nav2 client.

use r2r::std_msgs::msg::{Header, String as StringMsg};
use r2r::voice_agent::msg::{EndOfTurn, Interrupt, ReplyChunk};
use voice_core::intent::Decision;
use voice_core::interrupt::Target;
use voice_ros::stamp;

use crate::chat_action::{Chats, Event};
use crate::engine::{Output, TurnInfo};
use crate::turn::{Chunk, Judgement};

/// The engine thread's publishers (r2r publishers are Send: the thread owns them).
pub struct Sink {
    pub chunk: r2r::Publisher<ReplyChunk>,
    /// `reply/tentative`: a first chunk prepared before its turn is confirmed.
    pub tentative: r2r::Publisher<ReplyChunk>,
    pub text: r2r::Publisher<StringMsg>,
    pub end_of_turn: r2r::Publisher<EndOfTurn>,
    /// `interrupt`, to stop the speech of a replaced turn's reply.
    pub interrupt: r2r::Publisher<Interrupt>,
    /// With intents: where goals, stops and intents go.
    pub actions: Option<crate::actions::ActionSink>,
    /// The `chat` action's goals: their turns' output goes to them, not to ROS topics.
    pub chats: std::sync::Arc<Chats>,
    pub log: voice_ros::log::Log,
}

impl Sink {
    /// Publishes `m` on `topic`; a failure is a warning (nothing to retry).
    fn send<T: r2r::WrappedTypesupport + 'static>(
        &self,
        p: &r2r::Publisher<T>,
        topic: &str,
        m: &T,
    ) {
        if let Err(e) = p.publish(m) {
            self.log.warn(format!("{topic} publish failed: {e}"));
        }
    }
}

/// A chunk as `reply/chunk` carries it, stamped now.
fn message(c: Chunk) -> ReplyChunk {
    ReplyChunk {
        header: stamped(),
        turn_id: c.turn_id,
        conversation_id: c.conversation_id,
        index: c.index,
        text: c.text,
        is_final: c.is_final,
        speech_end: stamp::from_core(c.speech_end),
        stt_ms: c.stt_ms,
        first_token_ms: c.first_token_ms,
        first_chunk_ms: c.first_chunk_ms,
        prompt_tokens: c.prompt_tokens,
        prefilled_tokens: c.prefilled_tokens,
        generated_tokens: c.generated_tokens,
        tokens_per_s: c.tokens_per_s,
    }
}

/// A header stamped now (wall clock, as every latency figure).
fn stamped() -> Header {
    Header {
        stamp: stamp::now(),
        ..Default::default()
    }
}

impl Output for Sink {
    /// Publishes a reply chunk, stamped now (a chat goal's goes to it).
    fn chunk(&self, c: Chunk) {
        if self.chats.owns(&c.turn_id) {
            let turn_id = c.turn_id.clone();
            self.chats.deliver(&turn_id, Event::Chunk(c));
            return;
        }
        self.send(&self.chunk, "reply/chunk", &message(c));
    }

    /// Publishes a first chunk prepared before its turn is confirmed, on
    /// `reply/tentative` only (a chat goal's turn is not spoken: none).
    fn tentative(&self, c: Chunk) {
        if !self.chats.owns(&c.turn_id) {
            self.send(&self.tentative, "reply/tentative", &message(c));
        }
    }

    fn reply(&self, turn_id: &str, text: &str) {
        if !self.chats.deliver(turn_id, Event::Reply(text.into())) {
            self.send(&self.text, "reply/text", &StringMsg { data: text.into() });
        }
    }

    fn ended(&self, turn_id: &str, why: &str) {
        self.chats.deliver(turn_id, Event::Ended(why.into()));
    }

    /// Publishes an end-of-turn judgement, stamped now.
    fn end_of_turn(&self, j: Judgement) {
        let m = EndOfTurn {
            header: stamped(),
            turn_id: j.turn_id,
            revision: j.revision,
            probability: j.probability,
            compute_ms: j.compute_ms,
            prefilled_tokens: j.prefilled_tokens,
        };
        self.send(&self.end_of_turn, "end_of_turn", &m);
    }

    /// Stops tts_node speaking (the reply of `turn` was replaced). The
    /// interrupt's target is the turn; llm_node's own interrupt handler
    /// ignores turn targets, so only speech stops.
    fn stop_speech(&self, turn: &str) {
        if self.chats.owns(turn) {
            return; // a chat goal's reply is not spoken
        }
        let m = voice_ros::interrupt::raise(&Target::Turn(turn.into()), "replaced");
        self.send(&self.interrupt, "interrupt", &m);
    }

    fn act(&self, d: &Decision<'_>, turn: &TurnInfo<'_>) -> Option<String> {
        if self.chats.owns(turn.turn_id) {
            return None; // a chat goal asks, it does not command the robot
        }
        self.actions.as_ref()?.act(d, turn)
    }
}
