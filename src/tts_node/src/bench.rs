//! `tts_node --bench-direct ENGINE VOICE ONNXRUNTIME TEXT`: the synthesis
//! engine called directly, sentence by sentence as the node does (no ROS, no
//! pacing), for scripts/bench.py to compare with the node. One JSON line.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result};
use voice_core::chunker::{Chunker, ChunkerConfig};
use voice_core::normalize::normalize;

use crate::engine::Engine;
use crate::params::TtsParams;

pub fn run(args: &[String]) -> Result<()> {
    let usage = "usage: tts_node --bench-direct ENGINE VOICE ONNXRUNTIME TEXT";
    let p = TtsParams {
        engine: args.first().context(usage)?.clone(),
        voice_path: args.get(1).context(usage)?.clone(),
        onnxruntime_path: args.get(2).context(usage)?.clone(),
        ..Default::default()
    };
    let text = args.get(3).context(usage)?;
    let t0 = Instant::now();
    let cfg = voice_ros::params::NodeParams::validate(&p)?;
    let mut engine = Engine::load(&cfg)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let cancel = AtomicBool::new(false);
    // warm-up sentence (first inference allocates)
    engine.synthesize("Hello.", None, None, &cancel)?;
    let mut splitter = Chunker::new(ChunkerConfig::default());
    let mut sentences = splitter.push(text);
    sentences.push(splitter.finish());
    let t0 = Instant::now();
    let mut first_ms = None;
    let mut samples = 0usize;
    for s in sentences.iter().filter(|s| !s.trim().is_empty()) {
        let audio = engine.synthesize(&normalize(s), None, None, &cancel)?;
        first_ms.get_or_insert(t0.elapsed().as_secs_f64() * 1e3);
        samples += audio.len();
    }
    let total_s = t0.elapsed().as_secs_f64();
    let audio_s = samples as f64 / f64::from(engine.sample_rate());
    println!(
        "{{\"load_ms\": {load_ms:.1}, \"first_audio_ms\": {:.1}, \"compute_s\": {total_s:.3}, \"audio_s\": {audio_s:.3}, \"rtf\": {:.4}}}",
        first_ms.unwrap_or(0.0),
        total_s / audio_s.max(1e-9)
    );
    Ok(())
}

/// `tts_node --speak VOICE ONNXRUNTIME LENGTH_SCALE SPEAKER OUT_WAV TEXT...`:
/// Piper speech of each TEXT to OUT_WAV (16-bit mono at the voice's rate),
/// one file per text with a numeric suffix when there are several (test
/// speakers for the conversation tests and benchmarks).
pub fn speak(args: &[String]) -> Result<()> {
    let usage = "usage: tts_node --speak VOICE ONNXRUNTIME LENGTH_SCALE SPEAKER OUT_WAV TEXT...";
    let p = TtsParams {
        engine: "piper".into(),
        voice_path: args.first().context(usage)?.clone(),
        onnxruntime_path: args.get(1).context(usage)?.clone(),
        length_scale: args.get(2).context(usage)?.parse()?,
        speaker_id: args.get(3).context(usage)?.parse()?,
        ..Default::default()
    };
    let out = std::path::PathBuf::from(args.get(4).context(usage)?);
    let texts = args.get(5..).filter(|t| !t.is_empty()).context(usage)?;
    let cfg = voice_ros::params::NodeParams::validate(&p)?;
    let mut engine = Engine::load(&cfg)?;
    let cancel = AtomicBool::new(false);
    for (i, text) in texts.iter().enumerate() {
        let audio = engine.synthesize(&normalize(text), None, None, &cancel)?;
        let path = if texts.len() == 1 {
            out.clone()
        } else {
            out.with_extension(format!("{i}.wav"))
        };
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: engine.sample_rate(),
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec)
            .with_context(|| format!("cannot write {}", path.display()))?;
        for s in audio {
            w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)?;
        }
        w.finalize()?;
    }
    Ok(())
}
