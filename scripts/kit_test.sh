#!/usr/bin/env bash
# Proves a run kit on this machine (separate from CI: ~5 minutes): packs the
# CPU kit (or takes KIT=dir with the three kit-*.tar.xz), unpacks it into an
# empty folder and, with an empty environment (env -i), checks that
#   - every library the executables resolve comes from the kit (or is one
#     every Linux has),
#   - the synthetic Llama 3.2 3B Q4_K_M file decodes tokens on the CPU,
#   - the loop runs driven by the Rust binaries alone (audio_node's recorded
#     talker -> stt_node -> llm_node -> tts_node) and completes turns.
#   scripts/kit_test.sh            # pack the CPU kit, then test it
#   KIT=out/kit-cuda scripts/kit_test.sh   # only the library check makes sense without a GPU
source "$(dirname "$0")/common.sh"
kit="${KIT:-}"
if [ -z "$kit" ]; then
  kit="$VA_ROOT/out/kit-cpu"
  bash "$VA_ROOT/scripts/gpu_kit.sh" --cpu "$kit"
fi
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
for p in common llm stt; do tar -C "$dir" -xJf "$kit/kit-$p.tar.xz"; done
# the model tool needs python3 with numpy (the target's own; here the venv's,
# used for nothing else)
clean() { env -i PATH=/usr/bin:/bin HOME="$dir" KIT_PYTHON="$VA_VENV/bin/python" "$@"; }
fail() { echo "KIT TEST FAILED: $*" >&2; exit 1; }

step "libraries resolve inside the kit"
for b in "$dir"/bin/*; do
  bad=$(clean env LD_LIBRARY_PATH="$dir/lib" ldd "$b" | awk '/=>/ {print $3}' | grep -v "^$dir/lib/" |
        grep -vE '/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux[^/]*)\.so' || true)
  missing=$(clean env LD_LIBRARY_PATH="$dir/lib" ldd "$b" | grep "not found" || true)
  [ -z "$missing" ] || fail "$(basename "$b"): $missing"
  [ -z "$bad" ] || fail "$(basename "$b") resolves outside the kit: $bad"
  echo "  $(basename "$b"): $(clean env LD_LIBRARY_PATH="$dir/lib" ldd "$b" | grep -c "$dir/lib/") libraries from the kit"
done

step "synthetic models (random weights) and a CPU decode of the 3B file"
clean "$dir/run.sh" models >/dev/null
out=$(clean "$dir/run.sh" node llm_node --bench-bare "$dir/models/SYNTHETIC-Llama-3.2-3B-Instruct-shape-Q4_K_M.gguf" 2 8 1 "Go to the kitchen." 0 | tail -1)
echo "  $out"
echo "$out" | grep -q '"gen_tokens": [1-9]' || fail "the 3B file did not decode"

step "the loop from the Rust binaries alone (CPU, 180 s: random-weight Whisper decodes to its token bound with every fallback)"
clean env THREADS=2 "$dir/run.sh" loop 0 180 | tee "$dir/loop.txt"
grep -q "end of speech -> first audio" "$dir/loop.txt" || fail "no turn completed ($(tail -5 "$dir"/out/loop/*.log))"
step "kit test passed"
