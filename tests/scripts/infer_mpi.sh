#!/bin/sh
# Inference placements on MPI processes: `hetsynth infer` under mpirun runs one process per
# device of the placement (gpt and vgg19, small, pipeline by count over mixed-4's four devices),
# activations as point-to-point messages, and its outputs equal the one-device forward; paced
# (--emulate) too; a job of the wrong size is refused with one line and exit 2.
# usage: infer_mpi.sh MPIEXEC HETSYNTH SOURCE_DIR
set -u
MPIEXEC=$1 H=$2 SRC=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mpi() { timeout 120 "$MPIEXEC" --oversubscribe --allow-run-as-root "$@"; }
status=0
for model in gpt vgg19; do
  "$H" place --model $model --small --cluster "$SRC/examples/clusters/mixed-4.json" --method even -o "$dir/$model.json" \
    >/dev/null 2>&1 || { echo "place $model failed"; exit 1; }
  out=$(mpi -np 4 "$H" infer --placement "$dir/$model.json" --requests 3 2>&1)
  echo "$out" | grep -q "on 4 MPI processes, 3 requests: outputs equal the one-device forward" ||
    { echo "FAIL: $model on 4 MPI processes:"; echo "$out"; status=1; }
  [ "$(echo "$out" | grep -c '^infer:')" = 1 ] || { echo "FAIL: $model: expected one report (rank 0's)"; echo "$out"; status=1; }
  echo "$out" | grep -q " 0 point-to-point transfers" && { echo "FAIL: $model: no transfers"; status=1; }
done
out=$(mpi -np 4 "$H" infer --placement "$dir/gpt.json" --requests 2 --emulate --dilation 2 2>&1)
echo "$out" | grep -q "outputs equal the one-device forward" && echo "$out" | grep -q "dilation K=2" ||
  { echo "FAIL: emulated:"; echo "$out"; status=1; }
out=$(mpi -np 3 "$H" infer --placement "$dir/gpt.json" 2>&1)
code=$?
[ $code -eq 2 ] || { echo "FAIL: -np 3 exited $code, expected 2"; status=1; }
[ "$(echo "$out" | grep -c 'runs on 4 processes (mpirun -np 4); this job has 3')" = 1 ] ||
  { echo "FAIL: -np 3: expected one line naming the process count:"; echo "$out"; status=1; }
[ $status -eq 0 ] && echo "infer on MPI processes: ok"
exit $status
