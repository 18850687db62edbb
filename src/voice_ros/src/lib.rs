//! voice_agent's ROS 2 edge, shared by the node executables: QoS choices,
//! wall-clock stamps, diagnostics, throttled logging, parameter checks,
//! shutdown on SIGINT/SIGTERM, AudioFrame <-> samples conversion, and the
//! server parameters and faults of `engine: openai`.
//!
//! Everything that touches r2r and is needed by more than one node lives here;
//! the logic itself stays in `voice_core`.

pub mod action;
pub mod diag;
pub mod frames;
pub mod interrupt;
pub mod lifecycle;
pub mod log;
pub mod node;
pub mod params;
pub mod server;
pub mod stamp;
