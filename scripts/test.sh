#!/usr/bin/env bash
# The project's test command (README, .ci/run): sets up whatever is missing
# (system packages, ROS 2 prefix, models, colcon build), then runs the unit
# tests (cargo) and the integration tests (pytest: node processes over real
# ROS 2 topics on loopback, embedded models). Other arguments go to pytest,
# e.g. scripts/test.sh -k stt
#
#   --quick   the inner loop: unit tests and the node-level integration tests
#             (each node alone, parameters, start-up errors, launch files),
#             not the whole-loop ones (conversation, room, bags, intents,
#             reliability); a few minutes instead of ~15
#   --hog     the same under contention: one core kept busy by stress-ng
#             beside the tests, as on a shared machine
source "$(dirname "$0")/common.sh"
quick=0
hog=0
args=()
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    --hog) hog=1 ;;
    *) args+=("$a") ;;
  esac
done
bash "$VA_ROOT/scripts/setup.sh"
source "$VA_ENV"
cd "$VA_ROOT"
r2r_fresh_bindings "$CARGO_TARGET_DIR"
if ((hog)); then
  command -v stress-ng >/dev/null || {
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq stress-ng >/dev/null
  }
  step "one core kept busy beside the tests (stress-ng --cpu 1)"
  stress-ng --cpu 1 --quiet &
  hog_pid=$!
  trap 'kill $hog_pid 2>/dev/null || true' EXIT
fi
step "unit tests (cargo test --release --workspace)"
cargo test --release --workspace --locked
files=(test/)
if ((quick)); then
  files=(test/test_stt.py test/test_actions.py test/test_hri.py test/test_lifecycle.py test/test_llm.py test/test_server.py test/test_tts.py test/test_params.py test/test_preempt.py test/test_startup_errors.py
         test/test_launch_config.py test/test_audio_bridge.py test/test_compute_report.py test/test_model_convert.py)
fi
step "integration tests (pytest ${files[*]})"
python -m pytest -p no:cacheprovider -q -W ignore::DeprecationWarning --durations=15 "${files[@]}" "${args[@]}"
