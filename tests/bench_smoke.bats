#!/usr/bin/env bats
# The benchmark harness at tiny sizes (make bench-smoke): it must run
# every section and write its report.  Timings are never asserted: the
# machine is shared and noisy, and the smoke sizes mean nothing.

bats_require_minimum_version 1.5.0
load test_helper

# One smoke run, a few seconds, serves every test in this file.
setup_file() {
	local repo

	repo=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
	export SMOKE_OUT=$BATS_FILE_TMPDIR/results
	env -u MAKEFLAGS -u MAKELEVEL make -s -C "$repo" bench-smoke \
		BENCH_OUT="$SMOKE_OUT" >"$BATS_FILE_TMPDIR/smoke.log" 2>&1 ||
		echo "exit $?" >"$BATS_FILE_TMPDIR/smoke.failed"
}

setup() {
	REPORT=$SMOKE_OUT/latest.md
	[[ ! -e $BATS_FILE_TMPDIR/smoke.failed ]] ||
		fail "make bench-smoke failed: $(tail -n 20 \
			"$BATS_FILE_TMPDIR/smoke.log")"
}

# row LABEL: the report's summary row for LABEL.
row() {
	grep -F "| $1" "$REPORT"
}

@test "bench-smoke writes a report named for its run and a latest copy" {
	run -0 find "$SMOKE_OUT" -maxdepth 1 -name '2*.md'
	[[ -n $output ]] || fail "no STAMP.md in $SMOKE_OUT"
	assert_file_has "$REPORT" '^# libconnlimit benchmark, [0-9-]+$'
}

@test "the report has a summary row for every figure of the issue" {
	local label

	for label in "churn, library / bare" \
		"system calls added per admitted connection" \
		"system calls per refused connection" \
		"close() on non-sockets, library / bare" \
		"churn relative to bare" \
		"server CPU per connection, 1M / 1k clients" \
		"server CPU per connection, 100k open / none" \
		"zone memory per client / per open connection" \
		"p99, flood (nice 19) / no flood" \
		"refused connections shed per second" \
		"churn, 2 processes, library / bare" \
		"churn, 4 processes, library / bare"; do
		row "$label" >/dev/null || fail "no summary row '$label'"
	done
}

@test "every ratio row shows a median, a min and a max" {
	run -0 grep -E '^\| [^|]+ \| (>=|<=) [0-9.]+ \|' "$REPORT"
	assert_output_lacks '\| (>=|<=) [0-9.]+ \| *\|'
	assert_output_lacks 'nan'
}

@test "the flood is measured against the floor: the limit kept in the server" {
	run -0 row "floor: the same with the limit in the server"
	assert_output_has '\| none \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|'
	run -0 row "flooded p99, library / limit in the server"
	assert_output_has '\| none \| [0-9.]+ \|'
	assert_file_has "$REPORT" '^\| limit in the server, flood at nice 19 \| [1-9][0-9]* \|'
}

@test "as root with nft, the flood is measured under nftables too" {
	((EUID == 0)) && command -v nft >/dev/null ||
		skip "needs root and nft"
	run -0 row "the same with nftables in the kernel"
	assert_output_has '\| none \| [0-9.]+ \|'
	assert_file_has "$REPORT" '^\| nftables, flood at nice 19 \| [1-9][0-9]* \|'
}

@test "the smoke report says its figures are not judged" {
	run -0 row "churn, library / bare"
	assert_output_has 'not judged \(smoke\)'
}

@test "the report records the machine and the kernel" {
	local kernel

	kernel=$(uname -r | sed 's/[.+]/\\&/g')
	assert_file_has "$REPORT" "^- kernel: Linux $kernel"
	assert_file_has "$REPORT" '^- CPU: .*[0-9]+ CPUs'
	assert_file_has "$REPORT" '^- library: .*sha1 [0-9a-f]{12}$'
}

@test "the report has a section for each part of the suite" {
	local h

	for h in "Connection churn" "System calls per connection" \
		"close() on descriptors" "Per-client limits compared" \
		"Scale:" "Flood:" "Prefork:" "Machine"; do
		assert_file_has "$REPORT" "^## $(sed 's/[()]/\\&/g' <<<"$h")"
	done
}

@test "the strace table counts system calls per connection" {
	command -v strace >/dev/null || skip "strace is not installed"
	assert_file_has "$REPORT" '^\| accept4 \| [0-9.]+ \| [0-9.]+ \|'
	assert_file_has "$REPORT" '^\| \*\*total\*\* \|'
}

@test "bench-smoke draws the plot when gnuplot is installed" {
	command -v gnuplot >/dev/null || skip "gnuplot is not installed"
	run -0 od -A n -t x1 -N 8 "$SMOKE_OUT/latest.png"
	assert_output_has '^ *89 50 4e 47 0d 0a 1a 0a$'
	assert_file_has "$REPORT" '^!\[figures\]\(latest\.png\)$'
}

@test "bench-smoke leaves no process of its own running" {
	local pid

	for pid in $(cat "$SMOKE_OUT"/tmp/*/started.pids); do
		not_running "$pid" || fail "pid $pid is still running"
	done
}
