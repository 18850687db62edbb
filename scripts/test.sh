#!/usr/bin/env bash
# The project's test command (README, .ci/run): sets up whatever is missing
# (system packages, ROS 2 prefix, models, colcon build), then runs the unit
# tests (cargo) and the integration tests (pytest: node processes over real
# ROS 2 topics on loopback, embedded models). Extra arguments go to pytest,
# e.g. scripts/test.sh -k stt
source "$(dirname "$0")/common.sh"
bash "$VA_ROOT/scripts/setup.sh"
source "$VA_ENV"
cd "$VA_ROOT"
r2r_fresh_bindings "$CARGO_TARGET_DIR"
step "unit tests (cargo test --release --workspace)"
cargo test --release --workspace --locked
step "integration tests (pytest test/)"
python -m pytest -p no:cacheprovider -q -W ignore::DeprecationWarning test/ "$@"
