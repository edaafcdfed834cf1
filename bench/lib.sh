# shellcheck shell=bash disable=SC2034
# (PORT_OF and LIBENV are set here for bench/run.sh to read.)
#
# Helpers for bench/run.sh: processes, measurements, statistics, report.
#
# Usage: sourced by bench/run.sh, which sets TMP, PRELOAD and SMOKE
# first.  Every process started here is recorded and stopped by pid in
# cleanup; nothing is ever killed by name.

declare -ga STARTED=()	# pids to stop at exit, in start order
declare -gA PID_OF=()	# name -> pid
declare -gA PORT_OF=()	# name -> listening port
declare -gA NS_OF=()	# name -> network namespace of a server, if not ours
declare -ga ZONES=()	# /dev/shm files of named zones to remove
declare -ga HOLD_FDS=()	# fifo ends only this shell may keep open

note() {
	printf 'bench: %s\n' "$*" >&2
}

# spawn NAME CMD...: run CMD in the background, its output in
# $TMP/NAME.out and .err, standard input from $SPAWN_STDIN or /dev/null.
# CMD does not inherit the fifo ends in HOLD_FDS, so that closing them
# here is seen as end of file by whoever reads the fifo.
spawn() {
	local name=$1
	shift
	# Emptied here, not in the child: a reader must never see the
	# output of an earlier process of the same name.
	: >"$TMP/$name.out"
	: >"$TMP/$name.err"
	(
		for fd in "${HOLD_FDS[@]}"; do
			exec {fd}>&-
		done
		exec "$@"
	) <"${SPAWN_STDIN:-/dev/null}" >>"$TMP/$name.out" \
		2>>"$TMP/$name.err" &
	PID_OF[$name]=$!
	STARTED+=("$!")
}

# hold_fifo PATH: make a fifo and keep it open here; sets HOLD_FD.
hold_fifo() {
	mkfifo "$1"
	exec {HOLD_FD}<>"$1"
	HOLD_FDS+=("$HOLD_FD")
}

# release_fifo FD: close a fifo end that hold_fifo opened.
release_fifo() {
	local fd=$1 f keep=()

	exec {fd}>&-
	for f in "${HOLD_FDS[@]}"; do
		[[ $f == "$1" ]] || keep+=("$f")
	done
	HOLD_FDS=("${keep[@]}")
}

# wait_for SECONDS CMD...: poll CMD every 20 ms until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS <= deadline)) || return 1
		sleep 0.02
	done
}

file_has() {
	grep -Eq -- "$2" "$1" 2>/dev/null
}

# serve NAME CMD...: spawn a server and wait (10 s) for "port=N".
serve() {
	local name=$1
	spawn "$@"
	wait_for 10 file_has "$TMP/$name.out" '^port=[0-9]+$' || {
		note "$name did not start: $(cat "$TMP/$name.err")"
		return 1
	}
	PORT_OF[$name]=$(sed -n 's/^port=//p' "$TMP/$name.out" | head -n 1)
}

# lib_env VAR=VALUE...: set LIBENV to the environment that loads the
# library with these settings; use as env "${LIBENV[@]}" CMD...
lib_env() {
	LIBENV=("LD_PRELOAD=$PRELOAD" "ASAN_OPTIONS=detect_leaks=0"
		"CONNLIMIT_LOG_LEVEL=error" "$@")
}

# stop NAME: TERM, up to 3 s, then KILL.  A server that is already gone
# died during its measurements: that is reported.
stop() {
	local pid=${PID_OF[$1]:-}

	[[ -n $pid ]] || return 0
	if not_running "$pid"; then
		problem "$1 exited before it was stopped:" \
			"$(head -c 300 "$TMP/$1.err" | tr '\n' ' ')"
	fi
	stop_pid "$pid"
	unset "PID_OF[$1]"
}

# problem TEXT: something that makes a figure doubtful; listed at the
# top of the report.
problem() {
	printf -- '- %s\n' "$*" >>"$TMP/problems.md"
	note "problem: $*"
}

# problem_once KEY TEXT: the same, at most once per KEY.
problem_once() {
	[[ ! -e $TMP/$1.problem ]] || return 0
	touch "$TMP/$1.problem"
	problem "${@:2}"
}

not_running() {
	! kill -0 "$1" 2>/dev/null
}

stop_pid() {
	kill -TERM "$1" 2>/dev/null || true
	wait_for 3 not_running "$1" || kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

cleanup() {
	local i z

	for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
		kill -0 "${STARTED[i]}" 2>/dev/null && stop_pid "${STARTED[i]}"
	done
	for z in "${ZONES[@]}"; do
		rm -f "$z"
	done
	# For the tests: what was started, all of it stopped by now.
	printf '%s\n' "${STARTED[@]}" >"$TMP/started.pids"
}

# kv KEY LINE: the value of KEY=value in LINE.
kv() {
	sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"
}

# children PID: PID and its child processes (a prefork server).
family_of() {
	local pid=$1 t

	echo "$pid"
	for t in /proc/"$pid"/task/*; do
		cat "$t/children" 2>/dev/null || true
	done | tr ' ' '\n' | sed '/^$/d'
}

# cpu_ns PID: nanoseconds on a CPU of PID's threads and children.
cpu_ns() {
	local p

	for p in $(family_of "$1"); do
		cat /proc/"$p"/task/*/schedstat 2>/dev/null || true
	done | awk '{ s += $1 } END { printf "%.0f\n", s }'
}

# server_stats NAME PROCS: ask each of PROCS processes for its totals;
# prints "conns accept_ns close_ns" summed over them.
server_stats() {
	local out=$TMP/$1.out before

	before=$(grep -c '^stats ' "$out" || true)
	kill -USR1 "${PID_OF[$1]}"
	wait_for 10 stats_after "$out" $((before + $2)) ||
		{ note "$1 gave no stats"; return 1; }
	grep '^stats ' "$out" | tail -n "$2" | awk '{
		for (i = 2; i <= NF; i++) {
			split($i, kv, "=")
			s[kv[1]] += kv[2]
		}
	} END { printf "%.0f %.0f %.0f\n", s["conns"], s["accept_ns"],
		s["close_ns"] }'
}

stats_after() {
	(($(grep -c '^stats ' "$1" || true) >= $2))
}

# ---- statistics ----

# pair FIG A B: one alternated pair of measurements for figure FIG.
pair() {
	echo "$2 $3" >>"$TMP/$1.pairs"
}

# med: the median of the numbers on standard input ("nan" if none).
med() {
	sort -g | awk '{ v[NR] = $1 } END {
		if (!NR)
			print "nan"
		else if (NR % 2)
			print v[(NR + 1) / 2]
		else
			print (v[NR / 2] + v[NR / 2 + 1]) / 2
	}'
}

# summarize FIG: "median min max median_a median_b n" of the ratio B/A
# over FIG's pairs.
summarize() {
	local f=$TMP/$1.pairs r

	if [[ ! -s $f ]]; then
		echo "nan nan nan nan nan 0"
		return
	fi
	r=$(awk '$1 > 0 { printf "%.6f\n", $2 / $1 }' "$f" | sort -g)
	printf '%.4f %.4f %.4f %.6g %.6g %d\n' "$(med <<<"$r")" \
		"$(head -n 1 <<<"$r")" "$(tail -n 1 <<<"$r")" \
		"$(cut -d' ' -f1 "$f" | med)" "$(cut -d' ' -f2 "$f" | med)" \
		"$(wc -l <<<"$r")"
}

# ---- the report ----

# md TEXT...: append to the report's sections.  The words of TEXT form
# one line; an empty argument ends the line and adds a blank one.
md() {
	local a line=""

	for a in "$@"; do
		if [[ -n $a ]]; then
			line+="${line:+ }$a"
			continue
		fi
		[[ -z $line ]] || printf '%s\n' "$line"
		line=""
		echo
	done
	[[ -z $line ]] || printf '%s\n' "$line"
} >>"$TMP/sections.md"

# verdict MEDIAN OP TARGET: "met" or "missed" (not judged in smoke runs).
verdict() {
	if ((SMOKE)); then
		echo "not judged (smoke)"
		return
	fi
	awk -v m="$1" -v op="$2" -v t="$3" 'BEGIN {
		ok = op == ">=" ? m >= t : op == "<=" ? m <= t : m == t
		print (m == "nan" ? "no data" : ok ? "met" : "missed")
	}'
}

# figure FIG LABEL OP TARGET SHORT: a summary row for ratio figure FIG,
# and a point labelled SHORT in the plot's data.  OP "-": no target.
figure() {
	local s med lo hi

	s=$(summarize "$1")
	read -r med lo hi _ _ _ <<<"$s"
	if [[ $3 == - ]]; then
		printf '| %s | none | %.3f | %.3f | %.3f | |\n' "$2" "$med" \
			"$lo" "$hi" >>"$TMP/summary.md"
		# Plotted too with PLOT_LABEL [MARK]: next to a figure whose
		# target MARK also shows (a comparison, not a verdict).
		[[ -n ${5:-} ]] && printf '"%s" %s %s %s %s\n' "$5" "$med" \
			"$lo" "$hi" "${6:-NaN}" >>"$TMP/targets.dat"
		return 0
	fi
	printf '| %s | %s %s | %.3f | %.3f | %.3f | %s |\n' "$2" "$3" "$4" \
		"$med" "$lo" "$hi" "$(verdict "$med" "$3" "$4")" \
		>>"$TMP/summary.md"
	printf '"%s" %s %s %s %s\n' "$5" "$med" "$lo" "$hi" "$4" \
		>>"$TMP/targets.dat"
}

# stated LABEL VALUE: a summary row for a figure without a target.
stated() {
	printf '| %s | stated | %s | | | |\n' "$1" "$2" >>"$TMP/summary.md"
}

# skipped SECTION REASON
skipped() {
	md "" "Skipped: $2." ""
	printf '| %s | | skipped: %s | | | |\n' "$1" "$2" >>"$TMP/summary.md"
	note "$1 skipped: $2"
}
