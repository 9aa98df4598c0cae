#!/usr/bin/env bash
# make demo: a 3-node lab that forms its cluster by itself, a command in
# each node, /cluster on every node, and a cluster process moved from
# node1 to node2 by a write to its where file, printed as it goes.
# DEMO_KEEP=1 leaves the lab up afterwards (ssi lab down removes it).
set -euo pipefail
cd "$(dirname "$0")/.."
SSI=$PWD/bin/ssi
# Not in /tmp: a cluster process has its own /tmp.
work=$(mktemp -d /var/tmp/ssi-demo.XXXXXX)
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
# until SECONDS WHAT CMD...: waits for CMD to succeed, or fails the demo.
until_ok() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    if [ $SECONDS -ge $end ]; then echo "demo: timed out after ${limit}s waiting for $what" >&2; exit 1; fi
    sleep 0.1
  done
}
cleanup() {
  if [ "${DEMO_KEEP:-0}" != 1 ]; then step "ssi lab down"; "$SSI" lab down; fi
  rm -rf "$work"
}
trap cleanup EXIT
# A cluster process starts in the caller's directory, and runs ssi's own
# init: both where it can see them, whatever the checkout's place.
cd "$work"
cp "$SSI" "$work/ssi"
SSI=$work/ssi

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
got=$("$SSI" lab exec node3 -- cat /cluster/home/hello)
echo "$got"
# One truth on every node: node3 reads what node1 wrote, at once.
if [ "$got" != "hello from node1" ]; then
  echo "demo: node3 read \"$got\", node1 wrote \"hello from node1\"" >&2
  exit 1
fi

step "start a counter on node1 as a cluster process of uid 1000 (ssi run -d)"
# A shell user, not root: what ssi's users are.
as_user=(setpriv --reuid 1000 --regid 1000 --clear-groups env PATH=/usr/bin:/bin)
counter="$work/counter.txt"
script="$work/counter.sh"
printf '#!/bin/sh\ni=0\nwhile :; do i=$((i+1)); echo $i >> %s; sleep 0.1; done\n' "$counter" > "$script"
touch "$counter"
chown 1000:1000 "$counter"
chmod 755 "$work" "$script"
echo "\$ ssi lab exec node1 -- setpriv --reuid 1000 ... ssi run -d -- $script"
cpid=$("$SSI" lab exec node1 -- "${as_user[@]}" "$SSI" run -d -- "$script")
echo "cpid $cpid"
until_ok 30 "the counter to start" sh -c "[ \$(cat '$counter' 2>/dev/null | wc -l) -ge 10 ]"
echo "counter at $(tail -1 "$counter")"

step "move it: echo node2 > /cluster/proc/$cpid/where (written on node3, by uid 1000)"
echo "\$ ssi lab exec node3 -- setpriv --reuid 1000 ... sh -c 'echo node2 > /cluster/proc/$cpid/where'"
"$SSI" lab exec node3 -- "${as_user[@]}" sh -c "echo node2 > /cluster/proc/$cpid/where"
at=$(tail -1 "$counter")
for n in node1 node2 node3; do echo "where on $n: $("$SSI" lab exec $n -- cat /cluster/proc/$cpid/where)"; done
until_ok 30 "the counter to go on on node2" sh -c "[ \$(tail -1 '$counter') -ge $((at + 10)) ]"
echo "the count goes on on node2: $(tail -1 "$counter") (it was $at when it moved)"
restarts=$(grep -c '^1$' "$counter")
echo "lines: $(wc -l < "$counter"), times it started from 1: $restarts"
echo "\$ ssi ps; ssi migrations"
"$SSI" lab exec node1 -- "$SSI" ps
"$SSI" lab exec node1 -- "$SSI" migrations
"$SSI" lab exec node1 -- "${as_user[@]}" "$SSI" kill -s KILL "$cpid"

step "done: the process moved from node1 to node2 with its memory"
