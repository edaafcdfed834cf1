# bench/bench.mk - the benchmark suite; included by the top Makefile.
#
#   make bench         build the load generator and run the whole suite
#                      (about 8 minutes; root, for network namespaces)
#   make bench-smoke   the same harness at tiny sizes in a few seconds;
#                      BENCH_OUT=DIR puts its results in DIR
#   make bench-tools   only build bench/bin/*
#
# Results: bench/results/STAMP.md and STAMP.png, copied to latest.*.
# BENCH_ARGS passes section names to bench/run.sh (e.g. "churn close").

# Included before the top Makefile's first rule: an empty rule for
# `all` keeps it the default goal.
all:

BENCH_PROGS = bench/bin/benchsrv bench/bin/loadgen bench/bin/closeloop
BENCH_OUT ?= bench/results/tmp/smoke
BENCH_ARGS ?=

.PHONY: bench bench-smoke bench-tools bench-clean

bench/bin/%: bench/%.c bench/common.c bench/common.h
	@mkdir -p bench/bin
	$(CC) $(BASE) -O2 -pthread -o $@ $< bench/common.c $(LDFLAGS)

bench-tools: $(BENCH_PROGS)

bench: all bench-tools
	bash bench/run.sh $(BENCH_ARGS)

bench-smoke: all bench-tools
	@mkdir -p $(BENCH_OUT)
	bash bench/run.sh -s -o $(BENCH_OUT) $(BENCH_ARGS)

bench-clean:
	rm -rf bench/bin bench/results/tmp
