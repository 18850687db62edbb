#!/usr/bin/env python3
"""Random-weight models in the exact shapes of the production ones, for
SPEED MEASUREMENT ONLY (their output is noise): written where a GPU run kit
runs, because real weights are far larger than the kit.

- `llama OUT.gguf --tokenizer TOK.json`: Llama 3.2 3B Instruct's architecture
  (28 layers, 3072 wide, 24/8 heads, 8192 FFN, 128256 vocabulary, tied
  embeddings, llama3 RoPE factors) in llama.cpp's Q4_K_M layout (Q4_K, with
  Q6_K for the embeddings and for attn_v / ffn_down in the layers llama.cpp
  gives more bits). The tokenizer is SmolLM2's byte-level BPE padded with
  Llama 3's special tokens to 128256 entries, with Llama 3's chat template, so
  llm_node loads, templates and tokenizes it like the real file.
- `whisper OUT.bin --vocab VOCAB.json`: whisper.cpp ggml, base.en shapes
  (6+6 layers, 512 wide, 8 heads, 80 mels, 51864 tokens), f16 weights.
- `extract-tokenizer SMOLLM.gguf OUT.json` / `extract-vocab GGML.bin OUT.json`:
  what the two above need, taken from the embedded models when the kit is
  packed (small JSON files, no network where the kit runs).

`--small` writes tiny versions of the same layouts (CI tests that llama.cpp
and whisper.cpp load them and produce tokens / text of the right shapes).
numpy only.
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert_models import GGML_MAGIC, mel_filters, write_whisper_ggml  # noqa: E402

# ---------------------------------------------------------------- GGUF
GGUF_MAGIC = b"GGUF"
ALIGN = 32
# value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
# tensor types
T_F32, T_F16, T_Q4_K, T_Q6_K = 0, 1, 12, 14
BLOCK = {T_Q4_K: (256, 144), T_Q6_K: (256, 210)}

LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                  "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]

LLAMA_3B = dict(n_vocab=128256, n_embd=3072, n_layer=28, n_head=24, n_head_kv=8, n_ff=8192, ctx=131072)
LLAMA_SMALL = dict(n_vocab=128256, n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, ctx=4096)


def _read_value(f, t):
    if t == STR:
        (n,) = struct.unpack("<Q", f.read(8))
        return f.read(n).decode("utf-8", errors="surrogateescape")
    if t == ARR:
        et, n = struct.unpack("<IQ", f.read(12))
        if et == STR:
            return [_read_value(f, STR) for _ in range(n)]
        fmt = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q",
               I64: "q", F64: "d"}[et]
        size = struct.calcsize(fmt)
        return list(struct.unpack(f"<{n}{fmt}", f.read(n * size)))
    fmt = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q",
           F64: "d"}[t]
    return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]


def read_gguf_kv(path: Path) -> dict:
    """The metadata of a GGUF file (no tensors)."""
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file")
        version, _n_tensors, n_kv = struct.unpack("<IQQ", f.read(20))
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old")
        kv = {}
        for _ in range(n_kv):
            key = _read_value(f, STR)
            (t,) = struct.unpack("<I", f.read(4))
            kv[key] = _read_value(f, t)
        return kv


def _pack_str(s: str) -> bytes:
    b = s.encode("utf-8", errors="surrogateescape")
    return struct.pack("<Q", len(b)) + b


def _pack_kv(key: str, t: int, v) -> bytes:
    out = _pack_str(key) + struct.pack("<I", t)
    if t == STR:
        return out + _pack_str(v)
    if t == ARR:
        et, items = v
        out += struct.pack("<IQ", et, len(items))
        if et == STR:
            return out + b"".join(_pack_str(x) for x in items)
        fmt = {I32: "i", F32: "f", U32: "I"}[et]
        return out + struct.pack(f"<{len(items)}{fmt}", *items)
    fmt = {U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q"}[t]
    return out + struct.pack("<" + fmt, v)


def _random_blocks(ttype: int, n_blocks: int, rng) -> bytes:
    """Quantized blocks with random codes and small finite scales."""
    _, size = BLOCK[ttype]
    b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    if ttype == T_Q4_K:  # d, dmin (f16) first
        b[:, 0:2] = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
        b[:, 2:4] = np.frombuffer(np.float16(0.001).tobytes(), np.uint8)
    else:  # Q6_K: d (f16) last
        b[:, 208:210] = np.frombuffer(np.float16(0.0005).tobytes(), np.uint8)
    return b.tobytes()


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's Q4_K_M rule for the layers whose attn_v / ffn_down get Q6_K."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def llama_tensors(h: dict) -> list[tuple[str, list[int], int]]:
    """(name, ne (innermost first), type) in llama.cpp's Q4_K_M layout."""
    e, ff, kv = h["n_embd"], h["n_ff"], h["n_embd"] // h["n_head"] * h["n_head_kv"]
    t = [("token_embd.weight", [e, h["n_vocab"]], T_Q6_K),
         ("rope_freqs.weight", [e // h["n_head"] // 2], T_F32)]
    for i in range(h["n_layer"]):
        more = use_more_bits(i, h["n_layer"])
        p = f"blk.{i}."
        t += [(p + "attn_norm.weight", [e], T_F32),
              (p + "attn_q.weight", [e, e], T_Q4_K),
              (p + "attn_k.weight", [e, kv], T_Q4_K),
              (p + "attn_v.weight", [e, kv], T_Q6_K if more else T_Q4_K),
              (p + "attn_output.weight", [e, e], T_Q4_K),
              (p + "ffn_norm.weight", [e], T_F32),
              (p + "ffn_gate.weight", [e, ff], T_Q4_K),
              (p + "ffn_up.weight", [e, ff], T_Q4_K),
              (p + "ffn_down.weight", [ff, e], T_Q6_K if more else T_Q4_K)]
    t.append(("output_norm.weight", [e], T_F32))
    return t


def tensor_bytes(ne: list[int], ttype: int) -> int:
    n = int(np.prod(ne))
    if ttype == T_F32:
        return 4 * n
    per, size = BLOCK[ttype]
    assert n % per == 0, (ne, ttype)
    return n // per * size


def write_llama(out: Path, tokenizer: dict, small: bool = False, seed: int = 0) -> dict:
    h = LLAMA_SMALL if small else LLAMA_3B
    tokens = list(tokenizer["tokens"])
    types = list(tokenizer["token_type"])
    if len(tokens) + len(LLAMA3_SPECIAL) > h["n_vocab"]:
        raise ValueError("tokenizer too large for the vocabulary")
    while len(tokens) < h["n_vocab"] - len(LLAMA3_SPECIAL):
        tokens.append(f"<|reserved_special_token_{len(tokens)}|>")
        types.append(3)
    first_special = len(tokens)
    tokens += LLAMA3_SPECIAL
    types += [3] * len(LLAMA3_SPECIAL)
    ids = {t: first_special + k for k, t in enumerate(LLAMA3_SPECIAL)}
    arch = "llama"
    head = h["n_embd"] // h["n_head"]
    kvs = [
        ("general.architecture", STR, arch),
        ("general.name", STR, "SYNTHETIC random weights, Llama-3.2-3B-Instruct shape, SPEED TESTS ONLY"
         if not small else "SYNTHETIC random weights, small llama, tests only"),
        ("general.file_type", U32, 15),  # MOSTLY_Q4_K_M
        ("general.alignment", U32, ALIGN),
        (f"{arch}.vocab_size", U32, h["n_vocab"]),
        (f"{arch}.context_length", U32, h["ctx"]),
        (f"{arch}.embedding_length", U32, h["n_embd"]),
        (f"{arch}.block_count", U32, h["n_layer"]),
        (f"{arch}.feed_forward_length", U32, h["n_ff"]),
        (f"{arch}.attention.head_count", U32, h["n_head"]),
        (f"{arch}.attention.head_count_kv", U32, h["n_head_kv"]),
        (f"{arch}.attention.key_length", U32, head),
        (f"{arch}.attention.value_length", U32, head),
        (f"{arch}.rope.dimension_count", U32, head),
        (f"{arch}.rope.freq_base", F32, 500000.0),
        (f"{arch}.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.pre", STR, tokenizer.get("pre", "smollm")),
        ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
        ("tokenizer.ggml.token_type", ARR, (I32, types)),
        ("tokenizer.ggml.merges", ARR, (STR, tokenizer["merges"])),
        ("tokenizer.ggml.bos_token_id", U32, ids["<|begin_of_text|>"]),
        ("tokenizer.ggml.eos_token_id", U32, ids["<|eot_id|>"]),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
        ("tokenizer.chat_template", STR, LLAMA3_TEMPLATE),
    ]
    tensors = llama_tensors(h)
    infos, offset = [], 0
    for name, ne, tt in tensors:
        infos.append(_pack_str(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
                     + struct.pack("<IQ", tt, offset))
        offset += (tensor_bytes(ne, tt) + ALIGN - 1) // ALIGN * ALIGN
    header = GGUF_MAGIC + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    header += b"".join(_pack_kv(k, t, v) for k, t, v in kvs) + b"".join(infos)
    rng = np.random.default_rng(seed)
    tmp = out.with_suffix(out.suffix + ".part")
    with open(tmp, "wb") as f:
        f.write(header + b"\0" * (-len(header) % ALIGN))
        chunk = {tt: _random_blocks(tt, 4096, rng) for tt in (T_Q4_K, T_Q6_K)}
        for name, ne, tt in tensors:
            n = tensor_bytes(ne, tt)
            if tt == T_F32:
                v = np.ones(ne[0], np.float32) if "norm" in name or "rope" in name else rng.standard_normal(ne)
                data = np.asarray(v, np.float32).tobytes()
            else:
                reps = -(-n // len(chunk[tt]))
                data = (chunk[tt] * reps)[:n] if reps > 1 else chunk[tt][:n]
            f.write(data + b"\0" * (-n % ALIGN))
    tmp.replace(out)
    return {"tensors": len(tensors), "vocab": len(tokens), "bytes": out.stat().st_size, **h}


def extract_tokenizer(gguf: Path, out: Path) -> dict:
    kv = read_gguf_kv(gguf)
    tok = {"pre": kv.get("tokenizer.ggml.pre", "smollm"), "tokens": kv["tokenizer.ggml.tokens"],
           "token_type": kv["tokenizer.ggml.token_type"], "merges": kv["tokenizer.ggml.merges"]}
    out.write_text(json.dumps(tok))
    return {"tokens": len(tok["tokens"]), "merges": len(tok["merges"])}


# ---------------------------------------------------------------- Whisper ggml
WHISPER_BASE = dict(n_vocab=51864, n_audio_ctx=1500, n_state=512, n_head=8, n_audio_layer=6, n_text_ctx=448,
                    n_text_layer=6, n_mels=80)
WHISPER_SMALL = dict(WHISPER_BASE, n_state=64, n_head=2, n_audio_layer=2, n_text_layer=2)


def extract_vocab(ggml: Path, out: Path) -> dict:
    """The BPE tokens of a whisper.cpp ggml model (an .en model: the same for all .en sizes)."""
    with open(ggml, "rb") as f:
        (magic,) = struct.unpack("<I", f.read(4))
        if magic != GGML_MAGIC:
            raise ValueError(f"{ggml} is not a whisper.cpp ggml model")
        hp = struct.unpack("<11i", f.read(44))
        n_mel, n_fft = struct.unpack("<ii", f.read(8))
        f.seek(4 * n_mel * n_fft, 1)
        (n,) = struct.unpack("<i", f.read(4))
        toks = []
        for _ in range(n):
            (m,) = struct.unpack("<i", f.read(4))
            toks.append(f.read(m).hex())
    out.write_text(json.dumps({"n_vocab": hp[0], "tokens_hex": toks}))
    return {"tokens": len(toks), "n_vocab": hp[0]}


def whisper_tensors(h: dict) -> list[tuple[str, tuple, bool]]:
    """(name, numpy shape (outermost first), f16) as whisper.cpp reads them."""
    s, m = h["n_state"], h["n_mels"]
    t = [("encoder.conv1.weight", (s, m, 3), True), ("encoder.conv1.bias", (s, 1), False),
         ("encoder.conv2.weight", (s, s, 3), True), ("encoder.conv2.bias", (s, 1), False),
         ("encoder.positional_embedding", (h["n_audio_ctx"], s), False)]

    def attn(p, cross=False):
        return [(p + ".query.weight", (s, s), True), (p + ".query.bias", (s,), False),
                (p + ".key.weight", (s, s), True), (p + ".value.weight", (s, s), True),
                (p + ".value.bias", (s,), False), (p + ".out.weight", (s, s), True), (p + ".out.bias", (s,), False)]

    def ln(p):
        return [(p + ".weight", (s,), False), (p + ".bias", (s,), False)]

    def mlp(p):
        return ln(p + "_ln") + [(p + ".0.weight", (4 * s, s), True), (p + ".0.bias", (4 * s,), False),
                                (p + ".2.weight", (s, 4 * s), True), (p + ".2.bias", (s,), False)]

    for i in range(h["n_audio_layer"]):
        d = f"encoder.blocks.{i}"
        t += ln(d + ".attn_ln") + attn(d + ".attn") + mlp(d + ".mlp")
    t += ln("encoder.ln_post")
    t += [("decoder.token_embedding.weight", (h["n_vocab"], s), True),
          ("decoder.positional_embedding", (h["n_text_ctx"], s), False)]
    for i in range(h["n_text_layer"]):
        d = f"decoder.blocks.{i}"
        t += ln(d + ".attn_ln") + attn(d + ".attn") + ln(d + ".cross_attn_ln") + attn(d + ".cross_attn") + mlp(d + ".mlp")
    t += ln("decoder.ln")
    return t


def write_whisper(out: Path, vocab: dict, small: bool = False, seed: int = 0) -> dict:
    h = WHISPER_SMALL if small else WHISPER_BASE
    toks = [bytes.fromhex(x) for x in vocab["tokens_hex"]]
    rng = np.random.default_rng(seed)
    tensors = whisper_tensors(h)

    def arrays():
        for name, shape, f16 in tensors:
            if name.endswith("_ln.weight") or name.endswith("ln_post.weight") or name == "decoder.ln.weight":
                a = np.ones(shape)
            elif name.endswith(".bias"):
                a = np.zeros(shape)
            else:
                a = rng.standard_normal(shape) * (0.02 if f16 else 0.01)
            yield name, a, f16

    write_whisper_ggml(out, (h["n_vocab"], h["n_audio_ctx"], h["n_state"], h["n_head"], h["n_audio_layer"],
                             h["n_text_ctx"], h["n_state"], h["n_head"], h["n_text_layer"], h["n_mels"], 1),
                       mel_filters(n_mels=h["n_mels"]), toks, arrays())
    return {"tensors": len(tensors), "bytes": out.stat().st_size, **h}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("llama")
    a.add_argument("out", type=Path)
    a.add_argument("--tokenizer", type=Path, required=True)
    a.add_argument("--small", action="store_true")
    a = sub.add_parser("whisper")
    a.add_argument("out", type=Path)
    a.add_argument("--vocab", type=Path, required=True)
    a.add_argument("--small", action="store_true")
    a = sub.add_parser("extract-tokenizer")
    a.add_argument("gguf", type=Path)
    a.add_argument("out", type=Path)
    a = sub.add_parser("extract-vocab")
    a.add_argument("ggml", type=Path)
    a.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "llama":
        r = write_llama(args.out, json.loads(args.tokenizer.read_text()), args.small)
    elif args.cmd == "whisper":
        r = write_whisper(args.out, json.loads(args.vocab.read_text()), args.small)
    elif args.cmd == "extract-tokenizer":
        r = extract_tokenizer(args.gguf, args.out)
    else:
        r = extract_vocab(args.ggml, args.out)
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
