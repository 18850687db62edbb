#!/usr/bin/env bash
# Benchmarks (figures and ratios, not pass/fail): scripts/bench.sh [stt llm intent tts loop conversation first_chunk audio history turn_judge fleet]
source "$(dirname "$0")/common.sh"
bash "$VA_ROOT/scripts/setup.sh"
source "$VA_ENV"
exec python "$VA_ROOT/scripts/bench.py" "$@"
