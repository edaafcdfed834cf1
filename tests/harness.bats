#!/usr/bin/env bats
# The test programs themselves, without the library: if these fail, the
# core suite's verdicts mean nothing.

# in_netns scripts are single-quoted on purpose; start_server sets PORT.
# shellcheck disable=SC2016,SC2153

bats_require_minimum_version 1.5.0
load test_helper

setup() {
	[[ -x $BIN/tserver ]] || fail "$BIN/tserver is missing: run make"
}

# serves_all MODE ARGS...: a plain tserver keeps every connection.
serves_all() {
	start_server srv "$BIN/tserver" -m "$@"
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -n 3 -v
	assert_output_has '^conn 3 line=hello cloexec=0 nonblock=0$'
	assert_output_has '^kept=3 refused=0$'
	assert_equal "$(count_lines "$(out_of srv)" '^accept fd=')" 3
	assert_file_lacks "$(out_of srv)" 'addr-mismatch|accept-error'
}

@test "tserver in block mode greets every client" {
	serves_all block
}

@test "tserver in select mode greets every client" {
	serves_all select
}

@test "tserver in epoll-lt mode greets every client" {
	serves_all epoll-lt
}

@test "tserver in epoll-et mode greets every client" {
	serves_all epoll-et
}

@test "tserver in thread mode greets every client" {
	serves_all thread
}

@test "tserver reports the peer address of each connection" {
	start_server srv "$BIN/tserver"
	run -0 "$BIN/tclient" -s 127.0.0.7 -p "$PORT"
	assert_file_has "$(out_of srv)" '^accept fd=[0-9]+ peer=127\.0\.0\.7$'
}

@test "tserver with -N reports no peer address" {
	start_server srv "$BIN/tserver" -N -a accept4
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT"
	assert_file_has "$(out_of srv)" '^accept fd=[0-9]+ peer=-$'
}

@test "tserver with -l reports the full address length" {
	start_server srv "$BIN/tserver" -l 4
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT"
	assert_file_has "$(out_of srv)" '^addrlen fd=[0-9]+ len=16$'
	assert_file_lacks "$(out_of srv)" '^addr-(mismatch|overrun)'
}

@test "tserver greeting shows the accept4 flags of the descriptor" {
	start_server srv "$BIN/tserver" -a accept4 -F cloexec,nonblock
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -v
	assert_output_has '^conn 1 line=hello cloexec=1 nonblock=1$'
}

@test "tserver logs a close when the client goes away" {
	start_server srv "$BIN/tserver" -m select
	hold_clients h 127.0.0.2 2
	release_clients h
	wait_for 5 file_has "$(out_of srv)" '^close fd='
	assert_equal "$EXIT_STATUS" 0
}

@test "tclient with -G keeps a connection that stays silent and open" {
	local port
	port=$(free_port)
	START_PORT=$port start_server sock socat \
		"TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" SYSTEM:'sleep 3'
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -G 300
	assert_output_has '^kept=1 refused=0$'
}

@test "tclient reports eof when the server closes without a greeting" {
	local port
	port=$(free_port)
	START_PORT=$port start_server sock socat \
		"TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" SYSTEM:'true'
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT"
	assert_output_has '^conn 1 refused reason=eof$'
}

@test "tclient reports connect-error when nothing listens" {
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$(free_port)"
	assert_output_has '^conn 1 refused reason=connect-error$'
}

@test "tclient reports a timeout when the server never greets" {
	local port
	port=$(free_port)
	START_PORT=$port start_server sock socat \
		"TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" SYSTEM:'sleep 3'
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -t 300
	assert_output_has '^conn 1 refused reason=timeout$'
}

@test "queued clients all wait while the server is stopped" {
	start_server srv "$BIN/tserver" -m epoll-et
	queue_clients srv 127.0.0.2 127.0.0.3 127.0.0.4
	assert_file_has "$(out_of srv)" '^wakeup accepted=3$'
	assert_file_has "$(out_of q3)" '^kept=1 refused=0$'
}

@test "tstress counts every greeted connection as ok" {
	start_server srv "$BIN/tserver" -m epoll-lt
	run -0 "$BIN/tstress" -S 127.0.0.2-127.0.0.11 -p "$PORT" -n 500 -c 20
	assert_output_has '^done ok=500 refused=0 errors=0$'
}

@test "tsigclose finishes without the library" {
	start_server sig "$BIN/tsigclose" -n 500 -T 10
	run -0 "$BIN/tstress" -S 127.0.0.2-127.0.0.5 -p "$PORT" -n 500 -c 8
	wait_exit sig 15
	assert_equal "$EXIT_STATUS" 0
	assert_file_has "$(out_of sig)" '^done accepted=500$'
}

@test "in_netns gives IPv6 clients their own source addresses" {
	run -0 in_netns '
		start_server srv "$BIN/tserver" -f 6
		"$BIN/tclient" -s ::2 -d ::1 -p "$PORT"
		cat "$(out_of srv)"'
	assert_output_has '^accept fd=[0-9]+ peer=::2$'
}

@test "in_netns dual-stack listener sees IPv4 clients as mapped" {
	run -0 in_netns '
		start_server srv "$BIN/tserver" -f dual
		"$BIN/tclient" -s 127.0.0.2 -p "$PORT"
		cat "$(out_of srv)"'
	assert_output_has '^accept fd=[0-9]+ peer=::ffff:127\.0\.0\.2$'
}
