#!/bin/sh
# A SIGSTOPped MPI rank ends the job within the collective deadline: 4 ranks train a plan with
# --deadline 3; one rank (not rank 0: the third process started) is stopped; the job must exit
# with a failure status within 20 s of the deadline (3 s, or 30 s for start-up), printing exactly
# one "hetsynth: error:" line.
#   late:  rank 2 is stopped 1 s after the first step was printed (the ranks are training); the
#          line names the collective and rank 2.
#   early: rank 2 is stopped as soon as it exists (in MPI start-up, or the first collectives,
#          depending on the machine's load); the line names what waited.
# usage: mpi_stopped_rank.sh MPIEXEC HETSYNTH SOURCE_DIR late|early
set -u
MPIEXEC=$1 H=$2 SRC=$3 MODE=${4:-late}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$H" synth --model mlp --small --cluster "$SRC/examples/clusters/mixed-4.json" -o "$dir/plan.json" --flat --no-overlap \
  >/dev/null 2>&1 || { echo "synth failed"; exit 1; }
start=$(date +%s)
# -k: a launcher that ignores SIGTERM (waiting for a stopped child) is killed 10 s later, so a
# hang is reported below with the job's output instead of ending as the test's own timeout.
timeout -k 10 90 "$MPIEXEC" --oversubscribe --allow-run-as-root -np 4 "$H" train --plan "$dir/plan.json" --steps 100000000 \
  --deadline 3 >"$dir/out" 2>"$dir/err" &
job=$!
# Rank 2 of this job only: a child of this job's mpirun (a child of `timeout`), never another
# job's process.
victim=""
for _ in $(seq 600); do
  sleep 0.1
  launcher=$(pgrep -P $job | head -1)
  [ -n "$launcher" ] || continue
  for p in $(pgrep -P "$launcher" -x hetsynth); do
    if tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=2; then victim=$p; fi
  done
  [ -n "$victim" ] && break
done
[ -n "$victim" ] || { echo "rank 2 not found"; kill $job; exit 1; }
if [ "$MODE" = late ]; then
  # Training has begun once step 1 is printed (progress goes to stderr) (start-up under load can take seconds).
  for _ in $(seq 600); do
    grep -q "^step *1/" "$dir/err" && break
    sleep 0.1
  done
  grep -q "^step *1/" "$dir/err" || { echo "no first step in 60 s"; cat "$dir/err"; kill $job; exit 1; }
  sleep 1
fi
kill -STOP "$victim"
stopped=$(date +%s)
wait $job
rc=$?
end=$(date +%s)
kill -KILL "$victim" 2>/dev/null
echo "mode $MODE: exit status $rc after $((end - stopped)) s from SIGSTOP (total $((end - start)) s)"
echo "--- stderr:"; cat "$dir/err"
errors=$(grep -c "hetsynth: error:" "$dir/err")
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || { echo "FAIL: status $rc"; exit 1; }
limit=23
[ "$MODE" = late ] || limit=50
[ $((end - stopped)) -le $limit ] || { echo "FAIL: took $((end - stopped)) s"; exit 1; }
[ "$errors" -eq 1 ] || { echo "FAIL: $errors error lines"; exit 1; }
if [ "$MODE" = late ]; then
  grep "hetsynth: error:" "$dir/err" | grep -q "rank 2 does not respond" || { echo "FAIL: rank 2 not named"; exit 1; }
fi
echo PASS
