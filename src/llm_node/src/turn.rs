//! One turn's reply while it is generated, whichever engine writes it: the
//! text so far, what of it is spoken (with intents only the answer's `say`
//! string) and the chunks it makes. Its methods return chunks; the engine
//! publishes them. (The llama.cpp engine keeps its tokens and sampler beside
//! it; the server engine, the stream it reads.)

use std::time::{Duration, Instant};

use voice_core::chunker::{Chunker, ChunkerConfig};
use voice_core::intent::SayStream;
use voice_core::scheduler::{Stamp, TurnRequest};
use voice_core::utf8::Utf8Stream;

/// A piece of a reply (`reply/chunk` without its header).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    pub turn_id: String,
    pub conversation_id: String,
    pub index: u32,
    pub text: String,
    pub is_final: bool,
    pub speech_end: Stamp,
    pub stt_ms: f32,
    pub first_token_ms: f32,
    pub first_chunk_ms: f32,
    pub prompt_tokens: u32,
    pub prefilled_tokens: u32,
    pub generated_tokens: u32,
    pub tokens_per_s: f32,
}

impl Chunk {
    /// The empty final chunk that closes `req`'s turn (nothing more of it is said).
    pub fn closing(req: &TurnRequest) -> Self {
        Self {
            turn_id: req.turn_id.clone(),
            conversation_id: req.conversation_id.clone(),
            is_final: true,
            speech_end: req.speech_end,
            stt_ms: req.stt_ms,
            ..Default::default()
        }
    }
}

/// An end-of-turn judgement (`end_of_turn` without its header).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Judgement {
    pub turn_id: String,
    pub revision: u32,
    pub probability: f32,
    pub compute_ms: f32,
    pub prefilled_tokens: u32,
}

pub struct Turn {
    pub req: TurnRequest,
    /// The user's text as it went into the prompt (sanitized, maybe truncated).
    pub user_text: String,
    /// Prompt tokens evaluated for this turn (not found in a cache).
    pub prompt_evaluated: usize,
    /// Prompt tokens found in the KV cache from an end-of-turn judgement.
    pub prefilled: u32,
    /// What the model wrote (with intents, its JSON, prefill included).
    pub reply: String,
    pub generated: u32,
    utf8: Utf8Stream,
    /// With intents: the spoken part of the constrained output.
    say: Option<SayStream>,
    chunker: Chunker,
    chunk_index: u32,
    first_token: Option<Instant>,
    first_chunk: Option<Instant>,
}

/// A turn's end: its last chunks, the text for `reply/text` and the
/// exchange for the history.
pub struct Finished {
    pub chunks: Vec<Chunk>,
    /// What was said (with intents the answer or the action's words).
    pub spoken: String,
    pub user_text: String,
    /// What the model wrote, for the history.
    pub reply: String,
}

impl Turn {
    /// `prefill`: the start of the output written into the prompt (with
    /// intents, the action's opening; the say stream starts after it).
    /// `first_words`: the first chunk ends after this many words (0 = at
    /// its first sentence or clause only).
    pub fn new(
        req: TurnRequest,
        user_text: String,
        prompt_tokens: usize,
        prefilled: u32,
        prefill: Option<&str>,
        first_words: usize,
    ) -> Self {
        let say = prefill.map(|p| {
            let mut say = SayStream::new();
            say.push(p);
            say
        });
        Self {
            req,
            user_text,
            prompt_evaluated: prompt_tokens,
            prefilled,
            reply: prefill.unwrap_or_default().to_string(),
            generated: 0,
            utf8: Utf8Stream::new(),
            say,
            chunker: Chunker::new(ChunkerConfig {
                first_words,
                ..ChunkerConfig::default()
            }),
            chunk_index: 0,
            first_token: None,
            first_chunk: None,
        }
    }

    /// Whether only a `say` string is spoken (intents).
    pub fn constrained(&self) -> bool {
        self.say.is_some()
    }

    /// The answer spoken so far (with intents).
    pub fn said(&self) -> Option<&str> {
        self.say.as_ref().map(SayStream::said)
    }

    /// A token was sampled (the first one starts the generation clock).
    pub fn sampled(&mut self) {
        self.first_token.get_or_insert_with(Instant::now);
    }

    /// A generated piece of text: the sentences it completes.
    pub fn token(&mut self, piece: &[u8]) -> Vec<Chunk> {
        self.generated += 1;
        let text = self.utf8.push(piece);
        self.reply.push_str(&text);
        self.speak(&text)
            .into_iter()
            .map(|c| self.chunk(c, false))
            .collect()
    }

    /// Ends the turn. `extra`, given the turn with its whole output, says
    /// what is said beyond the streamed text (an action's confirmation).
    pub fn finish(mut self, extra: impl FnOnce(&Turn) -> Option<String>) -> Finished {
        let rest = self.utf8.finish();
        self.reply.push_str(&rest);
        let mut pieces = self.speak(&rest);
        let mut spoken = None;
        if self.say.is_some() {
            let added = extra(&self);
            if let Some(added) = &added {
                pieces.extend(self.chunker.push(added));
            }
            spoken = Some(added.unwrap_or_else(|| self.said().unwrap_or_default().to_string()));
        }
        pieces.push(self.chunker.finish());
        let n = pieces.len();
        let chunks = pieces
            .into_iter()
            .enumerate()
            .map(|(k, p)| self.chunk(p, k + 1 == n))
            .collect();
        Finished {
            chunks,
            spoken: spoken.unwrap_or_else(|| self.reply.clone()),
            user_text: self.user_text,
            reply: self.reply.trim().to_string(),
        }
    }

    /// Transcript received -> first token [ms] (0 before it).
    pub fn first_token_ms(&self) -> f32 {
        self.first_token.map_or(0.0, |t| ms(t - self.req.received))
    }

    /// Generation speed after the first token [tokens/s].
    pub fn tokens_per_s(&self) -> f64 {
        match self.first_token {
            Some(t) if self.generated > 1 => {
                f64::from(self.generated - 1) / t.elapsed().as_secs_f64().max(1e-6)
            }
            _ => 0.0,
        }
    }

    /// Sentences ready to speak from newly generated `text`: with intents
    /// only the answer's `say` string is spoken, otherwise all of it.
    fn speak(&mut self, text: &str) -> Vec<String> {
        match self.say.as_mut() {
            Some(say) => {
                let spoken = say.push(text);
                self.chunker.push(&spoken)
            }
            None => self.chunker.push(text),
        }
    }

    fn chunk(&mut self, text: String, is_final: bool) -> Chunk {
        let first_chunk = *self.first_chunk.get_or_insert_with(Instant::now);
        let c = Chunk {
            turn_id: self.req.turn_id.clone(),
            conversation_id: self.req.conversation_id.clone(),
            index: self.chunk_index,
            text,
            is_final,
            speech_end: self.req.speech_end,
            stt_ms: self.req.stt_ms,
            first_token_ms: self.first_token_ms(),
            first_chunk_ms: ms(first_chunk - self.req.received),
            prompt_tokens: self.prompt_evaluated as u32,
            prefilled_tokens: self.prefilled,
            generated_tokens: self.generated,
            tokens_per_s: self.tokens_per_s() as f32,
        };
        self.chunk_index += 1;
        c
    }
}

pub fn ms(d: Duration) -> f32 {
    (d.as_secs_f64() * 1e3) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(prefill: Option<&str>) -> Turn {
        let req = TurnRequest {
            turn_id: "t1".into(),
            conversation_id: "c".into(),
            text: "hi".into(),
            speech_end: Stamp { sec: 5, nanosec: 7 },
            stt_ms: 120.0,
            received: Instant::now(),
            replaces: None,
        };
        Turn::new(req, "hi".into(), 3, 0, prefill, 0)
    }

    #[test]
    fn chunks_are_sentences_indexed_in_order_and_the_last_is_final() {
        let mut t = turn(None);
        let mut chunks = Vec::new();
        for piece in ["Hello", " there.", " The kitchen", " is to the left", "."] {
            t.sampled();
            chunks.extend(t.token(piece.as_bytes()));
        }
        let f = t.finish(|_| Some("never asked without intents".into()));
        chunks.extend(f.chunks);
        let text: String = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            text.split_whitespace().collect::<Vec<_>>().join(" "),
            "Hello there. The kitchen is to the left."
        );
        assert!(chunks.iter().enumerate().all(|(k, c)| c.index == k as u32));
        assert_eq!(chunks.iter().filter(|c| c.is_final).count(), 1);
        assert!(chunks.last().unwrap().is_final);
        assert_eq!(chunks[0].speech_end, Stamp { sec: 5, nanosec: 7 });
        assert_eq!(
            (
                chunks[0].prompt_tokens,
                chunks.last().unwrap().generated_tokens
            ),
            (3, 5)
        );
        assert_eq!(f.spoken, "Hello there. The kitchen is to the left.");
        assert_eq!(f.reply, f.spoken);
    }

    #[test]
    fn with_intents_only_the_answer_is_spoken_and_the_action_adds_its_words() {
        let mut t = turn(Some(voice_core::intent::PREFILL));
        let mut chunks = Vec::new();
        for piece in ["navigate_to\",", "\"place\":\"kitchen\"}"] {
            chunks.extend(t.token(piece.as_bytes()));
        }
        assert!(chunks.is_empty(), "nothing of an action's JSON is spoken");
        let f = t.finish(|t| {
            assert!(t.reply.ends_with("\"kitchen\"}"));
            Some("Going to the kitchen.".into())
        });
        assert_eq!(f.spoken, "Going to the kitchen.");
        assert_eq!(f.chunks.last().map(|c| c.is_final), Some(true));
        assert!(f.reply.starts_with(voice_core::intent::PREFILL));
    }

    #[test]
    fn a_turn_cut_before_any_text_closes_with_one_empty_final_chunk() {
        let f = turn(None).finish(|_| None);
        assert_eq!(f.chunks.len(), 1);
        assert!(f.chunks[0].is_final && f.chunks[0].text.is_empty());
        let c = Chunk::closing(&turn(None).req);
        assert!(c.is_final && c.text.is_empty() && c.turn_id == "t1");
    }
}
