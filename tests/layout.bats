#!/usr/bin/env bats
# The shared table's layout is the same for 32- and 64-bit processes, so
# a 32-bit worker of a 64-bit master (or two such servers in one named
# zone) read and write the same fields.

# shellcheck disable=SC2153 # start_server sets PORT

bats_require_minimum_version 1.5.0
load test_helper
load process_helper

setup() {
	gcc -m32 -o "$BATS_TEST_TMPDIR/m32" -x c - <<<'int main(void){return 0;}' \
		2>/dev/null || skip "gcc -m32 cannot link (gcc-multilib missing)"
}

teardown() {
	process_teardown
}

# layout_program FILE: C source that prints the size of every struct in
# shim/zone.h and the offset and size of each field. Structs with
# pointers (the process-local view) are left out. Alignment is not
# compared: i386 aligns uint64_t members to 4, which is harmless while
# every offset matches the 64-bit one (a multiple of 8).
layout_program() {
	awk '
		BEGIN {
			print "#include <stddef.h>"
			print "#include <stdio.h>"
			print "#include \"zone.h\""
			print "#define F(s, f) printf(\"%s.%s offset=%zu size=%zu\\n\", " \
			      "#s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f))"
			print "#define S(s) printf(\"%s size=%zu\\n\", " \
			      "#s, sizeof(struct s))"
			print "int main(void)"
			print "{"
		}
		/^struct [a-z_0-9]+ \{/ { name = $2; n = 0; ptr = 0; next }
		name && /^\};/ {
			if (!ptr) {
				print "\tS(" name ");"
				for (i = 0; i < n; i++)
					print "\tF(" name ", " field[i] ");"
			}
			name = ""
			next
		}
		name && /;/ {
			line = $0
			sub(/;.*/, "", line)
			if (line ~ /\*/)
				ptr = 1
			sub(/\[.*/, "", line)
			k = split(line, w, /[ \t]+/)
			field[n++] = w[k]
		}
		END { print "\treturn 0;"; print "}" }
	' "$REPO/shim/zone.h" >"$1"
}

@test "every shared struct has the same layout in 32- and 64-bit builds" {
	local dir=$BATS_TEST_TMPDIR
	layout_program "$dir/layout.c"
	gcc -m64 -std=gnu11 -I"$REPO/shim" -o "$dir/l64" "$dir/layout.c"
	gcc -m32 -std=gnu11 -I"$REPO/shim" -o "$dir/l32" "$dir/layout.c"
	"$dir/l64" >"$dir/64.txt"
	"$dir/l32" >"$dir/32.txt"
	for s in cl_zone_hdr cl_client cl_bucket cl_conn; do
		file_has "$dir/64.txt" "^$s size=" || fail "$s not found in zone.h"
	done
	run -0 diff "$dir/64.txt" "$dir/32.txt"
}

# build32 DIR: a 32-bit library (the Makefile's LIB_SRC), tserver and,
# built with 64-bit file offsets so that its fcntl calls are fcntl64,
# tcloser in DIR.
build32() {
	local src
	src=$(make -C "$REPO" --no-print-directory -pn all 2>/dev/null |
		sed -n 's/^LIB_SRC = //p')
	[[ -n $src ]] || fail "no LIB_SRC in the Makefile"
	# shellcheck disable=SC2086 # one word per source file
	(cd "$REPO" && gcc -m32 -std=gnu11 -D_GNU_SOURCE -O2 -fPIC -shared \
		-fvisibility=hidden -o "$1/libconnlimit32.so" $src -ldl \
		-lpthread) || fail "the library does not build with -m32"
	gcc -m32 -std=gnu11 -D_GNU_SOURCE -O2 -pthread -o "$1/tserver32" \
		"$REPO/tests/helpers/tserver.c"
	gcc -m32 -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -O2 \
		-o "$1/tcloser32" "$REPO/tests/helpers/tcloser.c"
}

no_asan() {
	[[ ${SANITIZE:-0} != 1 ]] ||
		skip "a 32-bit process cannot load ASan's 64-bit runtime"
}

@test "a 32-bit and a 64-bit server in one named zone share one budget" {
	local dir=$BATS_TEST_TMPDIR zone
	no_asan
	build32 "$dir"
	new_zone zone
	start_server s64 preload_env CONNLIMIT_MAX_PER_IP=2 \
		CONNLIMIT_ZONE="$zone" "$BIN/tserver"
	hold_clients a 127.0.0.2 1
	start_server s32 env LD_PRELOAD="$dir/libconnlimit32.so" \
		CONNLIMIT_MAX_PER_IP=2 CONNLIMIT_ZONE="$zone" "$dir/tserver32"
	hold_clients b 127.0.0.2 1
	assert_equal "$(kept_of b)" 1
	run ! try_from 127.0.0.2
	assert_equal "$(client_field "$zone" 127.0.0.2 counted)" 2
	release_clients b
	wait_for 5 counted_is "$zone" 127.0.0.2 1
	assert_file_lacks "$(err_of s32)" 'error'
}

# drop_copy N: SIGUSR1 to tcloser, then wait for its Nth "dropped" line.
drop_copy() {
	kill -USR1 "$(pid_of srv)"
	wait_for 5 lines_at_least srv '^dropped fd=' "$1"
}

@test "a 32-bit server's fcntl64 F_DUPFD_CLOEXEC copy keeps the slot counted" {
	local dir=$BATS_TEST_TMPDIR
	no_asan
	build32 "$dir"
	nm -D "$dir/tcloser32" | grep -q ' fcntl64' ||
		skip "this libc does not redirect fcntl to fcntl64"
	start_server srv env LD_PRELOAD="$dir/libconnlimit32.so" \
		CONNLIMIT_MAX_PER_IP=1 "$dir/tcloser32" -k dupfd
	hold_clients a 127.0.0.2 1
	drop_copy 1
	run ! try_from 127.0.0.2
	drop_copy 2
	hold_clients b 127.0.0.2 1
	assert_equal "$(kept_of b)" 1
}
