#!/usr/bin/env bash
# Installs a CUDA 13 toolkit from NVIDIA's PyPI wheels into
# VOICE_AGENT_CACHE/cuda-13 (nvcc, nvvm/cicc, crt, cudart, cccl, cuBLAS), for
# building the CUDA variant on a machine without NVIDIA's apt repository or a
# GPU. Prints the toolkit root on stdout. A robot with JetPack has its own
# toolkit (/usr/local/cuda) and does not need this.
#
# The wheels hold what a build needs except three files a full toolkit has,
# made here: unversioned .so links, an empty libculibos.a (only the static
# cudart needs it; this build links cudart dynamically) and lib/stubs/libcuda.so,
# a link-time stand-in for the driver library generated from cuda.h, like the
# stub NVIDIA ships (the real libcuda.so.1 comes with the driver at run time).
source "$(dirname "$0")/common.sh"
CUDA_VERSION_PIN="13.5.37"
root="$VA_CACHE/cuda-13"
site="$root/site"
toolkit="$site/nvidia/cu13"
stamp="$root/.installed-$CUDA_VERSION_PIN"
if [ ! -f "$stamp" ]; then
  step "CUDA $CUDA_VERSION_PIN toolkit from PyPI wheels -> $toolkit" >&2
  rm -rf "$root"
  mkdir -p "$root"
  python3 -m pip install --quiet --no-deps --target "$site" \
    "nvidia-cuda-nvcc==$CUDA_VERSION_PIN" "nvidia-nvvm==$CUDA_VERSION_PIN" \
    "nvidia-cuda-crt==$CUDA_VERSION_PIN" "nvidia-cuda-runtime==$CUDA_VERSION_PIN" \
    "nvidia-cuda-cccl==13.3.5.0.6" "nvidia-cublas==13.10.0.20" >&2
  lib="$toolkit/lib"
  for so in cudart cublas cublasLt; do
    ln -sf "lib$so.so.13" "$lib/lib$so.so"
  done
  ln -sfn lib "$toolkit/lib64"
  mkdir -p "$lib/stubs"
  ar rcs "$lib/libculibos.a"
  # Every driver API entry point declared in cuda.h (after macro expansion,
  # so the versioned names like cuMemAlloc_v2), as a function that fails.
  gcc -E -P -x c "$toolkit/include/cuda.h" -I"$toolkit/include" |
    grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u |
    awk '{ printf "int %s(void) { return 999; }\n", $1 }' > "$root/cuda_stub.c"
  gcc -shared -fPIC -o "$lib/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$root/cuda_stub.c"
  "$toolkit/bin/nvcc" --version >&2
  touch "$stamp"
fi
echo "$toolkit"
