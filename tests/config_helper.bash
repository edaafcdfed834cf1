# Helpers for config.bats: a configuration file and the ways tools change
# it, servers that read it, connection attempts that wait for a reload,
# clients that hold connections and check that they still echo, and a
# server run in secure-execution mode.
#
# Usage: in a .bats file, `load test_helper` then `load config_helper`;
# call config_setup from setup and config_teardown from teardown.

declare -ga CONFIG_ZONES=() # named zones to remove in teardown
declare -ga CONFIG_DIRS=()  # directories outside BATS_TEST_TMPDIR

config_setup() {
	require_lib
	CONF=$BATS_TEST_TMPDIR/connlimit.conf
	export CONF
}

config_teardown() {
	local zone dir
	stop_spawned
	for zone in "${CONFIG_ZONES[@]}"; do
		rm -f "/dev/shm/connlimit.$zone"
	done
	for dir in "${CONFIG_DIRS[@]}"; do
		rm -rf "$dir"
	done
	CONFIG_ZONES=()
	CONFIG_DIRS=()
}

# --- the file ---

# conf_replace LINE...: write a temporary file beside $CONF and rename it
# over $CONF, as most deployment tools do.
conf_replace() {
	printf '%s\n' "$@" >"$CONF.tmp"
	mv -f "$CONF.tmp" "$CONF"
}

# conf_edit LINE...: rewrite $CONF in place (same inode), as vi and
# `sed -i`-less editors do.
conf_edit() {
	printf '%s\n' "$@" >"$CONF"
}

inode_of() {
	stat -L -c %i "$1"
}

# ConfigMap volumes: DIR/config -> ..data/config, ..data -> ..TIMESTAMP.
# configmap_init DIR LINE... / configmap_swap DIR LINE...: the first
# version, then an update done the way the kubelet does it.
configmap_init() {
	local dir=$1
	shift
	mkdir -p "$dir"
	configmap_version "$dir" "$@"
	ln -s ..data/config "$dir/config"
}

configmap_swap() {
	local dir=$1 old
	shift
	old=$(readlink "$dir/..data")
	configmap_version "$dir" "$@"
	rm -rf "${dir:?}/$old"
}

configmap_version() {
	local dir=$1 stamp
	shift
	CONFIGMAP_N=$((${CONFIGMAP_N:-0} + 1))
	stamp=..2026_12_04_16_00_0$CONFIGMAP_N.00000000$CONFIGMAP_N
	mkdir "$dir/$stamp"
	printf '%s\n' "$@" >"$dir/$stamp/config"
	ln -s "$stamp" "$dir/..data_tmp"
	mv -T "$dir/..data_tmp" "$dir/..data"
}

# --- servers ---

# conf_server NAME [VAR=VALUE...] [-- TSERVER_ARGS...]: tserver under the
# library, reading $CONF, with the given CONNLIMIT_* variables.
conf_server() {
	local name=$1
	shift
	env_server "$name" CONNLIMIT_CONFIG="$CONF" "$@"
}

# env_server NAME [VAR=VALUE...] [-- TSERVER_ARGS...]: the same without
# a file.
env_server() {
	local name=$1 vars=()
	shift
	while (($#)) && [[ $1 != -- ]]; do
		vars+=("$1")
		shift
	done
	(($#)) && shift
	start_server "$name" preload_env "${vars[@]}" "$BIN/tserver" "$@"
}

# new_zone: sets ZONE to a zone name for this test, removed in teardown.
# (Not printed: $(new_zone) would register it in a subshell only.)
new_zone() {
	ZONE="bats-config-$$-${BATS_SUITE_TEST_NUMBER:-0}-$RANDOM"
	CONFIG_ZONES+=("$ZONE")
}

# open_on NAME: connections tserver NAME accepted and has not yet closed.
open_on() {
	local out accepts closes
	out=$(out_of "$1")
	accepts=$(count_lines "$out" '^accept fd=')
	closes=$(count_lines "$out" '^close fd=')
	echo $((accepts - closes))
}

open_is() {
	[[ $(open_on "$1") == "$2" ]]
}

# --- connection attempts ---

# attempt NAME SRC N [TCLIENT_ARGS...]: N connections from SRC to $PORT,
# one after the other, all closed at the end; prints how many were kept
# once server NAME has closed its side of them again. Every accept lets
# the library poll the file.
attempt() {
	local name=$1 src=$2 n=$3 before out
	shift 3
	before=$(open_on "$name")
	# shellcheck disable=SC2153 # start_server sets PORT
	out=$("$BIN/tclient" -s "$src" -p "$PORT" -n "$n" "$@") ||
		fail "tclient failed: $out"
	wait_for 3 open_is "$name" "$before" ||
		fail "$name still holds $(open_on "$name") (was $before)"
	sed -n 's/^kept=\([0-9]*\) .*/\1/p' <<<"$out"
}

# until_kept NAME SRC N K: repeat `attempt NAME SRC N` until K are kept,
# for at most about 3.5 s (the file is read at most once a second, and
# the README promises a change is in force within 2 s).
until_kept() {
	local name=$1 src=$2 n=$3 want=$4 got tries
	for tries in 1 2 3 4 5 6 7 8 9 10 11 12 13 14; do
		got=$(attempt "$name" "$src" "$n") || return 1
		[[ $got == "$want" ]] && return 0
		((tries < 14)) && sleep 0.25
	done
	fail "$src: kept $got of $n, expected $want (for 3.5 s)"
}

# until_logged NAME ERE: connections from 127.0.0.9 (a client no test
# limits) until server NAME logged a line matching ERE after the prefix,
# for at most about 3.5 s.
until_logged() {
	local name=$1 ere=$2 tries
	for tries in 1 2 3 4 5 6 7 8 9 10 11 12 13 14; do
		logged "$name" "$ere" && return 0
		attempt "$name" 127.0.0.9 1 >/dev/null || return 1
		((tries < 14)) && sleep 0.25
	done
	logged "$name" "$ere" ||
		fail "$name never logged '$ere': $(cat "$(err_of "$name")")"
}

# logged NAME ERE: a line of NAME's stderr matches ERE after the prefix.
logged() {
	file_has "$(err_of "$1")" "^connlimit\\[[0-9]+\\]: $2"
}

# settle: wait until the library may poll the file again, so that the
# next accept is sure to read it.
settle() {
	sleep 1.1
}

# --- clients that prove their connections still work ---

# echo_hold NAME SRC N: a client holding N connections from SRC to $PORT
# (each waits for tserver's greeting). It reads commands from a fifo:
# `holder_say NAME ping` makes it send a line on every open connection
# and print "echoed=K" (K echoed back); `holder_say NAME close K` closes
# K of them and prints "open=M". release_clients NAME ends it.
echo_hold() {
	local name=$1 src=$2 n=$3 fifo fd
	fifo=$BATS_TEST_TMPDIR/$name.fifo
	mkfifo "$fifo"
	exec {fd}<>"$fifo"
	HOLD_FDS+=("$fd")
	# shellcheck disable=SC2004 # an associative array (test_helper)
	HOLD_FD_OF[$name]=$fd
	SPAWN_STDIN=$fifo spawn "$name" "$PYTHON" -u -c "$ECHO_HOLDER" \
		"$src" "$PORT" "$n"
	wait_for 10 file_has "$(out_of "$name")" '^held=' ||
		fail "$name reported nothing: $(cat "$(err_of "$name")")"
}

# holder_say NAME CMD ERE: send CMD, wait for a new line matching ERE.
holder_say() {
	local name=$1 cmd=$2 want=$3 out seen
	out=$(out_of "$name")
	seen=$(count_lines "$out" "$want")
	echo "$cmd" >&"${HOLD_FD_OF[$name]}"
	wait_for 5 more_lines "$out" "$want" "$seen" ||
		fail "$name did not answer '$cmd' with '$want': $(cat "$out")"
}

more_lines() {
	(($(count_lines "$1" "$2") > $3))
}

# The holder, in Python because it must both hold and talk.
# shellcheck disable=SC2016 # Python, not shell
ECHO_HOLDER='
import socket, sys
src, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = []
for k in range(n):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(3)
    s.connect(("127.0.0.1", port))
    f = s.makefile("rb")
    if f.readline().endswith(b"\n"):
        conns.append((s, f))
    else:
        s.close()
print("held=%d" % len(conns))
for cmd in sys.stdin:
    words = cmd.split()
    if words[:1] == ["ping"]:
        ok = 0
        for k, (s, f) in enumerate(conns):
            msg = b"ping %d\n" % k
            try:
                s.sendall(msg)
                ok += f.readline() == msg
            except OSError:
                pass
        print("echoed=%d" % ok)
    elif words[:1] == ["close"]:
        for s, f in conns[:int(words[1])]:
            f.close()
            s.close()
        conns = conns[int(words[1]):]
        print("open=%d" % len(conns))
'

# --- logs and status ---

# log_count NAME ERE: connlimit lines of NAME's stderr matching ERE
# after the "connlimit[PID]: " prefix.
log_count() {
	count_lines "$(err_of "$1")" "^connlimit\\[[0-9]+\\]: $2"
}

# counter_of PID NAME: a counter from connlimit-status's "counters" line.
counter_of() {
	status_of "$1" | sed -n "s/^counters.* $2=\\([0-9]*\\).*/\\1/p"
}

# --- a server that changes directory, as daemons do ---

# chdir_server NAME DIR VAR=VALUE...: a Python server under the library
# that moves to DIR once it listens. It prints tserver's port=, accept
# and close lines, greets each connection and closes it at EOF. A refusal
# on a blocking listener may surface as ECONNABORTED: accept again.
chdir_server() {
	local name=$1 dir=$2
	shift 2
	start_server "$name" preload_env "$@" "$PYTHON" -c "$CHDIR_SERVER" \
		"$dir"
}

# shellcheck disable=SC2016 # Python, not shell
CHDIR_SERVER='
import os, socket, sys, threading
def say(text):
    os.write(1, text.encode() + b"\n")
def serve(c):
    fd = c.fileno()
    try:
        c.sendall(b"hello\n")
        while c.recv(4096):
            pass
    except OSError:
        pass
    c.close()
    say("close fd=%d" % fd)
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(128)
os.chdir(sys.argv[1])
say("port=%d" % s.getsockname()[1])
while True:
    try:
        c, _ = s.accept()
    except ConnectionAbortedError:
        continue
    say("accept fd=%d" % c.fileno())
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'

# --- HTTP with the message action ---

# http_server VAR=VALUE...: python's http.server under the library,
# listening on a free port on 127.0.0.1, reading $CONF.
http_server() {
	local port
	port=$(free_port)
	START_PORT=$port start_server http preload_env \
		CONNLIMIT_CONFIG="$CONF" "$@" "$PYTHON" -u -m http.server \
		--bind 127.0.0.1 --directory "$BATS_TEST_TMPDIR" "$port"
}

# http_code SRC: the HTTP status curl gets from $PORT (000: none).
http_code() {
	curl -s -o /dev/null -m 5 -w '%{http_code}' --interface "$1" \
		"http://127.0.0.1:$PORT/" || true
}

# --- secure-execution mode ---

# secure_prepare: a directory the user nobody can read (SECURE_DIR), with
# a copy of tserver that has a file capability and the preloads to put
# in the system library directory. Skips when this cannot be done here.
secure_prepare() {
	local dir so
	command -v setcap >/dev/null || skip "setcap (libcap2-bin) is missing"
	[[ -d $SECURE_SYSDIR ]] || skip "no $SECURE_SYSDIR to overlay"
	dir=$(mktemp -d "${TMPDIR:-/tmp}/connlimit-secure.XXXXXX")
	CONFIG_DIRS+=("$dir")
	chmod 755 "$dir"
	mkdir -m 755 "$dir/lib"
	mkdir -m 777 "$dir/logs"
	cp "$BIN/tserver" "$dir/tserver"
	setcap cap_net_bind_service+ep "$dir/tserver" 2>/dev/null ||
		skip "cannot set file capabilities here"
	SECURE_PRELOAD=()
	for so in $PRELOAD; do
		so=$(readlink -f "$so")
		SECURE_PRELOAD+=("${so##*/}")
		install -m 4755 "$so" "$dir/lib/${so##*/}"
	done
	# shellcheck disable=SC2016 # expanded by sh
	unshare --mount --propagation private sh -c \
		'mount -t overlay overlay -o "lowerdir=$1/lib:$2" "$2"' \
		sh "$dir" "$SECURE_SYSDIR" 2>/dev/null ||
		skip "cannot overlay $SECURE_SYSDIR in a mount namespace"
	SECURE_DIR=$dir
}

SECURE_SYSDIR=/usr/lib/x86_64-linux-gnu

# secure_server NAME VAR=VALUE...: after secure_prepare, run that tserver
# as nobody, so that the loader sets AT_SECURE. In that mode LD_PRELOAD
# only loads set-user-ID objects from the system library directories,
# so the library (with SANITIZE=1 the ASan runtime too) is put there by
# an overlay mount in a private mount namespace that ends with the
# server. Only tserver is preloaded, not the tools that start it.
secure_server() {
	local name=$1
	shift
	# shellcheck disable=SC2016 # expanded by sh
	start_server "$name" env "$@" ASAN_OPTIONS=detect_leaks=0 \
		unshare --mount --propagation private sh -c '
		mount -t overlay overlay -o "lowerdir=$1/lib:$2" "$2" || exit 99
		exec setpriv --reuid=65534 --regid=65534 --clear-groups \
			env LD_PRELOAD="$3" "$1/tserver"' sh "$SECURE_DIR" \
		"$SECURE_SYSDIR" "${SECURE_PRELOAD[*]}"
}
