//! Where the engine's output goes: `reply/chunk` and `reply/text`, and with
//! intents the action topics.

use r2r::std_msgs::msg::String as StringMsg;
use r2r::voice_agent::msg::{EndOfTurn, ReplyChunk};

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

impl Sink {
    /// Publishes a reply chunk, stamped now.
    pub fn chunk(&self, mut m: ReplyChunk) {
        m.header.stamp = voice_ros::stamp::now();
        if let Err(e) = self.chunk.publish(&m) {
            self.log.warn(format!("reply/chunk publish failed: {e}"));
        }
    }

    /// Publishes an end-of-turn judgement, stamped now.
    pub fn end_of_turn(&self, mut m: EndOfTurn) {
        m.header.stamp = voice_ros::stamp::now();
        if let Err(e) = self.end_of_turn.publish(&m) {
            self.log.warn(format!("end_of_turn publish failed: {e}"));
        }
    }

    /// Stops tts_node speaking (the reply of `turn` was replaced). The
    /// message names the turn; llm_node's own interrupt handler matches it
    /// to no conversation, so only speech stops.
    pub fn stop_speech(&self, turn: &str) {
        let m = StringMsg {
            data: format!("replaced:{turn}"),
        };
        if let Err(e) = self.interrupt.publish(&m) {
            self.log.warn(format!("interrupt publish failed: {e}"));
        }
    }

    pub fn reply(&self, text: &str) {
        if let Err(e) = self.text.publish(&StringMsg { data: text.into() }) {
            self.log.warn(format!("reply/text publish failed: {e}"));
        }
    }
}
