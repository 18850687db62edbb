//! The end-of-turn score: the model's probability that the user's message
//! ends where the transcript ends, read at the chat template's end-of-turn
//! token that closes the user's message (LiveKit's turn-detector method,
//! here with the conversation's own model and prompt, so computing it also
//! pre-fills the reply's prompt into the KV cache).
//!
//! `llm_node --bench-eot MODEL n_threads TEXT...` prints the score of each
//! text as a fresh single-turn conversation (one JSON line each).

use std::num::NonZeroU32;
use std::time::Instant;

use anyhow::{Context, Result};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use crate::params::LlmParams;

/// Index of the token that closes the user's (last) message in a rendered
/// prompt: the last end-of-generation token (`<|im_end|>`, `<|eot_id|>`).
/// The score is read from the logits of the token before it.
pub fn user_end(model: &LlamaModel, tokens: &[LlamaToken]) -> Option<usize> {
    let vocab = model.vocab();
    tokens
        .iter()
        .rposition(|&t| vocab.is_eog(t))
        .filter(|&k| k > 0)
}

pub fn bench(args: &[String]) -> Result<()> {
    let usage = "usage: llm_node --bench-eot MODEL n_threads TEXT...";
    let model_path = args.first().context(usage)?;
    let n_threads: i32 = args.get(1).context(usage)?.parse()?;
    let mut backend = LlamaBackend::init()?;
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, model_path, &LlamaModelParams::default())?;
    let cp = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(2048))
        .with_n_threads(n_threads)
        .with_n_threads_batch(n_threads);
    let mut ctx = model.new_context(&backend, cp)?;
    let tmpl = model.chat_template(None)?;
    for text in &args[2..] {
        let chat = [
            LlamaChatMessage::new("system".into(), LlmParams::default().system_prompt)?,
            LlamaChatMessage::new("user".into(), text.clone())?,
        ];
        let prompt = model.apply_chat_template(&tmpl, &chat, true)?;
        let tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
        let k = user_end(&model, &tokens).context("no end-of-turn token in the prompt")?;
        let t0 = Instant::now();
        ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(tokens.len().max(512), 1);
        for (i, &t) in tokens[..k].iter().enumerate() {
            batch.add(t, i as i32, &[0], i + 1 == k)?;
        }
        ctx.decode(&mut batch)?;
        let logits = ctx.get_logits_ith(batch.n_tokens() - 1);
        let p = voice_core::turn::token_probability(logits, tokens[k].0 as usize);
        println!(
            "{{\"text\": {:?}, \"p_eot\": {p:.4}, \"ms\": {:.1}}}",
            text,
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
