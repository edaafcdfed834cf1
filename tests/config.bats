#!/usr/bin/env bats
# Settings in a running server: how the defaults, the inline CONNLIMIT,
# the CONNLIMIT_* variables and the file layer; reloading the file as
# tools change it (S5 reload keeps counts, S6 ConfigMap swaps, S7 a file
# caught half-written); bad configurations at start-up and later; strict;
# what each setting does to real connections; logging; secure-execution
# mode.

# start_server sets PORT; each test is its own subshell, so a test that
# switches PORT between two servers changes only its own.
# shellcheck disable=SC2153,SC2030,SC2031

bats_require_minimum_version 1.5.0
load test_helper
load config_helper

setup() {
	config_setup
}

teardown() {
	config_teardown
}

# --- layers ---

@test "max_per_ip from the file limits each client" {
	conf_replace 'max_per_ip = 2'
	conf_server srv
	run -0 attempt srv 127.0.0.2 3
	assert_equal "$output" 2
}

@test "the file overrides CONNLIMIT_MAX_PER_IP" {
	conf_replace 'max_per_ip = 1'
	conf_server srv CONNLIMIT_MAX_PER_IP=3
	run -0 attempt srv 127.0.0.2 4
	assert_equal "$output" 1
}

@test "CONNLIMIT_MAX_PER_IP overrides the inline CONNLIMIT" {
	env_server srv CONNLIMIT='max_per_ip=1' CONNLIMIT_MAX_PER_IP=3
	run -0 attempt srv 127.0.0.2 4
	assert_equal "$output" 3
}

@test "the inline CONNLIMIT separates settings with ;" {
	env_server srv CONNLIMIT='max_per_ip=1; action=close'
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -n 2
	assert_output_has '^conn 1 kept$'
	assert_output_has '^conn 2 refused reason=eof$'
}

@test "a quoted message in the inline CONNLIMIT keeps its ;" {
	env_server srv \
		CONNLIMIT='max_per_ip=1; action=message; message="busy; later\n"'
	hold_clients a 127.0.0.2 1
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -v
	assert_output_has '^conn 1 line=busy; later$'
	assert_equal "$(count_lines "$(out_of srv)" '^accept fd=')" 1
}

@test "a setting removed from the file falls back to the environment" {
	conf_replace 'max_per_ip = 1'
	conf_server srv CONNLIMIT_MAX_PER_IP=3
	conf_replace '# max_per_ip comes from the environment'
	until_kept srv 127.0.0.2 4 3
}

@test "log_level info logs the settings in force at start-up" {
	conf_replace 'max_per_ip = 1' 'exempt = 127.0.0.9'
	conf_server srv CONNLIMIT_MAX_PER_IP=3 CONNLIMIT_LOG_LEVEL=info
	assert_file_has "$(err_of srv)" \
		'^connlimit\[[0-9]+\]: info event=start max_per_ip=1 exempt=127\.0\.0\.9/32 .*log_level=info '
}

# --- S5: a reload keeps counts ---

# s5_start: limit 5 from the file, holder h with 4 open connections from
# 127.0.0.2, then the file replaced by rename with limit 2 and in force.
s5_start() {
	conf_replace 'max_per_ip = 5'
	conf_server srv
	echo_hold h 127.0.0.2 4
	assert_file_has "$(out_of h)" '^held=4$'
	conf_replace 'max_per_ip = 2'
	until_kept srv 127.0.0.2 1 0
}

@test "lowering the limit by rename closes nothing and refuses a 5th" {
	s5_start
	assert_equal "$(open_on srv)" 4
	holder_say h ping '^echoed='
	assert_file_has "$(out_of h)" '^echoed=4$'
}

@test "after lowering the limit to 2 a client gets in again at 1 open" {
	s5_start
	holder_say h 'close 2' '^open=2$'
	wait_for 3 open_is srv 2
	run -0 attempt srv 127.0.0.2 1
	assert_equal "$output" 0
	holder_say h 'close 1' '^open=1$'
	wait_for 3 open_is srv 1
	run -0 attempt srv 127.0.0.2 2
	assert_equal "$output" 1
}

@test "raising the limit to 10 lets 6 more in beside 4 held" {
	s5_start
	conf_replace 'max_per_ip = 10'
	until_kept srv 127.0.0.2 7 6
}

# --- S6: Kubernetes ConfigMap updates ---

@test "each of three ConfigMap symlink swaps takes effect" {
	local cm=$BATS_TEST_TMPDIR/cm limit
	configmap_init "$cm" 'max_per_ip = 5'
	CONF=$cm/config conf_server srv
	run -0 attempt srv 127.0.0.2 6
	assert_equal "$output" 5
	for limit in 1 4 2; do
		configmap_swap "$cm" "max_per_ip = $limit"
		until_kept srv 127.0.0.2 $((limit + 1)) "$limit"
	done
	assert_equal "$(find "$cm" -maxdepth 1 -name '..2026*' | wc -l)" 1
}

# --- S7: a file caught half-written ---

@test "an emptied file keeps the old limit until it is written again" {
	conf_replace 'max_per_ip = 1'
	conf_server srv
	hold_clients a 127.0.0.2 1
	settle
	: >"$CONF"
	run -0 attempt srv 127.0.0.2 1
	assert_equal "$output" 0
	assert_file_has "$(err_of srv)" "error event=config-unusable file=$CONF reason=\"empty \\(caught half-written\\?\\)\""
	sleep 0.5
	echo 'max_per_ip = 3' >>"$CONF"
	until_kept srv 127.0.0.2 3 2
}

@test "a syntax error after a reload keeps the limit and names file and line" {
	conf_replace 'max_per_ip = 3'
	conf_server srv
	conf_replace '# new limits' 'max_per_ip = 2' 'exempt = 127.0.0.300'
	until_logged srv "error file=$CONF line=3 setting=exempt value=\"127\\.0\\.0\\.300\" expected=\"[^\"]+\"; keeping the last good settings$"
	run -0 attempt srv 127.0.0.2 4
	assert_equal "$output" 3
}

@test "a fixed file after a syntax error takes effect and is reported" {
	conf_replace 'max_per_ip = 3'
	conf_server srv
	conf_replace 'max_per_ip = two'
	until_logged srv 'error file=.* line=1 setting=max_per_ip value="two"'
	conf_replace 'max_per_ip = 2'
	until_kept srv 127.0.0.2 3 2
	assert_file_has "$(err_of srv)" "warn event=config-fixed file=$CONF\$"
}

# --- other ways of changing the file ---

@test "an edit in place takes effect" {
	local inode
	conf_edit 'max_per_ip = 1'
	inode=$(inode_of "$CONF")
	conf_server srv
	conf_edit 'max_per_ip = 3'
	until_kept srv 127.0.0.2 4 3
	assert_equal "$(inode_of "$CONF")" "$inode"
}

@test "a deleted file keeps the last limit and is reported missing" {
	conf_replace 'max_per_ip = 1'
	conf_server srv
	rm "$CONF"
	until_logged srv "error event=config-unusable file=$CONF reason=\"missing"
	run -0 attempt srv 127.0.0.2 2
	assert_equal "$output" 1
}

@test "a file recreated after deletion takes effect and is reported fixed" {
	conf_replace 'max_per_ip = 1'
	conf_server srv
	rm "$CONF"
	until_logged srv 'error event=config-unusable .*reason="missing'
	conf_edit 'max_per_ip = 2'
	until_kept srv 127.0.0.2 3 2
	assert_file_has "$(err_of srv)" "warn event=config-fixed file=$CONF\$"
}

@test "a relative CONNLIMIT_CONFIG is still read after the server changes directory" {
	mkdir "$BATS_TEST_TMPDIR/etc"
	CONF=$BATS_TEST_TMPDIR/etc/connlimit.conf
	conf_replace 'max_per_ip = 1'
	cd "$BATS_TEST_TMPDIR/etc"
	chdir_server srv / CONNLIMIT_CONFIG=connlimit.conf
	run -0 attempt srv 127.0.0.2 2
	assert_equal "$output" 1
	conf_replace 'max_per_ip = 3'
	until_kept srv 127.0.0.2 4 3
}

@test "capacity and zone changed in the file are ignored with a warning" {
	local pid
	conf_replace 'max_per_ip = 1' 'capacity = 1024'
	conf_server srv
	pid=$(pid_of srv)
	conf_replace 'max_per_ip = 3' 'capacity = 2048' 'zone = elsewhere'
	until_kept srv 127.0.0.2 4 3
	assert_file_has "$(err_of srv)" "warn event=reload-ignored file=$CONF "
	run -0 status_of "$pid"
	assert_output_has '^zone=pid:[0-9]+ capacity=1024 '
	[[ ! -e /dev/shm/connlimit.elsewhere ]]
}

@test "ipv4_prefix changed in the file is ignored with a warning" {
	conf_replace 'max_per_ip = 1'
	conf_server srv
	hold_clients a 127.0.0.2 1
	conf_replace 'max_per_ip = 1' 'ipv4_prefix = 24'
	until_logged srv "warn event=reload-ignored file=$CONF "
	run -0 attempt srv 127.0.0.3 2
	assert_equal "$output" 1
}

@test "connlimit-status shows the limit a reload put in force" {
	conf_replace 'max_per_ip = 2'
	conf_server srv
	conf_replace 'max_per_ip = 5'
	until_kept srv 127.0.0.2 6 5
	run -0 status_of "$(pid_of srv)"
	assert_output_has '^zone=.* max_per_ip=5 '
}

# --- bad configurations at start-up ---

@test "an invalid variable at start-up passes everything through uncounted" {
	env_server srv CONNLIMIT_MAX_PER_IP=1 CONNLIMIT_ACTION=drop
	run -0 attempt srv 127.0.0.2 3
	assert_equal "$output" 3
	assert_file_has "$(err_of srv)" 'error setting=CONNLIMIT_ACTION value="drop" expected="[^"]+"; passing all connections through$'
	run status_of "$(pid_of srv)"
	assert_output_lacks '^client='
}

@test "an invalid file at start-up passes through until it is fixed" {
	conf_replace 'max_per_ip = 1' 'mode = watch'
	conf_server srv
	assert_file_has "$(err_of srv)" "error file=$CONF line=2 setting=mode value=\"watch\" expected=\"enforce or monitor\"; passing all connections through\$"
	run -0 attempt srv 127.0.0.2 3
	assert_equal "$output" 3
	conf_replace 'max_per_ip = 1' 'mode = enforce'
	until_kept srv 127.0.0.2 2 1
}

@test "a file missing at start-up is used once it appears" {
	conf_server srv CONNLIMIT_MAX_PER_IP=5
	assert_file_has "$(err_of srv)" "error event=config-unusable file=$CONF reason=\"missing"
	run -0 attempt srv 127.0.0.2 3
	assert_equal "$output" 3
	conf_replace 'max_per_ip = 1'
	until_kept srv 127.0.0.2 2 1
}

@test "an empty file at start-up leaves the environment's settings in force" {
	: >"$CONF"
	conf_server srv CONNLIMIT_MAX_PER_IP=2
	run -0 attempt srv 127.0.0.2 3
	assert_equal "$output" 2
}

@test "a zone in a file fixed after a bad start-up is ignored with a warning" {
	local zone
	new_zone
	zone=$ZONE
	conf_replace "zone = $zone" 'max_per_ip = one'
	conf_server srv
	conf_replace "zone = $zone" 'max_per_ip = 1'
	until_kept srv 127.0.0.2 2 1
	assert_file_has "$(err_of srv)" "warn event=reload-ignored file=$CONF "
	[[ ! -e /dev/shm/connlimit.$zone ]]
}

# strict_run VAR=VALUE...: tserver with strict = 1, bounded to 10 s.
strict_run() {
	run timeout 10 env "${PRELOAD_ENV[@]}" CONNLIMIT_STRICT=1 "$@" \
		"$BIN/tserver"
}

@test "strict = 1 exits with status 1 on an invalid variable before serving" {
	strict_run CONNLIMIT_MAX_PER_IP=ten
	assert_equal "$status" 1
	assert_output_has 'error event=strict-exit '
	assert_output_lacks '^port='
}

@test "strict = 1 exits with status 1 on an invalid file at start-up" {
	conf_replace 'max_per_ip = 1' 'ports = 0'
	strict_run CONNLIMIT_CONFIG="$CONF"
	assert_equal "$status" 1
	assert_output_has "error file=$CONF line=2 setting=ports "
	assert_output_has 'error event=strict-exit '
	assert_output_lacks '^port='
}

@test "strict = 1 keeps a server running when its file goes bad later" {
	conf_replace 'max_per_ip = 1'
	conf_server srv CONNLIMIT_STRICT=1
	conf_replace 'max_per_ip = -1'
	until_logged srv 'error file=.* setting=max_per_ip value="-1"'
	run -0 attempt srv 127.0.0.2 2
	assert_equal "$output" 1
	kill -0 "$(pid_of srv)"
}

# --- what the settings do ---

@test "an exempt client is never refused and still shows in connlimit-status" {
	conf_replace 'max_per_ip = 1' 'exempt = 10.0.0.0/8, 127.0.0.2'
	conf_server srv
	hold_clients a 127.0.0.2 5
	assert_equal "$(kept_of a)" 5
	run -0 status_of "$(pid_of srv)"
	assert_output_has '^client=127\.0\.0\.2 open=5 '
}

@test "the longest matching limit network decides a client's limit" {
	conf_replace 'max_per_ip = 10' 'limit 127.0.0.0/8 = 1' \
		'limit 127.0.0.2/32 = 3'
	conf_server srv
	run -0 attempt srv 127.0.0.2 4
	assert_equal "$output" 3
	run -0 attempt srv 127.0.0.3 2
	assert_equal "$output" 1
}

@test "CONNLIMIT_LIMITS gives networks their own limits" {
	env_server srv CONNLIMIT_MAX_PER_IP=1 \
		CONNLIMIT_LIMITS='10.1.0.0/16=50, 127.0.0.0/30 = 2'
	run -0 attempt srv 127.0.0.2 3
	assert_equal "$output" 2
	run -0 attempt srv 127.0.0.4 2
	assert_equal "$output" 1
}

@test "ipv4_prefix 24 makes 127.0.0.2 and 127.0.0.3 share one count" {
	conf_replace 'max_per_ip = 2' 'ipv4_prefix = 24'
	conf_server srv
	hold_clients a 127.0.0.2 1
	run -0 attempt srv 127.0.0.3 2
	assert_equal "$output" 1
	assert_file_has "$(err_of srv)" 'reject client=127\.0\.0\.0/24 limit=2 open=2 '
}

@test "an exempt host does not use up its /24's count" {
	conf_replace 'max_per_ip = 1' 'ipv4_prefix = 24' 'exempt = 127.0.0.9'
	conf_server srv
	hold_clients a 127.0.0.9 3
	run -0 attempt srv 127.0.0.3 2
	assert_equal "$output" 1
}

# ports_pair PORTS: servers a (on a port chosen here, in A_PORT) and b in
# one named zone, limit 1, with ports = PORTS where @ stands for A_PORT.
ports_pair() {
	local zone
	new_zone
	zone=$ZONE
	A_PORT=$(free_port)
	env_server a CONNLIMIT_ZONE="$zone" CONNLIMIT_MAX_PER_IP=1 \
		CONNLIMIT_PORTS="${1//@/$A_PORT}" -- -p "$A_PORT"
	env_server b CONNLIMIT_ZONE="$zone" CONNLIMIT_MAX_PER_IP=1 \
		CONNLIMIT_PORTS="${1//@/$A_PORT}"
	B_PORT=$PORT
}

@test "ports limits the listed port and leaves another uncounted" {
	ports_pair @
	PORT=$B_PORT hold_clients held 127.0.0.2 2
	assert_equal "$(kept_of held)" 2
	PORT=$A_PORT
	run -0 attempt a 127.0.0.2 2
	assert_equal "$output" 1
}

@test "ports with ! leaves that port uncounted and limits the others" {
	ports_pair !@
	PORT=$A_PORT hold_clients held 127.0.0.2 2
	assert_equal "$(kept_of held)" 2
	PORT=$B_PORT
	run -0 attempt b 127.0.0.2 2
	assert_equal "$output" 1
}

@test "max_total caps the connections of all clients together" {
	env_server srv CONNLIMIT_MAX_TOTAL=3
	hold_clients a 127.0.0.2 1
	hold_clients b 127.0.0.3 1
	hold_clients c 127.0.0.4 1
	run -0 attempt srv 127.0.0.5 1
	assert_equal "$output" 0
	assert_file_has "$(err_of srv)" "reject client=127\\.0\\.0\\.5 reason=max_total limit=3 open=3 port=$PORT\$"
}

@test "action close ends a refused connection without a reset" {
	conf_replace 'max_per_ip = 1' 'action = close'
	conf_server srv
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -n 2
	assert_output_has '^conn 2 refused reason=eof$'
}

@test "action reset resets a refused connection" {
	conf_replace 'max_per_ip = 1' 'action = reset'
	conf_server srv
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -n 2
	assert_output_has '^conn 2 refused reason=reset$'
}

write_429_conf() {
	conf_replace 'max_per_ip = 2' 'action = message' \
		'message = "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"'
}

@test "action message answers an HTTP client over its limit with a 429" {
	write_429_conf
	http_server
	hold_clients a 127.0.0.2 2 -G 300
	assert_equal "$(http_code 127.0.0.2)" 429
}

@test "action message leaves an HTTP client under its limit served" {
	write_429_conf
	http_server
	hold_clients a 127.0.0.2 2 -G 300
	assert_equal "$(http_code 127.0.0.3)" 200
}

@test "monitor mode admits and counts a client over its limit" {
	env_server srv CONNLIMIT_MAX_PER_IP=1 CONNLIMIT_MODE=monitor
	hold_clients a 127.0.0.2 3
	assert_equal "$(kept_of a)" 3
	run -0 status_of "$(pid_of srv)"
	assert_output_has '^client=127\.0\.0\.2 open=3 '
	assert_output_has '^counters .* monitor_would_refuse=2( |$)'
}

@test "monitor mode logs what it would have refused" {
	env_server srv CONNLIMIT_MAX_PER_IP=1 CONNLIMIT_MODE=monitor
	hold_clients a 127.0.0.2 2
	assert_file_has "$(err_of srv)" "monitor would-reject client=127\\.0\\.0\\.2 limit=1 open=1 port=$PORT\$"
	assert_file_lacks "$(err_of srv)" ': reject '
}

@test "switching from monitor to enforce keeps what monitor counted" {
	conf_replace 'max_per_ip = 1' 'mode = monitor'
	conf_server srv
	hold_clients a 127.0.0.2 3
	assert_equal "$(kept_of a)" 3
	conf_replace 'max_per_ip = 3' 'mode = enforce'
	until_kept srv 127.0.0.2 1 0
	release_clients a
	wait_for 3 open_is srv 0
	run -0 attempt srv 127.0.0.2 4
	assert_equal "$output" 3
}

# --- logging ---

@test "log = a path appends the lines to that file, not to stderr" {
	local log=$BATS_TEST_TMPDIR/connlimit.log
	echo 'earlier line' >"$log"
	conf_replace 'max_per_ip = 1' "log = $log"
	conf_server srv
	run -0 attempt srv 127.0.0.2 2
	assert_file_has "$log" '^earlier line$'
	assert_file_has "$log" '^connlimit\[[0-9]+\]: reject client=127\.0\.0\.2 limit=1 open=1 '
	assert_file_lacks "$(err_of srv)" 'connlimit'
}

@test "a log path of 300 bytes receives the lines" {
	local dir=$BATS_TEST_TMPDIR/
	dir+=$(printf '%0100d/%0100d/%0100d' 1 2 3)
	mkdir -p "$dir"
	env_server srv CONNLIMIT_MAX_PER_IP=1 CONNLIMIT_LOG="$dir/connlimit.log"
	run -0 attempt srv 127.0.0.2 2
	assert_file_has "$dir/connlimit.log" 'reject client=127\.0\.0\.2 '
}

@test "a reload can send the log to a file" {
	local log=$BATS_TEST_TMPDIR/connlimit.log
	conf_replace 'max_per_ip = 1'
	conf_server srv
	conf_replace 'max_per_ip = 1' "log = $log"
	settle
	run -0 attempt srv 127.0.0.2 2
	assert_equal "$output" 1
	assert_file_has "$log" 'reject client=127\.0\.0\.2 '
}

@test "log = syslog sends the lines to /dev/log" {
	[[ -S /dev/log ]] ||
		skip "no syslog daemon listens on /dev/log (the tests do not replace it)"
	env_server srv CONNLIMIT_MAX_PER_IP=1 CONNLIMIT_LOG=syslog
	run -0 attempt srv 127.0.0.2 2
	assert_equal "$output" 1
	assert_file_lacks "$(err_of srv)" 'connlimit'
}

@test "log_level error leaves refusals out of the log" {
	env_server srv CONNLIMIT_MAX_PER_IP=1 CONNLIMIT_LOG_LEVEL=error
	run -0 attempt srv 127.0.0.2 3
	assert_equal "$output" 1
	assert_file_lacks "$(err_of srv)" 'reject'
}

# --- secure-execution mode ---

@test "a server with file capabilities ignores CONNLIMIT_CONFIG" {
	secure_prepare
	printf 'max_per_ip = 1\n' >"$SECURE_DIR/connlimit.conf"
	chmod 644 "$SECURE_DIR/connlimit.conf"
	secure_server srv CONNLIMIT_MAX_PER_IP=2 \
		CONNLIMIT_CONFIG="$SECURE_DIR/connlimit.conf"
	assert_file_has "$(err_of srv)" 'warn event=ignored setting=CONNLIMIT_CONFIG '
	run -0 attempt srv 127.0.0.2 3
	assert_equal "$output" 2
}

@test "a server with file capabilities logs to stderr, not to a file" {
	local log
	secure_prepare
	log=$SECURE_DIR/logs/connlimit.log
	secure_server srv CONNLIMIT_MAX_PER_IP=1 CONNLIMIT_LOG="$log"
	assert_file_has "$(err_of srv)" 'warn event=ignored setting=CONNLIMIT_LOG '
	run -0 attempt srv 127.0.0.2 2
	assert_file_has "$(err_of srv)" 'reject client=127\.0\.0\.2 '
	[[ ! -e $log ]]
}
