#!/usr/bin/env bats
# Real, unmodified daemons from Debian under the library: each one keeps
# a client at the limit, lets it in again after a release, counts nothing
# once everyone has left, serves another client normally meanwhile, and
# logs no error of its own. Then the programs LD_PRELOAD cannot reach.

# shellcheck disable=SC2153 # start_server sets PORT

bats_require_minimum_version 1.5.0
load test_helper
load compat_helper

setup_file() {
	compat_setup_file
}

teardown_file() {
	compat_teardown_file
}

setup() {
	compat_setup
}

teardown() {
	compat_teardown
}

# limit_round KIND [ARGS...]: start KIND, then 127.0.0.2 is held at the
# limit, let in after a release, and counted nowhere once all leave.
limit_round() {
	"start_$1" "${@:2}"
	check_limit
	check_release
	check_all_leave
	check_logs
}

# other_round KIND [ARGS...]: start KIND, then 127.0.0.3 is served while
# 127.0.0.2 is at the limit.
other_round() {
	"start_$1" "${@:2}"
	check_other_client "$1"
	check_logs
}

@test "nginx holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round nginx
}

@test "nginx serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round nginx
}

@test "nginx holds 127.0.0.2 at 3 with the workers a reload started" {
	start_nginx
	reload_nginx
	check_limit
	check_logs
}

@test "lighttpd holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round lighttpd
}

@test "lighttpd serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round lighttpd
}

@test "apache prefork holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round apache prefork
}

@test "apache prefork serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round apache prefork
}

@test "apache event holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round apache event
}

@test "apache event serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round apache event
}

@test "apache prefork holds 127.0.0.2 at 3 over 5 bursts of 10 connections" {
	start_apache prefork
	check_bursts 5
	check_logs
}

@test "apache event holds 127.0.0.2 at 3 over 5 bursts of 10 connections" {
	start_apache event
	check_bursts 5
	check_logs
}

@test "redis holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round redis
}

@test "redis serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round redis
}

@test "memcached holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round memcached
}

@test "memcached serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round memcached
}

@test "memcached with 4 threads holds 127.0.0.2 at 3 over 5 bursts of 10 connections" {
	start_memcached
	check_bursts 5
	check_logs
}

@test "sshd in a named zone holds 127.0.0.2 at 3 and lets it in again after a release" {
	new_zone
	limit_round sshd "$ZONE"
}

@test "sshd in a named zone lets 127.0.0.3 log in while 127.0.0.2 is at its limit" {
	new_zone
	other_round sshd "$ZONE"
}

@test "sshd with its default zone holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round sshd
}

@test "socat with fork holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round socat
}

@test "socat with fork serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round socat
}

@test "xinetd holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round xinetd
}

@test "xinetd serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round xinetd
}

@test "xinetd still serves 127.0.0.3 after refusing 40 connections of 127.0.0.2" {
	start_xinetd
	hold a 127.0.0.2 "$LIMIT"
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -n 40 -c
	assert_output_has '^kept=0 refused=40$'
	serve_xinetd
	check_logs
}

@test "python http.server holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round http_server
}

@test "python http.server serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round http_server
}

@test "python ForkingTCPServer holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round forking
}

@test "python ForkingTCPServer serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round forking
}

@test "node http holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round node
}

@test "node http serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round node
}

@test "a java ServerSocket holds 127.0.0.2 at 3 and lets it in again after a release" {
	limit_round java
}

@test "a java ServerSocket serves 127.0.0.3 while 127.0.0.2 is at its limit" {
	other_round java
}

# ---- what LD_PRELOAD cannot reach ----

@test "a statically linked server keeps 4 connections of 127.0.0.2: the library never loads" {
	start_greeter static
	check_unlimited
	serve_greeter
	run ! maps_library "$TARGET"
}

@test "the same C server linked dynamically holds 127.0.0.2 at 3" {
	start_greeter dynamic
	check_limit
	serve_greeter
	check_logs
}

@test "a Go server keeps 4 connections of 127.0.0.2: the library loads but sees no accept" {
	start_greeter go
	check_unlimited
	serve_greeter
	maps_library "$TARGET"
	run -0 "$STATUS" "$TARGET"
	assert_output_has '^counters admitted=0 refused=0 '
}

@test "the connlimit launcher warns that a static server runs without limits" {
	need_launcher
	build_greeter static
	start_server launched "$LAUNCHER" -n "$LIMIT" -- "$GREETER"
	assert_file_has "$(err_of launched)" 'statically linked'
	assert_file_has "$(err_of launched)" \
		'warning: .* will run without connection limits'
}

@test "the connlimit launcher with --require refuses to start a static server" {
	need_launcher
	build_greeter static
	run -1 "$LAUNCHER" --require -n "$LIMIT" -- "$GREETER"
	assert_output_has 'refusing to start'
}

@test "the connlimit launcher warns that a Go server runs without limits" {
	need_launcher
	build_greeter go
	local rt=
	# A SANITIZE=1 library needs the ASan runtime first: the launcher
	# keeps a runtime already in LD_PRELOAD in front of the library.
	[[ ${SANITIZE:-0} != 1 ]] || rt=${PRELOAD% *}
	start_server launched env LD_PRELOAD="$rt" \
		ASAN_OPTIONS=detect_leaks=0 "$LAUNCHER" -n "$LIMIT" -- "$GREETER"
	assert_file_has "$(err_of launched)" 'Go program'
	assert_file_has "$(err_of launched)" \
		'warning: .* will run without connection limits'
}

# ---- nginx passes only the variables its config names ----

@test "an nginx binary upgrade keeps the library when nginx.conf has env LD_PRELOAD" {
	start_nginx_detached LD_PRELOAD CONNLIMIT_MAX_PER_IP ASAN_OPTIONS
	upgrade_nginx
	maps_library "$TARGET"
	check_limit
	http_get
	check_logs
}

@test "an nginx binary upgrade without env LD_PRELOAD runs unprotected" {
	start_nginx_detached
	upgrade_nginx
	run ! maps_library "$TARGET"
	check_unlimited
}
