#!/usr/bin/env bash
# make bench, part 3: the balancer. 8 equal CPU-bound jobs (ssi debug spin)
# started with ssi run -d on node1 of a 4-node lab of half a CPU each:
# their makespan with node1 staying (no balancing: the baseline) and with
# the balancer on, both in this run, next to the ideal (the total work
# over the 4 nodes' CPUs, from one job's time alone on a node). Then the
# speed table: node1 with a whole CPU and node2..4 with half
# (BENCH_BAL_SPEED_QUOTAS), each node's speed measured by its agent,
# BENCH_BAL_SPEED_JOBS jobs started on node1, next to the
# capacity-weighted ideal: the total work (one job's time alone on node1
# times node1's CPUs x speed, per job) over the sum of the nodes' CPUs x
# speed.
set -euo pipefail
cd "$(dirname "$0")/.."
SSI=$PWD/bin/ssi
WORK=${BENCH_BAL_WORK:-10} # seconds of the reference CPU per job
JOBS=${BENCH_BAL_JOBS:-8}
SPEED_QUOTAS=${BENCH_BAL_SPEED_QUOTAS:-1,0.5,0.5,0.5}
SPEED_JOBS=${BENCH_BAL_SPEED_JOBS:-12}
LAB=benchb
cleanup() { "$SSI" lab --name "$LAB" down >/dev/null 2>&1 || true; }
trap cleanup EXIT
in1() { timeout 600 "$SSI" lab --name "$LAB" exec node1 -- "$@"; }
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
# up QUOTAS: a fresh 4-node lab of those CPU quotas, balancing on; waits
# (up to 60 s) for the four nodes to know each other's load.
up() {
  cleanup
  SSI_LAB_SUBNET=10.213.25.0/24 SSI_BALANCE_ENABLED=true "$SSI" lab --name "$LAB" up --nodes 4 --cpu-quota "$1" >/dev/null
  for _ in $(seq 600); do
    [ "$(in1 "$SSI" nodes --json | grep -c '"last_seen"')" = 4 ] && break
    sleep 0.1
  done
}
up 0.5

# moves is how many committed moves node1 lists.
moves() { in1 "$SSI" migrations --json | { grep -o '"committed": *true' || true; } | wc -l; }

# run N: start N jobs on node1 at once, wait for all; prints the seconds
# and the moves made.
run() {
  local before after t0 t1 cpids=()
  before=$(moves)
  t0=$(now)
  for _ in $(seq "$1"); do cpids+=("$(in1 "$SSI" run -d -- "$SSI" debug spin --seconds "$WORK")"); done
  for c in "${cpids[@]}"; do in1 "$SSI" wait "$c" >/dev/null; done
  t1=$(now)
  after=$(moves)
  echo "$(secs "$t0" "$t1") $((after - before))"
}

in1 sh -c 'echo 1 > /cluster/admin/stay'
read -r one _ < <(run 1)
read -r off offmoves < <(run "$JOBS")
in1 sh -c 'echo 0 > /cluster/admin/stay'
read -r on onmoves < <(run "$JOBS")
# One job alone had node1's half CPU: the 4 nodes do JOBS of them in
# JOBS/4 times that, ideally.
ideal=$(awk -v t="$one" -v j="$JOBS" 'BEGIN { printf "%.1f", t * j / 4 }')

echo
echo "### Balancing ($JOBS jobs of ${WORK} s of CPU started on node1; 4-node lab, 0.5 CPU per node; same run)"
echo
echo "| | makespan (s) | ideal (s) | makespan / ideal | moves |"
echo "| --- | --- | --- | --- | --- |"
echo "| balancer off (node1 stays) | $off | $ideal | $(awk -v a="$off" -v b="$ideal" 'BEGIN { printf "%.2fx", a / b }') | $offmoves |"
echo "| balancer on | $on | $ideal | $(awk -v a="$on" -v b="$ideal" 'BEGIN { printf "%.2fx", a / b }') | $onmoves |"

# Speed: nodes of different sizes. Each node's capacity is its quota
# times the speed its agent measured (/cluster/nodes/NODE/speed, 10000
# is the reference CPU that `ssi debug spin --seconds W` does W seconds
# of work on).
up "$SPEED_QUOTAS"
IFS=, read -r -a quotas <<<"$SPEED_QUOTAS"
capacity=0
speeds=""
for k in 1 2 3 4; do
  q=${quotas[$((k - 1))]:-${quotas[0]}}
  s=$(in1 cat /cluster/nodes/node$k/speed)
  speeds="$speeds node$k ${q}x$s"
  capacity=$(awk -v c="$capacity" -v q="$q" -v s="$s" 'BEGIN { print c + q * s / 10000 }')
done
# A job's work in reference CPU-seconds, from its time alone on node1 in
# this run (a busy machine does less than the quotas promise), as the
# first table measures it.
in1 sh -c 'echo 1 > /cluster/admin/stay'
read -r alone _ < <(run 1)
in1 sh -c 'echo 0 > /cluster/admin/stay'
read -r spd spdmoves < <(run "$SPEED_JOBS")
cap1=$(awk -v q="${quotas[0]}" -v s="$(in1 cat /cluster/nodes/node1/speed)" 'BEGIN { print q * s / 10000 }')
ideal=$(awk -v t="$alone" -v c1="$cap1" -v j="$SPEED_JOBS" -v c="$capacity" 'BEGIN { printf "%.1f", t * c1 * j / c }')

echo
echo "### Balancing by speed ($SPEED_JOBS jobs of ${WORK} s of reference CPU started on node1; CPUs x speed:$speeds; $(nproc) CPUs in the machine; one job alone on node1: $alone s; ideal: the jobs' work over the sum of CPUs x speed)"
echo
echo "| | makespan (s) | ideal (s) | makespan / ideal | moves |"
echo "| --- | --- | --- | --- | --- |"
echo "| balancer on | $spd | $ideal | $(awk -v a="$spd" -v b="$ideal" 'BEGIN { printf "%.2fx", a / b }') | $spdmoves |"
