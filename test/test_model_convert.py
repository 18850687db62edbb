"""Unit tests of the project's model converters on tiny synthetic models they
build themselves (no download, no engine)."""
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import convert_models as cm  # noqa: E402


def read_whisper_ggml(path):
    """Parses a whisper.cpp ggml file back: header, mel filters, vocab, tensors."""
    raw = Path(path).read_bytes()
    off = 0

    def take(fmt):
        nonlocal off
        v = struct.unpack_from(fmt, raw, off)
        off += struct.calcsize(fmt)
        return v

    assert take("<I")[0] == cm.GGML_MAGIC
    hparams = take("<11i")
    n_mel, n_fft = take("<ii")
    filt = np.frombuffer(raw, np.float32, n_mel * n_fft, off).reshape(n_mel, n_fft)
    off += filt.nbytes
    (n_tok,) = take("<i")
    toks = []
    for _ in range(n_tok):
        (n,) = take("<i")
        toks.append(raw[off:off + n])
        off += n
    tensors = {}
    while off < len(raw):
        nd, nl, ftype = take("<iii")
        dims = take(f"<{nd}i")
        name = raw[off:off + nl].decode()
        off += nl
        dt = np.float16 if ftype == 1 else np.float32
        count = int(np.prod(dims))
        tensors[name] = np.frombuffer(raw, dt, count, off).reshape(tuple(reversed(dims)))
        off += count * np.dtype(dt).itemsize
    return hparams, filt, toks, tensors


def tiny_whisper(tmp_path, n_state=8, n_layers=1, n_vocab=6, n_mels=80):
    rng = np.random.default_rng(0)

    def r(*shape, dt=np.float16):
        return rng.standard_normal(shape).astype(dt)

    V = {
        "encoder/conv1/weight": r(n_state, n_mels, 3), "encoder/conv1/bias": r(n_state, dt=np.float32),
        "encoder/conv2/weight": r(n_state, n_state, 3), "encoder/conv2/bias": r(n_state, dt=np.float32),
        "encoder/position_encodings/encodings": r(10, n_state, dt=np.float32),
        "encoder/layer_norm/gamma": r(n_state, dt=np.float32), "encoder/layer_norm/beta": r(n_state, dt=np.float32),
        "decoder/embeddings/weight": r(n_vocab, n_state),
        "decoder/position_encodings/encodings": r(4, n_state, dt=np.float32),
        "decoder/layer_norm/gamma": r(n_state, dt=np.float32), "decoder/layer_norm/beta": r(n_state, dt=np.float32),
    }

    def ln(p):
        V[p + "/gamma"] = r(n_state, dt=np.float32)
        V[p + "/beta"] = r(n_state, dt=np.float32)

    def lin(p, o, i):
        V[p + "/weight"] = r(o, i)
        V[p + "/bias"] = r(o, dt=np.float32)

    def fused(p, k):
        V[p + "/weight"] = r(k * n_state, n_state)
        b = r(k * n_state, dt=np.float32)
        b[(k - 2) * n_state:(k - 1) * n_state] = 0  # the key projection has no bias
        V[p + "/bias"] = b

    for side in ("encoder", "decoder"):
        for i in range(n_layers):
            s = f"{side}/layer_{i}"
            ln(s + "/self_attention/layer_norm")
            fused(s + "/self_attention/linear_0", 3)
            lin(s + "/self_attention/linear_1", n_state, n_state)
            ln(s + "/ffn/layer_norm")
            lin(s + "/ffn/linear_0", 4 * n_state, n_state)
            lin(s + "/ffn/linear_1", n_state, 4 * n_state)
            if side == "decoder":
                ln(s + "/attention/layer_norm")
                lin(s + "/attention/linear_0", n_state, n_state)
                fused(s + "/attention/linear_1", 2)
                lin(s + "/attention/linear_2", n_state, n_state)
    d = tmp_path / "ct2"
    d.mkdir()
    cm.write_ct2(d / "model.bin", "WhisperSpec", V)
    # byte-level BPE: "Ġhi" is b" hi"; specials end the vocabulary
    (d / "vocabulary.txt").write_text("a\nĠhi\n!\n<|endoftext|>\n<|startoftranscript|>\n", encoding="utf8")
    return d, V


def test_whisper_conversion_round_trips(tmp_path):
    d, V = tiny_whisper(tmp_path)
    info = cm.convert_whisper(d, tmp_path / "out.bin")
    hp, filt, toks, T = read_whisper_ggml(tmp_path / "out.bin")
    n_vocab, n_audio_ctx, n_state, n_head, n_al, n_text_ctx, _, _, n_tl, n_mels, ftype = hp
    assert (n_vocab, n_audio_ctx, n_state, n_al, n_text_ctx, n_tl, n_mels, ftype) == (6, 10, 8, 1, 4, 1, 80, 1)
    assert filt.shape == (80, 201) and filt.max() > 0
    assert toks == [b"a", b" hi", b"!"]
    assert info["vocab"] == 3
    # fused QKV split; key has no bias; values kept exactly (f16 stays f16)
    w = V["encoder/layer_0/self_attention/linear_0/weight"]
    np.testing.assert_array_equal(T["encoder.blocks.0.attn.query.weight"], w[:8])
    np.testing.assert_array_equal(T["encoder.blocks.0.attn.key.weight"], w[8:16])
    np.testing.assert_array_equal(T["encoder.blocks.0.attn.value.weight"], w[16:])
    assert "encoder.blocks.0.attn.key.bias" not in T
    cw = V["decoder/layer_0/attention/linear_1/weight"]
    np.testing.assert_array_equal(T["decoder.blocks.0.cross_attn.key.weight"], cw[:8])
    np.testing.assert_array_equal(T["decoder.blocks.0.cross_attn.value.weight"], cw[8:])
    assert T["encoder.conv1.bias"].shape == (8, 1)
    assert T["encoder.conv1.bias"].dtype == np.float32
    assert T["decoder.token_embedding.weight"].dtype == np.float16
    assert len(T) == info["tensors"]


def test_whisper_conversion_rejects_other_models(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    cm.write_ct2(d / "model.bin", "TransformerSpec", {"a": np.zeros(2, np.float32)})
    with pytest.raises(cm.ConvertError, match="not a WhisperSpec"):
        cm.convert_whisper(d, tmp_path / "o.bin")


def test_whisper_conversion_rejects_truncated_file(tmp_path):
    d, _ = tiny_whisper(tmp_path)
    raw = (d / "model.bin").read_bytes()
    (d / "model.bin").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(cm.ConvertError):
        cm.convert_whisper(d, tmp_path / "o.bin")
    assert not (tmp_path / "o.bin").exists()


def test_silero_conversion(tmp_path):
    rng = np.random.default_rng(1)
    S = {"stft_conv.weight": rng.standard_normal((258, 1, 256)).astype(np.float32),
         "lstm_cell.weight_ih": rng.standard_normal((512, 128)).astype(np.float32),
         "lstm_cell.weight_hh": rng.standard_normal((512, 128)).astype(np.float32),
         "lstm_cell.bias_ih": rng.standard_normal(512).astype(np.float32),
         "lstm_cell.bias_hh": rng.standard_normal(512).astype(np.float32),
         "final_conv.weight": rng.standard_normal((1, 128, 1)).astype(np.float32),
         "final_conv.bias": rng.standard_normal(1).astype(np.float32)}
    for i, (ci, co) in enumerate(zip([129, 128, 64, 64], [128, 64, 64, 128])):
        S[f"conv{i + 1}.weight"] = rng.standard_normal((co, ci, 3)).astype(np.float32)
        S[f"conv{i + 1}.bias"] = rng.standard_normal(co).astype(np.float32)
    cm.write_safetensors(tmp_path / "s.safetensors", S)
    cm.convert_silero(tmp_path / "s.safetensors", tmp_path / "vad.bin", "6.2.3")
    raw = (tmp_path / "vad.bin").read_bytes()
    assert struct.unpack_from("<I", raw)[0] == cm.GGML_MAGIC
    assert raw[8:18] == b"silero-16k"
    assert struct.unpack_from("<3i", raw, 18) == (6, 2, 3)
    # first tensor: conv1 weight as f16, ggml dims reversed
    off = 18 + 12 + 8 + 4 + 4 * 12 + 16  # name, version, window/context, 4 conv dims, lstm/final
    nd, nl, ft = struct.unpack_from("<3i", raw, off)
    dims = struct.unpack_from(f"<{nd}i", raw, off + 12)
    name = raw[off + 12 + 4 * nd: off + 12 + 4 * nd + nl]
    assert (name, ft, dims) == (b"_model.encoder.0.reparam_conv.weight", 1, (3, 129, 128))
    data = np.frombuffer(raw, np.float16, 3 * 129 * 128, off + 12 + 4 * nd + nl)
    np.testing.assert_array_equal(data, S["conv1.weight"].astype(np.float16).ravel())
    # a missing tensor is a clear error
    del S["final_conv.bias"]
    cm.write_safetensors(tmp_path / "bad.safetensors", S)
    with pytest.raises(cm.ConvertError, match="final_conv.bias"):
        cm.convert_silero(tmp_path / "bad.safetensors", tmp_path / "x.bin", "6.2.3")
