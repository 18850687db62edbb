"""Missing or corrupt models and nonsense parameters: one clear error line
naming the file / parameter, a non-zero exit, no core dump."""
import subprocess

import pytest

from va_harness import BIN, LLM_MODEL, ONNXRUNTIME, PIPER_VOICE, SMART_TURN, WHISPER_MODEL


def run_node(exe, params, timeout=30):
    args = [str(BIN / exe), "--ros-args"]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=None)


CASES = [
    ("stt_node", {"model_path": "/nonexistent/ggml-tiny.en.bin"}, ["model_path", "/nonexistent/ggml-tiny.en.bin", "not found"]),
    ("stt_node", {"model_path": str(WHISPER_MODEL), "vad.model_path": "/nope/vad.bin"}, ["vad.model_path", "/nope/vad.bin"]),
    ("stt_node", {"model_path": str(WHISPER_MODEL), "n_threads": 0}, ["n_threads"]),
    ("stt_node", {"model_path": str(WHISPER_MODEL), "vad.threshold": 1.5}, ["vad.threshold"]),
    ("stt_node", {"model_path": str(WHISPER_MODEL), "language": "xx"}, ["language"]),
    ("stt_node", {"model_path": str(WHISPER_MODEL), "n_threads": "many"}, ["n_threads"]),
    ("stt_node", {"model_path": str(WHISPER_MODEL), "turn.judge": "audio"}, ["turn.judge", "turn.audio_model_path"]),
    ("stt_node", {"model_path": str(WHISPER_MODEL), "turn.judge": "loudest"}, ["turn.judge", "\"both\""]),
    ("stt_node", {"model_path": str(WHISPER_MODEL), "turn.audio_model_path": "/nope/smart-turn.onnx",
                  "onnxruntime_path": str(ONNXRUNTIME)}, ["turn.audio_model_path", "/nope/smart-turn.onnx"]),
    ("stt_node", {"model_path": str(WHISPER_MODEL), "turn.audio_model_path": str(SMART_TURN),
                  "onnxruntime_path": "/nope/libonnxruntime.so"}, ["onnxruntime_path", "/nope/libonnxruntime.so"]),
    ("stt_node", {"model_path": str(WHISPER_MODEL), "turn.audio_model_path": str(SMART_TURN)}, ["onnxruntime_path"]),
    ("stt_node", {"model_path": str(WHISPER_MODEL), "live_speech_topic": "'bad name'"}, ["live_speech_topic"]),
    ("llm_node", {"model_path": "/nonexistent/model.gguf"}, ["model_path", "/nonexistent/model.gguf", "not found"]),
    ("llm_node", {"model_path": str(LLM_MODEL), "n_batch": 128, "n_ubatch": 256}, ["n_ubatch"]),
    ("llm_node", {"model_path": str(LLM_MODEL), "ctx_size": 512, "parallel": 8}, ["ctx_size"]),
    ("llm_node", {"model_path": str(LLM_MODEL), "ctx_size": 512, "parallel": 1, "max_tokens": 400,
                  "system_prompt": "'" + "You are a robot. " * 40 + "'", "use_mlock": "false"}, ["ctx_size", "system prompt"]),
    ("llm_node", {"model_path": str(LLM_MODEL), "busy_policy": "sometimes"}, ["busy_policy"]),
    ("llm_node", {"model_path": str(LLM_MODEL), "temperature": "hot"}, ["temperature"]),
    ("llm_node", {"model_path": str(LLM_MODEL), "temperature": 7.5}, ["temperature", "must be 0..=5, got 7.5"]),
    ("llm_node", {"model_path": str(LLM_MODEL), "places_file": "/nope/places.yaml"}, ["places_file", "/nope/places.yaml"]),
    ("llm_node", {"model_path": str(LLM_MODEL), "places_file": str(LLM_MODEL)}, ["places_file", "not a valid places file"]),
    ("llm_node", {"model_path": str(LLM_MODEL), "battery_topic": "'bat tery'"}, ["battery_topic"]),
    ("llm_node", {"model_path": ""}, ["ROS arguments were refused", "model_path:="]),
    ("llm_node", {"model_path": str(LLM_MODEL), "engine": "cloud"}, ["engine", "\"openai\""]),
    ("llm_node", {"model_path": str(LLM_MODEL), "engine": "openai", "server.base_url": "gpu-server:8000"},
     ["server.base_url"]),
    ("llm_node", {"model_path": str(LLM_MODEL), "engine": "openai", "server.api_key_env": "VA_NO_SUCH_KEY_VAR"},
     ["server.api_key_env", "VA_NO_SUCH_KEY_VAR", "is not set"]),
    ("llm_node", {"model_path": "''", "engine": "openai"}, ["model_path", "fallback none"]),
    ("tts_node", {"voice_path": "/nope/voice.onnx", "onnxruntime_path": str(ONNXRUNTIME)}, ["voice_path", "/nope/voice.onnx"]),
    ("tts_node", {"voice_path": str(PIPER_VOICE), "onnxruntime_path": "/nope/libonnxruntime.so"}, ["onnxruntime_path", "/nope/libonnxruntime.so"]),
    ("tts_node", {"engine": "festival"}, ["engine"]),
    ("tts_node", {"engine": "espeak", "frame_ms": 5000}, ["frame_ms"]),
    ("tts_node", {"engine": "espeak", "volume": 9.0}, ["volume", "must be 0..=4, got 9"]),
    ("tts_node", {"engine": "espeak", "espeak_voice": "no-such-voice"}, ["no-such-voice"]),
    ("audio_node", {"backend": "alsa"}, ["backend", "must be \"device\" or \"sim\""]),
    ("audio_node", {"sample_rate": 44100}, ["sample_rate", "16000, 32000 or 48000"]),
    ("audio_node", {"frame_ms": 25}, ["frame_ms", "multiple of 10"]),
    ("audio_node", {"backend": "sim", "sim.echo_gain": 9.0}, ["sim.echo_gain"]),
    ("audio_node", {"aec": "maybe"}, ["aec"]),
]


@pytest.mark.parametrize("exe,params,needles", CASES, ids=[f"{c[0]}-{'-'.join(c[1])}-{i}" for i, c in enumerate(CASES)])
def test_bad_start_fails_clearly(exe, params, needles):
    r = run_node(exe, params)
    out = r.stdout + r.stderr
    assert r.returncode not in (0, -6, -11, 134, 139), out  # non-zero, but not an abort/segfault
    assert r.returncode != 0 and "panicked" not in out
    for n in needles:
        assert n in out, out


@pytest.mark.parametrize("exe,param,magic,model", [
    ("stt_node", "model_path", b"\x6c\x6d\x67\x67", WHISPER_MODEL),
    ("llm_node", "model_path", b"GGUF", LLM_MODEL),
    ("tts_node", "voice_path", b"\x08\x07", PIPER_VOICE),
])
def test_corrupt_model_names_file(tmp_path, exe, param, magic, model):
    bad = tmp_path / "corrupt.bin"
    bad.write_bytes(magic + b"\x00" * 4096)  # right magic, garbage body
    extra = {"onnxruntime_path": str(ONNXRUNTIME)} if exe == "tts_node" else {}
    if exe == "tts_node":  # the voice config must sit beside the model
        for f in (bad, tmp_path / "trunc.bin"):
            (tmp_path / (f.name + ".json")).write_bytes((PIPER_VOICE.parent / (PIPER_VOICE.name + ".json")).read_bytes())
    r = run_node(exe, {param: str(bad), **extra})
    out = r.stdout + r.stderr
    assert r.returncode not in (0, -6, -11, 134, 139), out
    assert str(bad) in out and param in out, out
    trunc = tmp_path / "trunc.bin"
    trunc.write_bytes(model.read_bytes()[:1_000_000])
    r = run_node(exe, {param: str(trunc), **extra})
    out = r.stdout + r.stderr
    assert r.returncode not in (0, -6, -11, 134, 139), out
    assert str(trunc) in out, out
