#!/usr/bin/env bash
# make demo: a 3-node lab that forms its cluster by itself, a command in
# each node, /cluster on every node, and a running process checkpointed on
# node1 and restored on node2 by hand, printed as it goes.
# DEMO_KEEP=1 leaves the lab up afterwards (ssi lab down removes it).
set -euo pipefail
cd "$(dirname "$0")/.."
SSI=$PWD/bin/ssi
work=$(mktemp -d /tmp/ssi-demo.XXXXXX)
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
cleanup() {
  [ -n "${newpid:-}" ] && kill -9 "$newpid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${DEMO_KEEP:-0}" != 1 ]; then step "ssi lab down"; "$SSI" lab down; fi
  rm -rf "$work"
}
trap cleanup EXIT

step "ssi lab up --nodes 3"
"$SSI" lab up --nodes 3

for n in node1 node2 node3; do
  step "ssi lab exec $n -- ip -br addr show eth0"
  "$SSI" lab exec "$n" -- ip -br addr show eth0
done

step "the agents found each other (token only, no addresses): ssi nodes on node3"
# Wait (up to 10 s) for node3 to hear every node's load once.
for _ in $(seq 100); do
  [ "$("$SSI" lab exec node3 -- "$SSI" nodes --json | grep -c '"last_seen"')" = 3 ] && break
  sleep 0.1
done
"$SSI" lab exec node3 -- "$SSI" nodes
"$SSI" lab exec node3 -- "$SSI" status

step "one /cluster on every node: the nodes' load as node2 sees it, and a shared home"
"$SSI" lab exec node2 -- sh -c 'for n in /cluster/nodes/*; do echo "$n: load $(cat $n/load), status $(cat $n/status)"; done'
echo "\$ ssi lab exec node1 -- sh -c 'echo hello from node1 > /cluster/home/hello'"
"$SSI" lab exec node1 -- sh -c 'echo hello from node1 > /cluster/home/hello'
echo "\$ ssi lab exec node3 -- cat /cluster/home/hello"
"$SSI" lab exec node3 -- cat /cluster/home/hello

step "start a counter on node1, in its own PID namespace and session"
counter="$work/counter.txt"
# Its stdio is opened inside the node: a file opened in the host's mount
# namespace could not be checkpointed.
"$SSI" lab exec node1 -- sh -c "exec </dev/null >/dev/null 2>&1; echo \$\$ > $work/unshare.pid;
  exec unshare --pid --fork setsid sh -c 'i=0; while :; do i=\$((i+1)); echo \$i >> $counter; sleep 0.1; done'" &
for _ in $(seq 100); do
  u=$(cat "$work/unshare.pid" 2>/dev/null || true)
  [ -n "$u" ] && pid=$(cat /proc/"$u"/task/"$u"/children 2>/dev/null | awk '{print $1}') && [ -n "$pid" ] && break
  sleep 0.1
done
echo "counter pid $pid (host view), netns $(ip netns identify "$pid")"
while [ "$(wc -l < "$counter" 2>/dev/null || echo 0)" -lt 10 ]; do sleep 0.1; done
echo "counter at $(tail -1 "$counter")"

step "checkpoint it on node1 and stream it to node2, which restores it"
echo "\$ ssi lab exec node1 -- ssi debug dump --pid $pid --to - | ssi lab exec node2 -- ssi debug restore --from -"
"$SSI" lab exec node1 -- "$SSI" debug dump --pid "$pid" --to - \
  | "$SSI" lab exec node2 -- "$SSI" debug restore --from - > "$work/restored.pid" &
for _ in $(seq 200); do newpid=$(head -1 "$work/restored.pid" 2>/dev/null || true); [ -n "$newpid" ] && break; sleep 0.1; done
[ -n "$newpid" ] || { echo "restore failed" >&2; exit 1; }
at=$(tail -1 "$counter")
echo "restored as pid $newpid, netns $(ip netns identify "$newpid"); the count was $at"
while [ "$(tail -1 "$counter")" -lt $((at + 10)) ]; do sleep 0.1; done
echo "the count goes on on node2: $(tail -1 "$counter")"
restarts=$(grep -c '^1$' "$counter")
echo "lines: $(wc -l < "$counter"), times it started from 1: $restarts"
[ "$restarts" = 1 ]
step "done: the process moved from node1 to node2 with its memory"
