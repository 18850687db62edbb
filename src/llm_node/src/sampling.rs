//! Token sampling for one turn, optionally constrained by a grammar.
//!
//! Applying a llama.cpp grammar to every candidate of a 49k-128k vocabulary
//! costs several milliseconds per token. As llama.cpp's own server does, the
//! token is first picked without the grammar and only checked against it; the
//! grammar is applied to all candidates only when that token is not allowed.
//! With greedy decoding the result is the token a grammar-first chain would
//! give (the best token, and allowed); with random sampling an allowed draw
//! is kept as drawn.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

use crate::params::LlmConfig;

pub struct TurnSampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
    /// Tokens that needed the full grammar pass (logged per turn).
    pub resampled: u32,
}

impl TurnSampler {
    pub fn new(chain: LlamaSampler, grammar: Option<LlamaSampler>) -> Self {
        Self {
            chain,
            grammar,
            resampled: 0,
        }
    }

    /// The next token from the `idx`-th logits of the last decode; `None`
    /// only if the grammar allows no token at all (never for a valid grammar).
    pub fn sample(&mut self, ctx: &LlamaContext<'_>, idx: i32) -> Option<LlamaToken> {
        let Some(grammar) = self.grammar.as_mut() else {
            return Some(self.chain.sample(ctx, idx));
        };
        let mut all = ctx.token_data_array_ith(idx);
        all.apply_sampler(&mut self.chain);
        let mut token = all.selected_token().filter(|&t| allowed(grammar, t));
        if token.is_none() {
            self.resampled += 1;
            let mut all = ctx.token_data_array_ith(idx);
            all.apply_sampler(grammar);
            all.apply_sampler(&mut self.chain);
            token = all.selected_token();
        }
        let token = token?;
        // the chain's own state (e.g. repetition penalties) and the grammar's
        // parse position both advance by the chosen token
        self.chain.accept(token);
        grammar.accept(token);
        Some(token)
    }
}

/// The sampler of a turn: the configured chain (greedy at temperature 0,
/// else repetition penalty, top-k, top-p, temperature, seeded draw), with
/// intents constrained by the action grammar so that no output other than a
/// valid action can be sampled. `None` when llama.cpp refuses the grammar.
pub fn for_turn(model: &LlamaModel, cfg: &LlmConfig) -> Option<TurnSampler> {
    let grammar = match cfg.intents {
        Some(_) => Some(LlamaSampler::grammar(model, &voice_core::intent::grammar(), "root").ok()?),
        None => None,
    };
    let mut chain = Vec::new();
    if cfg.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return Some(TurnSampler::new(LlamaSampler::chain_simple(chain), grammar));
    }
    if (cfg.repeat_penalty - 1.0).abs() > f32::EPSILON {
        chain.push(LlamaSampler::penalties(
            model.vocab().n_tokens(),
            64,
            cfg.repeat_penalty,
            0.0,
            0.0,
        ));
    }
    if cfg.top_k > 0 {
        chain.push(LlamaSampler::top_k(cfg.top_k));
    }
    chain.push(LlamaSampler::top_p(cfg.top_p, 1));
    chain.push(LlamaSampler::temp(cfg.temperature));
    chain.push(LlamaSampler::dist(cfg.seed));
    Some(TurnSampler::new(LlamaSampler::chain_simple(chain), grammar))
}

/// Whether the grammar, in its current state, allows `token` next.
fn allowed(grammar: &mut LlamaSampler, token: LlamaToken) -> bool {
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 0.0, 0.0)], false);
    one.apply_sampler(grammar);
    one.data.first().is_some_and(|d| d.logit().is_finite())
}

/// The grammar against the real llama.cpp engine and the embedded model
/// (fetched by scripts/setup.sh; the test fails, not skips, without it).
#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::path::PathBuf;

    use llama_cpp_2::context::params::LlamaContextParams;
    use llama_cpp_2::llama_backend::LlamaBackend;
    use llama_cpp_2::llama_batch::LlamaBatch;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
    use llama_cpp_2::token::logit_bias::LlamaLogitBias;
    use voice_core::intent::{self, Action};
    use voice_core::places::Places;

    use super::*;

    fn model_path() -> PathBuf {
        let dir = std::env::var_os("VOICE_AGENT_MODELS").map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/voice_agent/models")
            },
            PathBuf::from,
        );
        let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(p.is_file(), "{} missing: run scripts/setup.sh", p.display());
        p
    }

    fn grammar(model: &LlamaModel) -> LlamaSampler {
        LlamaSampler::grammar(model, &intent::grammar(), "root").expect("grammar accepted")
    }

    /// Feeds `text` token by token; false at the first token the grammar refuses.
    fn grammar_takes(model: &LlamaModel, text: &str, then_end: bool) -> bool {
        let mut g = grammar(model);
        for t in model.vocab().tokenize(text.as_bytes(), false, false) {
            if !allowed(&mut g, t) {
                return false;
            }
            g.accept(t);
        }
        !then_end || allowed(&mut g, model.vocab().eos())
    }

    /// Generates one action for `user` with `chain` under the grammar.
    fn generate(
        model: &LlamaModel,
        ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
        prompt: &[LlamaToken],
        chain: LlamaSampler,
    ) -> (String, bool) {
        ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(512, 1);
        for (i, &t) in prompt.iter().enumerate() {
            batch.add(t, i as i32, &[0], i + 1 == prompt.len()).unwrap();
        }
        ctx.decode(&mut batch).unwrap();
        let mut s = TurnSampler::new(chain, Some(grammar(model)));
        let mut out = intent::PREFILL.to_string();
        let start = prompt.len() as i32;
        for pos in start..start + 64 {
            let t = s.sample(ctx, batch.n_tokens() - 1).expect("a token");
            if model.vocab().is_eog(t) {
                return (out, true);
            }
            out += &String::from_utf8_lossy(&model.vocab().token_to_piece(t, false, None));
            batch.clear();
            batch.add(t, pos, &[0], true).unwrap();
            ctx.decode(&mut batch).unwrap();
        }
        (out, false)
    }

    #[test]
    fn only_valid_actions_can_be_generated() {
        let mut backend = LlamaBackend::init().unwrap();
        backend.void_logs();
        let model =
            LlamaModel::load_from_file(&backend, model_path(), &LlamaModelParams::default())
                .unwrap();

        // the grammar itself: what it takes after the prefill, and what not
        for ok in [
            r#"navigate_to","place":"kitchen"}"#,
            r#"navigate_to","place":"the front door"}"#,
            r#"stop"}"#,
            r#"answer","say":"The sky is blue. 42 %, é 🤖"}"#,
            r#"answer","say":""}"#,
        ] {
            assert!(grammar_takes(&model, ok, true), "refused {ok}");
        }
        for bad in [
            r#"fly","place":"moon"}"#,
            r#"navigate_to","place":""}"#,
            r#"stop","say":"x"}"#,
            r#"answer","say":"a"} and more"#,
            r#"answer","say":"a \"quote\""}"#,
            "Sure, I will go to the kitchen.",
        ] {
            assert!(!grammar_takes(&model, bad, true), "took {bad}");
        }
        // an unfinished action cannot end
        assert!(!grammar_takes(&model, r#"navigate_to","place":"kit"#, true));
        assert!(grammar_takes(&model, r#"navigate_to","place":"kit"#, false));

        // whatever the model prefers, the output is an action: random
        // sampling at temperature 4, and sampling pushed to end at once
        let places =
            Places::parse("places:\n  - name: kitchen\n    x: 1\n    y: 2\n", "t").unwrap();
        let cp = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(1024))
            // one thread: ggml's spinning barriers crawl on a loaded 2-core machine
            .with_n_threads(1)
            .with_n_threads_batch(1);
        let mut ctx = model.new_context(&backend, cp).unwrap();
        let tmpl = model.chat_template(None).unwrap();
        let quote = model.vocab().tokenize(b"\"", false, false)[0];
        let eos = model.vocab().eos();
        let n_vocab = model.vocab().n_tokens();
        let mut ended = 0;
        for (k, user) in ["Go to the kitchen.", "Fly to the moon and dance."]
            .iter()
            .enumerate()
        {
            let chat = [
                LlamaChatMessage::new("system".into(), intent::instructions(&places)).unwrap(),
                LlamaChatMessage::new("user".into(), (*user).into()).unwrap(),
            ];
            let prompt = model.apply_chat_template(&tmpl, &chat, true).unwrap() + intent::PREFILL;
            let tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
            for seed in 0..3u32 {
                let chain = LlamaSampler::chain_simple([
                    // ending (and closing strings) is what this "model" wants most
                    LlamaSampler::logit_bias(
                        n_vocab,
                        &[
                            LlamaLogitBias::new(eos, 1000.0),
                            LlamaLogitBias::new(quote, 40.0),
                        ],
                    ),
                    LlamaSampler::temp(4.0),
                    LlamaSampler::dist(seed + 10 * k as u32),
                ]);
                let (out, done) = generate(&model, &mut ctx, &tokens, chain);
                if done {
                    ended += 1;
                    let a = intent::parse(&out).unwrap_or_else(|e| panic!("{e}"));
                    assert!(matches!(
                        a,
                        Action::NavigateTo { .. } | Action::Stop | Action::Answer { .. }
                    ));
                } else {
                    // cut by the token limit: still a valid prefix, never an invalid action
                    assert!(intent::parse(&out).is_err(), "{out}");
                }
            }
            // and greedy decoding of the real model
            let (out, done) = generate(&model, &mut ctx, &tokens, LlamaSampler::greedy());
            assert!(done, "{out}");
            intent::parse(&out).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(ended >= 3, "only {ended} of 6 biased generations ended");
    }
}
