#!/usr/bin/env bash
# make bench: Raft apply latency and throughput on a 3-node lab, next to a
# 1-node cluster (no replication over the network) measured in the same
# run, as a Markdown table. Numbers depend on the machine; ratios less so.
set -euo pipefail
cd "$(dirname "$0")/.."
SSI=$PWD/bin/ssi
N=${BENCH_N:-2000}
labs=(bench1 bench3)
cleanup() { for l in "${labs[@]}"; do "$SSI" lab --name "$l" down >/dev/null 2>&1 || true; done; }
trap cleanup EXIT

run() { # lab node concurrency -> "p50 p99 persec", rounded
  "$SSI" lab --name "$1" exec "$2" -- "$SSI" debug raft-bench -n "$N" -c "$3" --json |
    sed -n 's/.*"\(p50_ms\|p99_ms\|per_second\)": \([0-9.]*\).*/\2/p' |
    awk '{ v[NR] = $1 } END { printf "%.2f %.2f %.0f", v[1], v[2], v[3] }'
}

SSI_LAB_SUBNET=10.213.20.0/24 "$SSI" lab --name bench1 up --nodes 1 >/dev/null
SSI_LAB_SUBNET=10.213.21.0/24 "$SSI" lab --name bench3 up --nodes 3 >/dev/null

read -r b50 b99 bseq <<<"$(run bench1 node1 1)"
read -r _ _ bpar <<<"$(run bench1 node1 32)"
read -r l50 l99 lseq <<<"$(run bench3 node1 1)"
read -r _ _ lpar <<<"$(run bench3 node1 32)"
read -r f50 f99 _ <<<"$(run bench3 node2 1)"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
echo
echo "### Raft apply ($N commands each; baseline: a 1-node cluster in the same run)"
echo
echo "| measure | 1 node (baseline) | 3-node lab | ratio |"
echo "| --- | --- | --- | --- |"
echo "| apply latency p50, on the leader (ms) | $b50 | $l50 | $(ratio "$l50" "$b50") |"
echo "| apply latency p99, on the leader (ms) | $b99 | $l99 | $(ratio "$l99" "$b99") |"
echo "| apply latency p50, forwarded by a follower (ms) | $b50 | $f50 | $(ratio "$f50" "$b50") |"
echo "| apply latency p99, forwarded by a follower (ms) | $b99 | $f99 | $(ratio "$f99" "$b99") |"
echo "| throughput, 1 at a time (applies/s) | $bseq | $lseq | $(ratio "$lseq" "$bseq") |"
echo "| throughput, 32 at a time (applies/s) | $bpar | $lpar | $(ratio "$lpar" "$bpar") |"
