#!/usr/bin/env bash
# Builds the package with colcon, exactly as on a robot: interfaces generated
# by rosidl, Rust nodes built by cargo (release) and installed to
# VOICE_AGENT_CACHE/install/lib/voice_agent, launch/ and config/ to
# share/voice_agent. The cargo target dir is shared with plain `cargo` runs in
# a shell that sourced env.sh, so either rebuilds only what changed.
#   VOICE_AGENT_CARGO_FEATURES="cuda" scripts/build.sh   # GPU build
source "$(dirname "$0")/common.sh"
source "$VA_ENV"
# Test-only interfaces (test/interfaces/README.md: nav2_msgs' NavigateToPose)
# go into the same prefix first, so llm_node is built with its action client.
# A robot build (colcon in a workspace) skips them: COLCON_IGNORE.
if [ "${VOICE_AGENT_TEST_INTERFACES:-1}" = 1 ]; then
  step "test-only interfaces (test/interfaces) -> $VA_INSTALL"
  ti_src="$VA_CACHE/test-interfaces"
  rm -rf "$ti_src" && mkdir -p "$ti_src"
  cp -a "$VA_ROOT/test/interfaces/." "$ti_src/" && rm -f "$ti_src/COLCON_IGNORE"
  colcon --log-base "$VA_CACHE/colcon-log" build \
      --base-paths "$ti_src" --merge-install \
      --build-base "$VA_CACHE/colcon-build" --install-base "$VA_INSTALL" \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VA_VENV/bin/python" \
      > "$VA_CACHE/colcon-test-interfaces.log" 2>&1 \
    || { tail -40 "$VA_CACHE/colcon-test-interfaces.log"; echo "test interfaces failed" >&2; exit 1; }
fi
step "colcon build (interfaces + Rust nodes, release) -> $VA_INSTALL"
# colcon reuses a configured build folder without configuring again: one
# configured from another checkout (a fresh clone sharing this cache) would
# build that checkout's sources. Start over when the source differs.
cache="$VA_CACHE/colcon-build/voice_agent/CMakeCache.txt"
if [ -f "$cache" ] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$VA_ROOT" "$cache"; then
  rm -rf "$VA_CACHE/colcon-build/voice_agent"
fi
colcon_log="$VA_CACHE/colcon-build.log"
set +e
colcon --log-base "$VA_CACHE/colcon-log" build \
    --base-paths "$VA_ROOT" --merge-install \
    --build-base "$VA_CACHE/colcon-build" --install-base "$VA_INSTALL" \
    --event-handlers console_direct+ \
    --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VA_VENV/bin/python" \
      "-DVOICE_AGENT_CARGO_FEATURES=${VOICE_AGENT_CARGO_FEATURES:-}" \
    2>&1 | tee "$colcon_log" | grep --line-buffered -E '^(Starting|Finished|Failed|Summary)|Compiling (llama|whisper|r2r |stt_node|llm_node|tts_node|voice)|error(\[|:)|warning: unused|Installing: .*/lib/voice_agent/'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
  tail -60 "$colcon_log"
  echo "colcon build failed; full log: $colcon_log" >&2
  exit 1
fi
for n in stt_node llm_node tts_node audio_node audio_bridge; do
  [ -x "$VA_INSTALL/lib/voice_agent/$n" ] || { echo "missing $VA_INSTALL/lib/voice_agent/$n" >&2; exit 1; }
done
step "built: $VA_INSTALL/lib/voice_agent/{stt_node,llm_node,tts_node,audio_node,audio_bridge}"
