#!/bin/sh
# Elastic training end to end (docs/elastic.md), gpt (small) on mixed-4, 30 Adam steps, a
# snapshot every 10:
#   kill: rank 2 (half0) dies as step 11 starts — an exception on thread ranks, SIGKILL of the
#         MPI process; the run must finish on 3 ranks.
#   join: the run starts on 3 devices; `hetsynth elastic join half0 --at-step 10` adds the fourth.
# Either way the steps after the change must equal those of a fresh run of the re-synthesized plan
# (plan-epoch-1.json) started from the snapshot the agent resumed from (resume-epoch-1):
# bit for bit on threads, within 1e-5 under MPI; every step appears once in the metrics.
# usage: elastic.sh HETSYNTH SOURCE_DIR threads|mpi kill|join [MPIEXEC]
set -u
H=$1 SRC=$2 WORKERS=$3 MODE=$4 MPIEXEC=${5:-mpirun}
dir=$(mktemp -d)
agent=
cleanup() {
  [ -n "$agent" ] && kill "$agent" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
C="$SRC/examples/clusters/mixed-4.json"
common="--model gpt --small --cluster $C --steps 30 --snapshot-every 10 --elastic-dir $dir/run --workers $WORKERS \
  --metrics $dir/metrics.jsonl --quiet --deadline 30"
[ "$WORKERS" = mpi ] && common="$common --mpirun $MPIEXEC"
fail() { echo "FAIL: $*"; echo "--- agent output"; cat "$dir/out" 2>/dev/null; exit 1; }

if [ "$MODE" = kill ]; then
  # The survivors wait 1 s between each snapshot's exchange and its write, so that rank 2 has
  # written its step-10 snapshot and died while they are still in that window: they must still
  # write theirs (the SIGTERM that stops them waits for it).
  HETSYNTH_TEST_KILL_RANK=2:11:kill HETSYNTH_TEST_SNAPSHOT_DELAY_MS=1000 timeout 120 "$H" train --elastic $common >"$dir/out" 2>&1 || fail "elastic run failed"
  change='"lost": \["half0"\]'
  # The agent names the step the rank died in (the one after rank 0's last), not the snapshot's + 1.
  grep -q '"lost_in_step": 11,' "$dir/run/membership.jsonl" || fail "the loss is not logged in step 11"
else
  # Paced (time dilation 100) so the request is in before step 10.
  timeout 120 "$H" train --elastic $common --members fast0,fast1,quarter0 --dilation 100 >"$dir/out" 2>&1 &
  agent=$!
  i=0
  while [ ! -f "$dir/run/agent" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
  "$H" elastic join --dir "$dir/run" half0 --at-step 10 || fail "join request refused"
  wait "$agent" || fail "elastic run failed"
  agent=
  change='"joined": \["half0"\]'
fi
cat "$dir/out"
echo "--- membership log"
cat "$dir/run/membership.jsonl"
grep -q "$change" "$dir/run/membership.jsonl" || fail "no membership change $change in the log"
step=$(grep '"event": "membership"' "$dir/run/membership.jsonl" | head -1 | sed 's/.*"step": \([0-9]*\).*/\1/')
[ "$step" = 10 ] || fail "the change resumed from step '$step', expected the snapshot of step 10"
grep '"event": "membership"' "$dir/run/membership.jsonl" | head -1 | grep -q '"detected_unix": 0\.0*,' &&
  fail "the membership change has no detection time"

# Every step once, in order.
steps=$(sed 's/^{"step": \([0-9]*\),.*/\1/' "$dir/metrics.jsonl" | tr '\n' ' ')
[ "$steps" = "$(seq -s ' ' 1 30) " ] || fail "metrics steps: $steps"

# A fresh run of the new plan from the snapshot.
fresh="train --plan $dir/run/plan-epoch-1.json --cluster $dir/run/cluster-epoch-1.json --load $dir/run/resume-epoch-1.safetensors \
  --steps 20 --metrics $dir/fresh.jsonl --quiet"
if [ "$WORKERS" = mpi ]; then
  np=$(grep '"event": "membership"' "$dir/run/membership.jsonl" | head -1 | sed 's/.*"members": \[\([^]]*\)\].*/\1/' |
    tr ',' '\n' | wc -l)
  timeout 120 "$MPIEXEC" --oversubscribe --allow-run-as-root -np "$np" "$H" $fresh >/dev/null || fail "fresh MPI run failed"
else
  "$H" $fresh >/dev/null || fail "fresh run failed"
fi
losses() { sed 's/^{"step": \([0-9]*\), "loss": \([^,]*\),.*/\1 \2/' "$1"; }
losses "$dir/metrics.jsonl" | awk '$1 > 10' >"$dir/a"
losses "$dir/fresh.jsonl" >"$dir/b"
[ "$(wc -l <"$dir/b")" -eq 20 ] || fail "fresh run has $(wc -l <"$dir/b") steps"
if [ "$WORKERS" = threads ]; then
  cmp -s "$dir/a" "$dir/b" || { paste "$dir/a" "$dir/b"; fail "losses after step 10 differ from the fresh run's"; }
  echo "steps 11-30: losses bit-identical to the fresh run"
else
  paste "$dir/a" "$dir/b" | awk '{ d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d > 1e-5 * (1 + ($4 < 0 ? -$4 : $4))) bad = 1 }
    END { exit bad }' || { paste "$dir/a" "$dir/b"; fail "losses after step 10 differ from the fresh run's by more than 1e-5"; }
  echo "steps 11-30: losses within 1e-5 of the fresh run"
fi
grep '"event": "recovered"' "$dir/run/membership.jsonl" || true
echo PASS
