#!/usr/bin/env bash
# Usage: bench/run.sh [-s] [-o DIR] [SECTION...]
#
# libconnlimit's benchmark suite.  SECTIONs, all by default:
#   churn     connect, request, reply, close from 64 sources: bare and
#             under the library (limit never reached)
#   syscalls  strace -c -f: calls per admitted and per refused connection
#   close     close() on non-socket descriptors
#   compare   bare, library, nftables ct count and HAProxy src_conn_cur,
#             in private network namespaces
#   scale     accept and close with 1k and 1M clients in the table and
#             with 100k connections open
#   flood     latency of 16 clients while one client floods a server
#             with a pool of 64 workers
#   prefork   2 and 4 processes sharing one table
#
# Every figure is the median, with min and max, of the ratio of pairs
# run alternately (A B A B ...).  Writes DIR/STAMP.md and DIR/STAMP.png
# and copies them to DIR/latest.md and DIR/latest.png; DIR defaults to
# bench/results.  -s is the smoke run: tiny sizes, a few seconds, for
# the tests; its figures are not judged.  BENCH_PAIRS and BENCH_RUN_MS
# override the number of pairs and the length of one run; BENCH_LIB and
# BENCH_STATUS another build of the library and its status tool (by
# default the ones at the top of the tree), BENCH_LIB_FROM a note on
# where that build came from, for the report.  Needs root for compare
# (network namespaces); sections whose tools are missing are reported
# as skipped.  All traffic goes to loopback addresses.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=$REPO/bench/bin
SRV=$BIN/benchsrv
GEN=$BIN/loadgen
OUT=$REPO/bench/results
SMOKE=0
ALL="churn syscalls close compare scale flood prefork"

while getopts so: o; do
	case $o in
	s) SMOKE=1 ;;
	o) OUT=$OPTARG ;;
	*) sed -n '2,3p' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
SECTIONS=${*:-$ALL}

if ((SMOKE)); then
	PAIRS=1 RUN_MS=150 CLOSES=100000 STRACE_N=20 REFUSED_N=10
	SCALE_CAP=65536 SCALE_POP=4096 SCALE_CONC=1000 SCALE_RUN=600
	FLOOD_MS=200
else
	PAIRS=11 RUN_MS=1000 CLOSES=1000000 STRACE_N=1000 REFUSED_N=200
	SCALE_CAP=1048576 SCALE_POP=1048576 SCALE_CONC=100000
	SCALE_RUN=20000 FLOOD_MS=1500
fi
PAIRS=${BENCH_PAIRS:-$PAIRS}
RUN_MS=${BENCH_RUN_MS:-$RUN_MS}
NEVER=1000000	# a per-client limit that is never reached

LIBSO=${BENCH_LIB:-$REPO/libconnlimit.so}
STATUS=${BENCH_STATUS:-$REPO/connlimit-status}
PRELOAD=$LIBSO
if [[ ${SANITIZE:-0} == 1 ]]; then
	PRELOAD="$(gcc -print-file-name=libasan.so) $PRELOAD"
fi

STAMP=$(date -u +%Y%m%d-%H%M%S)
TMP=$OUT/tmp/$STAMP
mkdir -p "$TMP"
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

for f in "$SRV" "$GEN" "$BIN/closeloop" "$LIBSO" "$STATUS"; do
	[[ -f $f ]] && continue
	note "$f is missing: run make bench-tools"
	exit 1
done

# ---- a: churn ----

# churn_run NAME [NETNS]: one churn run against server NAME; appends
# "rate cpu_ns_per_conn errors" to $TMP/NAME.runs and prints it.
churn_run() {
	local name=$1 ns=${2:-} pid=${PID_OF[$1]} c0 c1 line ok rate failed

	c0=$(cpu_ns "$pid")
	line=$(in_ns "$ns" "$GEN" churn -p "${PORT_OF[$name]}" \
		-s 127.0.1.1 -k 64 -c 64 -d "$RUN_MS")
	c1=$(cpu_ns "$pid")
	ok=$(kv ok "$line")
	rate=$(kv rate "$line")
	failed=$(($(kv errors "$line") + $(kv refused "$line") + $(kv \
		timeouts "$line")))
	((failed == 0)) || problem_once "$name" "$name: $failed" \
		"connections failed in one run ($line)"
	echo "$rate $(((c1 - c0) / (ok > 0 ? ok : 1))) $failed" |
		tee -a "$TMP/$name.runs"
}

# in_ns NETNS CMD...: run CMD in network namespace NETNS ("" = ours).
in_ns() {
	local ns=$1
	shift
	if [[ -z $ns ]]; then
		"$@"
	else
		nsenter --net="$ns" -- "$@"
	fi
}

median_col() {
	cut -d' ' -f"$2" "$TMP/$1.runs" | med
}

errors_of() {
	awk '{ s += $3 } END { print s + 0 }' "$TMP/$1.runs"
}

section_churn() {
	local i a b ca cb

	md "## Connection churn, bare and under the library" ""
	serve ch-bare "$SRV" -m epoll
	lib_env CONNLIMIT_MAX_PER_IP=$NEVER
	serve ch-lib env "${LIBENV[@]}" "$SRV" -m epoll
	churn_run ch-bare >/dev/null	# warm-up, not counted
	churn_run ch-lib >/dev/null
	: >"$TMP/ch-bare.runs"
	: >"$TMP/ch-lib.runs"
	for ((i = 0; i < PAIRS; i++)); do
		read -r a ca _ < <(churn_run ch-bare)
		read -r b cb _ < <(churn_run ch-lib)
		pair churn_rate "$a" "$b"
		pair churn_cpu "$ca" "$cb"
	done
	stop ch-bare
	stop ch-lib
	md "64 sources (127.0.1.1-64), 64 connections in flight, one" \
		"single-threaded epoll server; each connection sends a line," \
		"gets \"ok\" and is closed by the server.  $PAIRS pairs of" \
		"${RUN_MS} ms runs.  CPU is the server's, from schedstat." ""
	md "| | bare | library | library / bare (min-max) |"
	md "|---|---|---|---|"
	row2 churn_rate "connections/s" "%.0f"
	row2 churn_cpu "server CPU ns per connection" "%.0f"
	md "" "Failed connections: bare $(errors_of ch-bare)," \
		"library $(errors_of ch-lib)." ""
	figure churn_rate "churn, library / bare" ">=" 0.98 "churn"
	figure churn_cpu "churn, server CPU per connection, library / bare" -
}

# row2 FIG LABEL FMT: a table row with both sides' medians and the ratio.
row2() {
	local med lo hi a b

	read -r med lo hi a b _ < <(summarize "$1")
	md "$(printf "| %s | $3 | $3 | %.3f (%.3f-%.3f) |" "$2" "$a" "$b" \
		"$med" "$lo" "$hi")"
}

# ---- b: system calls ----

# strace_run TAG N [ENV...]: trace a server through N connections, one
# at a time.  TAG "refused": one connection is held first, and the N are
# paced 11 ms apart, so that each is refused on its own and each comes
# more than 10 ms after the previous kernel check of its client.
strace_run() {
	local tag=$1 n=$2 name=st-$1-$2 srv_pid src=127.0.3.1
	shift 2

	spawn "$name" strace -f -c -o "$TMP/$name.strace" -- \
		env "$@" "$SRV" -m epoll
	wait_for 10 file_has "$TMP/$name.out" '^port=' ||
		{ note "traced server did not start"; return 1; }
	PORT_OF[$name]=$(sed -n 's/^port=//p' "$TMP/$name.out")
	if [[ $tag == refused ]]; then
		strace_refused "$name" "$n"
	else
		"$GEN" churn -p "${PORT_OF[$name]}" -s $src -c 1 -n "$n" \
			-d 60000 >"$TMP/$name.client"
	fi
	srv_pid=$(family_of "${PID_OF[$name]}" | sed -n 2p)
	[[ -z $srv_pid ]] || kill -TERM "$srv_pid"
	wait_for 10 not_running "${PID_OF[$name]}" || true
}

strace_refused() {
	local name=$1 n=$2 port=${PORT_OF[$1]}

	hold_fifo "$TMP/$name.fifo"
	SPAWN_STDIN=$TMP/$name.fifo spawn "$name-hold" "$GEN" hold \
		-p "$port" -s 127.0.3.1 -n 1 -d 60000
	wait_for 10 file_has "$TMP/$name-hold.out" '^held=1 ' ||
		{ note "hold failed"; return 1; }
	if ((n > 0)); then
		"$GEN" latency -p "$port" -s 127.0.3.1 -c 1 -i 11000 -n "$n" \
			-d 60000 >"$TMP/$name.client"
		(($(kv refused "$(cat "$TMP/$name.client")") == n)) ||
			problem "not every traced connection was refused:" \
				"$(cat "$TMP/$name.client")"
	fi
	release_fifo "$HOLD_FD"
	wait_for 5 not_running "${PID_OF[$name-hold]}" || true
}

# strace_calls FILE: "syscall calls" lines of an strace -c summary.
strace_calls() {
	awk '$1 ~ /^[0-9.]+$/ && $NF != "total" { print $NF, $4 }' "$1" |
		sort
}

# slope TAG: calls per connection by system call, from the N and 2N runs.
slope() {
	join -a 1 -a 2 -e 0 -o 0,1.2,2.2 \
		<(strace_calls "$TMP/st-$1-$STRACE_N.strace") \
		<(strace_calls "$TMP/st-$1-$((2 * STRACE_N)).strace") |
		awk -v n="$STRACE_N" '{ printf "%s %.3f\n", $1, ($3 - $2) / n }'
}

section_syscalls() {
	local n lib

	md "## System calls per connection (strace -c -f)" ""
	if ! command -v strace >/dev/null; then
		skipped "system calls" "strace is not installed"
		return
	fi
	for n in "$STRACE_N" $((2 * STRACE_N)); do
		strace_run bare "$n"
		lib_env CONNLIMIT_MAX_PER_IP=$NEVER
		strace_run lib "$n" "${LIBENV[@]}"
	done
	lib_env CONNLIMIT_MAX_PER_IP=1
	strace_run refused 0 "${LIBENV[@]}"
	strace_run refused "$REFUSED_N" "${LIBENV[@]}"
	slope bare >"$TMP/slope-bare"
	slope lib >"$TMP/slope-lib"
	join -a 1 -a 2 -e 0 -o 0,1.2,2.2 \
		<(strace_calls "$TMP/st-refused-0.strace") \
		<(strace_calls "$TMP/st-refused-$REFUSED_N.strace") |
		awk -v n="$REFUSED_N" '{
			printf "%s %.3f\n", $1, ($3 - $2) / n }' \
		>"$TMP/slope-refused"
	join -a 1 -a 2 -e 0 -o 0,1.2,2.2,1.2 "$TMP/slope-bare" \
		"$TMP/slope-lib" | join -a 1 -a 2 -e 0 -o 0,1.2,1.3,2.2 - \
		"$TMP/slope-refused" >"$TMP/slopes"
	syscalls_report
}

syscalls_report() {
	local lib

	md "The epoll server under \`strace -f -c\`, one connection at a" \
		"time from 127.0.3.1.  Admitted connections: calls per" \
		"connection are (count over $((2 * STRACE_N)) - count over" \
		"$STRACE_N) / $STRACE_N, so start-up calls cancel.  Refused:" \
		"limit 1 and one connection held, then $REFUSED_N connections" \
		"11 ms apart, every one refused by the library; (count with" \
		"them - count without) / $REFUSED_N.  Spaced this way each" \
		"refusal also runs the kernel check (a sock_diag dump), which" \
		"the library does at most every 10 ms per client: the worst" \
		"case.  A refused connection never reaches the server's code;" \
		"the library adds setsockopt (SO_LINGER), close and fcntl" \
		"(F_GETFL) to each, then accepts again (EAGAIN here; a blocking" \
		"listener gets poll instead), and the check costs socket," \
		"setsockopt, sendto, recvfrom and close." ""
	md "| system call | bare | library | added | per refused connection |"
	md "|---|---|---|---|---|"
	awk '{ d = $3 - $2; if (d < 0.0005 && d > -0.0005) d = 0
		sb += $2; sl += $3; sr += $4 }
	     $2 != 0 || $3 != 0 || $4 != 0 {
		printf "| %s | %.3f | %.3f | %+.3f | %.3f |\n", $1, $2, $3, d,
		$4 }
	     END { printf "| **total** | %.3f | %.3f | %+.3f | %.3f |\n",
		sb, sl, sl - sb, sr }' "$TMP/slopes" >>"$TMP/sections.md"
	lib=$(awk '{ s += $3 - $2 } END { printf "%+.3f", s }' "$TMP/slopes")
	printf '| %s | = 0 | %s | | | %s |\n' \
		"system calls added per admitted connection" "$lib" \
		"$(verdict "${lib#[+-]}" "<=" 0.0005)" >>"$TMP/summary.md"
	stated "system calls per refused connection (each with its check)" \
		"$(awk '{ s += $4 } END { printf "%.2f", s }' "$TMP/slopes")"
	md "" "<details><summary>strace -c over $STRACE_N connections," \
		"bare and under the library (start-up included)</summary>" \
		"" '```'
	cat "$TMP/st-bare-$STRACE_N.strace" >>"$TMP/sections.md"
	md "" "--- under the library ---"
	cat "$TMP/st-lib-$STRACE_N.strace" >>"$TMP/sections.md"
	md '```' "</details>" ""
}

# ---- c: close on non-sockets ----

section_close() {
	local i a b

	md "## close() on descriptors that are not sockets" ""
	lib_env
	for ((i = 0; i < PAIRS; i++)); do
		a=$(kv ns_per_close "$("$BIN/closeloop" -w -n "$CLOSES")")
		b=$(kv ns_per_close "$(env "${LIBENV[@]}" "$BIN/closeloop" \
			-w -n "$CLOSES")")
		pair close "$a" "$b"
	done
	md "$CLOSES eventfd descriptors per run, closed in batches of 256;" \
		"only the closes are timed, in the thread's CPU time (time" \
		"other programs take does not count).  Each run first accepts one" \
		"loopback connection, so the library's descriptor table is" \
		"mapped as in a server that has served." ""
	md "| | bare | library | library / bare (min-max) |"
	md "|---|---|---|---|"
	row2 close "ns per close()" "%.1f"
	md ""
	figure close "close() on non-sockets, library / bare" "<=" 1.02 \
		"close()"
}

# ---- d: kernel and proxy limits ----

# netns_make NAME: a private network namespace with lo up, held by a
# sleeping process; sets NS to its path for nsenter.
netns_make() {
	spawn "$1" unshare --net -- sh -c \
		'ip link set lo up && echo up && exec sleep 1800'
	wait_for 10 file_has "$TMP/$1.out" '^up$' || return 1
	NS=/proc/${PID_OF[$1]}/ns/net
}

nft_rules() {
	cat <<-EOF
	table inet clbench {
		set perip {
			type ipv4_addr
			size 65535
			flags dynamic
		}
		chain input {
			type filter hook input priority filter; policy accept;
			tcp dport $1 ct state new add @perip { ip saddr ct count over $2 } reject with tcp reset
		}
	}
	EOF
}

haproxy_cfg() {
	cat <<-EOF
	global
		maxconn 8000
		nbthread 1
	defaults
		mode tcp
		timeout connect 5s
		timeout client 30s
		timeout server 30s
	frontend fe
		bind 127.0.0.1:$1
		stick-table type ip size 100k expire 30s store conn_cur
		tcp-request connection track-sc0 src
		tcp-request connection reject if { src_conn_cur gt $3 }
		default_backend be
	backend be
		server s1 127.0.0.1:$2
	EOF
}

# A server started in a namespace: its port is known in advance.
serve_in() {
	local name=$1 ns=$2 port=$3
	shift 3
	spawn "$name" nsenter --net="$ns" -- "$@"
	PORT_OF[$name]=$port
	wait_for 10 port_open "$ns" "$port" ||
		{ note "$name did not start: $(cat "$TMP/$name.err")"
		  return 1; }
}

port_open() {
	nsenter --net="$1" -- ss -Htln "sport = :$2" | grep -q .
}

section_compare() {
	local plain kern sides="bare library" i s base r

	md "## Per-client limits compared: library, nftables, HAProxy" ""
	if ((EUID != 0)) || ! command -v nsenter >/dev/null; then
		skipped "compare" \
			"needs root and nsenter for network namespaces"
		return
	fi
	netns_make ns-plain
	plain=$NS
	lib_env CONNLIMIT_MAX_PER_IP=1000
	serve_in cmp-bare "$plain" 8001 "$SRV" -m epoll -p 8001
	serve_in cmp-lib "$plain" 8002 env "${LIBENV[@]}" "$SRV" -m epoll \
		-p 8002
	if command -v nft >/dev/null; then
		netns_make ns-nft
		kern=$NS
		nft_rules 8003 1000 | nsenter --net="$kern" -- nft -f -
		# Closed connections leave conntrack entries: keep them short.
		nsenter --net="$kern" -- sysctl -q -w \
			net.netfilter.nf_conntrack_tcp_timeout_close=1
		serve_in cmp-nft "$kern" 8003 "$SRV" -m epoll -p 8003
		sides="$sides nftables"
	fi
	if command -v haproxy >/dev/null; then
		haproxy_cfg 8004 8005 1000 >"$TMP/haproxy.cfg"
		serve_in cmp-backend "$plain" 8005 "$SRV" -m epoll -p 8005
		serve_in cmp-haproxy "$plain" 8004 haproxy -db \
			-f "$TMP/haproxy.cfg"
		sides="$sides haproxy"
	fi
	for s in $sides; do
		churn_run "$(side_name "$s")" "$(side_ns "$s")" >/dev/null
	done
	for s in $sides; do
		: >"$TMP/$(side_name "$s").runs"
	done
	for ((i = 0; i < PAIRS; i++)); do
		for s in $sides; do
			read -r r _ < <(churn_run "$(side_name "$s")" \
				"$(side_ns "$s")")
			if [[ $s == bare ]]; then
				base=$r
			else
				pair "cmp_$s" "$base" "$r"
			fi
		done
	done
	compare_report "$sides"
	for s in cmp-haproxy cmp-backend cmp-nft cmp-lib cmp-bare ns-nft \
		ns-plain; do
		stop "$s"
	done
}

side_name() {
	case $1 in
	bare) echo cmp-bare ;; library) echo cmp-lib ;;
	nftables) echo cmp-nft ;; haproxy) echo cmp-haproxy ;;
	esac
}

side_ns() {
	case $1 in
	nftables) echo "/proc/${PID_OF[ns-nft]}/ns/net" ;;
	*) echo "/proc/${PID_OF[ns-plain]}/ns/net" ;;
	esac
}

compare_report() {
	local s med lo hi

	md "The churn of the first section (64 sources, 64 in flight), every" \
		"limiter set to 1000 per client so none refuses; rounds of" \
		"bare, library, nftables, HAProxy, $PAIRS rounds of ${RUN_MS} ms" \
		"runs.  All in private network namespaces; nftables has its" \
		"own, since its conntrack would tax every other side too." \
		"nftables: \`ct count over 1000\` on a dynamic set, reject with" \
		"tcp reset.  HAProxy $(haproxy -v 2>/dev/null | head -n 1 |
			awk '{ print $3 }'): one thread, TCP mode, stick-table" \
		"\`src_conn_cur gt 1000\`, in front of the bare server." ""
	md "| limiter | connections/s (median) | relative to bare (min-max) | failed |"
	md "|---|---|---|---|"
	md "| none (bare) | $(median_col cmp-bare 1) | 1 | $(errors_of cmp-bare) |"
	for s in $1; do
		[[ $s == bare ]] && continue
		read -r med lo hi _ < <(summarize "cmp_$s")
		md "$(printf '| %s | %.0f | %.3f (%.3f-%.3f) | %s |' "$s" \
			"$(median_col "$(side_name "$s")" 1)" "$med" "$lo" \
			"$hi" "$(errors_of "$(side_name "$s")")")"
		echo "\"$s\" $med $lo $hi" >>"$TMP/relative.dat"
	done
	md ""
	stated "churn relative to bare: ${1#bare }" \
		"$(for s in $1; do [[ $s == bare ]] ||
			printf '%s %.3f; ' "$s" "$(summarize "cmp_$s" |
				cut -d' ' -f1)"; done)"
}

# ---- e: scale ----

# zone_bytes PID: bytes the library's zone really occupies (allocated
# pages of its memfd or /dev/shm file, as the kernel counts them).
zone_bytes() {
	local range

	range=$(awk '/connlimit/ { print $1; exit }' /proc/"$1"/maps)
	stat -L -c '%b %B' /proc/"$1"/map_files/"$range" |
		awk '{ print $1 * $2 }'
}

# zone_layout PID: "hdr_size bucket_size conn_size slots nbuckets
# nconns" from the header of PID's zone, so that the report describes
# the library that ran, whatever its version.
zone_layout() {
	local range

	range=$(awk '/connlimit/ { print $1; exit }' /proc/"$1"/maps)
	od -A n -t u4 -N 40 /proc/"$1"/map_files/"$range" |
		tr -s ' \n' '  ' | awk '{ print $5, $6, $7, $8, $9, $10 }'
}

# scale_run NAME SRC NSRC START: SCALE_RUN connections that the server
# accepts and at once closes; prints "cpu accept close", nanoseconds
# per connection: the server's CPU time (schedstat, so time that other
# programs take does not count) and its wall time inside accept and
# inside close.  Also appended to $TMP/NAME.scale.
scale_run() {
	local name=$1 pid=${PID_OF[$1]} s0 s1 c0 c1 line ok

	s0=$(server_stats "$name" 1)
	c0=$(cpu_ns "$pid")
	line=$("$GEN" churn -q -p "${PORT_OF[$name]}" -s "$2" -k "$3" \
		-S "$4" -c 64 -n "$SCALE_RUN" -d 60000)
	c1=$(cpu_ns "$pid")
	s1=$(server_stats "$name" 1)
	ok=$(kv ok "$line")
	((ok == SCALE_RUN)) || problem_once "$name" \
		"$name: a run did not complete every connection ($line)"
	echo "$s0 $s1" | awk -v c=$((c1 - c0)) '{ n = $4 - $1
		if (n < 1) n = 1
		printf "%.1f %.1f %.1f\n", c / n, ($5 - $2) / n, ($6 - $3) / n
	}' | tee -a "$TMP/$name.scale"
}

# hold_conns PORT N: N connections from 100 sources held by processes
# of at most 16000 each, until SCALE_HOLD closes; sets HELD to how many
# were set up.
hold_conns() {
	local port=$1 left=$2 k=0 n fifo=$TMP/hold.fifo

	hold_fifo "$fifo"
	SCALE_HOLD=$HOLD_FD
	while ((left > 0)); do
		n=$((left < 16000 ? left : 16000))
		SPAWN_STDIN=$fifo spawn "holder$k" "$GEN" hold -p "$port" \
			-s 127.2.0.1 -k 100 -n "$n" -d 900000
		left=$((left - n))
		k=$((k + 1))
	done
	while ((k-- > 0)); do
		wait_for 120 file_has "$TMP/holder$k.out" '^held=' ||
			{ note "holder$k did not finish"; return 1; }
	done
	HELD=$(cat "$TMP"/holder*.out | awk '{ split($1, h, "=");
		s += h[2] } END { print s }')
}

section_scale() {
	local zone=clbench-$$ cap=CONNLIMIT_CAPACITY=$SCALE_CAP i a b c d
	local procs pop_line z1m0 zc0

	md "## Scale: clients and connections in the table" ""
	ZONES+=("/dev/shm/connlimit.$zone")
	serve sc-bare "$SRV" -m epoll -q -T
	lib_env CONNLIMIT_MAX_PER_IP=$NEVER $cap
	serve sc-1k env "${LIBENV[@]}" "$SRV" -m epoll -q -T
	serve sc-1m env "${LIBENV[@]}" "$SRV" -m epoll -q -T
	procs=$(((SCALE_CONC + 18999) / 19000 + 1))
	lib_env CONNLIMIT_MAX_PER_IP=$NEVER $cap CONNLIMIT_ZONE=$zone
	serve sc-holders env "${LIBENV[@]}" "$SRV" -m epoll -w "$procs"
	serve sc-conc env "${LIBENV[@]}" "$SRV" -m epoll -q -T
	z1m0=$(zone_bytes "${PID_OF[sc-1m]}")
	zc0=$(zone_bytes "${PID_OF[sc-conc]}")
	note "scale: $SCALE_POP clients into one table"
	pop_line=$("$GEN" churn -q -p "${PORT_OF[sc-1m]}" -s 127.64.0.1 \
		-k "$SCALE_POP" -c 64 -n "$SCALE_POP" -d 600000)
	note "scale: $SCALE_CONC connections held"
	hold_conns "${PORT_OF[sc-holders]}" "$SCALE_CONC"
	for ((i = 0; i <= PAIRS; i++)); do
		a=$(scale_run sc-bare 127.1.0.1 1000 0 | cut -d' ' -f1)
		b=$(scale_run sc-1k 127.1.0.1 1000 0 | cut -d' ' -f1)
		c=$(scale_run sc-1m 127.64.0.1 "$SCALE_POP" \
			$((i * SCALE_RUN)) | cut -d' ' -f1)
		d=$(scale_run sc-conc 127.1.0.1 1000 0 | cut -d' ' -f1)
		((i > 0)) || continue	# the first round warms up
		pair scale_lib "$a" "$b"
		pair scale_1m "$b" "$c"
		pair scale_conc "$b" "$d"
	done
	scale_report "$pop_line" "$HELD" "$procs" "$z1m0" "$zc0"
	release_fifo "$SCALE_HOLD"
	for ((i = 0; i * 16000 < SCALE_CONC; i++)); do
		wait_for 30 not_running "${PID_OF[holder$i]}" || true
	done
	stop sc-holders
	stop sc-conc
	stop sc-1m
	stop sc-1k
	stop sc-bare
}

# scale_report POP_LINE HELD PROCS ZONE_1M_BEFORE ZONE_CONC_BEFORE
scale_report() {
	local per_client per_conn

	per_client=$(awk -v a="$4" -v b="$(zone_bytes "${PID_OF[sc-1m]}")" \
		-v n="$SCALE_POP" 'BEGIN { printf "%.0f", (b - a) / n }')
	per_conn=$(awk -v a="$5" -v b="$(zone_bytes "${PID_OF[sc-conc]}")" \
		-v n="$2" 'BEGIN { printf "%.0f", n ? (b - a) / n : 0 }')
	md "Servers that accept and at once close (\`benchsrv -q -T\`);" \
		"the figure is the server's CPU time per connection (from" \
		"schedstat: time other programs take does not count); the wall" \
		"time the server spends inside accept and close is shown too." \
		"$SCALE_RUN connections per run from 64 in" \
		"flight, $PAIRS rounds after one warm-up round, all four servers" \
		"in turn.  CONNLIMIT_CAPACITY=$SCALE_CAP for every library" \
		"server.  \"1M clients\": the table was first filled by one" \
		"connection from each of $SCALE_POP sources in 127.64.0.0/10" \
		"($(kv rate "$1") connections/s); each run then walks on through" \
		"them.  \"100k open\": $2 connections held from 100 sources" \
		"by $3 server processes sharing a named zone with the measured" \
		"server (this machine's hard RLIMIT_NOFILE is $(ulimit -Hn)," \
		"and raising it needs CAP_SYS_RESOURCE)." ""
	md "| table state | server CPU ns per connection | in accept, ns | in close, ns | relative CPU (min-max) |"
	md "|---|---|---|---|---|"
	scale_row sc-bare "bare (no library)" ""
	scale_row sc-1k "library, 1k clients" scale_lib "library / bare"
	scale_row sc-1m "library, $SCALE_POP clients" scale_1m "vs 1k clients"
	scale_row sc-conc "library, 1k clients + $2 open" scale_conc \
		"vs 1k clients"
	md "" "Zone memory the kernel allocated (the zone's tmpfs pages):" \
		"$per_client bytes more per client after the $SCALE_POP" \
		"clients, $per_conn bytes more per connection with $2 open" \
		"(every page touched counts, including those the library only" \
		"read)." "$(zone_layout "${PID_OF[sc-1m]}" | awk '{
			printf "By layout, from the zone header: %d bytes per" \
				" connection record, %d per client slot (buckets" \
				" of %d slots), %.1f client slots per record, so" \
				" %.0f bytes per unit of CONNLIMIT_CAPACITY once" \
				" all of it is touched;", $3, $2 / $4, $4,
				$5 * $4 / $6, $3 + $5 * $2 / $6 }')" \
		"plus, in each process, a descriptor table mapped in pages" \
		"up to the highest descriptor number used." ""
	figure scale_1m "server CPU per connection, 1M / 1k clients" "<=" 1.2 \
		"1M clients"
	figure scale_conc "server CPU per connection, 100k open / none" \
		"<=" 1.2 "100k open"
	stated "zone memory per client / per open connection" \
		"$per_client B / $per_conn B"
}

# scale_row NAME LABEL [FIG RATIO_LABEL]: a server's medians and, with
# FIG, the ratio figure that compares it.
scale_row() {
	local f=$TMP/$1.scale med lo hi rel=""

	if [[ -n $3 ]]; then
		read -r med lo hi _ < <(summarize "$3")
		rel=$(printf '%s %.3f (%.3f-%.3f)' "$4" "$med" "$lo" "$hi")
	fi
	md "$(printf '| %s | %.0f | %.0f | %.0f | %s |' "$2" \
		"$(tail -n +2 "$f" | cut -d' ' -f1 | med)" \
		"$(tail -n +2 "$f" | cut -d' ' -f2 | med)" \
		"$(tail -n +2 "$f" | cut -d' ' -f3 | med)" "$rel")"
}

# ---- f: flood ----
#
# Three limiters face the same flood, in rounds: the library; the same
# server limiting by itself (benchsrv -l: accept, count, reset, nothing
# else: the least any limiter that sees connections at accept can do);
# and nftables, which resets in the kernel before any handshake.  The
# second is the floor the library is measured against.

# fl_run NAME [NICE]: the 16 clients' run against server NAME (in its
# namespace, if any); with NICE, a flooder at that nice level goes on
# meanwhile.  Prints the latency line, then the flooder's two lines.
fl_run() {
	local port=${PORT_OF[$1]} ns=${NS_OF[$1]:-} fl="" pre=()

	[[ -n $ns ]] && pre=(nsenter --net="$ns" --)
	if [[ -n ${2:-} ]]; then
		spawn flooder "${pre[@]}" nice -n "$2" "$GEN" flood \
			-p "$port" -s 127.0.5.1 -c 64 -o 1000 \
			-d $((FLOOD_MS + 400))
		fl=${PID_OF[flooder]}
		sleep 0.2
	fi
	"${pre[@]}" "$GEN" latency -p "$port" -s 127.0.4.1 -k 16 -c 16 \
		-i 10000 -o 1000 -d "$FLOOD_MS"
	if [[ -n $fl ]]; then
		wait_for 10 not_running "$fl" || true
		paste -sd' ' "$TMP/flooder.out"
	fi
}

refused_count() {
	"$STATUS" --no-verify "$1" |
		sed -n 's/.*\brefused=\([0-9]*\).*/\1/p' | head -n 1
}

# fl_pair SIDE NICE: a quiet run and a flooded one against SIDE's
# server; records both and the p99 pair flood_SIDE_NICE.  Prints the
# flooded run's p99.
fl_pair() {
	local side=$1 n=$2 srv=fl-$1 quiet line r0=0 r1=0 pid

	quiet=$(fl_run "$srv")
	echo "$quiet" >>"$TMP/fl-$side-quiet.runs"
	(($(kv refused "$quiet") + $(kv errors "$quiet") == 0)) ||
		problem_once "fl-$side-quiet" "well-behaved clients were" \
			"refused by the $side side ($quiet)"
	pid=${PID_OF[$srv]}
	[[ $side == library ]] && r0=$(refused_count "$pid")
	line=$(fl_run "$srv" "$n")
	[[ $side == library ]] && r1=$(refused_count "$pid")
	head -n 1 <<<"$line" >>"$TMP/fl-$side-flood$n.runs"
	tail -n 1 <<<"$line" >>"$TMP/fl-$side-flooder$n.runs"
	pair "flood_${side}_$n" "$(kv p99_us "$quiet")" \
		"$(kv p99_us "$(head -n 1 <<<"$line")")"
	[[ $side == library ]] &&
		awk -v n=$((r1 - r0)) \
			-v s="$(kv secs "$(tail -n 1 <<<"$line")")" \
			'BEGIN { printf "%.0f\n", (s > 0 ? n / s : 0) }' \
			>>"$TMP/shed$n"
	kv p99_us "$(head -n 1 <<<"$line")"
}

# The nftables side: its own namespace, the rule of the compare
# section with limit 8.
fl_nft_server() {
	if ((EUID != 0)) || ! command -v nft >/dev/null ||
		! command -v nsenter >/dev/null; then
		note "flood: nftables side skipped (needs root, nft, nsenter)"
		return 1
	fi
	netns_make ns-flood || return 1
	nft_rules 8006 8 | nsenter --net="$NS" -- nft -f - || return 1
	nsenter --net="$NS" -- sysctl -q -w \
		net.netfilter.nf_conntrack_tcp_timeout_close=1
	serve_in fl-nft "$NS" 8006 "$SRV" -m pool -t 64 -p 8006 ||
		return 1
	NS_OF[fl-nft]=$NS
}

section_flood() {
	local i side lib own sides="library own"

	md "## Flood: one client over its limit, 16 clients measuring" ""
	lib_env CONNLIMIT_MAX_PER_IP=8
	serve fl-library env "${LIBENV[@]}" "$SRV" -m pool -t 64
	serve fl-own "$SRV" -m pool -t 64 -l 8
	fl_nft_server && sides="$sides nft"
	for side in $sides; do
		fl_run "fl-$side" >/dev/null	# warm-up, not counted
	done
	for ((i = 0; i < PAIRS; i++)); do
		lib=$(fl_pair library 19)
		own=$(fl_pair own 19)
		pair flood_lib_own "$own" "$lib"
		[[ $sides == *nft* ]] && fl_pair nft 19 >/dev/null
		fl_pair library 0 >/dev/null
	done
	for side in $sides; do
		stop "fl-$side"
	done
	stop ns-flood
	flood_bare
	flood_report "$sides"
}

# Without any limit the flood holds every worker: a fresh server for
# each run, since its workers stay stuck for 30 s.
flood_bare() {
	local i line

	for ((i = 0; i < (PAIRS > 1 ? 2 : 1); i++)); do
		serve fl-bare "$SRV" -m pool -t 64
		fl_run fl-bare >>"$TMP/fl-bare-quiet.runs"
		line=$(fl_run fl-bare 19)
		head -n 1 <<<"$line" >>"$TMP/fl-bare-flood19.runs"
		tail -n 1 <<<"$line" >>"$TMP/fl-bare-flooder19.runs"
		stop fl-bare
	done
}

# lat_row RUNS LABEL: totals and median-run percentiles of latency runs.
lat_row() {
	local f=$TMP/$1.runs

	[[ -s $f ]] || return 0
	md "$(printf '| %s | %d | %d | %.0f | %.0f | %.0f |' "$2" \
		"$(col_of ok "$f" | awk '{ s += $1 } END { print s + 0 }')" \
		"$(cat <(col_of timeouts "$f") <(col_of unfinished "$f") |
			awk '{ s += $1 } END { print s + 0 }')" \
		"$(col_of p50_us "$f" | med)" "$(col_of p99_us "$f" | med)" \
		"$(col_of max_us "$f" | sort -g | tail -n 1)")"
}

# col_of KEY FILE: KEY's value on every line of FILE.
col_of() {
	sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" "$2"
}

# flooder_rate SIDE NICE: the flooder's connections per second, median
# run (each one answered by a reset: it is over its limit throughout).
flooder_rate() {
	paste -d' ' <(col_of conns "$TMP/fl-$1-flooder$2.runs") \
		<(col_of secs "$TMP/fl-$1-flooder$2.runs") |
		awk '{ printf "%.0f\n", ($2 > 0 ? $1 / $2 : 0) }' | med
}

flood_report() {
	local sides=$1 nft="" s

	if [[ $sides == *nft* ]]; then
		nft=" nftables (in its own network namespace, the rule of"
		nft+=" the compare section with limit 8: the kernel resets"
		nft+=" the flooder's SYNs itself);"
	fi
	md "A server with a pool of 64 threads blocking in accept (each" \
		"serves one connection at a time, 30 s read timeout)." \
		"16 clients (127.0.4.1-16) each start a connection every 10 ms" \
		"on a fixed schedule; latency runs from the scheduled start to" \
		"the server's close, 1 s timeout, and a request still open at" \
		"the end counts with its age.  The flooder (127.0.5.1) keeps 64" \
		"connections in flight and opens another as soon as one is" \
		"reset.  Limit 8 per client, kept by: the library; the same" \
		"server keeping the limit itself with no library (\`benchsrv" \
		"-l 8\`: accept, one atomic add, a reset: the least any limiter" \
		"that sees connections at accept can do, so the floor for the" \
		"library);$nft and nothing (bare).  Each round: quiet then" \
		"flood at nice 19 for each limiter, then quiet and flood at" \
		"nice 0 for the library; $PAIRS rounds of ${FLOOD_MS} ms runs." \
		"At nice 19 the flooder's own loop (which a real attacker runs" \
		"on another machine) yields to the server; at nice 0 it" \
		"competes with the server for the same 2 cores." ""
	md "| run | requests ok | timed out or unfinished | p50 us (median run) | p99 us (median run) | max us |"
	md "|---|---|---|---|---|---|"
	lat_row fl-library-quiet "library, no flood"
	lat_row fl-library-flood19 "library, flood at nice 19"
	lat_row fl-library-flood0 "library, flood at nice 0"
	lat_row fl-own-quiet "limit in the server, no flood"
	lat_row fl-own-flood19 "limit in the server, flood at nice 19"
	lat_row fl-nft-quiet "nftables, no flood"
	lat_row fl-nft-flood19 "nftables, flood at nice 19"
	lat_row fl-bare-quiet "bare, no flood"
	lat_row fl-bare-flood19 "bare, flood at nice 19"
	md ""
	md "Refused connections a second (the flooder's connections over" \
		"its run, median run; every one is over the limit): library" \
		"$(flooder_rate library 19) at nice 19 and" \
		"$(flooder_rate library 0) at nice 0 (connlimit-status counted" \
		"$(med <"$TMP/shed19") and $(med <"$TMP/shed0")); limit in the" \
		"server $(flooder_rate own 19)$([[ -n $nft ]] &&
			echo "; nftables $(flooder_rate nft 19)")." ""
	md "Without any limit the flooder held" \
		"$(col_of held "$TMP/fl-bare-flooder19.runs" | paste -sd/)" \
		"connections at the end and the server answered" \
		"$(col_of ok "$TMP/fl-bare-flood19.runs" | paste -sd/) of the" \
		"clients' requests." ""
	figure flood_library_19 "p99, flood (nice 19) / no flood" "<=" 1.5 \
		"flood p99, nice 19"
	figure flood_own_19 \
		"floor: the same with the limit in the server (nice 19)" - - \
		"floor (no library), nice 19" 1.5
	[[ -n $nft ]] && figure flood_nft_19 \
		"the same with nftables in the kernel (nice 19)" - - \
		"nftables, nice 19" 1.5
	figure flood_library_0 "p99, flood (nice 0) / no flood" "<=" 1.5 \
		"flood p99, nice 0"
	figure flood_lib_own "flooded p99, library / limit in the server" - -
	stated "refused connections shed per second (nice 19 / 0)" \
		"$(flooder_rate library 19) / $(flooder_rate library 0)"
}

# ---- g: prefork ----

section_prefork() {
	local n i a b

	md "## Prefork: processes sharing one table" ""
	md "The churn of the first section against an epoll server that" \
		"forks N workers after listening (EPOLLEXCLUSIVE); under the" \
		"library they share one table.  $PAIRS pairs of ${RUN_MS} ms." ""
	md "| workers | bare conn/s | library conn/s | per process, library | library / bare (min-max) |"
	md "|---|---|---|---|---|"
	for n in 2 4; do
		serve pf-bare-$n "$SRV" -m epoll -w $n
		lib_env CONNLIMIT_MAX_PER_IP=$NEVER
		serve pf-lib-$n env "${LIBENV[@]}" "$SRV" -m epoll -w $n
		churn_run pf-bare-$n >/dev/null
		churn_run pf-lib-$n >/dev/null
		for ((i = 0; i < PAIRS; i++)); do
			read -r a _ < <(churn_run pf-bare-$n)
			read -r b _ < <(churn_run pf-lib-$n)
			pair prefork_$n "$a" "$b"
		done
		stop pf-bare-$n
		stop pf-lib-$n
		prefork_row $n
	done
	md ""
}

prefork_row() {
	local med lo hi a b

	read -r med lo hi a b _ < <(summarize "prefork_$1")
	md "$(printf '| %d | %.0f | %.0f | %.0f | %.3f (%.3f-%.3f) |' "$1" \
		"$a" "$b" "$(awk -v b="$b" -v n="$1" 'BEGIN { print b / n }')" \
		"$med" "$lo" "$hi")"
	echo "\"library, $1 processes\" $med $lo $hi" >>"$TMP/relative.dat"
	figure "prefork_$1" "churn, $1 processes, library / bare" ">=" 0.98 \
		"$1 processes"
}

# ---- the report ----

machine() {
	md "## Machine" ""
	md "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit:" \
		"$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo -)" \
		"$(git -C "$REPO" diff --quiet HEAD -- shim 2>/dev/null ||
			echo '(shim/ modified)')"
	md "- kernel: $(uname -srm)"
	md "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1)," \
		"$(nproc) CPUs; memory $(awk '/MemTotal/ { printf "%.1f GiB",
			$2 / 1048576 }' /proc/meminfo)"
	md "- $(ldd --version | head -n 1); $(cc --version | head -n 1)"
	md "- library: $LIBSO, $(stat -c %y "$LIBSO" | cut -d. -f1)," \
		"sha1 $(sha1sum "$LIBSO" | cut -c1-12)${BENCH_LIB_FROM:+,}" \
		"${BENCH_LIB_FROM:-}"
	md "- RLIMIT_NOFILE $(ulimit -Sn)/$(ulimit -Hn);" \
		"$(nproc) cores shared by servers and clients"
	md "- pairs: $PAIRS; run: ${RUN_MS} ms; smoke: $SMOKE;" \
		"sanitizers: ${SANITIZE:-0}"
	md "- load average (1 min) as each section began:${LOADS%,};" \
		"other programs on the machine run alongside and add noise"
	md "- time taken:${TOOK%,}"
}

assemble() {
	local doc=$OUT/$STAMP.md

	{
		echo "# libconnlimit benchmark, $STAMP"
		echo
		echo "Median of the per-pair ratios, with min and max; pairs"
		echo "run alternately (A B A B ...)."
		echo
		echo "| figure | target | median | min | max | verdict |"
		echo "|---|---|---|---|---|---|"
		cat "$TMP/summary.md"
		echo
		if [[ -s $TMP/problems.md ]]; then
			echo "**Problems seen during this run** (figures they"
			echo "touch are doubtful):"
			echo
			cat "$TMP/problems.md"
			echo
		fi
		[[ ! -s $TMP/plot.png ]] || echo "![figures]($STAMP.png)"
		echo
		cat "$TMP/sections.md"
	} >"$doc"
	cp "$doc" "$OUT/latest.md"
	sed -i "s/($STAMP.png)/(latest.png)/" "$OUT/latest.md"
	echo "$doc"
}

plot() {
	if ! command -v gnuplot >/dev/null; then
		note "gnuplot is not installed: no plot"
		return
	fi
	touch "$TMP/relative.dat" "$TMP/targets.dat"
	gnuplot -e "rel='$TMP/relative.dat'; tgt='$TMP/targets.dat'" \
		-e "out='$TMP/plot.png'" "$REPO/bench/plot.gp" \
		2>"$TMP/gnuplot.err" ||
		{ note "gnuplot failed: $(cat "$TMP/gnuplot.err")"; return; }
	cp "$TMP/plot.png" "$OUT/$STAMP.png"
	cp "$TMP/plot.png" "$OUT/latest.png"
}

: >"$TMP/summary.md"
: >"$TMP/sections.md"
LOADS="" TOOK=""
for s in $SECTIONS; do
	case " $ALL " in
	*" $s "*) ;;
	*) note "unknown section $s (known: $ALL)"; exit 2 ;;
	esac
done
for s in $SECTIONS; do
	note "section $s"
	LOADS="$LOADS $s $(cut -d' ' -f1 /proc/loadavg),"
	t0=$SECONDS
	"section_$s"
	TOOK="$TOOK $s $((SECONDS - t0)) s,"
done
machine
plot
assemble
