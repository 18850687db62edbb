//! `stt_node --bench-direct WAV [n_threads] [runs]`: whisper-rs called
//! directly on a WAV (no ROS, no VAD, no queues), for scripts/bench.py to
//! compare with the node on the same audio. Prints one JSON line.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::engine::Whisper;
use crate::params::SttParams;

pub fn run(args: &[String]) -> Result<()> {
    let wav = args.first().context(
        "usage: stt_node --bench-direct WAV MODEL [n_threads] [runs] [audio_ctx] [use_gpu]",
    )?;
    let model = args.get(1).context("model path missing")?;
    let n_threads: i32 = args.get(2).map_or(Ok(2), |s| s.parse())?;
    let runs: usize = args.get(3).map_or(Ok(3), |s| s.parse())?;
    // 0 = sized to the audio (the node's default), -1 = the full 30 s window
    let audio_ctx: i32 = args.get(4).map_or(Ok(0), |s| s.parse())?;
    let use_gpu: bool = args.get(5).map_or(Ok(false), |s| s.parse())?;
    let audio = voice_core::wav::read_mono(std::path::Path::new(wav), voice_core::PIPELINE_RATE)?;
    let p = SttParams {
        model_path: model.clone(),
        n_threads,
        ..Default::default()
    };
    let t0 = Instant::now();
    let p = SttParams {
        audio_ctx,
        use_gpu,
        ..p
    };
    let cfg = voice_ros::params::NodeParams::validate(&p)?;
    let model = cfg
        .model
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("model_path: not set"))?;
    let mut t = Whisper::load(model, cfg.decode)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut times = Vec::new();
    let mut text = String::new();
    for _ in 0..runs.max(1) {
        let r = t.transcribe(&audio)?;
        times.push(r.compute_ms);
        text = r.text;
    }
    let all = times.clone();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let audio_s = audio.len() as f64 / f64::from(voice_core::PIPELINE_RATE);
    // JSON escaping (Debug formatting is not JSON: \u{1b} for a control
    // character, which random-weight models do produce)
    println!(
        "{{\"load_ms\": {load_ms:.1}, \"compute_ms\": {median:.1}, \"runs_ms\": {:?}, \"audio_s\": {audio_s:.3}, \"rtf\": {:.4}, \"text\": {}}}",
        all.iter().map(|t| t.round()).collect::<Vec<_>>(),
        median / 1e3 / audio_s,
        serde_json::Value::String(text)
    );
    Ok(())
}
