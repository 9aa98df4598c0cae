#!/usr/bin/env bash
# make bench, part 2: migration of processes of 16, 256 and 1024 MiB
# resident memory between two lab nodes (ssi migrate: CRIU dump, stream
# over the mutual-TLS migration port, restore, Raft commit), next to the
# mechanism's floor measured in the same run on the same node: a raw CRIU
# dump to a local directory plus a raw restore from it.
set -euo pipefail
cd "$(dirname "$0")/.."
SSI=$PWD/bin/ssi
SIZES=${BENCH_MIG_MIB:-16 256 1024}
LAB=benchm
# Images in flight live in criu.work_dir; the floor uses the same place.
own_work=
if [ -z "${SSI_CRIU_WORK_DIR:-}" ]; then export SSI_CRIU_WORK_DIR=/dev/shm/ssi-criu-bench own_work=1; fi
cleanup() {
  "$SSI" lab --name "$LAB" down >/dev/null 2>&1 || true
  if [ -n "$own_work" ]; then rm -rf "$SSI_CRIU_WORK_DIR"; fi
}
trap cleanup EXIT
SSI_LAB_SUBNET=10.213.24.0/24 "$SSI" lab --name "$LAB" up --nodes 2 >/dev/null
in1() { "$SSI" lab --name "$LAB" exec node1 -- "$@"; }

# hog MIB -> cpid, once its memory is resident
hog() {
  local cpid
  cpid=$(in1 "$SSI" run -d -- "$SSI" debug hog --mib "$1")
  for _ in $(seq 1 600); do
    rss=$(in1 cat "/cluster/proc/$cpid/status" 2>/dev/null | awk '/^VmRSS:/ { print $2 }')
    [ "${rss:-0}" -ge $(( $1 * 1024 )) ] && break
    sleep 0.1
  done
  echo "$cpid"
}
pidof_cpid() { in1 cat "/cluster/proc/$1/status" | awk '/^Pid:/ { print $2 }'; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) / 1e6 }'; }

echo
echo "### Migration (2-node lab; floor: raw criu dump + criu restore of the same process on the same node, same run)"
echo
echo "| resident MiB | criu dump (ms) | criu restore (ms) | floor (ms) | migration frozen (ms) | migration total (ms) | total / floor |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for mib in $SIZES; do
  cpid=$(hog "$mib")
  pid=$(pidof_cpid "$cpid")
  read -r t0 t1 t2 rpid < <(in1 bash -c '
    img=$SSI_CRIU_WORK_DIR/bench-img; rm -rf $img
    t0=$(date +%s%N); "$0" debug dump --pid "$1" --dir $img 2>/dev/null; t1=$(date +%s%N)
    rpid=$("$0" debug restore --dir $img --detach 2>/dev/null); t2=$(date +%s%N)
    rm -rf $img; echo $t0 $t1 $t2 $rpid' "$SSI" "$pid")
  kill -9 "$rpid" 2>/dev/null || true
  cpid=$(hog "$mib")
  read -r m0 m1 < <(in1 bash -c 't0=$(date +%s%N); "$0" migrate "$1" node2 >/dev/null; echo $t0 $(date +%s%N)' "$SSI" "$cpid")
  frozen=$(in1 "$SSI" migrations --json | tr -d ' \n' | grep -o "\"cpid\":$cpid,[^}]*" | tail -1 |
    sed -n 's/.*"frozen":\([0-9]*\).*/\1/p' | awk '{ printf "%.0f", $1 / 1e6 }')
  in1 "$SSI" kill -s KILL "$cpid" >/dev/null || true
  floor=$(ms "$t0" "$t2"); total=$(ms "$m0" "$m1")
  echo "| $mib | $(ms "$t0" "$t1") | $(ms "$t1" "$t2") | $floor | $frozen | $total | $(awk -v a="$total" -v b="$floor" 'BEGIN { printf "%.2fx", a / b }') |"
done
