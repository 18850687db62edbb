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
req_hash=$(sha256sum "$req" | cut -d' ' -f1)
if [ "$(cat "$SERVERS/.va_req" 2>/dev/null)" != "$req_hash" ]; then
  step "OpenAI-compatible test server (llama-cpp-python, compiles llama.cpp) -> $SERVERS"
  t0=$(date +%s)
  [ -x "$SERVERS/bin/python" ] || "${PYTHON:-python3}" -m venv "$SERVERS"
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$SERVERS/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$req_hash" > "$SERVERS/.va_req"
  step "test server built in $(( $(date +%s) - t0 )) s"
fi
