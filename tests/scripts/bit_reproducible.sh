#!/bin/sh
# Bit-reproducibility: 20 Adam steps of the same plan (gpt, small) give bit-identical parameters
# and optimizer state in two `mpirun -np 4` runs, a thread run, and a thread run under other
# allocator settings (MALLOC_ARENA_MAX, MALLOC_TOP_PAD_, MALLOC_MMAP_THRESHOLD_, which move
# buffers). Compared by the content hashes in each checkpoint's manifest (params_hash,
# optimizer_state_hash: FNV-1a over the tensors' bytes).
# usage: bit_reproducible.sh MPIEXEC HETSYNTH SOURCE_DIR
set -u
MPIEXEC=$1 H=$2 SRC=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$H" synth --model gpt --small --cluster "$SRC/examples/clusters/mixed-4.json" -o "$dir/plan.json" --flat --no-overlap \
  >/dev/null 2>&1 || { echo "synth failed"; exit 1; }
args() { echo train --plan "$dir/plan.json" --steps 20 --optimizer adam --quiet --save "$dir/$1.safetensors"; }
hashes() { head -c 4096 "$dir/$1.safetensors" | tr ',' '\n' | grep -aE '"(params_hash|optimizer_state_hash)"' | sort | tr -d '\n '; }
for run in mpi1 mpi2; do
  timeout 120 "$MPIEXEC" --oversubscribe --allow-run-as-root -np 4 "$H" $(args $run) >/dev/null ||
    { echo "$run failed"; exit 1; }
done
"$H" $(args threads) >/dev/null || { echo "thread run failed"; exit 1; }
env MALLOC_ARENA_MAX=1 MALLOC_TOP_PAD_=12345 MALLOC_MMAP_THRESHOLD_=4096 "$H" $(args alloc) >/dev/null ||
  { echo "allocator run failed"; exit 1; }
ref=$(hashes mpi1)
echo "mpi1: $ref"
[ -n "$ref" ] || { echo "FAIL: no hashes in the manifest"; exit 1; }
status=0
for n in mpi2 threads alloc; do
  h=$(hashes $n)
  echo "$n: $h"
  [ "$h" = "$ref" ] || { echo "FAIL: $n differs from mpi1"; status=1; }
done
[ $status -eq 0 ] && echo PASS
exit $status
