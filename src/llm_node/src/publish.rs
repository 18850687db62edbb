//! Where the engine's output goes on ROS: `reply/chunk`, `reply/text`,
//! `end_of_turn`, `interrupt` (a replaced reply's speech) and with intents
//! the action topics / Nav2 client.

use r2r::std_msgs::msg::String as StringMsg;
use r2r::voice_agent::msg::{EndOfTurn, ReplyChunk};
use voice_core::intent::Decision;
use voice_ros::stamp;

use crate::engine::{Output, TurnInfo};
use crate::turn::{Chunk, Judgement};

/// The engine thread's publishers (r2r publishers are Send: the thread owns them).
pub struct Sink {
    pub chunk: r2r::Publisher<ReplyChunk>,
    pub text: r2r::Publisher<StringMsg>,
    pub end_of_turn: r2r::Publisher<EndOfTurn>,
    /// `interrupt`, to stop the speech of a replaced turn's reply.
    pub interrupt: r2r::Publisher<StringMsg>,
    /// With intents: where goals, stops and intents go.
    pub actions: Option<crate::actions::ActionSink>,
    pub log: voice_ros::log::Log,
}

impl Output for Sink {
    /// Publishes a reply chunk, stamped now.
    fn chunk(&self, c: Chunk) {
        let m = ReplyChunk {
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
            header: r2r::std_msgs::msg::Header {
                stamp: stamp::now(),
                ..Default::default()
            },
        };
        if let Err(e) = self.chunk.publish(&m) {
            self.log.warn(format!("reply/chunk publish failed: {e}"));
        }
    }

    fn reply(&self, text: &str) {
        if let Err(e) = self.text.publish(&StringMsg { data: text.into() }) {
            self.log.warn(format!("reply/text publish failed: {e}"));
        }
    }

    /// Publishes an end-of-turn judgement, stamped now.
    fn end_of_turn(&self, j: Judgement) {
        let m = EndOfTurn {
            turn_id: j.turn_id,
            revision: j.revision,
            probability: j.probability,
            compute_ms: j.compute_ms,
            prefilled_tokens: j.prefilled_tokens,
            header: r2r::std_msgs::msg::Header {
                stamp: stamp::now(),
                ..Default::default()
            },
        };
        if let Err(e) = self.end_of_turn.publish(&m) {
            self.log.warn(format!("end_of_turn publish failed: {e}"));
        }
    }

    /// Stops tts_node speaking (the reply of `turn` was replaced). The
    /// message names the turn; llm_node's own interrupt handler matches it
    /// to no conversation, so only speech stops.
    fn stop_speech(&self, turn: &str) {
        let m = StringMsg {
            data: format!("replaced:{turn}"),
        };
        if let Err(e) = self.interrupt.publish(&m) {
            self.log.warn(format!("interrupt publish failed: {e}"));
        }
    }

    fn act(&self, d: &Decision<'_>, turn: &TurnInfo<'_>) -> Option<String> {
        self.actions.as_ref()?.act(d, turn)
    }
}
