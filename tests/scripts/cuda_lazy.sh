#!/bin/sh
# CUDA builds: the hetsynth program loads the CUDA backend module only when a run needs it.
#   1. the program itself needs none of CUDA, cuBLAS, NCCL (readelf's NEEDED entries);
#   2. a CPU training run loads none of them (the dynamic loader's LD_DEBUG=files log);
#   3. --backend cuda loads the module: it trains (a GPU) or fails with the module's own "no GPU"
#      reason — never "cannot load the CUDA backend module".
# usage: cuda_lazy.sh HETSYNTH
set -u
H=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
libs='libcudart|libcublas|libnccl'
if readelf -d "$H" | grep NEEDED | grep -E "$libs"; then echo "FAIL: the program needs CUDA libraries"; exit 1; fi
[ -f "$(dirname "$H")/libhetsynth-cuda.so" ] || { echo "FAIL: no libhetsynth-cuda.so next to $H"; exit 1; }
LD_DEBUG=files "$H" train --model mlp --small --steps 2 --quiet >"$dir/out" 2>"$dir/cpu.log" || {
  echo "FAIL: the CPU run failed"; tail -5 "$dir/cpu.log"; exit 1; }
if grep -E "file=($libs)" "$dir/cpu.log"; then echo "FAIL: a CPU run loaded CUDA libraries"; exit 1; fi
LD_DEBUG=files "$H" train --model mlp --small --steps 2 --quiet --backend cuda >"$dir/out" 2>"$dir/gpu.log"
rc=$?
grep -qE "file=.*libhetsynth-cuda.so" "$dir/gpu.log" || { echo "FAIL: --backend cuda did not load the module"; exit 1; }
if [ "$rc" -ne 0 ]; then
  line=$(grep "hetsynth: error:" "$dir/gpu.log")
  echo "$line"
  echo "$line" | grep -q "no GPU:" || { echo "FAIL: expected the module's 'no GPU' reason"; exit 1; }
  if echo "$line" | grep -q "cannot load the CUDA backend module"; then echo "FAIL: the module did not load"; exit 1; fi
fi
echo PASS
