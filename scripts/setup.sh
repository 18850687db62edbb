#!/usr/bin/env bash
# One command from a bare Debian machine to a ready voice_agent: system
# packages, ROS 2 Jazzy prefix, embedded default models, colcon build.
# Idempotent; a second run with nothing changed takes seconds.
source "$(dirname "$0")/common.sh"
t0=$(date +%s)
bash "$VA_ROOT/scripts/setup_ros.sh"
step "models -> $VA_MODELS"
"$VA_VENV/bin/python" "$VA_ROOT/scripts/fetch_models.py" --cache "$VA_MODELS"
bash "$VA_ROOT/scripts/build.sh"
bash "$VA_ROOT/scripts/setup_servers.sh"
step "setup done in $(( $(date +%s) - t0 )) s; environment: source $VA_ENV"
