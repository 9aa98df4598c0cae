#!/usr/bin/env bash
# make bench: Markdown tables, each figure next to its baseline measured in
# the same run. Numbers depend on the machine; ratios less so.
#  1. Raft apply latency and throughput on a 3-node lab, next to a 1-node
#     cluster (no replication over the network).
#  2. /cluster/home on one node next to a native directory of the same
#     node: sequential write and read of a large file (BENCH_MB, 1 GiB by
#     default) and create+stat+unlink of BENCH_FILES small files; the
#     same with the read barrier switched off, for its cost.
#  3. The read barrier on the 3-node lab: its latency on a follower next
#     to the leader's, and `ls -l` of a 1,000-file directory and
#     create+stat+unlink on a follower next to the leader.
set -euo pipefail
cd "$(dirname "$0")/.."
SSI=$PWD/bin/ssi
N=${BENCH_N:-2000}
MB=${BENCH_MB:-1024}
FILES=${BENCH_FILES:-10000}
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

leader=$("$SSI" lab --name bench3 exec node1 -- "$SSI" status --json | sed -n 's/.*"leader": *"\([^"]*\)".*/\1/p')
follower=node1; [ "$leader" = node1 ] && follower=node2
barrier() { # lab node concurrency -> "p50 p99 rounds"
  "$SSI" lab --name "$1" exec "$2" -- "$SSI" debug raft-bench --barrier -n "$N" -c "$3" --json |
    sed -n 's/.*"\(p50_ms\|p99_ms\|rounds\)": \([0-9.]*\).*/\2/p' |
    awk '{ v[NR] = $1 } END { printf "%.3f %.3f %d", v[1], v[2], v[3] }'
}
read -r bl50 bl99 _ <<<"$(barrier bench3 "$leader" 1)"
read -r bf50 bf99 _ <<<"$(barrier bench3 "$follower" 1)"
read -r _ _ bfr <<<"$(barrier bench3 "$follower" 32)"

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
echo
echo "### Read barrier on the 3-node lab ($N barriers each; baseline: the leader's own, which needs no hop)"
echo
echo "| measure | on the leader (baseline) | on a follower | ratio |"
echo "| --- | --- | --- | --- |"
echo "| barrier latency p50 (ms) | $bl50 | $bf50 | $(ratio "$bf50" "$bl50") |"
echo "| barrier latency p99 (ms) | $bl99 | $bf99 | $(ratio "$bf99" "$bl99") |"
echo
echo "$N barriers 32 at a time on the follower shared $bfr round trips."

# ls -l of 1,000 files and create+stat+unlink, on the leader and on a
# follower of the 3-node lab.
cat > /tmp/ssi-bench-meta.sh <<'SCRIPT'
#!/bin/bash
# usage: DIR FILES -> "ls_ms files_per_s"; DIR holds 1000 files named m*
set -e
dir=$1 files=$2
now() { date +%s.%N; }
t0=$(now); ls -l "$dir/many" > /dev/null; t1=$(now)
mkdir -p "$dir/small.$$"
t2=$(now)
for ((i = 0; i < files; i++)); do : > "$dir/small.$$/f$i"; stat "$dir/small.$$/f$i" > /dev/null; rm "$dir/small.$$/f$i"; done
t3=$(now)
rmdir "$dir/small.$$"
awk -v n="$files" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN { printf "%.0f %.0f", 1000 * (b - a), n / (d - c) }'
SCRIPT
chmod +x /tmp/ssi-bench-meta.sh
"$SSI" lab --name bench3 exec "$leader" -- bash -c 'mkdir -p /cluster/home/many && cd /cluster/home/many && for i in $(seq 1000); do : > m$i; done'
META=${BENCH_META_FILES:-500}
read -r lls lcsu <<<"$("$SSI" lab --name bench3 exec "$leader" -- /tmp/ssi-bench-meta.sh /cluster/home "$META")"
read -r fls fcsu <<<"$("$SSI" lab --name bench3 exec "$follower" -- /tmp/ssi-bench-meta.sh /cluster/home "$META")"
rm -f /tmp/ssi-bench-meta.sh
echo
echo "### /cluster/home metadata on the 3-node lab, every read past the barrier (baseline: the same on the leader)"
echo
echo "| measure | on the leader (baseline) | on a follower | ratio |"
echo "| --- | --- | --- | --- |"
echo "| ls -l of 1,000 files (ms) | $lls | $fls | $(ratio "$fls" "$lls") |"
echo "| create+stat+unlink, $META files (files/s) | $lcsu | $fcsu | $(ratio "$fcsu" "$lcsu") |"

# --- /cluster/home next to a native directory, on node1 of the 1-node lab.
# Writes end with fsync (home: durable on the quorum at close); the first
# read starts with the page cache dropped, the second opens the file again
# (home: the kernel keeps its pages while the data's version is the same).
cat > /tmp/ssi-bench-fs.sh <<'SCRIPT'
#!/bin/bash
# usage: DIR MB FILES -> "write_MBps read_MBps warm_read_MBps files_per_s"
set -e
dir=$1 mb=$2 files=$3
now() { date +%s.%N; }
t0=$(now); dd if=/dev/zero of="$dir/big" bs=1M count="$mb" conv=fsync status=none; t1=$(now)
sync; echo 3 > /proc/sys/vm/drop_caches
t2=$(now); dd if="$dir/big" of=/dev/null bs=1M status=none; t3=$(now)
dd if="$dir/big" of=/dev/null bs=1M status=none; t6=$(now)
rm -f "$dir/big"; mkdir -p "$dir/small"
t4=$(now)
for ((i = 0; i < files; i++)); do : > "$dir/small/f$i"; done
stat "$dir"/small/* > /dev/null
rm -f "$dir"/small/*
t5=$(now)
rmdir "$dir/small"
awk -v mb="$mb" -v n="$files" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" -v f="$t5" -v g="$t6" \
  'BEGIN { printf "%.1f %.1f %.1f %.0f", mb / (b - a), mb / (d - c), mb / (g - d), n / (f - e) }'
SCRIPT
chmod +x /tmp/ssi-bench-fs.sh
"$SSI" lab --name bench1 exec node1 -- mkdir -p /var/lib/ssi/bench
read -r nw nr nc nf <<<"$("$SSI" lab --name bench1 exec node1 -- /tmp/ssi-bench-fs.sh /var/lib/ssi/bench "$MB" "$FILES")"
# With the read barrier and without, in the order on, off, off, on, and
# the better of each pair: a second run on the same lab differs from the
# first (the log has grown), which would otherwise count as the barrier's.
home() { "$SSI" lab --name bench1 exec node1 -- "$SSI" debug read-barrier "$1" && "$SSI" lab --name bench1 exec node1 -- /tmp/ssi-bench-fs.sh /cluster/home "$MB" "$FILES"; }
best() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); for (i = 1; i <= 4; i++) printf "%s ", (x[i] + 0 > y[i] + 0 ? x[i] : y[i]) }'; }
on1=$(home on); off1=$(home off); off2=$(home off); on2=$(home on)
read -r hw hr hc hf <<<"$(best "$on1" "$on2")"
read -r xw xr xc xf <<<"$(best "$off1" "$off2")"
rm -f /tmp/ssi-bench-fs.sh
echo
echo "### /cluster/home on one node (${MB} MiB file, ${FILES} small files; baseline: a native directory of the same node; home: the better of two runs, with the read barrier and without)"
echo
echo "| measure | native (baseline) | /cluster/home | ratio | home, barrier off | barrier on / off |"
echo "| --- | --- | --- | --- | --- | --- |"
echo "| sequential write, fsync at the end (MB/s) | $nw | $hw | $(ratio "$hw" "$nw") | $xw | $(ratio "$hw" "$xw") |"
echo "| sequential read, cold cache (MB/s) | $nr | $hr | $(ratio "$hr" "$nr") | $xr | $(ratio "$hr" "$xr") |"
echo "| sequential read again, warm cache (MB/s) | $nc | $hc | $(ratio "$hc" "$nc") | $xc | $(ratio "$hc" "$xc") |"
echo "| create+stat+unlink (files/s) | $nf | $hf | $(ratio "$hf" "$nf") | $xf | $(ratio "$hf" "$xf") |"
