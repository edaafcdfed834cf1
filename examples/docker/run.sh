#!/bin/sh
# Usage: run.sh [IMAGE [HOST_PORT [CONTAINER_PORT]]]
#
# Runs IMAGE (default nginx:stable, listening on 80) under libconnlimit
# without rebuilding it: the library is mounted read-only from the host,
# the settings file directory is mounted beside it, and the settings go
# in with -e.  Environment: CONNLIMIT_LIB (the library on the host,
# default /usr/local/lib/libconnlimit.so) and CONNLIMIT_CONF_DIR (a
# directory holding connlimit.conf, default /etc/connlimit).
#
# The library must be built for the image's C library: a glibc build
# (Debian, Ubuntu, RHEL hosts) does not load in a musl image (Alpine);
# build it inside such an image instead.
#
# From the host, `connlimit status $(docker inspect -f
# '{{.State.Pid}}' connlimit-demo)` shows the counts.  A container has
# its own /dev/shm, so a named zone is seen by name only inside it.
#
# Clients that reach a published port through Docker's userland proxy
# (connections from the host itself, for one) all appear to come from
# the bridge gateway address: exempt it, or test from another machine.
set -eu

image=${1:-nginx:stable}
host_port=${2:-8080}
container_port=${3:-80}
lib=${CONNLIMIT_LIB:-/usr/local/lib/libconnlimit.so}
conf_dir=${CONNLIMIT_CONF_DIR:-/etc/connlimit}

[ -r "$lib" ] || {
	echo "run.sh: no library at $lib (set CONNLIMIT_LIB)" >&2
	exit 1
}

exec docker run --rm --name connlimit-demo \
	--volume "$lib:/opt/connlimit/libconnlimit.so:ro" \
	--volume "$conf_dir:/etc/connlimit:ro" \
	--env LD_PRELOAD=/opt/connlimit/libconnlimit.so \
	--env CONNLIMIT_MAX_PER_IP=20 \
	--env CONNLIMIT_CONFIG=/etc/connlimit/connlimit.conf \
	--publish "$host_port:$container_port" \
	"$image"
