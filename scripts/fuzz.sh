#!/usr/bin/env bash
# Longer property-test run of everything that reads outside data
# (voice_core's tests/properties.rs): CASES per property, default 20000.
#   scripts/fuzz.sh [CASES]
source "$(dirname "$0")/common.sh"
cases="${1:-20000}"
cd "$VA_ROOT"
t0=$(date +%s)
PROPTEST_CASES="$cases" cargo test --release -p voice_core --test properties
n=$(grep -c '^    fn ' src/voice_core/tests/properties.rs)
echo "fuzz: $n properties x $cases cases = $((n * cases)) executions in $(( $(date +%s) - t0 )) s"
