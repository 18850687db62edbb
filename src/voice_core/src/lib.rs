//! voice_agent's core: the logic of the voice pipeline in plain Rust, with no
//! ROS and no inference engine, so `cargo test -p voice_core` runs anywhere.
//!
//! It is: audio frame decoding and resampling, VAD endpointing, sentence
//! chunking, chat history, text normalization for speech, turn timing,
//! word-error-rate scoring, named places and the intent grammar, and the
//! robot-state text for prompts. It is not: model loading, topics or parameters
//! (those live in the node crates and `voice_ros`).

pub mod audio;
pub mod chat;
pub mod chunker;
pub mod compute;
pub mod endpoint;
pub mod ingest;
pub mod intent;
pub mod interrupt;
pub mod lifecycle;
pub mod melspec;
pub mod model_file;
pub mod normalize;
pub mod params;
pub mod partial;
pub mod places;
pub mod queue;
pub mod resample;
pub mod robot_state;
pub mod room;
pub mod scheduler;
pub mod transcript;
pub mod turn;
pub mod utf8;
pub mod wake;
pub mod wav;

/// Sample rate every engine-facing stage works at (Whisper, Silero VAD) [Hz].
pub const PIPELINE_RATE: u32 = 16_000;
