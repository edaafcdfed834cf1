# Shared helpers for libconnlimit's bats suites.
#
# Usage: in a .bats file, `load test_helper`. Every test gets teardown that
# stops what it started. SANITIZE=1 preloads the ASan runtime before the
# library. Also sourced by in_netns inside a private network namespace.

REPO=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
LIB=${LIBCONNLIMIT:-$REPO/libconnlimit.so}
BIN=$REPO/tests/bin
STATUS=$REPO/connlimit-status
# shellcheck disable=SC2034 # used by the .bats files
PYTHON=/usr/bin/python3

# The environment that loads the library; use `preload_env CMD...` or
# `env "${PRELOAD_ENV[@]}" CMD...`, never LD_PRELOAD directly.
PRELOAD=$LIB
if [[ ${SANITIZE:-0} == 1 ]]; then
	PRELOAD="$(gcc -print-file-name=libasan.so) $LIB"
fi
PRELOAD_ENV=(LD_PRELOAD="$PRELOAD" ASAN_OPTIONS=detect_leaks=0)

# The library's settings come from each test, not from the caller.
while read -r var; do
	unset "$var"
done < <(compgen -e | grep '^CONNLIMIT_' || true)

declare -ga SPAWNED=()   # pids to stop in teardown
declare -ga HOLD_FDS=()  # fifo write ends kept open by hold_clients
declare -gA PID_OF=()    # name -> pid of what start_server/spawn started
declare -gA HOLD_FD_OF=()

preload_env() {
	env "${PRELOAD_ENV[@]}" "$@"
}

require_lib() {
	[[ -e $LIB ]] || fail "$LIB is missing: run make"
	[[ -x $BIN/tserver ]] || fail "$BIN/tserver is missing: run make"
}

fail() {
	printf '%s\n' "$*" >&2
	return 1
}

# spawn NAME CMD...: run CMD in the background, fd 3 closed, output in
# $BATS_TEST_TMPDIR/NAME.out and NAME.err. The pid is CMD's own
# (preload_env is expanded so that exec keeps it).
spawn() {
	local name=$1
	shift
	if [[ $1 == preload_env ]]; then
		set -- env "${PRELOAD_ENV[@]}" "${@:2}"
	fi
	(
		for fd in "${HOLD_FDS[@]}"; do
			exec {fd}>&-
		done
		exec "$@"
	) <"${SPAWN_STDIN:-/dev/null}" >"$BATS_TEST_TMPDIR/$name.out" \
		2>"$BATS_TEST_TMPDIR/$name.err" 3>&- &
	PID_OF[$name]=$!
	SPAWNED+=("$!")
}

# wait_for TIMEOUT_S CMD...: poll CMD every 20 ms until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS <= deadline)) || return 1
		sleep 0.02
	done
}

# file_has FILE ERE: whether a line of FILE matches.
file_has() {
	grep -Eq -- "$2" "$1" 2>/dev/null
}

# count_lines FILE ERE: how many lines of FILE match.
count_lines() {
	grep -Ec -- "$2" "$1" 2>/dev/null || true
}

# start_server NAME CMD...: spawn, then wait (5 s) for "port=N" and set
# PORT. Real daemons: with START_PORT=P, wait until P listens instead.
start_server() {
	local name=$1 out
	spawn "$@"
	out=$BATS_TEST_TMPDIR/$name.out
	if [[ -n ${START_PORT:-} ]]; then
		wait_for 5 listening "$START_PORT" || server_died "$name"
		PORT=$START_PORT
		export PORT
		return
	fi
	wait_for 5 file_has "$out" '^port=[0-9]+$' || server_died "$name"
	PORT=$(sed -n 's/^port=//p' "$out" | head -n 1)
	export PORT
}

server_died() {
	fail "$1 did not get ready: $(cat "$BATS_TEST_TMPDIR/$1".{out,err})"
}

# pid_of NAME: the pid spawn recorded.
pid_of() {
	printf '%s\n' "${PID_OF[$1]}"
}

# wait_exit NAME [TIMEOUT_S]: wait for NAME to end; its status in
# EXIT_STATUS. Fails if it is still running after TIMEOUT_S (default 10).
wait_exit() {
	local pid=${PID_OF[$1]}
	wait_for "${2:-10}" not_running "$pid" || fail "$1 still running"
	EXIT_STATUS=0
	wait "$pid" || EXIT_STATUS=$?
	export EXIT_STATUS
}

not_running() {
	! kill -0 "$1" 2>/dev/null
}

listening() {
	ss -Htln "sport = :$1" | grep -q .
}

# free_port: a random high TCP port nobody listens on, for real daemons.
free_port() {
	local port
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		port=$((20000 + RANDOM % 20000))
		if ! listening "$port"; then
			echo "$port"
			return 0
		fi
	done
	return 1
}

# hold_clients NAME SRC N [TCLIENT_ARGS...]: NAME holds N connections
# from SRC to $PORT until release_clients NAME. Waits for the report.
hold_clients() {
	local name=$1 src=$2 n=$3 fifo fd
	shift 3
	fifo=$BATS_TEST_TMPDIR/$name.fifo
	mkfifo "$fifo"
	exec {fd}<>"$fifo"
	HOLD_FDS+=("$fd")
	HOLD_FD_OF[$name]=$fd
	SPAWN_STDIN=$fifo spawn "$name" "$BIN/tclient" -s "$src" -p "$PORT" \
		-n "$n" -H stdin "$@"
	wait_for 10 file_has "$BATS_TEST_TMPDIR/$name.out" '^kept=' ||
		fail "$name reported nothing"
}

# release_clients NAME: close NAME's stdin and wait for it to exit.
release_clients() {
	local fd=${HOLD_FD_OF[$1]} f keep=()
	exec {fd}>&-
	for f in "${HOLD_FDS[@]}"; do
		[[ $f == "$fd" ]] || keep+=("$f")
	done
	HOLD_FDS=("${keep[@]}")
	wait_exit "$1" 5
}

# kept_of NAME: the K in NAME's "kept=K refused=R" line.
kept_of() {
	sed -n 's/^kept=\([0-9]*\) .*/\1/p' "$BATS_TEST_TMPDIR/$1.out"
}

# assert_output_has ERE / assert_output_lacks ERE: check bats' $output.
# shellcheck disable=SC2154 # bats' run sets output
assert_output_has() {
	grep -Eq -- "$1" <<<"$output" ||
		fail "no line matches '$1' in: $output"
}

assert_output_lacks() {
	! grep -Eq -- "$1" <<<"$output" ||
		fail "a line matches '$1' in: $output"
}

# assert_file_has FILE ERE / assert_file_lacks FILE ERE
assert_file_has() {
	file_has "$1" "$2" ||
		fail "no line matches '$2' in $1: $(cat "$1" 2>&1)"
}

assert_file_lacks() {
	! file_has "$1" "$2" ||
		fail "a line matches '$2' in $1: $(grep -E -- "$2" "$1")"
}

# assert_equal ACTUAL EXPECTED
assert_equal() {
	[[ $1 == "$2" ]] || fail "expected '$2', got '$1'"
}

# Server output by name: $BATS_TEST_TMPDIR/NAME.out and .err.
out_of() {
	printf '%s\n' "$BATS_TEST_TMPDIR/$1.out"
}

err_of() {
	printf '%s\n' "$BATS_TEST_TMPDIR/$1.err"
}

# accept_queue PORT: connections waiting in the listener's accept queue.
accept_queue() {
	ss -Htln "sport = :$1" | awk '{ n += $2 } END { print n + 0 }'
}

queue_is() {
	[[ $(accept_queue "$1") == "$2" ]]
}

# queue_clients SERVER SRC...: stop SERVER, queue one tclient connection
# from each SRC in that order (named q1, q2, ...), resume SERVER and wait
# for every client's verdict. Shows what one accept call does with a
# backlog of several connections.
queue_clients() {
	local pid=${PID_OF[$1]} i=0 src
	shift
	kill -STOP "$pid"
	for src in "$@"; do
		i=$((i + 1))
		spawn "q$i" "$BIN/tclient" -s "$src" -p "$PORT" -t 5000 -v
		wait_for 5 queue_is "$PORT" "$i" || fail "q$i was not queued"
	done
	kill -CONT "$pid"
	for ((; i > 0; i--)); do
		wait_exit "q$i" 10
	done
}

# status_of PID: what connlimit-status says about PID (bounded).
status_of() {
	timeout 10 "$STATUS" "$1"
}

# open_counts PID: connlimit-status lines for clients with open>0.
open_counts() {
	status_of "$1" | grep -E '^client=.* open=[1-9]' || true
}

no_open_counts() {
	[[ -z $(open_counts "$1") ]]
}

# in_netns SCRIPT: run SCRIPT with these helpers in fresh network, pid and
# mount namespaces, lo up with ::2 and ::3 added. Everything it starts
# dies with it. Bounded to 60 s.
in_netns() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	local inner='set -eu
		ip link set lo up
		ip -6 addr add ::2/128 dev lo nodad
		ip -6 addr add ::3/128 dev lo nodad
		source "$1"
		eval "$2"'
	export BATS_TEST_DIRNAME BATS_TEST_TMPDIR
	timeout -k 5 60 unshare --net --pid --mount-proc --kill-child \
		bash -c "$inner" in_netns "$BATS_TEST_DIRNAME/test_helper.bash" \
		"$1" 3>&-
}

# Stop everything spawned: TERM, up to 2 s, then KILL.
stop_spawned() {
	local pid
	for pid in "${SPAWNED[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
		kill -CONT "$pid" 2>/dev/null || true
	done
	for pid in "${SPAWNED[@]}"; do
		wait_for 2 not_running "$pid" || kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null || true
	done
	SPAWNED=()
}

teardown() {
	stop_spawned
}
