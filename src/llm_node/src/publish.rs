//! Where the engine's output goes: `reply/chunk` and `reply/text`, and with
//! intents the action topics.

use r2r::std_msgs::msg::String as StringMsg;
use r2r::voice_agent::msg::ReplyChunk;

/// A chunk as the engine sees it (borrowed, so the hot path copies nothing twice).
pub struct ChunkInfo<'a> {
    pub turn_id: &'a str,
    pub conversation_id: &'a str,
    pub index: u32,
    pub text: &'a str,
    pub is_final: bool,
    pub speech_end: &'a r2r::builtin_interfaces::msg::Time,
    pub stt_ms: f32,
    pub first_token_ms: f32,
    pub first_chunk_ms: f32,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub tokens_per_s: f32,
}

/// The engine thread's publishers (r2r publishers are Send: the thread owns them).
pub struct Sink {
    pub chunk: r2r::Publisher<ReplyChunk>,
    pub text: r2r::Publisher<StringMsg>,
    /// With intents: where goals, stops and intents go.
    pub actions: Option<crate::actions::ActionSink>,
    pub log: voice_ros::log::Log,
}

impl Sink {
    pub fn chunk(&self, c: &ChunkInfo<'_>) {
        let mut m = ReplyChunk {
            turn_id: c.turn_id.into(),
            conversation_id: c.conversation_id.into(),
            index: c.index,
            text: c.text.into(),
            is_final: c.is_final,
            speech_end: c.speech_end.clone(),
            stt_ms: c.stt_ms,
            first_token_ms: c.first_token_ms,
            first_chunk_ms: c.first_chunk_ms,
            prompt_tokens: c.prompt_tokens,
            generated_tokens: c.generated_tokens,
            tokens_per_s: c.tokens_per_s,
            ..Default::default()
        };
        m.header.stamp = voice_ros::stamp::now();
        if let Err(e) = self.chunk.publish(&m) {
            self.log.warn(format!("reply/chunk publish failed: {e}"));
        }
    }

    pub fn reply(&self, text: &str) {
        if let Err(e) = self.text.publish(&StringMsg { data: text.into() }) {
            self.log.warn(format!("reply/text publish failed: {e}"));
        }
    }
}
