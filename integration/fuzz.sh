#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each: briefly
# in `make test` (FUZZTIME=3s), longer in `make fuzz`. A crash fails the
# run and go test writes the input under the package's testdata/fuzz, so
# that it becomes a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-3s}"
status=0
# "package target" pairs, found from the sources so a new target is never
# forgotten.
while read -r file target; do
	pkg="./$(dirname "$file")"
	echo "fuzz $pkg $target for $FUZZTIME"
	# The deadline is generous: building with coverage takes most of it.
	if ! timeout 600 go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"; then
		echo "FAIL: $pkg $target" >&2
		status=1
	fi
done < <(grep -r --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]*' cmd cluster fs migrate raftstore | sed 's/:func / /' | sort)
exit $status
