#!/usr/bin/env bash
# `make test-stress`: the whole suite (`make test`) while two CPU-bound processes compete for
# the machine's cores, the way CI and a developer's laptop really look when something else is
# building. Tests that pass only on an idle machine fail here. ROUNDS=N runs the suite N times
# in a row (default 1); HOGS=N sets how many busy processes compete (default 2). The hogs are
# plain busy loops at normal priority and stop when the script ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-1}
hogs=${HOGS:-2}
pids=()
stop_hogs() {
	if ((${#pids[@]})); then
		kill "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
}
trap stop_hogs EXIT

for ((i = 0; i < hogs; i++)); do
	bash -c 'while :; do :; done' &
	pids+=($!)
done
echo "test-stress: $hogs busy processes (${pids[*]}) compete with the suite"

for ((round = 1; round <= rounds; round++)); do
	start=$(date +%s)
	echo "test-stress: round $round of $rounds"
	make test
	echo "test-stress: round $round of $rounds passed in $(($(date +%s) - start)) s"
done
