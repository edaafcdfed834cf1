#!/usr/bin/env bats
# Core behaviour of libconnlimit: the per-client limit and its setting, the
# reject log, every style of accept loop (S10), running out of descriptors
# (S11), IPv6 and dual-stack listeners (S1), stress, close from a signal
# handler, and real servers.

# in_netns scripts are single-quoted on purpose; start_server sets PORT.
# shellcheck disable=SC2016,SC2153

bats_require_minimum_version 1.5.0
load test_helper

setup() {
	require_lib
}

# limited_server NAME LIMIT TSERVER_ARGS...: tserver under the library.
limited_server() {
	local name=$1 limit=$2
	shift 2
	start_server "$name" preload_env CONNLIMIT_MAX_PER_IP="$limit" \
		"$BIN/tserver" "$@"
}

# connect_from SRC TCLIENT_ARGS...: tclient to $PORT; output in $output.
connect_from() {
	local src=$1
	shift
	run -0 "$BIN/tclient" -s "$src" -p "$PORT" "$@"
}

accepts_of() {
	count_lines "$(out_of "$1")" '^accept fd='
}

closes_of() {
	count_lines "$(out_of "$1")" '^close fd='
}

all_closed() {
	[[ $(accepts_of "$1") == "$(closes_of "$1")" ]]
}

# odd_accept_errors NAME: accept errors a refusal must not cause (all but
# ECONNABORTED; the epoll modes do not report EAGAIN).
odd_accept_errors() {
	grep '^accept-error' "$(out_of "$1")" |
		grep -v 'errno=ECONNABORTED$' || true
}

# check_limit_holds TSERVER_ARGS...: limit 2 holds for 127.0.0.2, leaves
# 127.0.0.3 alone, and hands out true peer addresses.
check_limit_holds() {
	limited_server srv 2 "$@"
	connect_from 127.0.0.2 -n 3
	assert_output_has '^conn 3 refused reason=(eof|reset)$'
	assert_output_has '^kept=2 refused=1$'
	connect_from 127.0.0.3 -n 1
	assert_output_has '^kept=1 refused=0$'
	assert_equal "$(accepts_of srv)" 3
	assert_file_lacks "$(out_of srv)" '^addr-mismatch'
	assert_equal "$(odd_accept_errors srv)" ""
}

# check_bad_limit VALUE: VALUE is reported once, then ignored.
check_bad_limit() {
	local err lines
	start_server srv preload_env CONNLIMIT_MAX_PER_IP="$1" "$BIN/tserver"
	connect_from 127.0.0.2 -n 3
	assert_output_has '^kept=3 refused=0$'
	err=$(err_of srv)
	lines=$(grep -F 'connlimit[' "$err" |
		grep -F 'setting=CONNLIMIT_MAX_PER_IP' || true)
	assert_equal "$(grep -c . <<<"$lines")" 1
	grep -q error <<<"$lines" || fail "not an error line: $lines"
	grep -qF -- "$1" <<<"$lines" || fail "value missing: $lines"
}

@test "limit of 2 admits two connections and refuses the third" {
	limited_server srv 2
	connect_from 127.0.0.2 -n 3
	assert_output_has '^conn 1 kept$'
	assert_output_has '^conn 2 kept$'
	assert_output_has '^conn 3 refused reason=(eof|reset)$'
}

@test "a refused connection never reaches the server" {
	limited_server srv 2
	connect_from 127.0.0.2 -n 3
	assert_output_has '^kept=2 refused=1$'
	assert_equal "$(accepts_of srv)" 2
}

@test "closing a connection lets the next one from that client in" {
	limited_server srv 2
	hold_clients a 127.0.0.2 1
	hold_clients b 127.0.0.2 1
	connect_from 127.0.0.2
	assert_output_has '^kept=0 refused=1$'
	release_clients a
	wait_for 5 file_has "$(out_of srv)" '^close fd='
	connect_from 127.0.0.2
	assert_output_has '^kept=1 refused=0$'
}

@test "a client at its limit does not affect other clients" {
	limited_server srv 2
	hold_clients a 127.0.0.2 2
	connect_from 127.0.0.3 -n 2
	assert_output_has '^kept=2 refused=0$'
}

@test "limit of 0 admits 150 concurrent connections from one client" {
	limited_server srv 0 -m epoll-lt
	connect_from 127.0.0.2 -n 150 -c
	assert_output_has '^kept=150 refused=0$'
}

@test "limit of 0 still counts open connections" {
	limited_server srv 0
	hold_clients a 127.0.0.2 3
	run -0 status_of "$(pid_of srv)"
	assert_output_has '^client=127\.0\.0\.2 open=3( |$)'
}

@test "without a setting the limit is 100 connections per client" {
	start_server srv preload_env "$BIN/tserver" -m epoll-lt
	connect_from 127.0.0.2 -n 101 -c
	assert_output_has '^kept=100 refused=1$'
}

@test "limit value ten is reported and ignored" {
	check_bad_limit ten
}

@test "limit value -1 is reported and ignored" {
	check_bad_limit -1
}

@test "limit value 1e3 is reported and ignored" {
	check_bad_limit 1e3
}

@test "a 25-digit limit value is reported and ignored" {
	check_bad_limit 1234567890123456789012345
}

@test "an empty limit value is reported and ignored" {
	check_bad_limit ""
}

@test "a rejection is logged with client, limit and open count" {
	local pid
	limited_server srv 2
	hold_clients a 127.0.0.2 2
	connect_from 127.0.0.2
	assert_output_has '^kept=0 refused=1$'
	pid=$(pid_of srv)
	wait_for 2 file_has "$(err_of srv)" \
		"^connlimit\[$pid\]: reject client=127\.0\.0\.2 limit=2 open=2( |$)"
}

@test "a flood of 200 refusals logs at most 10 reject lines" {
	local n
	limited_server srv 1 -m epoll-lt
	hold_clients a 127.0.0.2 1
	connect_from 127.0.0.2 -n 200 -c
	assert_output_has '^kept=0 refused=200$'
	n=$(count_lines "$(err_of srv)" ': reject client=')
	((n >= 1 && n <= 10)) || fail "$n reject lines"
}

@test "unix socket connections pass through uncounted" {
	local sock=$BATS_TEST_TMPDIR/s.sock
	start_server srv preload_env CONNLIMIT_MAX_PER_IP=1 "$BIN/tserver" \
		-u "$sock"
	run -0 timeout 10 "$PYTHON" -c '
import socket, sys
conns = []
for _ in range(3):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(3)
    s.connect(sys.argv[1])
    conns.append(s)
print("kept=%d" % sum(s.makefile().readline().endswith("\n") for s in conns))
' "$sock"
	assert_output_has '^kept=3$'
}

@test "block server using accept is limited" {
	check_limit_holds -m block -a accept
}

@test "block server using accept4 is limited" {
	check_limit_holds -m block -a accept4
}

@test "block server using accept with no address is limited" {
	check_limit_holds -m block -a accept -N
}

@test "block server using accept4 with no address is limited" {
	check_limit_holds -m block -a accept4 -N
}

@test "select server using accept is limited" {
	check_limit_holds -m select -a accept
}

@test "select server using accept4 is limited" {
	check_limit_holds -m select -a accept4
}

@test "select server using accept with no address is limited" {
	check_limit_holds -m select -a accept -N
}

@test "select server using accept4 with no address is limited" {
	check_limit_holds -m select -a accept4 -N
}

@test "level-triggered epoll server using accept is limited" {
	check_limit_holds -m epoll-lt -a accept
}

@test "level-triggered epoll server using accept4 is limited" {
	check_limit_holds -m epoll-lt -a accept4
}

@test "level-triggered epoll server using accept with no address is limited" {
	check_limit_holds -m epoll-lt -a accept -N
}

@test "level-triggered epoll server using accept4 with no address is limited" {
	check_limit_holds -m epoll-lt -a accept4 -N
}

@test "edge-triggered epoll server using accept is limited" {
	check_limit_holds -m epoll-et -a accept
}

@test "edge-triggered epoll server using accept4 is limited" {
	check_limit_holds -m epoll-et -a accept4
}

@test "edge-triggered epoll server using accept with no address is limited" {
	check_limit_holds -m epoll-et -a accept -N
}

@test "edge-triggered epoll server using accept4 with no address is limited" {
	check_limit_holds -m epoll-et -a accept4 -N
}

@test "thread-per-connection server using accept is limited" {
	check_limit_holds -m thread -a accept
}

@test "thread-per-connection server using accept4 is limited" {
	check_limit_holds -m thread -a accept4
}

@test "thread-per-connection server using accept with no address is limited" {
	check_limit_holds -m thread -a accept -N
}

@test "thread-per-connection server using accept4 with no address is limited" {
	check_limit_holds -m thread -a accept4 -N
}

@test "accept4 flags are honoured for an admitted connection" {
	limited_server srv 2 -a accept4 -F cloexec,nonblock
	connect_from 127.0.0.2 -v
	assert_output_has '^conn 1 line=hello cloexec=1 nonblock=1$'
}

@test "accept4 flags are honoured for the connection taken after a refusal" {
	limited_server srv 1 -m block -a accept4 -F cloexec,nonblock
	hold_clients a 127.0.0.2 1
	queue_clients srv 127.0.0.2 127.0.0.3
	assert_file_has "$(out_of q1)" '^kept=0 refused=1$'
	assert_file_has "$(out_of q2)" 'line=hello cloexec=1 nonblock=1$'
}

@test "plain accept after a refusal returns a blocking descriptor" {
	limited_server srv 1 -m block -a accept
	hold_clients a 127.0.0.2 1
	queue_clients srv 127.0.0.2 127.0.0.3
	assert_file_has "$(out_of q1)" '^kept=0 refused=1$'
	assert_file_has "$(out_of q2)" 'line=hello cloexec=0 nonblock=0$'
}

@test "the address returned after a refusal is the admitted client's" {
	limited_server srv 1 -m block
	hold_clients a 127.0.0.2 1
	queue_clients srv 127.0.0.2 127.0.0.3
	assert_file_has "$(out_of q1)" '^kept=0 refused=1$'
	assert_file_has "$(out_of srv)" '^accept fd=[0-9]+ peer=127\.0\.0\.3$'
	assert_file_lacks "$(out_of srv)" '^addr-mismatch'
}

@test "a short address buffer is filled and sized like the kernel does" {
	limited_server srv 2 -l 4
	connect_from 127.0.0.2
	assert_file_has "$(out_of srv)" '^addrlen fd=[0-9]+ len=16$'
	assert_file_lacks "$(out_of srv)" '^addr-(mismatch|overrun)'
}

@test "a short address buffer after a refusal is filled like the kernel" {
	limited_server srv 1 -m block -a accept4 -l 6
	hold_clients a 127.0.0.2 1
	queue_clients srv 127.0.0.2 127.0.0.3
	assert_file_has "$(out_of q1)" '^kept=0 refused=1$'
	run -0 grep -Ec '^addrlen fd=[0-9]+ len=16$' "$(out_of srv)"
	assert_equal "$output" 2
	assert_file_lacks "$(out_of srv)" '^addr-(mismatch|overrun)'
}

@test "a blocking accept thread keeps serving other clients after refusals" {
	limited_server srv 1 -m block
	hold_clients a 127.0.0.2 1
	connect_from 127.0.0.2 -n 5
	assert_output_has '^kept=0 refused=5$'
	connect_from 127.0.0.3 -t 1000
	assert_output_has '^kept=1 refused=0$'
}

@test "a thread-per-connection server keeps serving after refusals" {
	limited_server srv 1 -m thread
	hold_clients a 127.0.0.2 1
	connect_from 127.0.0.2 -n 5
	assert_output_has '^kept=0 refused=5$'
	connect_from 127.0.0.3 -t 1000
	assert_output_has '^kept=1 refused=0$'
}

@test "a select loop over a blocking listener is not stalled by a refusal" {
	limited_server srv 1 -m select
	hold_clients a 127.0.0.2 1
	connect_from 127.0.0.2
	assert_output_has '^kept=0 refused=1$'
	connect_from 127.0.0.3 -t 1000
	assert_output_has '^kept=1 refused=0$'
}

@test "a select loop gets ECONNABORTED when only a refused one was pending" {
	limited_server srv 1 -m select
	hold_clients a 127.0.0.2 1
	connect_from 127.0.0.2
	assert_output_has '^kept=0 refused=1$'
	wait_for 2 file_has "$(out_of srv)" '^accept-error errno=ECONNABORTED$'
}

@test "a select loop gets the connection queued behind a refused one" {
	limited_server srv 1 -m select
	hold_clients a 127.0.0.2 1
	queue_clients srv 127.0.0.2 127.0.0.3
	assert_file_has "$(out_of q1)" '^kept=0 refused=1$'
	assert_file_has "$(out_of q2)" '^kept=1 refused=0$'
}

@test "edge-triggered epoll gets every admissible connection in one wake-up" {
	limited_server srv 1 -m epoll-et
	hold_clients a 127.0.0.2 1
	queue_clients srv 127.0.0.2 127.0.0.3 127.0.0.2 127.0.0.4
	assert_file_has "$(out_of q1)" '^kept=0 refused=1$'
	assert_file_has "$(out_of q2)" '^kept=1 refused=0$'
	assert_file_has "$(out_of q3)" '^kept=0 refused=1$'
	assert_file_has "$(out_of q4)" '^kept=1 refused=0$'
	assert_file_has "$(out_of srv)" '^wakeup accepted=2$'
}

@test "running out of descriptors reports EMFILE and leaves no counts" {
	local pid src
	limited_server srv 50 -m epoll-lt
	pid=$(pid_of srv)
	prlimit --pid "$pid" --nofile=32:32
	for src in 2 3 4 5; do
		hold_clients "h$src" "127.0.0.$src" 10 -c -t 1000
	done
	wait_for 5 file_has "$(out_of srv)" '^accept-error errno=EMFILE$'
	[[ -n $(open_counts "$pid") ]] || fail "no counts while held"
	for src in 2 3 4 5; do
		release_clients "h$src"
	done
	wait_for 10 no_open_counts "$pid" ||
		fail "counts left: $(open_counts "$pid")"
}

@test "a server that ran out of descriptors serves again afterwards" {
	local src
	limited_server srv 50 -m epoll-lt
	prlimit --pid "$(pid_of srv)" --nofile=32:32
	for src in 2 3 4 5; do
		hold_clients "h$src" "127.0.0.$src" 10 -c -t 1000
	done
	wait_for 5 file_has "$(out_of srv)" '^accept-error errno=EMFILE$'
	for src in 2 3 4 5; do
		release_clients "h$src"
	done
	wait_for 10 all_closed srv
	connect_from 127.0.0.2 -n 3
	assert_output_has '^kept=3 refused=0$'
}

# fill_descriptors: hold one connection each from 127.0.0.3 on until one
# is left waiting in the accept queue; sets QUEUED to that holder's name.
fill_descriptors() {
	local i
	for ((i = 3; i < 60; i++)); do
		hold_clients "h$i" "127.0.0.$i" 1 -t 500
		if [[ $(kept_of "h$i") != 1 ]]; then
			QUEUED=h$i
			return 0
		fi
	done
	fail "the server never ran out of descriptors"
}

closes_are() {
	[[ $(closes_of "$1") == "$2" ]]
}

@test "a refusal at the descriptor limit keeps the kernel check available" {
	limited_server srv 1 -m epoll-lt
	prlimit --pid "$(pid_of srv)" --nofile=12:12
	hold_clients a 127.0.0.2 1
	fill_descriptors
	release_clients "$QUEUED"
	release_clients h3
	wait_for 5 closes_are srv 2
	connect_from 127.0.0.2
	assert_output_has '^kept=0 refused=1$'
	assert_file_lacks "$(err_of srv)" 'kernel-check-unavailable'
}

@test "the limit applies to an IPv6 client" {
	run -0 in_netns '
		start_server srv preload_env CONNLIMIT_MAX_PER_IP=2 \
			"$BIN/tserver" -f 6
		"$BIN/tclient" -s ::2 -d ::1 -p "$PORT" -n 3
		"$BIN/tclient" -s ::3 -d ::1 -p "$PORT" -n 2'
	assert_output_has '^kept=2 refused=1$'
	assert_output_has '^kept=2 refused=0$'
}

@test "an IPv6 client is named in reject lines" {
	run -0 in_netns '
		start_server srv preload_env CONNLIMIT_MAX_PER_IP=1 \
			"$BIN/tserver" -f 6
		"$BIN/tclient" -s ::2 -d ::1 -p "$PORT" -n 2
		wait_for 2 file_has "$(err_of srv)" ": reject "
		cat "$(err_of srv)"'
	assert_output_has ': reject client=::2 limit=1 open=1( |$)'
}

@test "a dual-stack listener limits an IPv4 client" {
	run -0 in_netns '
		start_server srv preload_env CONNLIMIT_MAX_PER_IP=2 \
			"$BIN/tserver" -f dual
		"$BIN/tclient" -s 127.0.0.2 -p "$PORT" -n 3'
	assert_output_has '^kept=2 refused=1$'
}

@test "a dual-stack listener logs an IPv4 client unmapped" {
	run -0 in_netns '
		start_server srv preload_env CONNLIMIT_MAX_PER_IP=1 \
			"$BIN/tserver" -f dual
		hold_clients a 127.0.0.2 1
		"$BIN/tclient" -s 127.0.0.2 -p "$PORT"
		wait_for 2 file_has "$(err_of srv)" ": reject "
		cat "$(err_of srv)"'
	assert_output_has ': reject client=127\.0\.0\.2 '
	assert_output_lacks 'ffff'
}

@test "connlimit-status shows a dual-stack listener's IPv4 client unmapped" {
	run -0 in_netns '
		start_server srv preload_env CONNLIMIT_MAX_PER_IP=5 \
			"$BIN/tserver" -f dual
		hold_clients a 127.0.0.2 2
		status_of "$(pid_of srv)"'
	assert_output_has '^client=127\.0\.0\.2 open=2( |$)'
	assert_output_lacks 'ffff'
}

@test "a threaded server under stress keeps serving and leaves no counts" {
	local pid
	limited_server srv 5 -m thread
	pid=$(pid_of srv)
	run -0 "$BIN/tstress" -S 127.0.0.2-127.0.0.21 -p "$PORT" -n 6000 \
		-c 140 -w 20 -T 60
	assert_output_has '^done ok=[0-9]+ refused=[1-9][0-9]* errors=0$'
	wait_for 5 all_closed srv
	wait_for 5 no_open_counts "$pid" ||
		fail "counts left: $(open_counts "$pid")"
	kill -0 "$pid"
	connect_from 127.0.0.2 -n 5
	assert_output_has '^kept=5 refused=0$'
}

@test "closing descriptors from a signal handler does not deadlock" {
	start_server sig preload_env "$BIN/tsigclose" -n 2000 -T 90
	run -0 "$BIN/tstress" -S 127.0.0.2-127.0.0.5 -p "$PORT" -n 2000 \
		-c 8 -T 90
	assert_output_has '^done ok=2000 refused=0 errors=0$'
	wait_exit sig 25
	assert_equal "$EXIT_STATUS" 0
	assert_file_has "$(out_of sig)" '^done accepted=2000$'
}

# http_code SRC: the status curl gets from $PORT, from address SRC.
http_code() {
	curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
		--interface "$1" "http://127.0.0.1:$PORT/"
}

http_ok_from() {
	[[ $(http_code "$1") == 200 ]]
}

start_http_server() {
	local port
	port=$(free_port)
	START_PORT=$port start_server http preload_env \
		CONNLIMIT_MAX_PER_IP=2 "$PYTHON" -u -m http.server \
		--bind 127.0.0.1 --directory "$BATS_TEST_TMPDIR" "$port"
}

@test "python http.server refuses a client that holds its limit" {
	start_http_server
	hold_clients a 127.0.0.2 2 -G 300
	assert_equal "$(kept_of a)" 2
	run ! http_ok_from 127.0.0.2
}

@test "python http.server serves other clients while one is at its limit" {
	start_http_server
	hold_clients a 127.0.0.2 2 -G 300
	run -0 http_code 127.0.0.3
	assert_equal "$output" 200
}

@test "python http.server serves a client again once its connections end" {
	start_http_server
	hold_clients a 127.0.0.2 2 -G 300
	run ! http_ok_from 127.0.0.2
	release_clients a
	wait_for 5 http_ok_from 127.0.0.2
}

# socat without fork handles a single connection; with fork the parent
# closes its copy at once, and exact counts for that belong to the fork
# scenario (S2), not to this suite.
@test "socat without fork greets its client under the library" {
	local port
	port=$(free_port)
	START_PORT=$port start_server socat preload_env CONNLIMIT_MAX_PER_IP=1 \
		socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" \
		SYSTEM:'echo hi; cat'
	connect_from 127.0.0.2 -v
	assert_output_has '^conn 1 line=hi$'
}
