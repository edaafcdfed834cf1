# Helpers for process.bats: servers made of several processes, and the
# kernel's view of who holds which connection.
#
# Usage: in a .bats file, `load test_helper` then `load process_helper`,
# and call process_teardown from teardown.

# shellcheck disable=SC2153 # PORT is set by start_server

declare -ga ZONES=()   # named zones to remove in teardown
declare -ga ORPHANS=() # pids that are not our children (daemons)

# new_zone VAR: set VAR to a zone name unique to this test, removed in
# teardown. (Not a command substitution: the subshell would lose ZONES.)
new_zone() {
	printf -v "$1" 'bats-%s-%s-%s' "$$" "${BATS_SUITE_TEST_NUMBER:-0}" \
		"$RANDOM"
	ZONES+=("${!1}")
}

zone_path() {
	printf '/dev/shm/connlimit.%s\n' "$1"
}

# gone PID: PID has ended (a zombie holds no descriptors, and our init
# does not reap orphans).
gone() {
	local state
	state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null)
	[[ -z $state || $state == Z ]]
}

# kill_and_wait SIGNAL PID: send SIGNAL, wait up to 5 s until PID is gone.
kill_and_wait() {
	kill "-$1" "$2"
	wait_for 5 gone "$2" || fail "pid $2 survived SIG$1"
}

process_teardown() {
	local pid zone
	for pid in "${ORPHANS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
		wait_for 2 gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
	done
	ORPHANS=()
	stop_spawned
	for zone in "${ZONES[@]}"; do
		rm -f "$(zone_path "$zone")"
	done
	ZONES=()
}

# ss_held PORT SRC: sockets of connections from SRC to local PORT that a
# process holds (ss shows their users); orphans and TIME-WAIT have none.
ss_held() {
	ss -Htnp state connected "( sport = :$1 ) and dst $2" |
		grep -c 'users:' || true
}

held_is() {
	[[ $(ss_held "$1" "$2") == "$3" ]]
}

# ss_held_all PORT: "ADDR N" for every client address with N held
# connections to local PORT (one ss call for all of them).
ss_held_all() {
	ss -Htnp state connected "( sport = :$1 )" | awk '/users:/ {
		addr = $5
		sub(/:[0-9]+$/, "", addr)
		n[addr]++
	} END { for (a in n) print a, n[a] }'
}

# status_matches_ss_all TARGET: for every client connlimit-status lists,
# open= equals what ss shows, and no client ss shows is missing there.
status_matches_ss_all() {
	local ours theirs
	ours=$("$STATUS" "$1" |
		awk '/^client=/ { sub(/client=/, "", $1); sub(/open=/, "", $2)
			if ($2 > 0) print $1, $2 }' | sort)
	theirs=$(ss_held_all "$PORT" | sort)
	[[ $ours == "$theirs" ]] ||
		fail "connlimit-status open: [$ours] ss held: [$theirs]"
}

# client_field TARGET SRC FIELD: open, counted or refused for client SRC
# in connlimit-status TARGET (a pid or a zone name); 0 when not listed.
client_field() {
	local line
	line=$("$STATUS" "$1" | grep -E "^client=${2//./\\.} " || true)
	sed -n "s/.* $3=\\([0-9]*\\).*/\\1/p" <<<"$line" | grep . || echo 0
}

# counter_of TARGET NAME: a value from connlimit-status's counters line.
counter_of() {
	"$STATUS" "$1" | sed -n "s/^counters.* $2=\\([0-9]*\\).*/\\1/p"
}

# counted_total TARGET: the zone's counted= (every client).
counted_total() {
	"$STATUS" "$1" | sed -n 's/^zone=.* counted=\([0-9]*\).*/\1/p'
}

# counted_is TARGET SRC N: for wait_for.
counted_is() {
	[[ $(client_field "$1" "$2" counted) == "$3" ]]
}

# status_matches_ss TARGET SRC: connlimit-status's open= for SRC equals
# the connections from SRC to $PORT that ss shows held by a process.
status_matches_ss() {
	local open held
	open=$(client_field "$1" "$2" open)
	held=$(ss_held "$PORT" "$2")
	[[ $open == "$held" ]] ||
		fail "client $2: connlimit-status open=$open, ss shows $held held"
}

# try_from SRC [TCLIENT_ARGS...]: one connection from SRC to $PORT;
# succeeds when the server kept it.
try_from() {
	local src=$1
	shift
	"$BIN/tclient" -s "$src" -p "$PORT" "$@" | grep -q '^kept=1 refused=0$'
}

# line_count NAME ERE: lines of NAME's output that match.
line_count() {
	count_lines "$(out_of "$1")" "$2"
}

out_has() {
	file_has "$(out_of "$1")" "$2"
}

# wait_line NAME ERE [N]: wait (5 s) until N (default 1) lines of NAME's
# output match ERE.
wait_line() {
	local n=${3:-1}
	wait_for 5 lines_at_least "$1" "$2" "$n" ||
		fail "$1 never printed $n x '$2': $(cat "$(out_of "$1")")"
}

lines_at_least() {
	(($(line_count "$1" "$2") >= $3))
}

# children_of PID: its child processes, one per line.
children_of() {
	ps -o pid= --ppid "$1" | tr -d ' '
}

# nginx_conf FILE PORT WORKERS MUTEX: a foreground nginx master with
# WORKERS workers on 127.0.0.1:PORT, every file in the test directory.
# Keep-alive connections stay open for keepalive_timeout (75 s).
nginx_conf() {
	local dir=$BATS_TEST_TMPDIR
	cat >"$1" <<-EOF
		daemon off;
		master_process on;
		worker_processes $3;
		error_log stderr;
		pid $dir/nginx.pid;
		events {
			accept_mutex $4;
			worker_connections 256;
		}
		http {
			access_log off;
			client_body_temp_path $dir/body;
			proxy_temp_path $dir/proxy;
			fastcgi_temp_path $dir/fastcgi;
			client_header_timeout 30s;
			server {
				listen 127.0.0.1:$2;
				location / {
					return 200 "ok\n";
				}
			}
		}
	EOF
}

# start_nginx WORKERS MUTEX LIMIT: nginx under the library, as "nginx".
start_nginx() {
	local port conf=$BATS_TEST_TMPDIR/nginx.conf
	command -v nginx >/dev/null || skip "nginx is not installed"
	port=$(free_port)
	nginx_conf "$conf" "$port" "$1" "$2"
	START_PORT=$port start_server nginx preload_env \
		CONNLIMIT_MAX_PER_IP="$3" nginx -p "$BATS_TEST_TMPDIR" \
		-c "$conf" -e stderr
	wait_for 5 workers_are "$(pid_of nginx)" "$1" ||
		fail "nginx workers did not start: $(cat "$(err_of nginx)")"
}

workers_are() {
	[[ $(children_of "$1" | grep -c .) == "$2" ]]
}

# hold_cmd NAME CMD...: like hold_clients, for any holder that prints
# "kept=K refused=R" and then holds until its stdin reaches EOF.
hold_cmd() {
	local name=$1 fifo fd
	shift
	fifo=$BATS_TEST_TMPDIR/$name.fifo
	mkfifo "$fifo"
	exec {fd}<>"$fifo"
	HOLD_FDS+=("$fd")
	# shellcheck disable=SC2034 # release_clients reads it
	HOLD_FD_OF["$name"]=$fd
	SPAWN_STDIN=$fifo spawn "$name" "$@"
	wait_for 10 file_has "$BATS_TEST_TMPDIR/$name.out" '^kept=' ||
		fail "$name reported nothing: $(cat "$(err_of "$name")")"
}

# hold_http NAME SRC N: N simultaneous HTTP/1.1 keep-alive requests from
# SRC to $PORT; a connection is kept when its response starts with
# "HTTP/1.1 200" (so a connection still waiting in the accept queue of a
# busy server is never taken for a kept one). Held until release_clients.
hold_http() {
	local script=$BATS_TEST_TMPDIR/http_hold.py
	[[ -e $script ]] || cat >"$script" <<-'PY'
		import selectors, socket, sys, time

		src, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
		req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
		sel = selectors.DefaultSelector()
		got, socks = {}, []
		for i in range(n):
		    s = socket.socket()
		    socks.append(s)
		    s.bind((src, 0))
		    s.setblocking(False)
		    s.connect_ex(("127.0.0.1", port))
		    sel.register(s, selectors.EVENT_WRITE, i)
		    got[i] = b""
		kept, done, end = set(), set(), time.monotonic() + 5
		while len(done) < n and time.monotonic() < end:
		    for key, ev in sel.select(0.1):
		        s, i = key.fileobj, key.data
		        try:
		            if ev & selectors.EVENT_WRITE:
		                s.send(req)
		                sel.modify(s, selectors.EVENT_READ, i)
		                continue
		            data = s.recv(4096)
		        except OSError:
		            data = b""
		        got[i] += data
		        if data and b"\n" not in got[i]:
		            continue
		        if got[i].startswith(b"HTTP/1.1 200"):
		            kept.add(i)
		        done.add(i)
		        sel.unregister(s)
		print("kept=%d refused=%d" % (len(kept), n - len(kept)), flush=True)
		sys.stdin.read()
	PY
	hold_cmd "$1" "$PYTHON" "$script" "$2" "$PORT" "$3"
}
