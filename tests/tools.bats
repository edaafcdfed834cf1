#!/usr/bin/env bats
# The operator tools: the connlimit launcher (each option and the variable
# it sets, the preload list, programs the library cannot protect), the
# status subcommand in its three formats, bad input, the examples, the man
# pages and make install.

bats_require_minimum_version 1.5.0
load test_helper

LAUNCHER=$REPO/scripts/connlimit
REPO_LIB=$REPO/libconnlimit.so
U32_MAX=4294967294

# A SANITIZE=1 library needs the ASan runtime first in LD_PRELOAD.
ASAN_RT=
if [[ ${SANITIZE:-0} == 1 ]]; then
	ASAN_RT=${PRELOAD% *}
fi

declare -ga SHM_FILES=() # /dev/shm files to remove in teardown
PUBLIC_DIR=              # a directory other users can read, if made
INIT_PIDFILE=            # the SysV example's pid file, if started

setup() {
	require_lib
	[[ -x $STATUS ]] || fail "$STATUS is missing: run make"
}

teardown() {
	if [[ -n $INIT_PIDFILE && -s $INIT_PIDFILE ]]; then
		kill -KILL "$(cat "$INIT_PIDFILE")" 2>/dev/null || true
	fi
	stop_spawned
	rm -f "${SHM_FILES[@]}"
	[[ -z $PUBLIC_DIR ]] || rm -rf "$PUBLIC_DIR"
}

# launch ARGS...: the launcher, with nothing preloaded but the ASan runtime.
launch() {
	env LD_PRELOAD="$ASAN_RT" ASAN_OPTIONS=detect_leaks=0 "$LAUNCHER" "$@"
}

# preload_of LIBS...: the LD_PRELOAD the launcher should hand on.
preload_of() {
	local list="$*"
	printf '%s\n' "${ASAN_RT:+$ASAN_RT }$list"
}

# env_of ARGS...: the environment that the launcher gives /usr/bin/env.
env_of() {
	run -0 --separate-stderr launch "$@" -- /usr/bin/env
}

# refuses OPTION VALUE...: each VALUE of OPTION is a usage error that names
# the option and the value, and nothing runs.
refuses() {
	local opt=$1 v
	shift
	for v in "$@"; do
		run -2 launch "$opt" "$v" -- /bin/echo RAN
		assert_output_lacks '^RAN$'
		assert_output_has "^connlimit: $opt: expected .*got '"
		grep -qF -- "'$v'" <<<"$output" || fail "value missing: $output"
	done
}

# new_zone: a zone name for this test in $ZONE, removed in teardown.
new_zone() {
	ZONE="tools-$$-$BATS_TEST_NUMBER"
	SHM_FILES+=("/dev/shm/connlimit.$ZONE")
}

# limited NAME ARGS...: tserver under the launcher with ARGS, as NAME.
limited() {
	local name=$1
	shift
	start_server "$name" env LD_PRELOAD="$ASAN_RT" \
		ASAN_OPTIONS=detect_leaks=0 "$LAUNCHER" "$@" -- "$BIN/tserver"
}

# busy_server: limit 2; 127.0.0.2 holds 2 (a third refused), 127.0.0.3 1.
busy_server() {
	limited srv -n 2 "$@"
	hold_clients a 127.0.0.2 3
	assert_equal "$(kept_of a)" 2
	hold_clients b 127.0.0.3 1
}

# cc_prog NAME [CFLAGS...]: a C program that prints "NAME ran".
cc_prog() {
	local name=$1
	shift
	printf '#include <stdio.h>\n%s\nint main(void) { puts("%s ran"); }\n' \
		"${EXTRA_C:-}" "$name" >"$BATS_TEST_TMPDIR/$name.c"
	gcc -o "$BATS_TEST_TMPDIR/$name" "$BATS_TEST_TMPDIR/$name.c" "$@" ||
		fail "cannot build $name"
	printf '%s\n' "$BATS_TEST_TMPDIR/$name"
}

# ---- options become variables ----

@test "connlimit -n sets CONNLIMIT_MAX_PER_IP and preloads the library" {
	env_of -n 5
	assert_output_has '^CONNLIMIT_MAX_PER_IP=5$'
	assert_output_has "^LD_PRELOAD=$(preload_of "$REPO_LIB")\$"
}

@test "connlimit --max-per-ip=N works like --max-per-ip N" {
	env_of --max-per-ip=0
	assert_output_has '^CONNLIMIT_MAX_PER_IP=0$'
	env_of --max-per-ip "$U32_MAX"
	assert_output_has "^CONNLIMIT_MAX_PER_IP=$U32_MAX\$"
}

@test "connlimit --exempt given twice joins the networks with a comma" {
	env_of --exempt 10.0.0.0/8 --exempt 2001:db8::/32
	assert_output_has '^CONNLIMIT_EXEMPT=10\.0\.0\.0/8, 2001:db8::/32$'
}

@test "connlimit --limit given twice joins the items into CONNLIMIT_LIMITS" {
	env_of --limit 10.1.0.0/16=50 --limit=2001:db8::/32=5
	assert_output_has '^CONNLIMIT_LIMITS=10\.1\.0\.0/16=50, 2001:db8::/32=5$'
}

@test "connlimit --ipv4-prefix and --ipv6-prefix set the prefix lengths" {
	env_of --ipv4-prefix 24 --ipv6-prefix=64
	assert_output_has '^CONNLIMIT_IPV4_PREFIX=24$'
	assert_output_has '^CONNLIMIT_IPV6_PREFIX=64$'
}

@test "connlimit --ports sets CONNLIMIT_PORTS" {
	env_of --ports '80, 443'
	assert_output_has '^CONNLIMIT_PORTS=80, 443$'
	env_of --ports '!8080'
	assert_output_has '^CONNLIMIT_PORTS=!8080$'
}

@test "connlimit --max-total sets CONNLIMIT_MAX_TOTAL" {
	env_of --max-total 1000
	assert_output_has '^CONNLIMIT_MAX_TOTAL=1000$'
}

@test "connlimit --action sets CONNLIMIT_ACTION" {
	env_of --action close
	assert_output_has '^CONNLIMIT_ACTION=close$'
}

@test "connlimit --message passes the text on unchanged" {
	env_of --action message --message 'Too many, sorry\r\n'
	assert_output_has '^CONNLIMIT_ACTION=message$'
	assert_output_has '^CONNLIMIT_MESSAGE=Too many, sorry\\r\\n$'
}

@test "connlimit --monitor sets CONNLIMIT_MODE=monitor" {
	env_of --monitor
	assert_output_has '^CONNLIMIT_MODE=monitor$'
}

@test "connlimit --log passes stderr and syslog and makes a file absolute" {
	env_of --log syslog
	assert_output_has '^CONNLIMIT_LOG=syslog$'
	cd "$BATS_TEST_TMPDIR"
	env_of --log=limits.log
	assert_output_has "^CONNLIMIT_LOG=$BATS_TEST_TMPDIR/limits\\.log\$"
}

@test "connlimit --log-level sets CONNLIMIT_LOG_LEVEL" {
	env_of --log-level debug
	assert_output_has '^CONNLIMIT_LOG_LEVEL=debug$'
}

@test "connlimit --strict sets CONNLIMIT_STRICT=1" {
	env_of --strict
	assert_output_has '^CONNLIMIT_STRICT=1$'
}

@test "connlimit --config makes a relative path absolute" {
	cd "$BATS_TEST_TMPDIR"
	echo 'max_per_ip = 3' >web.conf
	env_of --config web.conf
	assert_output_has "^CONNLIMIT_CONFIG=$BATS_TEST_TMPDIR/web\\.conf\$"
	assert_equal "$stderr" ""
}

@test "connlimit --config warns when the file cannot be read" {
	env_of --config "$BATS_TEST_TMPDIR/missing.conf"
	assert_output_has "^CONNLIMIT_CONFIG=$BATS_TEST_TMPDIR/missing\\.conf\$"
	grep -q 'warning: --config: cannot read' <<<"$stderr" ||
		fail "no warning: $stderr"
}

@test "connlimit --zone sets CONNLIMIT_ZONE" {
	local zone
	new_zone
	zone=$ZONE
	env_of --zone "$zone"
	assert_output_has "^CONNLIMIT_ZONE=$zone\$"
}

@test "connlimit --capacity sets CONNLIMIT_CAPACITY" {
	env_of --capacity 1024
	assert_output_has '^CONNLIMIT_CAPACITY=1024$'
}

@test "connlimit without options sets no CONNLIMIT_ variable" {
	env_of
	assert_output_lacks '^CONNLIMIT'
	assert_output_has "^LD_PRELOAD=$(preload_of "$REPO_LIB")\$"
}

@test "connlimit passes on CONNLIMIT_ variables from the environment" {
	CONNLIMIT_MAX_PER_IP=7 CONNLIMIT='mode=monitor' env_of
	assert_output_has '^CONNLIMIT_MAX_PER_IP=7$'
	assert_output_has '^CONNLIMIT=mode=monitor$'
}

@test "an option replaces the same variable from the environment" {
	CONNLIMIT_EXEMPT=192.0.2.0/24 CONNLIMIT_MAX_PER_IP=7 \
		env_of --exempt 10.0.0.0/8 -n 3
	assert_output_has '^CONNLIMIT_EXEMPT=10\.0\.0\.0/8$'
	assert_output_has '^CONNLIMIT_MAX_PER_IP=3$'
}

# ---- the preload list ----

@test "connlimit puts the library in front of an existing LD_PRELOAD" {
	local other=$BATS_TEST_TMPDIR/libother.so
	gcc -shared -fPIC -o "$other" -x c /dev/null
	run -0 env LD_PRELOAD="${ASAN_RT:+$ASAN_RT }$other" \
		ASAN_OPTIONS=detect_leaks=0 "$LAUNCHER" -- printenv LD_PRELOAD
	assert_equal "$output" "$(preload_of "$REPO_LIB" "$other")"
}

@test "connlimit keeps a sanitizer runtime first in LD_PRELOAD" {
	local fake=$BATS_TEST_TMPDIR/libasan.so.8
	gcc -shared -fPIC -o "$fake" -x c /dev/null
	run -0 env LD_PRELOAD="${ASAN_RT:+$ASAN_RT }$fake" \
		ASAN_OPTIONS=detect_leaks=0 "$LAUNCHER" -- printenv LD_PRELOAD
	assert_equal "$output" "${ASAN_RT:+$ASAN_RT }$fake $REPO_LIB"
}

@test "connlimit does not preload the library twice" {
	run -0 env LD_PRELOAD="$(preload_of "$REPO_LIB")" \
		ASAN_OPTIONS=detect_leaks=0 "$LAUNCHER" -- printenv LD_PRELOAD
	assert_equal "$output" "$(preload_of "$REPO_LIB")"
}

@test "connlimit replaces another copy of the library in LD_PRELOAD" {
	local old=$BATS_TEST_TMPDIR/old/libconnlimit.so
	mkdir "${old%/*}"
	cp "$REPO_LIB" "$old"
	run -0 env LD_PRELOAD="$(preload_of "$old")" \
		ASAN_OPTIONS=detect_leaks=0 "$LAUNCHER" -- printenv LD_PRELOAD
	assert_equal "$output" "$(preload_of "$REPO_LIB")"
}

@test "connlimit --library preloads the file it names" {
	local copy=$BATS_TEST_TMPDIR/libcopy.so
	cp "$REPO_LIB" "$copy"
	run -0 launch --library "$copy" -- printenv LD_PRELOAD
	assert_equal "$output" "$(preload_of "$copy")"
}

@test "connlimit fails clearly when the library is not beside it" {
	mkdir "$BATS_TEST_TMPDIR/scripts"
	cp "$LAUNCHER" "$BATS_TEST_TMPDIR/scripts/"
	run -1 "$BATS_TEST_TMPDIR/scripts/connlimit" -- /bin/echo RAN
	assert_output_has "cannot find the library at $BATS_TEST_TMPDIR/libconnlimit\\.so"
	assert_output_lacks '^RAN$'
	run -1 launch --library "$BATS_TEST_TMPDIR/none.so" -- /bin/echo RAN
	assert_output_has "^connlimit: --library: cannot read"
}

# ---- running the program ----

@test "connlimit finds the program through PATH" {
	mkdir "$BATS_TEST_TMPDIR/bin"
	printf '#!/bin/sh\necho "myprog ran: $*"\n' >"$BATS_TEST_TMPDIR/bin/myprog"
	chmod +x "$BATS_TEST_TMPDIR/bin/myprog"
	PATH=$BATS_TEST_TMPDIR/bin:$PATH run -0 --separate-stderr launch myprog x
	assert_equal "$output" "myprog ran: x"
	assert_equal "$stderr" ""
}

@test "connlimit execs the program in its own process" {
	spawn p env LD_PRELOAD="$ASAN_RT" \
		ASAN_OPTIONS=detect_leaks=0 "$LAUNCHER" -n 3 -- \
		/bin/sh -c 'echo "pid=$$"'
	wait_exit p
	assert_equal "$EXIT_STATUS" 0
	assert_file_has "$(out_of p)" "^pid=$(pid_of p)\$"
}

@test "connlimit passes the program its arguments unchanged" {
	run -0 launch -n 3 printf '[%s]\n' -n 5 'a b' '' --zone
	assert_equal "$output" "$(printf '[%s]\n' -n 5 'a b' '' --zone)"
}

@test "connlimit passes the program's exit status on" {
	run -3 launch -- /bin/sh -c 'exit 3'
}

@test "connlimit reports a program that is not found with status 127" {
	run -127 launch -- no-such-program-here
	assert_output_has '^connlimit: no-such-program-here: command not found$'
}

@test "connlimit reports a file that is not executable with status 126" {
	touch "$BATS_TEST_TMPDIR/plain"
	run -126 launch -- "$BATS_TEST_TMPDIR/plain"
	assert_output_has 'plain: not an executable file$'
}

# ---- bad input ----

@test "connlimit without a program fails with a usage message" {
	run -2 launch -n 3
	assert_output_has '^connlimit: no program to run$'
	assert_output_has "connlimit --help"
	run -2 launch
	assert_output_has '^connlimit: no program to run$'
}

@test "connlimit rejects an unknown option" {
	run -2 launch --max-per-client 3 -- /bin/echo RAN
	assert_output_has "^connlimit: unknown option '--max-per-client'$"
	assert_output_lacks '^RAN$'
}

@test "connlimit rejects an option without its value" {
	run -2 launch --exempt
	assert_output_has '^connlimit: --exempt needs a value$'
}

@test "connlimit rejects a value for an option that takes none" {
	run -2 launch --monitor=yes -- /bin/echo RAN
	assert_output_has '^connlimit: --monitor takes no value$'
}

@test "connlimit -n rejects anything but an integer from 0 to 4294967294" {
	refuses -n ten -1 1e3 '' ' 5' 4294967295 99999999999999999999
	refuses --max-per-ip 3x
}

@test "connlimit --ipv4-prefix and --ipv6-prefix reject lengths out of range" {
	refuses --ipv4-prefix 33 -1 x
	refuses --ipv6-prefix 129 ''
}

@test "connlimit --max-total and --capacity reject bad numbers" {
	refuses --max-total many 4294967295
	refuses --capacity 63 16777217 0x100
}

@test "connlimit --limit rejects items that are not CIDR=N" {
	refuses --limit 10.0.0.0/8 =5 10.0.0.0/8=x 10.0.0.0/8=-1
}

@test "connlimit --ports rejects anything but ports from 1 to 65535" {
	refuses --ports 0 65536 http 80-90 '80,,443' ''
}

@test "connlimit --action and --log-level reject unknown words" {
	refuses --action drop 'reset close' ''
	refuses --log-level verbose 'warn info'
}

@test "connlimit --zone rejects names the library would refuse" {
	refuses --zone a/b .hidden '' 'a b' \
		012345678901234567890123456789012345678901234567
}

@test "connlimit rejects empty networks, log destinations and files" {
	refuses --exempt ''
	refuses --log ''
	refuses --config ''
}

# ---- programs the library cannot protect ----

@test "a dynamically linked program starts without a warning" {
	local prog
	prog=$(cc_prog dyn)
	run -0 --separate-stderr launch --require -- "$prog"
	assert_equal "$output" "dyn ran"
	assert_equal "$stderr" ""
}

@test "a statically linked program draws a warning and still runs" {
	local prog
	prog=$(cc_prog stat -static)
	run -0 --separate-stderr launch -- "$prog"
	assert_equal "$output" "stat ran"
	grep -q "$prog: it is statically linked" <<<"$stderr" ||
		fail "no warning: $stderr"
	grep -q "warning: $prog will run without connection limits" \
		<<<"$stderr" || fail "no summary: $stderr"
}

@test "connlimit --require refuses to start a statically linked program" {
	local prog
	prog=$(cc_prog stat -static)
	run -1 launch --require -- "$prog"
	assert_output_lacks 'stat ran'
	assert_output_has "^connlimit: refusing to start $prog"
}

@test "a program with a Go build-info section draws a warning" {
	local prog
	prog=$(EXTRA_C='__attribute__((section(".go.buildinfo"), used))
		static const char bi[32] = "\xff Go buildinf:";' cc_prog fakego)
	run -1 launch --require -- "$prog"
	assert_output_has "$prog: it is a Go program"
}

@test "a program with a Go build ID note draws a warning" {
	local prog
	prog=$(EXTRA_C='__attribute__((section(".note.go.buildid"), used))
		static const char id[16] = "Go";' cc_prog fakego)
	run -1 launch --require -- "$prog"
	assert_output_has "$prog: it is a Go program"
}

@test "a program built with Go draws a warning" {
	command -v go >/dev/null || skip "no Go toolchain (go) installed"
	local dir=$BATS_TEST_TMPDIR/gohello
	mkdir "$dir"
	printf 'package main\nfunc main() { println("go ran") }\n' >"$dir/main.go"
	(cd "$dir" && GOCACHE=$dir/cache GO111MODULE=off \
		go build -o hello main.go) || fail "go build failed"
	run -1 launch --require -- "$dir/hello"
	assert_output_has "$dir/hello: it is a Go program"
}

@test "a set-user-ID program of another user draws a warning" {
	[[ $(id -u) == 0 ]] || skip "needs root to give a file to another user"
	local prog
	prog=$(cc_prog suid)
	chown 65534 "$prog"
	chmod u+s "$prog"
	run -1 launch --require -- "$prog"
	assert_output_has "$prog: it is set-user-ID \\(owner uid 65534\\)"
}

@test "a set-user-ID program of the caller's own draws no warning" {
	local prog
	prog=$(cc_prog suid)
	chmod u+s "$prog"
	run -0 --separate-stderr launch --require -- "$prog"
	assert_equal "$output" "suid ran"
	assert_equal "$stderr" ""
}

@test "a set-group-ID program of another group draws a warning" {
	[[ $(id -u) == 0 ]] || skip "needs root to give a file to another group"
	local prog
	prog=$(cc_prog sgid)
	chgrp 65534 "$prog"
	chmod g+s "$prog"
	run -1 launch --require -- "$prog"
	assert_output_has "$prog: it is set-group-ID \\(group gid 65534\\)"
}

@test "a program with file capabilities draws a warning for a user but root" {
	[[ $(id -u) == 0 ]] || skip "needs root to set capabilities"
	command -v setpriv >/dev/null || skip "setpriv (util-linux) missing"
	local prog
	PUBLIC_DIR=$(mktemp -d /tmp/connlimit-tools.XXXXXX)
	chmod 755 "$PUBLIC_DIR"
	mkdir -m 755 "$PUBLIC_DIR/scripts"
	install -m 755 "$LAUNCHER" "$PUBLIC_DIR/scripts/connlimit"
	install -m 755 "$REPO_LIB" "$PUBLIC_DIR/libconnlimit.so"
	prog=$PUBLIC_DIR/capprog
	install -m 755 "$(cc_prog capprog)" "$prog"
	setcap cap_net_bind_service+ep "$prog" 2>/dev/null ||
		skip "setcap cannot label files in /tmp"
	run -1 setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$PUBLIC_DIR/scripts/connlimit" --require -- "$prog"
	assert_output_has "$prog: it has file capabilities \\(cap_net_bind_service"
	run -0 --separate-stderr launch --require -- "$prog"
	assert_equal "$stderr" ""
}

@test "a program built for another word size draws a warning" {
	local prog=$BATS_TEST_TMPDIR/elf32
	# An i386 ELF header whose one program header is PT_INTERP.
	{
		printf '\177ELF\001\001\001\000\000\000\000\000\000\000\000\000'
		printf '\002\000\003\000\001\000\000\000\000\000\000\000'
		printf '\064\000\000\000\000\000\000\000\000\000\000\000'
		printf '\064\000\040\000\001\000\050\000\000\000\000\000'
		printf '\003\000\000\000'
		head -c 28 /dev/zero
	} >"$prog"
	chmod +x "$prog"
	run -1 launch --require -- "$prog"
	assert_output_has "$prog: it is built for 32-bit i386 and .* the loader skips the library"
	assert_output_lacks 'statically linked'
}

@test "a script whose interpreter is static draws a warning" {
	local interp script=$BATS_TEST_TMPDIR/script
	interp=$(cc_prog interp -static)
	printf '#!%s\n' "$interp" >"$script"
	chmod +x "$script"
	run -1 launch --require -- "$script"
	assert_output_has "$script: its interpreter $interp: it is statically linked"
}

@test "a script run through env is judged by the program env finds" {
	local script=$BATS_TEST_TMPDIR/script
	mkdir "$BATS_TEST_TMPDIR/bin"
	cp "$(cc_prog interp -static)" "$BATS_TEST_TMPDIR/bin/myinterp"
	printf '#!/usr/bin/env -S myinterp -x\n' >"$script"
	chmod +x "$script"
	PATH=$BATS_TEST_TMPDIR/bin:$PATH run -1 launch --require -- "$script"
	assert_output_has "its interpreter $BATS_TEST_TMPDIR/bin/myinterp: it is statically linked"
}

# ---- the settings reach the library ----

@test "a server under connlimit -n refuses the client over the limit" {
	limited srv -n 1
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -n 2
	assert_output_has '^kept=1 refused=1$'
}

@test "a server under connlimit --monitor refuses nobody and counts it" {
	limited srv -n 1 --monitor
	hold_clients a 127.0.0.2 3
	assert_equal "$(kept_of a)" 3
	run -0 "$LAUNCHER" status "$(pid_of srv)"
	assert_output_has ' refused=0 monitor_would_refuse=2 '
}

@test "a server under connlimit --config takes its limit from the file" {
	cd "$BATS_TEST_TMPDIR"
	echo 'max_per_ip = 1' >limits.conf
	limited srv --config limits.conf
	run -0 "$BIN/tclient" -s 127.0.0.2 -p "$PORT" -n 2
	assert_output_has '^kept=1 refused=1$'
}

# ---- status ----

@test "connlimit status shows the limit, the totals and each client" {
	busy_server
	run -0 "$LAUNCHER" status "$(pid_of srv)"
	assert_output_has "^zone=pid:$(pid_of srv) .*max_per_ip=2 .*clients=2\$"
	assert_output_has '^counters admitted=3 refused=1 monitor_would_refuse=0 released_close=0 released_kernel=0 table_full=0 '
	assert_output_has '^client=127\.0\.0\.2 open=2 .*refused=1$'
	assert_output_has '^client=127\.0\.0\.3 open=1 .*refused=0$'
}

@test "connlimit status lists clients with most connections first" {
	limited srv -n 5
	hold_clients a 127.0.0.3 1
	hold_clients b 127.0.0.2 3
	hold_clients c 127.0.0.4 2
	run -0 "$LAUNCHER" status "$(pid_of srv)"
	assert_equal "$(grep '^client=' <<<"$output" | cut -d' ' -f1-2)" \
		"$(printf 'client=%s\n' '127.0.0.2 open=3' '127.0.0.4 open=2' \
			'127.0.0.3 open=1')"
}

@test "connlimit status --top 1 shows one client but counts them all" {
	busy_server
	run -0 "$LAUNCHER" status --top 1 "$(pid_of srv)"
	assert_output_has ' clients=2$'
	assert_equal "$(grep -c '^client=' <<<"$output")" 1
	assert_output_has '^client=127\.0\.0\.2 open=2 '
	run -0 "$LAUNCHER" status --top=1 "$(pid_of srv)"
	assert_equal "$(grep -c '^client=' <<<"$output")" 1
}

@test "connlimit status --json gives one object with the same counts" {
	busy_server
	run -0 "$LAUNCHER" status --json "$(pid_of srv)"
	run -0 "$PYTHON" -c '
import json, sys
d = json.loads(sys.argv[1])
c = d["counters"]
print(d["max_per_ip"], d["counted"], d["client_count"], c["admitted"],
      c["refused"], c["monitor_would_refuse"], c["released_close"],
      c["released_kernel"], c["table_full"])
for r in d["clients"]:
    print(r["client"], r["open"], r["refused"])' "$output"
	assert_equal "$output" "$(printf '%s\n' '2 3 2 3 1 0 0 0 0' \
		'127.0.0.2 2 1' '127.0.0.3 1 0')"
}

# prom_check FILE: every sample has HELP and TYPE before it, is well formed,
# and counters end in _total; prints what is wrong.
prom_check() {
	awk '
	/^# HELP / { help[$3] = 1; next }
	/^# TYPE / { type[$3] = $4; next }
	/^#/ || /^$/ { bad = bad "stray line: " $0 "\n"; next }
	{
		name = $0
		sub(/[{ ].*/, "", name)
		if (!(name in help) || !(name in type))
			bad = bad "no HELP or TYPE before: " $0 "\n"
		if (type[name] == "counter" && name !~ /_total$/)
			bad = bad "counter without _total: " name "\n"
		lv = "[a-z_]+=\"([^\"\\\\]|\\\\.)*\""
		if ($0 !~ "^[a-z_]+([{]" lv "(," lv ")*[}])? [0-9]+$")
			bad = bad "malformed: " $0 "\n"
	}
	END { printf "%s", bad }' "$1"
}

@test "connlimit status --prometheus gives HELP and TYPE for every sample" {
	local prom=$BATS_TEST_TMPDIR/metrics.prom
	busy_server
	"$LAUNCHER" status --prometheus "$(pid_of srv)" >"$prom"
	assert_equal "$(prom_check "$prom")" ""
	assert_equal "$(tail -c 1 "$prom" | od -An -c | tr -d ' ')" '\n'
	assert_file_has "$prom" "^connlimit_max_per_ip\\{zone=\"pid:$(pid_of srv)\"\\} 2\$"
	assert_file_has "$prom" '^connlimit_events_total\{zone="[^"]*",event="refused"\} 1$'
	assert_file_has "$prom" '^connlimit_client_open\{zone="[^"]*",client="127\.0\.0\.2"\} 2$'
	assert_file_has "$prom" '^connlimit_clients\{zone="[^"]*"\} 2$'
}

@test "connlimit status --prometheus escapes quotes and backslashes in labels" {
	local zone odd='we"ird\name'
	new_zone
	zone=$ZONE
	limited srv --zone "$zone"
	SHM_FILES+=("/dev/shm/connlimit.$odd")
	cp "/dev/shm/connlimit.$zone" "/dev/shm/connlimit.$odd"
	run -0 "$LAUNCHER" status --prometheus "$odd"
	assert_output_has '^connlimit_counted\{zone="we\\"ird\\\\name"\} 0$'
	run -0 "$LAUNCHER" status --json "$odd"
	assert_output_has '^\{"zone":"we\\"ird\\\\name",'
}

@test "connlimit status ZONE reads a named zone" {
	local zone
	new_zone
	zone=$ZONE
	busy_server --zone "$zone"
	run -0 "$LAUNCHER" status "$zone"
	assert_output_has "^zone=$zone .*max_per_ip=2 .*clients=2\$"
	assert_output_has '^client=127\.0\.0\.2 open=2 '
}

@test "connlimit status PID of a process with a named zone shows that zone" {
	local zone
	new_zone
	zone=$ZONE
	busy_server --zone "$zone"
	run -0 "$LAUNCHER" status "$(pid_of srv)"
	assert_output_has "^zone=$zone .*clients=2\$"
}

@test "connlimit status without a PID or zone fails and lists the candidates" {
	limited srv
	run -2 "$LAUNCHER" status
	assert_output_has '^connlimit: status: name a PID or a zone$'
	assert_output_has '^connlimit:   processes using libconnlimit: [0-9]'
	# The list stops at 20 processes; other tests may have servers too.
	grep -q 'processes using.*, \.\.\.$' <<<"$output" ||
		assert_output_has " $(pid_of srv) \\(tserver\\)"
	run -2 "$LAUNCHER" status --json
	assert_output_has '^connlimit: status: name a PID or a zone$'
}

@test "connlimit status rejects an unknown option" {
	run -2 "$LAUNCHER" status --yaml 1
	assert_output_has "^connlimit: status: unknown option '--yaml'$"
}

@test "connlimit status of a process without the library fails clearly" {
	spawn plain sleep 30
	run -1 "$LAUNCHER" status "$(pid_of plain)"
	assert_output_has "not running under libconnlimit: $(pid_of plain)\$"
}

@test "connlimit status of a server whose settings were refused says so" {
	CONNLIMIT_MAX_PER_IP=ten limited srv
	run -1 "$LAUNCHER" status "$(pid_of srv)"
	assert_output_has 'libconnlimit is loaded but has no zone'
}

@test "connlimit status of a process that does not exist fails clearly" {
	local pid=$(($(cat /proc/sys/kernel/pid_max) + 1))
	run -1 "$LAUNCHER" status "$pid"
	assert_output_has "no such process: $pid\$"
}

@test "connlimit status of a zone that does not exist fails clearly" {
	run -1 "$LAUNCHER" status "tools-no-such-zone-$$"
	assert_output_has "no such zone: tools-no-such-zone-$$\$"
	run -2 "$LAUNCHER" status ../etc/passwd
	assert_output_has 'not a zone name: \.\./etc/passwd$'
}

@test "connlimit status --top needs an integer from 1 to 4294967295" {
	local v
	for v in 0 -1 x '' 4294967296; do
		run -2 "$LAUNCHER" status --top "$v" 1
		assert_output_has "^connlimit: status: --top: expected an integer from 1 to 4294967295, got '$v'\$"
	done
	run -2 "$LAUNCHER" status 1 --top
	assert_output_has '^connlimit: status: --top needs a value$'
}

@test "connlimit status takes one format and one PID or zone" {
	run -2 "$LAUNCHER" status --json --prometheus 1
	assert_output_has 'choose one of --json and --prometheus'
	run -2 "$LAUNCHER" status 1 2
	assert_output_has "name one PID or zone, not '1' and '2'"
}

@test "connlimit status --help describes the subcommand" {
	run -0 "$LAUNCHER" status --help
	assert_output_has '^Usage: connlimit status \[--json \| --prometheus\] \[--top N\] PID\|ZONE$'
}

@test "connlimit-status names what is wrong with its arguments" {
	run -2 "$STATUS" --yaml 1
	assert_output_has '^connlimit-status: unknown option or missing value: --yaml$'
	run -2 "$STATUS"
	assert_output_has '^connlimit-status: name a PID or a zone$'
	run -2 "$STATUS" 1 2
	assert_output_has '^connlimit-status: name one PID or zone, not also 2$'
}

# ---- version and help ----

@test "connlimit version prints the version and where the library is" {
	run -0 "$LAUNCHER" version
	assert_output_has '^connlimit [0-9]+\.[0-9]+\.[0-9]+$'
	assert_output_has "^library: $REPO_LIB\$"
	assert_output_has "^status tool: $STATUS\$"
	run -0 "$LAUNCHER" --version
	assert_output_has '^connlimit [0-9]+\.[0-9]+\.[0-9]+$'
	run -2 "$LAUNCHER" version extra
	assert_output_has '^connlimit: version takes no arguments$'
}

@test "connlimit --help lists every option" {
	local opt
	run -0 "$LAUNCHER" --help
	assert_output_has '^Usage: connlimit \[OPTION\.\.\.\] \[--\] PROGRAM \[ARG\.\.\.\]$'
	for opt in -n --max-per-ip --limit --exempt --ipv4-prefix --ipv6-prefix \
		--ports --max-total --action --message --monitor --config \
		--zone --capacity --strict --log --log-level --require \
		--library --help --version; do
		assert_output_has "^ +(-n, |-h, )?$opt([ ,]|\$)"
	done
	run -0 "$LAUNCHER" help
	assert_output_has '^Usage: connlimit '
	run -0 "$LAUNCHER" -h
	assert_output_has '^Usage: connlimit '
}

# ---- man pages, examples, install ----

@test "the man pages render without warnings" {
	command -v man >/dev/null || skip "man (man-db) is not installed"
	local page
	for page in "$REPO/man/connlimit.1" "$REPO/man/libconnlimit.7"; do
		run -0 --separate-stderr env MANWIDTH=80 man --warnings -l "$page"
		assert_equal "$stderr" ""
		assert_output_has '^(CONNLIMIT\(1\)|LIBCONNLIMIT\(7\))'
	done
}

@test "the shell scripts pass ShellCheck" {
	command -v shellcheck >/dev/null || skip "shellcheck is not installed"
	run -0 shellcheck "$LAUNCHER" "$REPO/examples/docker/run.sh" \
		"$REPO/examples/sysv/myserver"
}

@test "the example settings files parse" {
	[[ -x $BIN/tpolicy ]] || skip "tests/bin/tpolicy is not built"
	local conf=$BATS_TEST_TMPDIR/k8s.conf
	run -0 "$BIN/tpolicy" -s "$REPO/examples/connlimit.conf"
	assert_output_has '^max_per_ip=20$'
	sed -n '/connlimit.conf: |/,/^---/{/^    /s/^    //p}' \
		"$REPO/examples/kubernetes/connlimit.yaml" >"$conf"
	run -0 "$BIN/tpolicy" -s "$conf"
	assert_output_has '^max_per_ip=20$'
}

# nft -c checks a ruleset against the kernel without loading it; in a
# private network namespace nothing of the host's is touched either way.
@test "the nftables example is a valid ruleset" {
	command -v nft >/dev/null || skip "nft is not installed"
	((EUID == 0)) || skip "needs root for a network namespace"
	run -0 unshare -n nft -c -f "$REPO/examples/nftables/flood.nft"
}

# The example in front of a protected server, in a private namespace:
# 300 connects as fast as they go from one address pass the rate of 50
# a second (bursts of 100), so the kernel turns some away at connect
# while the library resets those over its limit; an address put in
# exempt4 is never turned away by the kernel.
@test "the nftables example stops a fast reconnector before the library" {
	command -v nft >/dev/null || skip "nft is not installed"
	((EUID == 0)) || skip "needs root for a network namespace"
	run -0 in_netns '
		start_server srv preload_env CONNLIMIT_MAX_PER_IP=2 \
			"$BIN/tserver"
		sed "s/dport 8080/dport $PORT/" \
			"$BATS_TEST_DIRNAME/../examples/nftables/flood.nft" |
			nft -f -
		nft add element inet connlimit_flood exempt4 { 127.0.0.4 }
		echo "== fast"
		"$BIN/tclient" -s 127.0.0.2 -p "$PORT" -n 300 -t 1000
		echo "== exempt"
		"$BIN/tclient" -s 127.0.0.4 -p "$PORT" -n 300 -t 1000
		echo "== other"
		"$BIN/tclient" -s 127.0.0.3 -p "$PORT"'
	local fast exempt
	fast=$(sed -n '/^== fast/,/^== exempt/p' <<<"$output")
	exempt=$(sed -n '/^== exempt/,/^== other/p' <<<"$output")
	grep -q 'refused reason=connect-error' <<<"$fast" ||
		fail "the kernel turned nothing away: $(tail -n 3 <<<"$fast")"
	grep -q 'refused reason=\(reset\|eof\)' <<<"$fast" ||
		fail "the library refused nothing: $(tail -n 3 <<<"$fast")"
	! grep -q 'refused reason=connect-error' <<<"$exempt" ||
		fail "an exempt4 address was turned away by the kernel"
	assert_output_has '^kept=1 refused=0$'
}

@test "the nginx example is a valid nginx configuration" {
	command -v nginx >/dev/null || skip "nginx is not installed"
	run -0 nginx -t -q -c "$REPO/examples/nginx/nginx.conf"
}

@test "the SysV init example starts, reports and stops a server" {
	local defaults=$BATS_TEST_TMPDIR/defaults init=$REPO/examples/sysv/myserver
	INIT_PIDFILE=$BATS_TEST_TMPDIR/myserver.pid
	cat >"$defaults" <<-EOF
		DAEMON=$BIN/tserver
		DAEMON_ARGS=
		LAUNCHER=$LAUNCHER
		LAUNCHER_ARGS="--require -n 2"
		PIDFILE=$INIT_PIDFILE
		LOGFILE=$BATS_TEST_TMPDIR/myserver.log
	EOF
	export DEFAULTS_FILE=$defaults LD_PRELOAD=$ASAN_RT \
		ASAN_OPTIONS=detect_leaks=0
	run -0 "$init" start
	assert_output_has '^Starting myserver: myserver \(pid [0-9]+\)\.$'
	assert_equal "$(readlink "/proc/$(cat "$INIT_PIDFILE")/exe")" "$BIN/tserver"
	run -0 "$init" status
	assert_output_has '^myserver is running'
	assert_output_has ' max_per_ip=2 '
	run -0 "$init" stop
	run -3 "$init" status
	assert_output_has '^myserver is not running$'
}

@test "the SysV init example will not start a daemon it cannot protect" {
	local defaults=$BATS_TEST_TMPDIR/defaults init=$REPO/examples/sysv/myserver
	INIT_PIDFILE=$BATS_TEST_TMPDIR/myserver.pid
	cat >"$defaults" <<-EOF
		DAEMON=$(cc_prog stat -static)
		LAUNCHER=$LAUNCHER
		LAUNCHER_ARGS="--require"
		PIDFILE=$INIT_PIDFILE
		LOGFILE=$BATS_TEST_TMPDIR/myserver.log
	EOF
	DEFAULTS_FILE=$defaults run -1 "$init" start
	assert_output_has 'refusing to start .*stat'
	[[ ! -e $INIT_PIDFILE ]] || fail "pid file left behind"
}

# install_to DIR: make install into DIR with PREFIX=/usr, installing the
# library and connlimit-status as built (never rebuilding them under other
# tests that use them).
install_to() {
	make -s -C "$REPO" -o libconnlimit.so -o connlimit-status install \
		DESTDIR="$1" PREFIX=/usr >/dev/null || fail "make install failed"
}

@test "make install puts the tools, the library and the man pages in place" {
	local d=$BATS_TEST_TMPDIR/root
	install_to "$d"
	[[ -x $d/usr/bin/connlimit && -x $d/usr/bin/connlimit-status ]] ||
		fail "tools missing: $(find "$d")"
	[[ -f $d/usr/lib/libconnlimit.so ]] || fail "library missing"
	assert_equal "$(stat -c %a "$d/usr/share/man/man1/connlimit.1")" 644
	assert_equal "$(stat -c %a "$d/usr/share/man/man7/libconnlimit.7")" 644
	assert_file_has "$d/usr/share/man/man7/libconnlimit.7" '/usr/lib/libconnlimit\.so'
	assert_file_lacks "$d/usr/share/man/man7/libconnlimit.7" '@LIBDIR@'
}

@test "the installed launcher uses the installed library and status tool" {
	local d=$BATS_TEST_TMPDIR/root
	install_to "$d"
	run -0 env LD_PRELOAD="$ASAN_RT" ASAN_OPTIONS=detect_leaks=0 \
		"$d/usr/bin/connlimit" -- printenv LD_PRELOAD
	assert_equal "$output" "$(preload_of "$d/usr/lib/libconnlimit.so")"
	run -0 "$d/usr/bin/connlimit" version
	assert_output_has "^library: $d/usr/lib/libconnlimit\\.so\$"
	assert_output_has "^status tool: $d/usr/bin/connlimit-status\$"
	run -1 "$d/usr/bin/connlimit" status "tools-no-such-zone-$$"
	assert_output_has '^connlimit-status: no such zone'
}

@test "make uninstall removes what make install put in place" {
	local d=$BATS_TEST_TMPDIR/root
	install_to "$d"
	make -s -C "$REPO" uninstall DESTDIR="$d" PREFIX=/usr >/dev/null
	assert_equal "$(find "$d" -type f)" ""
}
