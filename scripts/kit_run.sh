#!/usr/bin/env bash
# voice_agent run kit (made by scripts/gpu_kit.sh; this file is its run.sh).
# Everything runs from this folder with its own libraries: no Rust, no ROS,
# no Python 3.11 and no network needed (./run.sh models needs python3 + numpy).
#
#   ./run.sh models            random-weight Llama 3.2 3B Q4_K_M + Whisper base.en in models/
#                              (SPEED MEASUREMENT ONLY: their output is noise)
#   ./run.sh bench [NGL]       llm: bare llama.cpp loop with NGL GPU layers (default 99) and 0;
#                              whisper: 3 s and 10 s of audio, GPU and CPU
#   ./run.sh loop [NGL] [S]    audio_node (simulated room, the kit's recording said every 12 s)
#                              -> stt_node -> llm_node -> tts_node (espeak) for S seconds
#                              (default 60); the per-turn latency lines of the logs
#   ./run.sh gpu               models (if missing) + bench + loop, everything in out/results.txt
#   ./run.sh node NAME ARGS    any node with the kit's environment
set -euo pipefail
K="$(cd "$(dirname "$0")" && pwd)"
export LD_LIBRARY_PATH="$K/lib${KIT_EXTRA_LD_PATH:+:$KIT_EXTRA_LD_PATH}"
export AMENT_PREFIX_PATH="$K/prefix"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_LOG_DIR="$K/out/ros_log"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-42}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ESPEAK_DATA_PATH="$K"
THREADS="${THREADS:-$(nproc)}"
M="$K/models"
LLM="$M/SYNTHETIC-Llama-3.2-3B-Instruct-shape-Q4_K_M.gguf"
WHISPER="$M/SYNTHETIC-ggml-base.en-shape.bin"
mkdir -p "$K/out" "$ROS_LOG_DIR"

models() {
  mkdir -p "$M"
  [ -s "$LLM" ] || "${KIT_PYTHON:-python3}" "$K/tools/synthetic_models.py" llama "$LLM" --tokenizer "$K/tools/llama3_tokenizer.json"
  [ -s "$WHISPER" ] || "${KIT_PYTHON:-python3}" "$K/tools/synthetic_models.py" whisper "$WHISPER" --vocab "$K/tools/whisper_en_vocab.json"
  ls -la "$M"
}

bench() {
  local ngl="${1:-99}"
  local prompt="Tell me a short story about a robot that learns to cook."
  echo "== llm bare loop (SYNTHETIC 3B Q4_K_M, random weights), $THREADS threads"
  for n in "$ngl" 0; do
    "$K/bin/llm_node" --bench-bare "$LLM" "$THREADS" 128 3 "$prompt" "$n"
  done
  echo "== whisper (SYNTHETIC base.en, random weights): 3 s and 10 s, GPU then CPU"
  "${KIT_PYTHON:-python3}" - "$K" <<'EOF'
import sys, wave, numpy as np
k = sys.argv[1]
x, _ = None, None
with wave.open(f"{k}/speech/question.wav") as w:
    x = np.frombuffer(w.readframes(w.getnframes()), np.int16)
for s in (3, 10):
    y = np.resize(x, 16000 * s)
    with wave.open(f"{k}/out/speech_{s}s.wav", "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(y.tobytes())
EOF
  for s in 3 10; do
    for gpu in true false; do
      printf 'audio %ss use_gpu %s: ' "$s" "$gpu"
      "$K/bin/stt_node" --bench-direct "$K/out/speech_${s}s.wav" "$WHISPER" "$THREADS" 3 0 "$gpu" | \
        "${KIT_PYTHON:-python3}" -c 'import json,sys; r=json.loads(sys.stdin.read().splitlines()[-1]); r.pop("text"); print(r)'
    done
  done
}

loop() {
  local ngl="${1:-99}" secs="${2:-60}" pids=()
  local L="$K/out/loop"
  rm -rf "$L" && mkdir -p "$L"
  "$K/bin/stt_node" --ros-args -p model_path:="$WHISPER" -p n_threads:="$THREADS" -p use_gpu:=$([ "$ngl" -gt 0 ] && echo true || echo false) \
      -p vad.model_path:="$K/vad/ggml-silero-v6.2.3.bin" > "$L/stt_node.log" 2>&1 & pids+=($!)
  "$K/bin/llm_node" --ros-args -p model_path:="$LLM" -p n_gpu_layers:="$ngl" -p n_threads:="$THREADS" \
      -p ctx_size:=8192 -p parallel:=4 -p max_tokens:=48 -p use_mlock:=false > "$L/llm_node.log" 2>&1 & pids+=($!)
  "$K/bin/tts_node" --ros-args -p engine:=espeak > "$L/tts_node.log" 2>&1 & pids+=($!)
  sleep 5
  "$K/bin/audio_node" --ros-args -p backend:=sim -p sim.talker_wav:="$K/speech/question.wav" \
      -p sim.talker_start_s:=3.0 -p sim.talker_every_s:=12.0 > "$L/audio_node.log" 2>&1 & pids+=($!)
  sleep "$secs"
  kill -INT "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 20); do
    kill -0 "${pids[@]}" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true  # a node still loading its model
  wait 2>/dev/null || true
  echo "== loop ($secs s, n_gpu_layers $ngl): compute lines and per-turn latency"
  grep -h "compute:" "$L/llm_node.log" || true
  grep -h "end of speech -> first audio" "$L/tts_node.log" || echo "no turn completed: see $L/*.log"
  grep -h "prompt tokens evaluated" "$L/llm_node.log" | tail -5 || true
}

case "${1:-help}" in
  models) models ;;
  bench) shift; bench "$@" ;;
  loop) shift; loop "$@" ;;
  gpu)
    { models; bench 99; loop 99 90; } 2>&1 | tee "$K/out/results.txt" ;;
  node) shift; name="$1"; shift; exec "$K/bin/$name" "$@" ;;
  *) sed -n '2,18p' "$0" ;;
esac
