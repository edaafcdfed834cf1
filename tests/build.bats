#!/usr/bin/env bats
# The library as a shared object: what it exports, errno, start-up order,
# and what it leaves in the program.

bats_require_minimum_version 1.5.0
load test_helper

setup() {
	require_lib
}

@test "the library exports only the interposed functions" {
	run -0 nm -D --defined-only "$LIB"
	got=$(awk '$2 == "T" || $2 == "W" { print $3 }' <<<"$output" |
		sort | tr '\n' ' ')
	want="accept accept4 close close_range closefrom dup dup2 dup3"
	want+=" execv execve execvp execvpe fclose fcntl fcntl64"
	want+=" popen posix_spawn posix_spawnp sendmmsg sendmsg syscall system"
	want+=" vfork "
	assert_equal "$got" "$want"
}

@test "the library defines no data symbols a program could collide with" {
	run -0 nm -D --defined-only "$LIB"
	assert_output_lacks ' [BDGRS] '
}

@test "interposed calls leave errno as libc would" {
	run -0 env CONNLIMIT_MAX_PER_IP=1 "${PRELOAD_ENV[@]}" "$BIN/terrno"
	assert_output_lacks '^FAIL'
	assert_equal "$(grep -c "^ok " <<<"$output")" 10
}

@test "close and accept work before the library's constructor has run" {
	cc -shared -fPIC -o "$BATS_TEST_TMPDIR/early.so" \
		"$REPO/tests/early/early.c"
	run -0 env LD_PRELOAD="$PRELOAD $BATS_TEST_TMPDIR/early.so" \
		ASAN_OPTIONS=detect_leaks=0 /bin/true
	assert_output_has '^early before-init=1$'
	assert_output_has '^early close=0$'
	assert_output_has '^early accept=ok after-init=1$'
}

@test "a protected server holds no descriptor of the library's" {
	start_server srv env "${PRELOAD_ENV[@]}" "$BIN/tserver" -m epoll-lt
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -n 3
	fds=$(find "/proc/$(pid_of srv)/fd" -mindepth 1 | wc -l)
	start_server bare "$BIN/tserver" -m epoll-lt
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -n 3
	bare=$(find "/proc/$(pid_of bare)/fd" -mindepth 1 | wc -l)
	assert_equal "$fds" "$bare"
}
