#!/usr/bin/env bash
# Compile check of the CUDA build: stt_node and llm_node with their `cuda`
# features (whisper.cpp and llama.cpp with ggml-cuda) against the CUDA 13
# toolkit from scripts/cuda_toolkit.sh, for one GPU architecture
# (CUDAARCHS, default 87 = Jetson Orin). Builds, does not run (no GPU here).
# Own cargo target dir (VOICE_AGENT_CACHE/target-cuda) so the CPU build is
# left alone; a second run rebuilds only what changed.
#
# One difference from a robot build: the wheels have no static cuBLAS, so
# llama.cpp is built as shared libraries here (LLAMA_BUILD_SHARED_LIBS=1,
# cuBLAS linked dynamically); with a full toolkit llama-cpp-sys-2 links the
# static NVIDIA libraries into the node binary.
#   scripts/cuda_check.sh            # sm_87 (Jetson Orin)
#   CUDAARCHS=89 scripts/cuda_check.sh   # e.g. an RTX 40xx desktop
source "$(dirname "$0")/common.sh"
toolkit="$("$VA_ROOT/scripts/cuda_toolkit.sh")"
source "$VA_ENV"
export CUDA_PATH="$toolkit" CUDAToolkit_ROOT="$toolkit" CUDACXX="$toolkit/bin/nvcc"
export PATH="$toolkit/bin:$PATH"
export LIBRARY_PATH="$toolkit/lib:$toolkit/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CUDAARCHS="${CUDAARCHS:-87}"
export LLAMA_BUILD_SHARED_LIBS=1
export CARGO_TARGET_DIR="$VA_CACHE/target-cuda"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
step "cargo build --release (stt_node, llm_node) --features cuda, CUDA arch $CUDAARCHS -> $CARGO_TARGET_DIR"
start=$(date +%s)
cd "$VA_ROOT"
# r2r keys its generated bindings on environment variables only: regenerate
# them when the installed interfaces change (as the colcon install step does)
idl_hash=$(cat "$VA_INSTALL"/share/voice_agent/msg/*.msg | sha256sum | cut -d' ' -f1)
stamp="$CARGO_TARGET_DIR/voice_agent_idl.sha256"
if [ -d "$CARGO_TARGET_DIR/release" ] && [ "$(cat "$stamp" 2>/dev/null)" != "$idl_hash" ]; then
  cargo clean --release -p r2r -p r2r_msg_gen
fi
mkdir -p "$CARGO_TARGET_DIR" && echo "$idl_hash" > "$stamp"
r2r_fresh_bindings "$CARGO_TARGET_DIR"
cargo build --release --locked -p stt_node -p llm_node \
  --features stt_node/cuda,llm_node/cuda
end=$(date +%s)
# stt_node links whisper.cpp's ggml-cuda statically; llm_node (shared build
# here) gets it from libggml-cuda.so beside llama.cpp's build output
cuda_lib=$(find "$CARGO_TARGET_DIR/release/build" -path '*llama-cpp-sys-2-*/out/build/bin/libggml-cuda.so.*' -type f | head -1)
for f in "$CARGO_TARGET_DIR/release/stt_node" "$CARGO_TARGET_DIR/release/llm_node" "$cuda_lib"; do
  [ -n "$f" ] && [ -f "$f" ] || { echo "missing build output: ${f:-libggml-cuda.so}" >&2; exit 1; }
  links=$(LD_LIBRARY_PATH="$toolkit/lib" ldd "$f" 2>/dev/null | grep -oE 'lib(cuda|cudart|cublas|cublasLt|llama|ggml-cuda)\.so[^ ]*' | sort -u | tr '\n' ' ')
  kernels=$(grep -c -a "sm_$CUDAARCHS" "$f" || true)
  echo "$(basename "$f"): $(du -h "$f" | cut -f1); links: ${links:-none}; sm_$CUDAARCHS mentions: $kernels"
done
step "CUDA build compiled in $((end - start)) s"
