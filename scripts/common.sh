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
