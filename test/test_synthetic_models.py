"""scripts/synthetic_models.py: random-weight files in the production models'
layouts, for GPU speed runs where real weights cannot be carried. The small
variants are loaded by the real engines here (llama.cpp through llm_node's
bare loop, whisper.cpp through stt_node's direct call) and must produce
tokens / text; the full layouts are checked for their size and tensor list."""
import json
import subprocess
import sys

import numpy as np

from va_harness import BIN, LLM_MODEL, ROOT, WHISPER_MODEL, speak

sys.path.insert(0, str(ROOT / "scripts"))
import synthetic_models as sm  # noqa: E402


def run_json(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_small_llama_loads_in_llama_cpp_and_generates(tmp_path):
    sm.extract_tokenizer(LLM_MODEL, tmp_path / "tok.json")
    info = sm.write_llama(tmp_path / "small.gguf", json.loads((tmp_path / "tok.json").read_text()), small=True)
    assert info["vocab"] == 128256
    kv = sm.read_gguf_kv(tmp_path / "small.gguf")
    assert kv["general.architecture"] == "llama" and "SYNTHETIC" in kv["general.name"]
    assert "<|start_header_id|>" in kv["tokenizer.chat_template"]
    assert kv["tokenizer.ggml.tokens"][kv["tokenizer.ggml.eos_token_id"]] == "<|eot_id|>"
    r = run_json(BIN / "llm_node", "--bench-bare", tmp_path / "small.gguf", 2, 8, 1, "Go to the kitchen.")
    # Llama 3's template around the request, tokenized by the SmolLM2 BPE + specials
    assert r["gen_tokens"] == 8 and 20 < r["prompt_tokens"] < 80, r


def test_full_llama_layout_is_llama_3_2_3b_q4_k_m():
    t = sm.llama_tensors(sm.LLAMA_3B)
    assert len(t) == 255  # as in the released Q4_K_M file: 28 x 9 + embeddings, rope factors, norm
    size = sum(sm.tensor_bytes(ne, tt) for _, ne, tt in t)
    assert 1.95e9 < size < 2.05e9, size  # the real file is 2.02 GB
    six = [n for n, _, tt in t if tt == sm.T_Q6_K]
    assert "token_embd.weight" in six and "blk.0.ffn_down.weight" in six and "blk.3.attn_v.weight" not in six


def test_small_whisper_loads_in_whisper_cpp_and_transcribes_noise(tmp_path):
    sm.extract_vocab(WHISPER_MODEL, tmp_path / "vocab.json")
    sm.write_whisper(tmp_path / "small.bin", json.loads((tmp_path / "vocab.json").read_text()), small=True)
    wav = speak("Hello robot.", tmp_path / "hello.wav")
    r = run_json(BIN / "stt_node", "--bench-direct", wav, tmp_path / "small.bin", 2, 1, 0)
    assert r["compute_ms"] > 0 and isinstance(r["text"], str), r
    full = sum(int(np.prod(s)) * (2 if f16 else 4) for _, s, f16 in sm.whisper_tensors(sm.WHISPER_BASE))
    assert 1.40e8 < full < 1.50e8, full  # ggml-base.en.bin is 148 MB
