#!/usr/bin/env bats
# The configuration language and the policy built from it, through
# tests/bin/tpolicy: every setting, every kind of error, comments, the
# inline and environment forms, longest-prefix matching, subnet keys,
# port sets, large files, and the inputs the fuzzer once broke.

bats_require_minimum_version 1.5.0
load test_helper

TP=$BIN/tpolicy
CONF=$BATS_TEST_TMPDIR/c.conf

setup() {
	[[ -x $TP ]] || fail "$TP is missing: run make helpers"
}

# conf LINE...: write the lines to $CONF.
conf() {
	printf '%s\n' "$@" >"$CONF"
}

# has_line TEXT / lacks_line TEXT: an exact line of $output.
has_line() {
	grep -Fxq -- "$1" <<<"$output" ||
		fail "no line '$1' in: $output"
}

lacks_line() {
	! grep -Fxq -- "$1" <<<"$output" ||
		fail "a line is '$1' in: $output"
}

# rejects SETTING VALUE...: each "SETTING = VALUE" is an error naming it.
rejects() {
	local name=$1 v
	shift
	for v in "$@"; do
		conf "$name = $v"
		run -1 "$TP" "$CONF"
		assert_output_has "^error file=.* line=1 setting=$name value="
	done
}

# accepts SETTING VALUE PRINTED: the value parses and prints as PRINTED.
accepts() {
	conf "$1 = $2"
	run -0 "$TP" -s "$CONF"
	has_line "$1=$3"
}

# --- every setting ---

@test "an empty file leaves every setting at its default" {
	conf ''
	run -0 "$TP" "$CONF"
	has_line 'max_per_ip=100'
	has_line 'ipv4_prefix=32'
	has_line 'ipv6_prefix=128'
	has_line 'ports='
	has_line 'max_total=0'
	has_line 'action=reset'
	has_line 'mode=enforce'
	has_line 'log=stderr'
	has_line 'log_level=warn'
	has_line 'strict=0'
	has_line 'capacity=65536'
}

@test "max_per_ip takes 0 to 4294967294" {
	accepts max_per_ip 0 0
	accepts max_per_ip 4294967294 4294967294
	accepts max_per_ip 007 7
}

@test "max_per_ip refuses signs, spaces, exponents and overflow" {
	rejects max_per_ip ten -1 +1 '1 0' 1e3 4294967295 \
		1234567890123456789012345 '' 0x10
}

@test "an error names the line, the setting, the value and the expectation" {
	conf '# limits' 'max_per_ip = ten'
	run -1 "$TP" "$CONF"
	has_line "error file=$CONF line=2 setting=max_per_ip value=\"ten\" expected=\"an integer from 0 (unlimited) to 4294967294\""
}

@test "max_total takes 0 (no cap) to 4294967294" {
	accepts max_total 0 0
	accepts max_total 5000 5000
	rejects max_total -5 4294967295 many
}

@test "ipv4_prefix and ipv6_prefix take 0..32 and 0..128" {
	accepts ipv4_prefix 0 0
	accepts ipv4_prefix 24 24
	accepts ipv6_prefix 64 64
	accepts ipv6_prefix 128 128
	rejects ipv4_prefix 33 -1 /24
	rejects ipv6_prefix 129 64.0
}

@test "action takes reset, close or message" {
	accepts action reset reset
	accepts action close close
	rejects action RESET drop ''
}

@test "mode takes enforce or monitor" {
	accepts mode monitor monitor
	accepts mode enforce enforce
	rejects mode dry-run ''
}

@test "log takes stderr, syslog or an absolute path" {
	accepts log stderr stderr
	accepts log syslog syslog
	accepts log /var/log/connlimit.log /var/log/connlimit.log
	rejects log connlimit.log ./x '' '/a"b'
}

@test "log_level takes error, warn, info or debug" {
	accepts log_level error error
	accepts log_level debug debug
	rejects log_level verbose 3
}

@test "strict takes 0 or 1" {
	accepts strict 1 1
	accepts strict 0 0
	rejects strict 2 yes
}

@test "capacity takes 64 to 16777216" {
	accepts capacity 64 64
	accepts capacity 16777216 16777216
	rejects capacity 63 16777217
}

@test "zone takes 1 to 47 of [A-Za-z0-9._-] not starting with a dot" {
	accepts zone web-1.a_B web-1.a_B
	accepts zone "$(printf 'z%.0s' {1..47})" "$(printf 'z%.0s' {1..47})"
	rejects zone .hidden 'a/b' 'a b' "$(printf 'z%.0s' {1..48})"
}

@test "exempt takes IPv4 and IPv6 networks, bare addresses as hosts" {
	accepts exempt '127.0.0.1, 10.0.0.0/8, ::1, 2001:DB8::/32' \
		'127.0.0.1/32, 10.0.0.0/8, ::1/128, 2001:db8::/32'
}

@test "an empty exempt is allowed and exempts nothing" {
	conf 'exempt ='
	run -0 "$TP" -s "$CONF" -q 10.0.0.1
	has_line 'exempt='
	has_line 'limit=100 exempt=0 key=10.0.0.1'
}

@test "exempt refuses malformed addresses and empty items" {
	rejects exempt 10.1 10.0.0.256 10.0.0.01 1.2.3.4/33 ::1/129 \
		'1:2:3:4:5:6:7::8' '[::1]' 'fe80::1%eth0' '10.0.0.0/8,' \
		'10.0.0.0/8,,::1' 'a.b.c.d' '1::2::3'
}

@test "a network with host bits set is refused with its network address" {
	conf 'exempt = 10.1.2.3/16'
	run -1 "$TP" "$CONF"
	has_line "error file=$CONF line=1 setting=exempt value=\"10.1.2.3/16\" expected=\"a network address with no bits set past the prefix: 10.1.0.0/16\""
}

@test "limit lines print back normalised" {
	conf 'limit 10.1.0.0/16 = 50' 'limit  2001:db8:0::/32=5' \
		'limit ::ffff:192.0.2.0/120 = 0'
	run -0 "$TP" -s "$CONF"
	has_line 'limit 10.1.0.0/16=50'
	has_line 'limit 2001:db8::/32=5'
	has_line 'limit 192.0.2.0/24=0'
}

@test "a limit line needs a network and a number" {
	conf 'limit = 5'
	run -1 "$TP" "$CONF"
	assert_output_has '^error .* setting=limit value="5" expected="limit CIDR = N'
	conf 'limit 10.0.0.0/8 = lots'
	run -1 "$TP" "$CONF"
	assert_output_has 'setting=limit value="lots" expected="an integer'
}

@test "ports limits only the listed local ports" {
	conf 'ports = 80, 443'
	run -0 "$TP" -s "$CONF" -p 80 -p 443 -p 8080
	has_line 'ports=80, 443'
	has_line 'port=80 match=1'
	has_line 'port=443 match=1'
	has_line 'port=8080 match=0'
}

@test "ports with ! limits every local port but those" {
	conf 'ports = !8080, !8443'
	run -0 "$TP" -s "$CONF" -p 80 -p 8080 -p 8443
	has_line 'ports=!8080, !8443'
	has_line 'port=80 match=1'
	has_line 'port=8080 match=0'
	has_line 'port=8443 match=0'
}

@test "an empty ports setting limits every port" {
	conf 'ports ='
	run -0 "$TP" "$CONF" -p 1 -p 65535
	has_line 'port=1 match=1'
	has_line 'port=65535 match=1'
}

@test "ports refuses mixing plain and ! entries" {
	conf 'ports = 80, !8080'
	run -1 "$TP" "$CONF"
	has_line "error file=$CONF line=1 setting=ports value=\"!8080\" expected=\"either ports to limit (80, 443) or ports to leave alone (!8080, !8443), not both\""
}

@test "ports refuses port 0, 65536, repeats and words" {
	rejects ports 0 65536 '80, 80' http '! 80' '80 443'
}

# --- the message ---

@test "message decodes escapes and prints them back" {
	conf 'message = "HTTP/1.1 429 Too Many\r\n\t\"x\" \\ \x41\x00"'
	run -0 "$TP" -s "$CONF"
	has_line 'message="HTTP/1.1 429 Too Many\r\n\t\"x\" \\ A\x00"'
}

@test "message keeps # and ; inside its quotes" {
	conf 'message = "a # b; c" # a comment'
	run -0 "$TP" -s "$CONF"
	has_line 'message="a # b; c"'
}

@test "message must be quoted, closed, and alone on its line" {
	rejects message 'hello' '"hello' '"a" b' '"a\' '"bad \q"' '"\x4"'
	conf 'message = "hello'
	run -1 "$TP" "$CONF"
	assert_output_has 'expected="a closing double quote on the same line"$'
}

@test "message holds at most 512 bytes after escapes" {
	local body
	body=$(printf 'x%.0s' {1..512})
	conf "message = \"$body\""
	run -0 "$TP" -s "$CONF"
	conf "message = \"${body}y\""
	run -1 "$TP" "$CONF"
	assert_output_has 'expected="at most 512 bytes once escapes are decoded"$'
	conf "message = \"$(printf '\\x41%.0s' {1..512})\""
	run -0 "$TP" -s "$CONF"
}

@test "action = message without a message is an error naming action" {
	conf 'max_per_ip = 1' 'action = message'
	run -1 "$TP" "$CONF"
	has_line "error file=$CONF line=2 setting=action value=\"message\" expected=\"a non-empty message setting when action = message\""
	conf 'action = message' 'message = "busy\r\n"'
	run -0 "$TP" -s "$CONF"
	has_line 'action=message'
}

# --- grammar ---

@test "comments, blank lines and surrounding blanks are ignored" {
	conf '# a comment' '' '   # an indented comment' \
		'	max_per_ip	=   7   # seven' 'mode=monitor#no space'
	run -0 "$TP" -s "$CONF"
	has_line 'max_per_ip=7'
	has_line 'mode=monitor'
}

@test "lines may end in CR LF" {
	printf 'max_per_ip = 5\r\nexempt = 10.0.0.0/8\r\n' >"$CONF"
	run -0 "$TP" -s "$CONF"
	has_line 'max_per_ip=5'
	has_line 'exempt=10.0.0.0/8'
}

@test "an unknown setting is an error naming it" {
	conf 'max_per_ip = 5' 'max_per_host = 5'
	run -1 "$TP" "$CONF"
	assert_output_has "^error file=$CONF line=2 setting=max_per_host value=\"5\" expected=\"a known setting: max_per_ip, "
}

@test "setting names are lower case" {
	conf 'MAX_PER_IP = 5'
	run -1 "$TP" "$CONF"
	assert_output_has 'setting=MAX_PER_IP value="5" expected="a known setting'
}

@test "a repeated setting is an error naming the first line" {
	conf 'max_per_ip = 5' '' 'max_per_ip = 6'
	run -1 "$TP" "$CONF"
	has_line "error file=$CONF line=3 setting=max_per_ip value=\"6\" expected=\"each setting once (first at line 1)\""
}

@test "a network repeated in limit lines is an error naming the first" {
	conf 'limit 10.0.0.0/8 = 5' 'limit 10.1.0.0/16 = 5' \
		'limit ::ffff:10.0.0.0/104 = 6'
	run -1 "$TP" "$CONF"
	has_line "error file=$CONF line=3 setting=limit value=\"::ffff:10.0.0.0/104\" expected=\"each network once (first at line 1)\""
}

@test "a network repeated in exempt is an error" {
	conf 'exempt = 10.0.0.0/8, 192.0.2.1, 10.0.0.0/8'
	run -1 "$TP" "$CONF"
	assert_output_has 'setting=exempt value="10.0.0.0/8" expected="each network once'
}

@test "a line without = is an error" {
	conf 'max_per_ip 5'
	run -1 "$TP" "$CONF"
	has_line "error file=$CONF line=1 setting=max_per_ip value=\"max_per_ip 5\" expected=\"a line of the form name = value\""
}

@test "a long bad value is cut short in the error" {
	conf "zone = $(printf 'a%.0s' {1..200})/"
	run -1 "$TP" "$CONF"
	assert_output_has '^error .* value="a{76}\.\.\." expected='
}

@test "in a file ; is part of the value" {
	conf 'max_per_ip = 5; mode = monitor'
	run -1 "$TP" "$CONF"
	assert_output_has 'setting=max_per_ip value="5; mode = monitor"'
}

# --- the inline form ---

@test "the inline form separates settings with ;" {
	run -0 "$TP" -s -i 'max_per_ip=10; exempt=10.0.0.0/8 ;mode=monitor;;'
	has_line 'max_per_ip=10'
	has_line 'exempt=10.0.0.0/8'
	has_line 'mode=monitor'
}

@test "the inline form keeps ; and # inside a quoted message" {
	run -0 "$TP" -s -i 'message="a;b # c"; action=message # note; strict=1'
	has_line 'message="a;b # c"'
	has_line 'action=message'
	has_line 'strict=1'
}

@test "an inline error counts settings, not lines" {
	run -1 "$TP" -i 'max_per_ip=10; exempt=10.1; mode=monitor'
	has_line 'error inline=CONNLIMIT item=2 setting=exempt value="10.1" expected="an IPv4 or IPv6 address or network, such as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32"'
}

@test "the inline form takes limit lines" {
	run -0 "$TP" -s -i 'limit 10.1.0.0/16 = 50; limit 10.2.0.0/16=3' \
		-q 10.2.0.9
	has_line 'limit 10.1.0.0/16=50'
	has_line 'limit=3 exempt=0 key=10.2.0.9'
}

# --- the environment ---

@test "CONNLIMIT_LIMITS takes network=N items" {
	run -0 "$TP" -s -e 'CONNLIMIT_LIMITS=10.1.0.0/16=50, 2001:db8::/32=5' \
		-q 10.1.2.3 -q 2001:db8::1
	has_line 'limit 10.1.0.0/16=50'
	has_line 'limit 2001:db8::/32=5'
	has_line 'limit=50 exempt=0 key=10.1.2.3'
	has_line 'limit=5 exempt=0 key=2001:db8::1'
}

@test "a bad CONNLIMIT_LIMITS item is named with the variable" {
	run -1 "$TP" -e 'CONNLIMIT_LIMITS=10.1.0.0/16=50, 10.2.0.0/16'
	has_line 'error env setting=CONNLIMIT_LIMITS value="10.2.0.0/16" expected="network=N, such as 10.1.0.0/16=50"'
}

@test "CONNLIMIT_EXEMPT and the other variables mirror the file" {
	run -0 "$TP" -s -e 'CONNLIMIT_EXEMPT=10.0.0.0/8, ::1' \
		-e CONNLIMIT_MAX_PER_IP=3 -e CONNLIMIT_IPV4_PREFIX=24 \
		-e 'CONNLIMIT_PORTS=!22' -e CONNLIMIT_LOG_LEVEL=info
	has_line 'exempt=10.0.0.0/8, ::1/128'
	has_line 'max_per_ip=3'
	has_line 'ipv4_prefix=24'
	has_line 'ports=!22'
	has_line 'log_level=info'
}

@test "CONNLIMIT_MESSAGE needs no quotes" {
	run -0 "$TP" -s -e 'CONNLIMIT_MESSAGE=busy\r\n' \
		-e CONNLIMIT_ACTION=message
	has_line 'message="busy\r\n"'
	run -0 "$TP" -s -e 'CONNLIMIT_MESSAGE="quoted; #"'
	has_line 'message="quoted; #"'
}

@test "an unknown CONNLIMIT_ variable is an error" {
	run -1 "$TP" -e CONNLIMIT_MAXPERIP=5
	assert_output_has '^error env setting=CONNLIMIT_MAXPERIP value="5" expected="CONNLIMIT_ and a setting name'
}

@test "the file overrides the environment setting by setting" {
	conf 'limit 10.3.0.0/16 = 9' 'mode = monitor'
	run -0 "$TP" -s -e CONNLIMIT_MAX_PER_IP=4 -e 'CONNLIMIT_MODE=enforce' \
		-e 'CONNLIMIT_LIMITS=10.1.0.0/16=50' \
		-e 'CONNLIMIT_EXEMPT=10.2.0.0/16' "$CONF" \
		-q 10.1.0.1 -q 10.2.0.1 -q 10.3.0.1
	has_line 'max_per_ip=4'
	has_line 'mode=monitor'
	lacks_line 'limit 10.1.0.0/16=50'
	has_line 'limit=4 exempt=0 key=10.1.0.1'
	has_line 'limit=0 exempt=1 key=10.2.0.1'
	has_line 'limit=9 exempt=0 key=10.3.0.1'
}

@test "the environment overrides the inline form" {
	run -0 "$TP" -s -i 'max_per_ip=3; strict=1' -e CONNLIMIT_MAX_PER_IP=8
	has_line 'max_per_ip=8'
	has_line 'strict=1'
}

# --- matching ---

@test "the longest matching prefix gives the limit" {
	conf 'max_per_ip = 100' 'limit 10.0.0.0/8 = 7' \
		'limit 10.1.2.0/24 = 5' 'limit 10.1.0.0/16 = 50'
	run -0 "$TP" -n "$CONF" -q 10.1.2.3 -q 10.1.3.3 -q 10.9.9.9 \
		-q 11.0.0.1
	has_line 'limit=5 exempt=0 key=10.1.2.3'
	has_line 'limit=50 exempt=0 key=10.1.3.3'
	has_line 'limit=7 exempt=0 key=10.9.9.9'
	has_line 'limit=100 exempt=0 key=11.0.0.1'
}

@test "10.1.0.0/16 does not match 10.100.0.1" {
	conf 'limit 10.1.0.0/16 = 50'
	run -0 "$TP" -n "$CONF" -q 10.100.0.1 -q 10.1.255.255 -q 10.0.255.255
	has_line 'limit=100 exempt=0 key=10.100.0.1'
	has_line 'limit=50 exempt=0 key=10.1.255.255'
	has_line 'limit=100 exempt=0 key=10.0.255.255'
}

@test "a limit of 0 means unlimited" {
	conf 'max_per_ip = 2' 'limit 192.0.2.0/24 = 0'
	run -0 "$TP" -n "$CONF" -q 192.0.2.1
	has_line 'limit=0 exempt=0 key=192.0.2.1'
}

@test "exempt wins over a limit on the same network" {
	conf 'exempt = 10.1.0.0/16' 'limit 10.1.0.0/16 = 5'
	run -0 "$TP" -n "$CONF" -q 10.1.0.1
	has_line 'limit=0 exempt=1 key=10.1.0.1'
}

@test "a longer limit inside an exempt network applies" {
	conf 'exempt = 10.0.0.0/8' 'limit 10.1.0.0/16 = 5'
	run -0 "$TP" -n "$CONF" -q 10.1.0.1 -q 10.2.0.1
	has_line 'limit=5 exempt=0 key=10.1.0.1'
	has_line 'limit=0 exempt=1 key=10.2.0.1'
}

@test "IPv6 networks match by longest prefix" {
	conf 'limit 2001:db8::/32 = 5' 'limit 2001:db8:1::/48 = 2' \
		'exempt = 2001:db8:1:2::/64'
	run -0 "$TP" -n "$CONF" -q 2001:db8:9::1 -q 2001:db8:1:3::1 \
		-q 2001:db8:1:2::1 -q 2001:db9::1
	has_line 'limit=5 exempt=0 key=2001:db8:9::1'
	has_line 'limit=2 exempt=0 key=2001:db8:1:3::1'
	has_line 'limit=0 exempt=1 key=2001:db8:1:2::1'
	has_line 'limit=100 exempt=0 key=2001:db9::1'
}

@test "a mapped IPv4 client matches IPv4 networks" {
	conf 'limit 10.1.0.0/16 = 50' 'exempt = 127.0.0.1'
	run -0 "$TP" -n "$CONF" -q ::ffff:10.1.2.3 -q ::ffff:127.0.0.1
	has_line 'limit=50 exempt=0 key=10.1.2.3'
	has_line 'limit=0 exempt=1 key=127.0.0.1'
}

@test "IPv6 networks never match IPv4 clients" {
	conf 'limit ::/0 = 3' 'exempt = ::/64'
	run -0 "$TP" -n "$CONF" -q 10.0.0.1 -q ::ffff:10.0.0.1 -q 2001:db8::1
	has_line 'limit=100 exempt=0 key=10.0.0.1'
	lacks_line 'limit=3 exempt=0 key=10.0.0.1'
	has_line 'limit=3 exempt=0 key=2001:db8::1'
}

@test "0.0.0.0/0 and ::/0 cover their whole family" {
	conf 'limit 0.0.0.0/0 = 4' 'limit ::/0 = 6'
	run -0 "$TP" -n "$CONF" -q 255.255.255.255 -q ffff::1 -q ::
	has_line 'limit=4 exempt=0 key=255.255.255.255'
	has_line 'limit=6 exempt=0 key=ffff::1'
	has_line 'limit=6 exempt=0 key=::'
}

# --- subnet keys ---

@test "ipv4_prefix groups IPv4 and mapped clients by subnet" {
	conf 'ipv4_prefix = 24' 'ipv6_prefix = 48'
	run -0 "$TP" -n "$CONF" -q 10.1.2.3 -q ::ffff:10.1.2.3 -q 10.1.2.255
	has_line 'limit=100 exempt=0 key=10.1.2.0'
	lacks_line 'limit=100 exempt=0 key=10.1.2.3'
	lacks_line 'limit=100 exempt=0 key=10.1.2.255'
}

@test "ipv6_prefix groups IPv6 clients by subnet" {
	conf 'ipv4_prefix = 8' 'ipv6_prefix = 56'
	run -0 "$TP" -n "$CONF" -q 2001:db8:1:2ff::9 -q 10.1.2.3
	has_line 'limit=100 exempt=0 key=2001:db8:1:200::'
	has_line 'limit=100 exempt=0 key=10.0.0.0'
}

@test "prefixes of 0 put every client of a family under one key" {
	conf 'ipv4_prefix = 0' 'ipv6_prefix = 0'
	run -0 "$TP" -n "$CONF" -q 192.0.2.1 -q 2001:db8::1
	has_line 'limit=100 exempt=0 key=0.0.0.0'
	has_line 'limit=100 exempt=0 key=::'
}

@test "limits are looked up by the client's own address, not its subnet" {
	conf 'ipv4_prefix = 24' 'limit 10.1.2.3 = 1'
	run -0 "$TP" -n "$CONF" -q 10.1.2.3 -q 10.1.2.4
	has_line 'limit=1 exempt=0 key=10.1.2.0'
	has_line 'limit=100 exempt=0 key=10.1.2.0'
}

# --- size ---

@test "a file of 10000 limit lines parses and lookups stay exact" {
	awk 'BEGIN {
		for (i = 0; i < 10000; i++)
			printf "limit 10.%d.%d.0/24 = %d\n", i / 256, i % 256,
				i + 1
		print "limit 10.0.0.0/8 = 99999"
		print "limit 2001:db8::/32 = 7"
	}' >"$CONF"
	run -0 "$TP" -n "$CONF" -q 10.0.0.1 -q 10.0.1.200 -q 10.39.15.1 \
		-q 10.39.16.1 -q 10.200.0.1 -q 2001:db8::1 -q 11.0.0.1
	has_line 'limit=1 exempt=0 key=10.0.0.1'
	has_line 'limit=2 exempt=0 key=10.0.1.200'
	has_line 'limit=10000 exempt=0 key=10.39.15.1'
	has_line 'limit=99999 exempt=0 key=10.39.16.1'
	has_line 'limit=99999 exempt=0 key=10.200.0.1'
	has_line 'limit=7 exempt=0 key=2001:db8::1'
	has_line 'limit=100 exempt=0 key=11.0.0.1'
}

@test "more networks than the cap is an error naming the cap" {
	awk 'BEGIN {
		for (i = 0; i <= 16384; i++)
			printf "limit 10.%d.%d.0/24 = 1\n", i / 256, i % 256
	}' >"$CONF"
	run -1 "$TP" "$CONF"
	has_line "error file=$CONF line=16385 setting=limit value=\"10.64.0.0/24\" expected=\"at most 16384 networks in exempt and limit together\""
}

@test "more networks than the cap over all layers is an error" {
	local env
	env=$(awk 'BEGIN {
		for (i = 0; i < 6000; i++)
			printf "%s10.%d.%d.0/24=1", i ? "," : "", i / 256,
				i % 256
	}')
	awk 'BEGIN {
		printf "exempt = 11.0.0.0/24"
		for (i = 1; i < 11000; i++)
			printf ", 11.%d.%d.0/24", i / 256, i % 256
		print ""
	}' >"$CONF"
	run -0 "$TP" -n "$CONF" -q 11.42.0.1
	has_line 'limit=0 exempt=1 key=11.42.0.1'
	run -1 "$TP" -e "CONNLIMIT_LIMITS=$env" "$CONF"
	has_line "error file=$CONF setting=limit value=\"\" expected=\"at most 16384 networks in exempt and limit together, over all layers\""
}

# --- what the fuzzer found ---

@test "every fuzzer seed and regression input parses or fails cleanly" {
	local f
	for f in "$REPO"/tests/fuzz/corpus/* "$REPO"/tests/fuzz/regress/*; do
		[[ -f $f ]] || continue
		run "$TP" -r -s "$f"
		((status == 0 || status == 1)) ||
			fail "$f: status $status: $output"
	done
}
