//! `llm_node --bench-bare MODEL n_threads n_gen runs PROMPT [n_gpu_layers]`: a bare
//! llama-cpp-2 loop (one sequence, greedy, no ROS, no chunking) on the same
//! model, threads, context size (2048), flash attention (on), system prompt
//! and chat template as the node in the benchmark, for
//! scripts/bench.py to compare with the node. Prints one JSON line.

use std::num::NonZeroU32;
use std::time::Instant;

use anyhow::{Context, Result};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;

use crate::params::LlmParams;

pub fn run(args: &[String]) -> Result<()> {
    let usage = "usage: llm_node --bench-bare MODEL n_threads n_gen runs PROMPT [n_gpu_layers]";
    let model_path = args.first().context(usage)?;
    let n_threads: i32 = args.get(1).context(usage)?.parse()?;
    let n_gen: usize = args.get(2).context(usage)?.parse()?;
    let runs: usize = args.get(3).context(usage)?.parse()?;
    let prompt = args.get(4).context(usage)?;
    // as the node's n_gpu_layers (0 = CPU only; a CPU build ignores it)
    let n_gpu_layers: u32 = args.get(5).map_or(Ok(0), |s| s.parse())?;
    let mut backend = LlamaBackend::init()?;
    backend.void_logs();
    let mp = LlamaModelParams::default().with_n_gpu_layers(n_gpu_layers);
    let model = LlamaModel::load_from_file(&backend, model_path, &mp)?;
    let cp = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(2048))
        .with_n_batch(512)
        .with_n_ubatch(256)
        .with_n_threads(n_threads)
        .with_n_threads_batch(n_threads)
        .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED);
    let mut ctx = model.new_context(&backend, cp)?;
    let tmpl = model.chat_template(None)?;
    let chat = [
        LlamaChatMessage::new("system".into(), LlmParams::default().system_prompt)?,
        LlamaChatMessage::new("user".into(), prompt.clone())?,
    ];
    let text = model.apply_chat_template(&tmpl, &chat, true)?;
    let vocab = model.vocab();
    let tokens = vocab.tokenize(text.as_bytes(), true, true);
    let mut results = Vec::new();
    for _ in 0..runs.max(1) {
        ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(512, 1);
        let last = tokens.len() - 1;
        for (i, &t) in tokens.iter().enumerate() {
            batch.add(t, i as i32, &[0], i == last)?;
        }
        let mut sampler = LlamaSampler::greedy();
        let t0 = Instant::now();
        ctx.decode(&mut batch)?;
        let prompt_s = t0.elapsed().as_secs_f64();
        let mut token = sampler.sample(&ctx, batch.n_tokens() - 1);
        let ttft_s = t0.elapsed().as_secs_f64();
        let mut generated = 1usize;
        let mut pos = tokens.len() as i32;
        let g0 = Instant::now();
        while generated < n_gen && !vocab.is_eog(token) {
            batch.clear();
            batch.add(token, pos, &[0], true)?;
            pos += 1;
            ctx.decode(&mut batch)?;
            token = sampler.sample(&ctx, 0);
            generated += 1;
        }
        let gen_s = g0.elapsed().as_secs_f64();
        results.push((prompt_s, ttft_s, generated, gen_s));
    }
    results.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (prompt_s, ttft_s, generated, gen_s) = results[results.len() / 2];
    println!(
        "{{\"prompt_tokens\": {}, \"prompt_tps\": {:.1}, \"ttft_ms\": {:.1}, \"gen_tokens\": {generated}, \"gen_tps\": {:.1}, \"n_gpu_layers\": {n_gpu_layers}}}",
        tokens.len(),
        tokens.len() as f64 / prompt_s,
        ttft_s * 1e3,
        (generated.saturating_sub(1)) as f64 / gen_s.max(1e-9)
    );
    Ok(())
}
