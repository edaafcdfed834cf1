# Helpers for compat.bats: real, unmodified daemons from Debian started
# under the library, and the checks each of them goes through.
#
# Usage: in a .bats file, `load test_helper` then `load compat_helper`;
# call compat_setup_file, compat_teardown_file and compat_teardown from
# the bats hooks of the same names.
#
# A start_KIND function starts one daemon with CONNLIMIT_MAX_PER_IP=$LIMIT
# on a free loopback port and sets:
#   PORT       where it listens
#   TARGET     what connlimit-status reads: the daemon's pid (its default
#              zone) or a zone name
#   HOLD_OPTS  tclient options that tell a kept connection (-G MS for a
#              server that sends nothing first)
#   LOGS       the files its errors and the library's lines go to
#   LOG_OK     an ERE for lines of its own that are expected anyway
#   UNSEEN     set when it ends connections in ways the library does not
#              see (children that exit without close, syscall(SYS_close)),
#              so the table's count catches up only at the next check
# and serve_KIND makes one ordinary request from 127.0.0.3 and checks
# the answer.

COMPAT=$REPO/tests/compat
LIMIT=3
# What a daemon's log must not say (case-insensitive).
ERROR_RE='error|fatal|crit|emerg|alert|panic|segfault|abort|assert|traceback|exception|denied|refused|code [45][0-9][0-9]'
# The library's own lines a refusal is expected to leave.
REJECT_RE='^connlimit\[[0-9]+\]: reject(-suppressed)? client='

declare -ga COMPAT_ZONES=()  # named zones to remove in teardown
declare -ga DAEMONS=()       # daemon pids: teardown stops their trees
declare -ga HOLD_OPTS=()
declare -ga LOGS=()
LOG_OK='^$'                  # set per daemon: see the top
UNSEEN=

# ---- hooks ----

# compat_setup_file: a document root every daemon user can read (the
# test directories are private to root, and workers drop privileges).
compat_setup_file() {
	DOCROOT=$(mktemp -d /tmp/connlimit-compat.XXXXXX)
	chmod 755 "$DOCROOT"
	echo compat-ok >"$DOCROOT/index.html"
	chmod 644 "$DOCROOT/index.html"
	export DOCROOT
}

compat_teardown_file() {
	[[ -z ${DOCROOT:-} ]] || rm -rf "$DOCROOT"
}

compat_setup() {
	require_lib
	[[ -x $BIN/tclient ]] || fail "$BIN/tclient is missing: run make helpers"
	TARGET=
	HOLD_OPTS=()
	LOGS=()
	LOG_OK='^$'
	UNSEEN=
}

# compat_teardown: stop the clients, the daemons (spawned or detached)
# and every process they started (pids collected before the stop, so no
# other process is touched); remove the zones.
compat_teardown() {
	local pid zone kids=()
	for pid in "${DAEMONS[@]}"; do
		kids+=("$pid")
		mapfile -t -O "${#kids[@]}" kids < <(descendants "$pid")
	done
	stop_spawned
	for pid in "${kids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${kids[@]}"; do
		wait_for 2 gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
	done
	DAEMONS=()
	for zone in "${COMPAT_ZONES[@]}"; do
		rm -f "/dev/shm/connlimit.$zone"
	done
	COMPAT_ZONES=()
}

# gone PID: PID has ended. An orphaned zombie counts: it holds nothing,
# and the init of a container may never reap it.
gone() {
	local state
	state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null)
	[[ -z $state || $state == Z ]]
}

# descendants PID: every process below PID, one pid a line.
descendants() {
	local kid
	for kid in $(pgrep -P "$1"); do
		echo "$kid"
		descendants "$kid"
	done
}

# ---- starting daemons ----

# need CMD [WHY]: skip the test when CMD is not installed.
need() {
	command -v "$1" >/dev/null || skip "${2:-$1 is not installed}"
}

# daemon NAME PORT CMD...: start CMD under the library with the limit,
# in a session of its own, and wait until PORT listens; TARGET becomes
# its pid. (Apache's prefork MPM signals its whole process group when it
# stops: without setsid, that would be bats and its callers.)
daemon() {
	local name=$1 port=$2
	shift 2
	START_PORT=$port start_server "$name" preload_env \
		CONNLIMIT_MAX_PER_IP="$LIMIT" setsid "$@"
	TARGET=$(pid_of "$name")
	DAEMONS+=("$TARGET")
}

# self_reporting NAME CMD...: the same for a program of ours that prints
# "port=N" once it listens.
self_reporting() {
	local name=$1
	shift
	start_server "$name" preload_env CONNLIMIT_MAX_PER_IP="$LIMIT" "$@"
	TARGET=$(pid_of "$name")
	DAEMONS+=("$TARGET")
	LOGS=("$(err_of "$name")")
}

# new_zone: ZONE becomes a zone name unique to this test, removed in
# teardown. (Not a command substitution: its subshell would lose the
# record of the zone.)
new_zone() {
	ZONE="compat-$$-${BATS_SUITE_TEST_NUMBER:-0}-$RANDOM"
	COMPAT_ZONES+=("$ZONE")
}

# children_are PID N: PID has N child processes.
children_are() {
	[[ $(pgrep -c -P "$1") == "$2" ]]
}

# build_once NAME CMD...: run CMD (which makes $BATS_FILE_TMPDIR/NAME)
# unless an earlier test of this file already did.
build_once() {
	local name=$1
	shift
	[[ -e $BATS_FILE_TMPDIR/$name ]] && return 0
	"$@" >"$BATS_FILE_TMPDIR/$name.build" 2>&1 ||
		fail "building $name failed: $(cat "$BATS_FILE_TMPDIR/$name.build")"
}

# ---- the checks ----

# status_line TARGET SRC: connlimit-status's line for client SRC.
status_line() {
	timeout 10 "$STATUS" "$1" | grep -E "^client=${2//./\\.} " || true
}

# field_of TARGET SRC FIELD: open, counted or refused; 0 when not listed.
field_of() {
	sed -n "s/.* $3=\\([0-9]*\\).*/\\1/p" <<<"$(status_line "$1" "$2")" |
		grep . || echo 0
}

open_is() {
	[[ $(field_of "$TARGET" "$1" open) == "$2" ]]
}

# wait_open SRC N: wait (5 s) until connlimit-status says SRC holds N.
wait_open() {
	wait_for 5 open_is "$1" "$2" ||
		fail "expected open=$2 for $1: $(timeout 10 "$STATUS" "$TARGET")"
}

# refused_from SRC: one more connection from SRC is reset unseen. The
# reset comes as soon as the server accepts; a server that sends nothing
# is given 2 s for that on a busy machine.
refused_from() {
	local opts=("${HOLD_OPTS[@]}")
	[[ ${opts[0]:-} != -G ]] || opts=(-G 2000)
	run "$BIN/tclient" -s "$1" -p "$PORT" "${opts[@]}"
	assert_output_has '^kept=0 refused=1$'
	assert_output_has '^conn 1 refused reason=(reset|eof)$'
}

# hold NAME SRC N: NAME holds N connections from SRC, all of them kept.
hold() {
	hold_clients "$1" "$2" "$3" -c "${HOLD_OPTS[@]}"
	assert_equal "$(kept_of "$1")" "$3"
}

# check_limit: 127.0.0.2 gets LIMIT connections, which the server holds
# and the library counts, and the next one is refused.
check_limit() {
	hold a 127.0.0.2 $((LIMIT - 1))
	hold b 127.0.0.2 1
	wait_open 127.0.0.2 "$LIMIT"
	refused_from 127.0.0.2
}

# check_release: after check_limit, once b's connection is gone from
# the server, 127.0.0.2 gets one again, and only one.
check_release() {
	release_clients b
	wait_open 127.0.0.2 $((LIMIT - 1))
	hold c 127.0.0.2 1
	wait_open 127.0.0.2 "$LIMIT"
	refused_from 127.0.0.2
}

# check_all_leave: when every client has gone, the kernel has no
# connection of theirs open, and where the library sees every close its
# own count is back to zero as well.
check_all_leave() {
	release_clients a
	release_clients c
	wait_for 10 no_open_counts "$TARGET" ||
		fail "still open: $(timeout 10 "$STATUS" "$TARGET")"
	[[ -n $UNSEEN ]] || wait_for 5 counted_total_is 0 ||
		fail "still counted: $(timeout 10 "$STATUS" "$TARGET")"
}

# counted_total_is N: the table counts N connections in all.
counted_total_is() {
	timeout 10 "$STATUS" "$TARGET" | grep -q "^zone=.* counted=$1 "
}

# check_other_client: while 127.0.0.2 is at its limit, 127.0.0.3 gets
# an ordinary answer (serve_KIND) and is not left counted.
check_other_client() {
	hold a 127.0.0.2 "$LIMIT"
	wait_open 127.0.0.2 "$LIMIT"
	refused_from 127.0.0.2
	"serve_$1"
	wait_open 127.0.0.3 0
	wait_open 127.0.0.2 "$LIMIT"
}

# check_bursts ROUNDS: in each round 127.0.0.2 opens 10 connections at
# once; the server ends up holding exactly LIMIT of them, and none once
# they close. (tclient's verdicts are not used: a connection the server
# has not accepted yet also looks kept to it.)
check_bursts() {
	local round
	for ((round = 1; round <= $1; round++)); do
		hold_clients "r$round" 127.0.0.2 10 -c "${HOLD_OPTS[@]}"
		wait_open 127.0.0.2 "$LIMIT"
		wait_for 5 server_holds_is 127.0.0.2 "$LIMIT" ||
			fail "round $round: the server holds" \
				"$(server_holds 127.0.0.2) connections"
		release_clients "r$round"
		wait_open 127.0.0.2 0
	done
}

# check_logs: the library's refusal of 127.0.0.2 reached the daemon's
# logs, which hold nothing else but the daemon's ordinary output.
check_logs() {
	local bad
	cat "${LOGS[@]}" 2>/dev/null | grep -Eq "$REJECT_RE""127\.0\.0\.2 " ||
		fail "no refusal line in ${LOGS[*]}"
	bad=$(cat "${LOGS[@]}" 2>/dev/null | grep -Ev "$REJECT_RE" |
		grep -Ev "$LOG_OK" | grep -Ei "$ERROR_RE|connlimit\\[" || true)
	[[ -z $bad ]] || fail "unexpected log lines: $bad"
}

# ---- ordinary requests from 127.0.0.3 ----

# http_get: GET / from 127.0.0.3 answers "compat-ok".
# shellcheck disable=SC2154 # bats' run sets output
http_get() {
	run -0 curl -sS --max-time 5 --interface 127.0.0.3 \
		"http://127.0.0.1:$PORT/"
	assert_equal "$output" compat-ok
}

# probe SEND EXPECT: a line protocol exchange from 127.0.0.3.
probe() {
	run -0 timeout 10 "$PYTHON" "$COMPAT/probe.py" 127.0.0.3 "$PORT" \
		"$1" "$2"
}

# echo_once: a server that greets with "hello" echoes a line back.
echo_once() {
	probe 'compat-ok\n' '^compat-ok$'
	assert_output_has '^hello'
}

# ---- the daemons ----

# start_nginx: a master and two workers; workers run as nobody, with an
# environment nginx has emptied: they use the table the master mapped.
start_nginx() {
	local dir=$BATS_TEST_TMPDIR port
	need nginx
	port=$(free_port)
	cat >"$dir/nginx.conf" <<-EOF
		daemon off;
		master_process on;
		worker_processes 2;
		error_log stderr warn;
		pid $dir/nginx.pid;
		events {
			worker_connections 128;
		}
		http {
			access_log off;
			client_body_temp_path $dir/body;
			proxy_temp_path $dir/proxy;
			fastcgi_temp_path $dir/fastcgi;
			uwsgi_temp_path $dir/uwsgi;
			scgi_temp_path $dir/scgi;
			server {
				listen 127.0.0.1:$port;
				root $DOCROOT;
			}
		}
	EOF
	daemon nginx "$port" nginx -p "$dir" -c "$dir/nginx.conf" -e stderr
	wait_for 5 children_are "$TARGET" 2 || fail "nginx workers did not start"
	HOLD_OPTS=(-G 300)
	LOGS=("$(err_of nginx)")
}

serve_nginx() {
	http_get
}

# reload_nginx: SIGHUP, then wait until none of the old workers is left
# and two new ones run.
reload_nginx() {
	local old
	old=$(pgrep -P "$TARGET" | sort | tr '\n' ' ')
	kill -HUP "$TARGET"
	wait_for 10 workers_replaced "$old" ||
		fail "nginx workers were not replaced: $(cat "$(err_of nginx)")"
}

workers_replaced() {
	local pid
	for pid in $1; do
		gone "$pid" || return 1
	done
	children_are "$TARGET" 2
}

# start_nginx_detached ENV...: nginx as its init script starts it (it
# detaches; its master is found through the pid file), with an "env"
# directive for each name in ENV, the way nginx.conf passes variables to
# the processes it starts. TARGET is the master.
start_nginx_detached() {
	local dir=$BATS_TEST_TMPDIR port name envs=
	need nginx
	port=$(free_port)
	for name in "$@"; do
		envs+="env $name;"$'\n'
	done
	cat >"$dir/nginx.conf" <<-EOF
		daemon on;
		worker_processes 2;
		error_log stderr warn;
		pid $dir/nginx.pid;
		$envs
		events {
			worker_connections 128;
		}
		http {
			access_log off;
			client_body_temp_path $dir/body;
			server {
				listen 127.0.0.1:$port;
				return 200 "compat-ok\n";
			}
		}
	EOF
	# The absolute path: a binary upgrade executes argv[0] again.
	preload_env CONNLIMIT_MAX_PER_IP="$LIMIT" setsid /usr/sbin/nginx \
		-p "$dir" -c "$dir/nginx.conf" -e stderr </dev/null \
		>"$dir/nginx.out" 2>"$dir/nginx.err" 3>&-
	wait_for 5 master_ready "$dir/nginx.pid" || fail "nginx did not start"
	TARGET=$(cat "$dir/nginx.pid")
	DAEMONS+=("$TARGET")
	PORT=$port
	HOLD_OPTS=(-G 300)
	LOGS=("$dir/nginx.err")
}

# master_ready PIDFILE: the master it names runs two workers.
master_ready() {
	local pid
	pid=$(cat "$1" 2>/dev/null) && [[ -n $pid ]] && children_are "$pid" 2
}

# upgrade_nginx: the binary upgrade of nginx's documentation: USR2
# starts a new master from the same binary, QUIT ends the old one.
# TARGET becomes the new master.
upgrade_nginx() {
	local dir=$BATS_TEST_TMPDIR old=$TARGET
	kill -USR2 "$old"
	wait_for 5 file_has "$dir/nginx.pid.oldbin" "^$old\$" ||
		fail "no new master: $(cat "$dir/nginx.err")"
	wait_for 5 master_ready "$dir/nginx.pid" || fail "new master not ready"
	TARGET=$(cat "$dir/nginx.pid")
	DAEMONS+=("$TARGET")
	kill -QUIT "$old"
	wait_for 5 gone "$old" || fail "the old master did not leave"
}

# start_lighttpd: one event-driven process, running as www-data, and
# logging to stderr (it opens an error log file only after dropping
# privileges).
start_lighttpd() {
	local dir=$BATS_TEST_TMPDIR port
	need lighttpd
	port=$(free_port)
	cat >"$dir/lighttpd.conf" <<-EOF
		server.document-root = "$DOCROOT"
		server.bind = "127.0.0.1"
		server.port = $port
		server.username = "www-data"
		server.groupname = "www-data"
		index-file.names = ( "index.html" )
	EOF
	daemon lighttpd "$port" lighttpd -D -f "$dir/lighttpd.conf"
	HOLD_OPTS=(-G 300)
	LOGS=("$(err_of lighttpd)")
}

serve_lighttpd() {
	http_get
}

# start_apache MPM: apache2 in the foreground with mpm_MPM (prefork or
# event); its children run as www-data. AcceptFilter none: by default
# the listener has TCP_DEFER_ACCEPT, and a connection that sends nothing
# never reaches accept (so it is neither served nor counted).
start_apache() {
	local dir=$BATS_TEST_TMPDIR mods=/usr/lib/apache2/modules port tuning
	need apache2
	port=$(free_port)
	if [[ $1 == prefork ]]; then
		tuning='StartServers 4
			MinSpareServers 2
			MaxSpareServers 8
			MaxRequestWorkers 16'
	else
		tuning='StartServers 2
			ServerLimit 2
			ThreadsPerChild 8
			MaxRequestWorkers 16
			MinSpareThreads 4
			MaxSpareThreads 16'
	fi
	cat >"$dir/apache2.conf" <<-EOF
		ServerRoot $dir
		ServerName 127.0.0.1
		Listen 127.0.0.1:$port
		PidFile $dir/apache2.pid
		DefaultRuntimeDir $dir
		ErrorLog $dir/apache-error.log
		LogLevel warn
		LoadModule mpm_$1_module $mods/mod_mpm_$1.so
		LoadModule authz_core_module $mods/mod_authz_core.so
		LoadModule dir_module $mods/mod_dir.so
		User www-data
		Group www-data
		$tuning
		AcceptFilter http none
		DocumentRoot $DOCROOT
		DirectoryIndex index.html
		<Directory $DOCROOT>
			Require all granted
		</Directory>
	EOF
	daemon "apache-$1" "$port" /usr/sbin/apache2 -f "$dir/apache2.conf" \
		-DFOREGROUND
	HOLD_OPTS=(-G 300)
	LOGS=("$(err_of "apache-$1")" "$dir/apache-error.log")
}

serve_apache() {
	http_get
}

# start_redis: redis-server with a config file; it trusts only 127.0.0.1
# in protected mode, so that is off for 127.0.0.3's request.
start_redis() {
	local dir=$BATS_TEST_TMPDIR port
	need redis-server
	port=$(free_port)
	cat >"$dir/redis.conf" <<-EOF
		bind 127.0.0.1
		port $port
		protected-mode no
		daemonize no
		save ""
		appendonly no
		dir $dir
		logfile $dir/redis.log
	EOF
	daemon redis "$port" redis-server "$dir/redis.conf"
	HOLD_OPTS=(-G 300)
	LOGS=("$(err_of redis)" "$dir/redis.log")
}

serve_redis() {
	probe 'PING\r\n' '^\+PONG'
	probe 'SET compat ok\r\nGET compat\r\n' '^ok\r$'
}

# start_memcached: four worker threads, running as nobody.
start_memcached() {
	local port
	need memcached
	port=$(free_port)
	daemon memcached "$port" memcached -l 127.0.0.1 -p "$port" -U 0 \
		-u nobody -t 4 -c 64
	HOLD_OPTS=(-G 300)
	LOGS=("$(err_of memcached)")
}

serve_memcached() {
	probe 'set compat 0 0 2\r\nok\r\nget compat\r\n' '^END'
	assert_output_has '^STORED'
	assert_output_has '^VALUE compat 0 2'
}

# sshd_files: a host key, a client key allowed to log in as root, and
# the config, in the test directory.
sshd_files() {
	local dir=$BATS_TEST_TMPDIR
	ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
	ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key"
	cp "$dir/client_key.pub" "$dir/authorized_keys"
	cat >"$dir/sshd_config" <<-EOF
		ListenAddress 127.0.0.1
		HostKey $dir/host_key
		PidFile $dir/sshd.pid
		AuthorizedKeysFile $dir/authorized_keys
		StrictModes no
		UsePAM no
		PermitRootLogin prohibit-password
		PasswordAuthentication no
		KbdInteractiveAuthentication no
	EOF
	# sshd insists on its privilege separation directory (systemd's
	# RuntimeDirectory makes it on a real system).
	mkdir -p /run/sshd
}

# start_sshd [ZONE]: the listener forks, and the child re-executes
# /usr/sbin/sshd for each connection. With ZONE, every process of it
# shares that named table and TARGET is the zone.
start_sshd() {
	local port zone=${1:-}
	need /usr/sbin/sshd "openssh-server is not installed"
	port=$(free_port)
	sshd_files
	if [[ -n $zone ]]; then
		daemon sshd "$port" env CONNLIMIT_ZONE="$zone" /usr/sbin/sshd -D \
			-e -f "$BATS_TEST_TMPDIR/sshd_config" -p "$port"
		TARGET=$zone
	else
		daemon sshd "$port" /usr/sbin/sshd -D -e \
			-f "$BATS_TEST_TMPDIR/sshd_config" -p "$port"
	fi
	# The listener closes its copy after the fork; the re-executed
	# child's own closes are not in the listener's table.
	UNSEEN=children
	LOGS=("$(err_of sshd)")
}

# serve_sshd: a real login from 127.0.0.3 that runs a command.
# shellcheck disable=SC2154 # bats' run sets output
serve_sshd() {
	local dir=$BATS_TEST_TMPDIR
	run -0 timeout 20 ssh -F /dev/null -b 127.0.0.3 -p "$PORT" \
		-i "$dir/client_key" -o IdentitiesOnly=yes -o BatchMode=yes \
		-o ConnectTimeout=5 -o StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null \
		-o LogLevel=ERROR root@127.0.0.1 echo compat-ok
	assert_equal "$output" compat-ok
}

# start_socat: fork per connection, and each child runs a shell.
start_socat() {
	local port
	need socat
	port=$(free_port)
	daemon socat "$port" socat \
		"TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" \
		SYSTEM:'echo hello; exec cat'
	# socat's children leave with exit_group, closing nothing.
	UNSEEN=children
	LOGS=("$(err_of socat)")
}

serve_socat() {
	echo_once
}

# start_xinetd: the super-server accepts, forks and execs a shell script
# per connection (server_args has no quoting, hence the script).
start_xinetd() {
	local dir=$BATS_TEST_TMPDIR port
	need xinetd
	port=$(free_port)
	printf '#!/bin/sh\necho hello\nexec cat\n' >"$dir/echo.sh"
	chmod 755 "$dir/echo.sh"
	cat >"$dir/xinetd.conf" <<-EOF
		service compat
		{
			type = UNLISTED
			socket_type = stream
			protocol = tcp
			wait = no
			user = root
			bind = 127.0.0.1
			port = $port
			server = $dir/echo.sh
			log_type = FILE $dir/xinetd-service.log
			log_on_failure = HOST
		}
	EOF
	daemon xinetd "$port" xinetd -dontfork -f "$dir/xinetd.conf" \
		-filelog "$dir/xinetd.log" -pidfile "$dir/xinetd.pid"
	LOGS=("$(err_of xinetd)" "$dir/xinetd.log" "$dir/xinetd-service.log")
	UNSEEN=children
	# Its listener blocks: a refusal with nothing else pending returns
	# ECONNABORTED from accept, and xinetd logs each one as an ERROR.
	LOG_OK='ERROR: service compat, accept: Software caused connection abort'

}

serve_xinetd() {
	echo_once
}

# start_http_server: python3 -m http.server (a thread per connection).
start_http_server() {
	local port
	port=$(free_port)
	daemon http-server "$port" "$PYTHON" -m http.server --bind 127.0.0.1 \
		--directory "$DOCROOT" "$port"
	HOLD_OPTS=(-G 300)
	LOGS=("$(err_of http-server)")
}

serve_http_server() {
	http_get
}

# start_forking: socketserver.ForkingTCPServer, a process per client.
start_forking() {
	self_reporting forking "$PYTHON" "$COMPAT/forking_echo.py"
}

serve_forking() {
	echo_once
}

# start_node: Node.js's http module (libuv, one thread).
start_node() {
	need node
	self_reporting node node "$COMPAT/http_server.js"
	HOLD_OPTS=(-G 300)
	# libuv closes sockets with syscall(SYS_close), past the library.
	UNSEEN=syscall
}

serve_node() {
	http_get
}

# start_java: java.net.ServerSocket on Debian's OpenJDK, a thread per
# client, compiled once per run of this file.
start_java() {
	local classes=$BATS_FILE_TMPDIR/java
	need javac "javac (openjdk-17-jdk-headless) is not installed"
	build_once java javac -J-XX:TieredStopAtLevel=1 -d "$classes" \
		"$COMPAT/EchoServer.java"
	self_reporting java java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
		-cp "$classes" EchoServer
}

serve_java() {
	echo_once
}

# ---- programs the library cannot reach ----

# build_greeter HOW: tests/compat/greeter.c or greeter.go built as
# $BATS_FILE_TMPDIR/greeter-HOW: static (gcc -static), dynamic (plain
# gcc, the control) or go (the Go toolchain's default build, which is
# dynamically linked because the net package uses cgo).
build_greeter() {
	local out=$BATS_FILE_TMPDIR/greeter-$1
	case $1 in
	static)
		[[ -e $(gcc -print-file-name=libc.a) ]] ||
			skip "no static C library (libc6-dev)"
		build_once "greeter-$1" gcc -static -O2 -o "$out" \
			"$COMPAT/greeter.c"
		;;
	dynamic)
		build_once "greeter-$1" gcc -O2 -o "$out" "$COMPAT/greeter.c"
		;;
	go)
		need go "no Go toolchain (golang-go)"
		build_once "greeter-$1" env GOCACHE="$BATS_FILE_TMPDIR/gocache" \
			GOPATH="$BATS_FILE_TMPDIR/gopath" go build -o "$out" \
			"$COMPAT/greeter.go"
		;;
	esac
	GREETER=$out
}

# start_greeter HOW: that build under the library with the limit.
start_greeter() {
	build_greeter "$1"
	self_reporting "greeter-$1" "$GREETER"
}

serve_greeter() {
	probe '' '^hello$'
}

# server_holds SRC: connections from SRC to $PORT that the server has
# accepted: established ones less those still in the accept queue. (Not
# with ss -p: reading every process's descriptors takes most of a
# second.)
server_holds() {
	local est
	est=$(ss -Htn state established "( sport = :$PORT ) and dst $1" |
		grep -c . || true)
	echo $((est - $(accept_queue "$PORT")))
}

# maps_library PID: the library is mapped into PID.
maps_library() {
	grep -qF "$(basename "$LIB")" "/proc/$1/maps"
}

# check_unlimited: 127.0.0.2 keeps LIMIT + 1 connections, and the
# server has accepted and holds them all.
check_unlimited() {
	hold a 127.0.0.2 $((LIMIT + 1))
	wait_for 5 server_holds_is 127.0.0.2 $((LIMIT + 1)) ||
		fail "the server holds $(server_holds 127.0.0.2) connections"
}

server_holds_is() {
	[[ $(server_holds "$1") == "$2" ]]
}

# need_launcher: LAUNCHER is scripts/connlimit; skip if it is missing.
need_launcher() {
	LAUNCHER=$REPO/scripts/connlimit
	[[ -x $LAUNCHER ]] || skip "scripts/connlimit is not there"
}
