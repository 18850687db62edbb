#!/usr/bin/env bash
# The serving engines the tests of engine openai talk to, in their own venv
# ($VA_CACHE/servers, outside the ROS prefix): llama-cpp-python's
# OpenAI-compatible chat server (`python -m llama_cpp.server`) and
# faster-whisper-server (transcriptions). llama-cpp-python's sdist compiles
# llama.cpp (~6 min on 2 cores), so it is built once and rebuilt only when
# scripts/requirements-servers.txt changes.
source "$(dirname "$0")/common.sh"
SERVERS="$VA_CACHE/servers"
req="$VA_ROOT/scripts/requirements-servers.txt"
# A portable llama.cpp (AVX2, no -march=native): a native build on a CPU that
# reports AMX runs its AMX kernels, and where the kernel does not grant AMX
# (virtual machines) the server dies on its first request (invalid opcode).
cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
req_hash=$( (cat "$req"; echo "$cmake_args") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$SERVERS/.va_req" 2>/dev/null)" != "$req_hash" ]; then
  step "OpenAI-compatible test server (llama-cpp-python, compiles llama.cpp) -> $SERVERS"
  t0=$(date +%s)
  [ -x "$SERVERS/bin/python" ] || "${PYTHON:-python3}" -m venv "$SERVERS"
  CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$SERVERS/bin/pip" install -q --disable-pip-version-check --no-cache-dir --force-reinstall --no-deps \
    "$(grep -o '^llama-cpp-python[^ ]*' "$req")"
  "$SERVERS/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$req_hash" > "$SERVERS/.va_req"
  step "test server built in $(( $(date +%s) - t0 )) s"
fi
