#!/usr/bin/env bash
# The README's main command: sets up whatever is missing (first run: system
# packages, ROS 2 prefix, models, build), then runs the voice loop demo.
#   scripts/demo.sh                 # built-in spoken requests
#   scripts/demo.sh --wav my.wav    # your own recording
#   scripts/demo.sh --places        # spoken goals to a Nav2 stand-in
source "$(dirname "$0")/common.sh"
bash "$VA_ROOT/scripts/setup.sh"
source "$VA_ENV"
exec python "$VA_ROOT/scripts/demo.py" "$@"
