#!/usr/bin/env bash
# Packs a run kit: the node executables and every shared library they need
# that a plain x86-64 Linux (glibc >= 2.35) with an NVIDIA driver and CUDA
# 13's cuBLAS does not have: ROS 2 client libraries, the message typesupport
# libraries rcl opens at run time with the ament index entries it finds them
# by, libpython (the PyPI ROS wheels link it), ALSA, espeak-ng and its data,
# the engines' own shared libraries. Plus the synthetic-model tool (random
# weights, SPEED ONLY) with the tokenizer data it needs, a recording for the
# loop, and run.sh. Nothing needs Rust, ROS, Python 3.11 or a network where
# the kit runs; making the models needs python3 with numpy.
#
#   CUDAARCHS=90 scripts/gpu_kit.sh [OUT]   # stt_node + llm_node with `cuda` (90 = H100, 87 = Jetson Orin)
#   scripts/gpu_kit.sh --cpu [OUT]          # the CPU build (proven here by scripts/kit_test.sh)
#
# Writes OUT/kit-common.tar.xz, OUT/kit-llm.tar.xz, OUT/kit-stt.tar.xz, each
# at most 64 MiB (checked). Use: extract all three into one folder, ./run.sh.
source "$(dirname "$0")/common.sh"
mode=cuda
if [ "${1:-}" = "--cpu" ]; then mode=cpu; shift; fi
out="$(realpath -m "${1:-$VA_ROOT/out/kit-$mode}")"
source "$VA_ENV"
cd "$VA_ROOT"

engine_libs=()
if [ "$mode" = cuda ]; then
  export CUDAARCHS="${CUDAARCHS:-90}"
  bash "$VA_ROOT/scripts/cuda_check.sh"
  engine_bin="$VA_CACHE/target-cuda/release"
  # the CUDA build links llama.cpp as shared libraries (see cuda_check.sh)
  while IFS= read -r d; do engine_libs+=("$d"); done < <(
    find "$VA_CACHE/target-cuda/release/build" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u)
  toolkit="$("$VA_ROOT/scripts/cuda_toolkit.sh")"
  engine_libs+=("$toolkit/lib")
else
  step "cargo build --release (CPU) for the kit"
  r2r_fresh_bindings "$CARGO_TARGET_DIR"
  cargo build --release --locked -p stt_node -p llm_node >/dev/null
  engine_bin="$CARGO_TARGET_DIR/release"
fi
cargo build --release --locked -p tts_node -p audio_node >/dev/null
plain_bin="$CARGO_TARGET_DIR/release"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
common="$stage/common"
mkdir -p "$common/bin" "$common/lib" "$common/prefix/share" "$common/tools" "$common/speech" \
         "$stage/llm/bin" "$stage/llm/lib" "$stage/stt/bin" "$stage/stt/lib"
cp "$plain_bin/tts_node" "$plain_bin/audio_node" "$common/bin/"
cp "$engine_bin/llm_node" "$stage/llm/bin/"
cp "$engine_bin/stt_node" "$stage/stt/bin/"

# What every Linux with an NVIDIA driver has (or must take from the host:
# the driver, and cuBLAS as the kit's contract says).
is_host_lib() {
  case "$(basename "$1")" in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|\
    libcuda.so*|libnvidia-*|libcublas.so*|libcublasLt.so*) return 0 ;;
  esac
  return 1
}

# ldd closure of the given files; copies each non-host library into $2.
search_path="$(IFS=:; echo "${engine_libs[*]:-}"):$LD_LIBRARY_PATH:${VOICE_AGENT_PYTHON_LIBDIR:-}"
collect() {
  local dest="$1"; shift
  local todo=("$@") seen=" " f lib
  while [ ${#todo[@]} -gt 0 ]; do
    f="${todo[0]}"; todo=("${todo[@]:1}")
    while read -r lib; do
      [ -n "$lib" ] || continue
      is_host_lib "$lib" && continue
      case "$seen" in *" $lib "*) continue ;; esac
      seen="$seen$lib "
      [ -e "$dest/$(basename "$lib")" ] || cp -L "$lib" "$dest/"
      todo+=("$lib")
    done < <(LD_LIBRARY_PATH="$search_path" ldd "$f" 2>/dev/null | awk '/=> \// {print $3}')
    if LD_LIBRARY_PATH="$search_path" ldd "$f" 2>/dev/null | grep -q "not found"; then
      echo "unresolved libraries of $f:" >&2
      LD_LIBRARY_PATH="$search_path" ldd "$f" | grep "not found" >&2
      exit 1
    fi
  done
}

step "libraries the executables link"
collect "$common/lib" "$common/bin/tts_node" "$common/bin/audio_node"
collect "$stage/llm/lib" "$stage/llm/bin/llm_node"
collect "$stage/stt/lib" "$stage/stt/bin/stt_node"
# a library both need lives in common only
for part in llm stt; do
  for l in "$stage/$part/lib"/*; do
    [ -e "$common/lib/$(basename "$l")" ] && rm "$l"
  done
done

step "libraries rcl opens at run time (rmw, typesupports) and the ament index"
pkgs="${IDL_PACKAGE_FILTER//;/ } action_msgs unique_identifier_msgs service_msgs type_description_interfaces"
runtime=()
for dir in "$VA_VENV/lib" "$VA_INSTALL/lib"; do
  for p in $pkgs; do
    for f in "$dir"/lib"${p}"__rosidl_typesupport_*.so "$dir"/lib"${p}"__rosidl_generator_c.so; do
      case "$f" in *_py.so|*"*"*) continue ;; esac
      [ -e "$f" ] && runtime+=("$f")
    done
  done
  for f in "$dir"/librmw_fastrtps_cpp.so "$dir"/librmw_fastrtps_shared_cpp.so "$dir"/librmw_dds_common*.so \
           "$dir"/librosidl_typesupport_fastrtps_c.so "$dir"/librosidl_typesupport_fastrtps_cpp.so \
           "$dir"/librosidl_typesupport_introspection_c.so "$dir"/librosidl_typesupport_introspection_cpp.so; do
    case "$f" in *"*"*) continue ;; esac
    [ -e "$f" ] && runtime+=("$f")
  done
done
for f in "${runtime[@]}"; do cp -L "$f" "$common/lib/"; done
collect "$common/lib" "${runtime[@]}"
for dir in "$VA_VENV" "$VA_INSTALL"; do
  cp -a "$dir/share/ament_index" "$common/prefix/share/" 2>/dev/null || true
done

step "espeak-ng data, tools, a recording"
espeak_data="$(dirname "$(ldconfig -p | awk '/libespeak-ng.so.1 / {print $NF; exit}')")/espeak-ng-data"
[ -d "$espeak_data" ] || espeak_data=/usr/lib/x86_64-linux-gnu/espeak-ng-data
cp -a "$espeak_data" "$common/espeak-ng-data"
cp "$VA_ROOT/scripts/synthetic_models.py" "$VA_ROOT/scripts/convert_models.py" "$common/tools/"
python "$VA_ROOT/scripts/synthetic_models.py" extract-tokenizer \
  "$VA_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$common/tools/llama3_tokenizer.json" >/dev/null
python "$VA_ROOT/scripts/synthetic_models.py" extract-vocab \
  "$VA_MODELS/ggml-tiny.en.bin" "$common/tools/whisper_en_vocab.json" >/dev/null
espeak-ng -s 150 -w "$stage/q.wav" "What can you tell me about the kitchen?"
sox "$stage/q.wav" -r 16000 -c 1 -b 16 "$common/speech/question.wav"
mkdir -p "$common/vad" && cp "$VA_MODELS/ggml-silero-v6.2.3.bin" "$common/vad/"  # the real VAD (1 MB)
cp "$VA_ROOT/scripts/kit_run.sh" "$common/run.sh"
chmod +x "$common/run.sh"
cat > "$common/KIT.txt" <<EOF
voice_agent run kit ($mode$( [ "$mode" = cuda ] && echo ", CUDAARCHS $CUDAARCHS"), built $(date -u +%F) from $(git -C "$VA_ROOT" rev-parse --short HEAD)).
Extract kit-common, kit-llm and kit-stt into one folder; ./run.sh help.
Models made by ./run.sh models have RANDOM WEIGHTS: for speed measurement only.
EOF

step "packing (xz) -> $out"
mkdir -p "$out"
for part in common llm stt; do
  if [ "$part" = common ]; then src="$common"; else src="$stage/$part"; fi
  tar -C "$src" -cf - . | xz -T0 -9 > "$out/kit-$part.tar.xz"
  size=$(stat -c %s "$out/kit-$part.tar.xz")
  printf '  kit-%s.tar.xz %5.1f MiB\n' "$part" "$(echo "$size / 1048576" | bc -l)"
  if [ "$size" -gt $((64 * 1024 * 1024)) ]; then
    echo "kit-$part.tar.xz is over 64 MiB" >&2
    exit 1
  fi
done
step "kit ready: $out (extract all parts into one folder; ./run.sh help)"
