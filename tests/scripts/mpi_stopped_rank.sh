#!/bin/sh
# A SIGSTOPped MPI rank ends the job within the collective deadline: 4 ranks train a plan with
# --deadline 3; one rank (not rank 0: the third process started) is stopped mid-run; the job must
# exit with a failure status within deadline + 20 s, printing exactly one "hetsynth: error:" line
# that names the collective and the stopped rank.
# usage: mpi_stopped_rank.sh MPIEXEC HETSYNTH SOURCE_DIR
set -u
MPIEXEC=$1 H=$2 SRC=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$H" synth --model mlp --small --cluster "$SRC/examples/clusters/mixed-4.json" -o "$dir/plan.json" --flat --no-overlap \
  >/dev/null 2>&1 || { echo "synth failed"; exit 1; }
start=$(date +%s)
timeout 90 "$MPIEXEC" --oversubscribe --allow-run-as-root -np 4 "$H" train --plan "$dir/plan.json" --steps 100000000 \
  --quiet --deadline 3 >"$dir/out" 2>"$dir/err" &
job=$!
# Rank 2 of this job only: a child of this job's mpirun (a child of `timeout`), never another
# job's process.
victim=""
for _ in $(seq 100); do
  sleep 0.1
  launcher=$(pgrep -P $job | head -1)
  [ -n "$launcher" ] || continue
  for p in $(pgrep -P "$launcher" -x hetsynth); do
    if tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=2; then victim=$p; fi
  done
  [ -n "$victim" ] && break
done
[ -n "$victim" ] || { echo "rank 2 not found"; kill $job; exit 1; }
sleep 1.5
kill -STOP "$victim"
stopped=$(date +%s)
wait $job
rc=$?
end=$(date +%s)
kill -KILL "$victim" 2>/dev/null
echo "exit status $rc after $((end - stopped)) s from SIGSTOP (total $((end - start)) s)"
echo "--- stderr:"; cat "$dir/err"
errors=$(grep -c "hetsynth: error:" "$dir/err")
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || { echo "FAIL: status $rc"; exit 1; }
[ $((end - stopped)) -le 23 ] || { echo "FAIL: took $((end - stopped)) s"; exit 1; }
[ "$errors" -eq 1 ] || { echo "FAIL: $errors error lines"; exit 1; }
grep "hetsynth: error:" "$dir/err" | grep -q "rank 2 does not respond" || { echo "FAIL: rank 2 not named"; exit 1; }
echo PASS
