"""Model format converters for voice_agent's embedded default models (numpy only).

- CTranslate2 Whisper (faster-whisper layout: model.bin + vocabulary.txt)
  -> whisper.cpp ggml (f16 weights, f32 biases/norms).
- Silero VAD (silero_vad_16k.safetensors from the silero-vad wheel)
  -> whisper.cpp VAD ggml.

Usable as a library (the fetch step and the unit tests import it) and as a CLI:
    python convert_models.py whisper MODEL_DIR OUT.bin
    python convert_models.py silero SRC.safetensors OUT.bin VERSION
"""
from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import numpy as np

GGML_MAGIC = 0x67676D6C
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class ConvertError(Exception):
    """The source model is not what the converter expects."""


# ---------------------------------------------------------------- CTranslate2
def _read_str(f) -> str:
    (n,) = struct.unpack("<H", f.read(2))
    return f.read(n).rstrip(b"\0").decode()


def read_ct2(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Reads a CTranslate2 model.bin: returns (spec name, variables by name)."""
    with open(path, "rb") as f:
        (ver,) = struct.unpack("<I", f.read(4))
        if ver < 2 or ver > 10:
            raise ConvertError(f"{path}: unsupported CTranslate2 binary version {ver}")
        spec = _read_str(f)
        f.read(4)  # spec revision
        (nv,) = struct.unpack("<I", f.read(4))
        out: dict[str, np.ndarray] = {}
        for _ in range(nv):
            name = _read_str(f)
            rank = f.read(1)[0]
            dims = struct.unpack(f"<{rank}I", f.read(4 * rank))
            dt = f.read(1)[0] if ver >= 4 else 0
            (nb,) = struct.unpack("<I", f.read(4))
            raw = f.read(nb)
            if len(raw) != nb:
                raise ConvertError(f"{path}: truncated at variable {name}")
            if dt not in CT2_DTYPES:
                raise ConvertError(f"{path}: variable {name} has unsupported dtype {dt}")
            out[name] = np.frombuffer(raw, dtype=CT2_DTYPES[dt]).reshape(dims)
        if ver >= 3:
            (na,) = struct.unpack("<I", f.read(4))
            for _ in range(na):
                alias, target = _read_str(f), _read_str(f)
                if target in out:
                    out[alias] = out[target]
    return spec, out


def write_ct2(path: Path, spec: str, variables: dict[str, np.ndarray]) -> None:
    """Writes a CTranslate2 model.bin (version 6). Used by the unit tests."""
    inv = {np.dtype(v): k for k, v in CT2_DTYPES.items()}

    def s(x: str) -> bytes:
        b = x.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    with open(path, "wb") as f:
        f.write(struct.pack("<I", 6) + s(spec) + struct.pack("<I", 1))
        f.write(struct.pack("<I", len(variables)))
        for name, a in variables.items():
            a = np.ascontiguousarray(a)
            f.write(s(name) + bytes([a.ndim]) + struct.pack(f"<{a.ndim}I", *a.shape))
            f.write(bytes([inv[a.dtype]]) + struct.pack("<I", a.nbytes) + a.tobytes())
        f.write(struct.pack("<I", 0))


# -------------------------------------------------------------------- Whisper
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte <-> printable unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def mel_filters(sr: int = 16000, n_fft: int = 400, n_mels: int = 80) -> np.ndarray:
    """librosa.filters.mel with slaney scale and slaney norm (what Whisper uses)."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asanyarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        m = np.asanyarray(m, dtype=np.float64)
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fftfreqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    w = np.zeros((n_mels, len(fftfreqs)))
    for i in range(n_mels):
        w[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    w *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return w.astype(np.float32)


def whisper_tensors(V: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, bool]]:
    """Maps CTranslate2 Whisper variables to whisper.cpp tensors: (name, array, as_f16)."""
    T: list[tuple[str, np.ndarray, bool]] = []

    def get(k: str) -> np.ndarray:
        if k not in V:
            raise ConvertError(f"missing variable {k}")
        return V[k]

    def f32(a):
        return np.asarray(a, dtype=np.float32)

    def add(name, a, f16):
        T.append((name, np.asarray(a), f16))

    def ln(src, dst):
        add(dst + ".weight", f32(get(src + "/gamma")), False)
        add(dst + ".bias", f32(get(src + "/beta")), False)

    def lin(src, dst):
        add(dst + ".weight", get(src + "/weight"), True)
        add(dst + ".bias", f32(get(src + "/bias")), False)

    def qkv(src, dst):
        # CTranslate2 fuses q, k, v; whisper.cpp keeps them apart and has no key bias.
        w, b = get(src + "/weight"), f32(get(src + "/bias"))
        n = w.shape[1]
        if w.shape[0] != 3 * n or np.abs(b[n : 2 * n]).max() != 0:
            raise ConvertError(f"{src}: unexpected fused attention layout")
        add(dst + ".query.weight", w[:n], True)
        add(dst + ".query.bias", b[:n], False)
        add(dst + ".key.weight", w[n : 2 * n], True)
        add(dst + ".value.weight", w[2 * n :], True)
        add(dst + ".value.bias", b[2 * n :], False)

    def layers(prefix):
        return len({k.split("/")[1] for k in V if re.match(prefix + r"/layer_\d+/", k)})

    add("encoder.conv1.weight", get("encoder/conv1/weight"), True)
    add("encoder.conv1.bias", f32(get("encoder/conv1/bias")).reshape(-1, 1), False)
    add("encoder.conv2.weight", get("encoder/conv2/weight"), True)
    add("encoder.conv2.bias", f32(get("encoder/conv2/bias")).reshape(-1, 1), False)
    add("encoder.positional_embedding", f32(get("encoder/position_encodings/encodings")), False)
    for i in range(layers("encoder")):
        s, d = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        ln(s + "/self_attention/layer_norm", d + ".attn_ln")
        qkv(s + "/self_attention/linear_0", d + ".attn")
        lin(s + "/self_attention/linear_1", d + ".attn.out")
        ln(s + "/ffn/layer_norm", d + ".mlp_ln")
        lin(s + "/ffn/linear_0", d + ".mlp.0")
        lin(s + "/ffn/linear_1", d + ".mlp.2")
    ln("encoder/layer_norm", "encoder.ln_post")
    add("decoder.token_embedding.weight", get("decoder/embeddings/weight"), True)
    add("decoder.positional_embedding", f32(get("decoder/position_encodings/encodings")), False)
    for i in range(layers("decoder")):
        s, d = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        ln(s + "/self_attention/layer_norm", d + ".attn_ln")
        qkv(s + "/self_attention/linear_0", d + ".attn")
        lin(s + "/self_attention/linear_1", d + ".attn.out")
        ln(s + "/attention/layer_norm", d + ".cross_attn_ln")
        lin(s + "/attention/linear_0", d + ".cross_attn.query")
        w, b = get(s + "/attention/linear_1/weight"), f32(get(s + "/attention/linear_1/bias"))
        n = w.shape[1]
        if w.shape[0] != 2 * n or np.abs(b[:n]).max() != 0:
            raise ConvertError(f"{s}: unexpected fused cross-attention layout")
        add(d + ".cross_attn.key.weight", w[:n], True)
        add(d + ".cross_attn.value.weight", w[n:], True)
        add(d + ".cross_attn.value.bias", b[n:], False)
        lin(s + "/attention/linear_2", d + ".cross_attn.out")
        ln(s + "/ffn/layer_norm", d + ".mlp_ln")
        lin(s + "/ffn/linear_0", d + ".mlp.0")
        lin(s + "/ffn/linear_1", d + ".mlp.2")
    ln("decoder/layer_norm", "decoder.ln")
    return T


def write_whisper_ggml(out: Path, hparams: tuple, filt: np.ndarray, toks: list[bytes], tensors) -> None:
    """A whisper.cpp ggml file: the 11 hyper-parameters, mel filters, BPE
    tokens, then (name, array, as_f16) tensors (any iterable), written to a
    .part file and renamed when complete."""
    tmp = out.with_suffix(out.suffix + ".part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<I", GGML_MAGIC))
        f.write(struct.pack("<11i", *hparams))
        f.write(struct.pack("<ii", *filt.shape) + filt.tobytes())
        f.write(struct.pack("<i", len(toks)))
        for t in toks:
            f.write(struct.pack("<i", len(t)) + t)
        for name, a, f16 in tensors:
            a = np.ascontiguousarray(a.astype(np.float16 if f16 else np.float32))
            nb = name.encode()
            f.write(struct.pack("<iii", a.ndim, len(nb), 1 if f16 else 0))
            f.write(struct.pack(f"<{a.ndim}i", *reversed(a.shape)))
            f.write(nb + a.tobytes())
    tmp.replace(out)


def convert_whisper(model_dir: Path, out: Path) -> dict:
    """CTranslate2 Whisper dir -> whisper.cpp ggml file. Returns a summary."""
    model_dir, out = Path(model_dir), Path(out)
    spec, V = read_ct2(model_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ConvertError(f"{model_dir}/model.bin is a {spec}, not a WhisperSpec")
    n_vocab, n_state = V["decoder/embeddings/weight"].shape
    n_audio_ctx = V["encoder/position_encodings/encodings"].shape[0]
    n_text_ctx = V["decoder/position_encodings/encodings"].shape[0]
    n_mels = V["encoder/conv1/weight"].shape[1]
    n_head = int(V["encoder/num_heads"]) if "encoder/num_heads" in V else max(1, n_state // 64)
    tensors = whisper_tensors(V)
    n_audio_layer = sum(1 for t in tensors if re.fullmatch(r"encoder\.blocks\.\d+\.attn_ln\.weight", t[0]))
    n_text_layer = sum(1 for t in tensors if re.fullmatch(r"decoder\.blocks\.\d+\.attn_ln\.weight", t[0]))
    # Vocabulary: BPE tokens up to the first special token; whisper.cpp adds the rest.
    byte_of = {v: k for k, v in bytes_to_unicode().items()}
    toks = []
    for line in open(model_dir / "vocabulary.txt", encoding="utf8"):
        t = line.rstrip("\n")
        if t.startswith("<|"):
            break
        try:
            toks.append(bytes(byte_of[c] for c in t))
        except KeyError as e:
            raise ConvertError(f"vocabulary token {t!r} is not byte-level BPE") from e
    write_whisper_ggml(out, (n_vocab, n_audio_ctx, n_state, n_head, n_audio_layer, n_text_ctx, n_state, n_head,
                             n_text_layer, n_mels, 1), mel_filters(n_mels=n_mels), toks, tensors)
    return {"tensors": len(tensors), "vocab": len(toks), "n_state": int(n_state),
            "layers": [n_audio_layer, n_text_layer], "n_mels": int(n_mels)}


# ---------------------------------------------------------------- Silero VAD
SILERO_KEYS = [k for i in range(4) for k in (f"_model.encoder.{i}.reparam_conv.weight",
                                              f"_model.encoder.{i}.reparam_conv.bias")] + [
    "_model.decoder.rnn.weight_ih", "_model.decoder.rnn.weight_hh",
    "_model.decoder.rnn.bias_ih", "_model.decoder.rnn.bias_hh",
    "_model.decoder.decoder.2.weight", "_model.decoder.decoder.2.bias",
    "_model.stft.forward_basis_buffer",
]


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    raw = Path(path).read_bytes()
    if len(raw) < 8:
        raise ConvertError(f"{path}: not a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ConvertError(f"{path}: header length {n} past end of file")
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        if v["dtype"] != "F32":
            raise ConvertError(f"{path}: {k} is {v['dtype']}, expected F32")
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=np.float32).reshape(v["shape"])
    return out


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Writes F32 safetensors. Used by the unit tests."""
    header, blobs, off = {}, [], 0
    for k, a in tensors.items():
        b = np.ascontiguousarray(a, dtype=np.float32).tobytes()
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def silero_name(key: str) -> str:
    """safetensors names, as used by whisper.cpp's converter mapping."""
    m = re.fullmatch(r"_model\.encoder\.(\d)\.reparam_conv\.(weight|bias)", key)
    if m:
        return f"conv{int(m.group(1)) + 1}.{m.group(2)}"
    if key.startswith("_model.decoder.rnn."):
        return "lstm_cell." + key.rsplit(".", 1)[1]
    if key.startswith("_model.decoder.decoder.2."):
        return "final_conv." + key.rsplit(".", 1)[1]
    if key == "_model.stft.forward_basis_buffer":
        return "stft_conv.weight"
    raise ConvertError(f"unknown Silero tensor {key}")


def convert_silero(src: Path, out: Path, version: str) -> dict:
    """silero_vad_16k.safetensors -> whisper.cpp VAD ggml."""
    src, out = Path(src), Path(out)
    S = read_safetensors(src)
    ver = [int(x) for x in version.split(".")]
    if len(ver) != 3:
        raise ConvertError(f"version must be MAJOR.MINOR.PATCH, got {version}")
    tmp = out.with_suffix(out.suffix + ".part")
    with open(tmp, "wb") as fo:
        name = b"silero-16k"
        fo.write(struct.pack("<i", GGML_MAGIC) + struct.pack("<i", len(name)) + name)
        fo.write(struct.pack("<3i", *ver))
        fo.write(struct.pack("<2i", 512, 64) + struct.pack("<i", 4))
        for ci, co in zip([129, 128, 64, 64], [128, 64, 64, 128]):
            fo.write(struct.pack("<3i", ci, co, 3))
        fo.write(struct.pack("<4i", 128, 128, 128, 1))
        for k in SILERO_KEYS:
            src_name = silero_name(k)
            if src_name not in S:
                raise ConvertError(f"{src}: missing tensor {src_name}")
            d = S[src_name]
            if k == "_model.stft.forward_basis_buffer":
                shape, conv = [d.shape[2], d.shape[1], d.shape[0]], True
            else:
                d = d.squeeze()
                shape = list(d.shape)[::-1]
                conv = "weight" in k and ("encoder" in k or "_model.decoder.decoder.2" in k)
            d = np.ascontiguousarray(d.astype(np.float16 if conv else np.float32))
            nb = k.encode()
            fo.write(struct.pack("<3i", len(shape), len(nb), 1 if conv else 0))
            fo.write(struct.pack(f"<{len(shape)}i", *shape) + nb + d.tobytes())
    tmp.replace(out)
    return {"tensors": len(SILERO_KEYS), "version": version}


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "whisper":
        print(convert_whisper(Path(argv[1]), Path(argv[2])))
    elif len(argv) >= 4 and argv[0] == "silero":
        print(convert_silero(Path(argv[1]), Path(argv[2]), argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
