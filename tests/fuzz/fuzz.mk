# tests/fuzz/fuzz.mk - libFuzzer target for the configuration parser.
#
#   make fuzz          build, then fuzz for FUZZ_TIME seconds (default 60)
#                      or FUZZ_RUNS inputs, whichever ends first
#   make fuzz-smoke    build, then fuzz for 15 seconds
#   make fuzz-regress  build, then replay the seeds and regressions only
#   make fuzz-clean    remove the fuzzer and what it found
#
# Needs clang and the libFuzzer runtime (Debian: libclang-rt-14-dev).
# New inputs and crash files go to tests/fuzz/work/, which is not kept;
# a crash becomes a fix plus a file in tests/fuzz/regress/.

# Included before the top Makefile's first target: keep `all` the default.
fuzz_saved_goal := $(.DEFAULT_GOAL)

FUZZ_CC ?= clang
FUZZ_TIME ?= 60
FUZZ_RUNS ?= 20000000
FUZZ_BIN = tests/fuzz/bin/fuzz_policy
FUZZ_CFLAGS = -std=gnu11 -D_GNU_SOURCE -g -O1 $(WARN) \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_OPTS = -max_len=4096 -timeout=10 -rss_limit_mb=4096 \
	-dict=tests/fuzz/policy.dict \
	-artifact_prefix=tests/fuzz/work/ -print_final_stats=1
FUZZ_DIRS = tests/fuzz/work tests/fuzz/corpus tests/fuzz/regress

.PHONY: fuzz fuzz-smoke fuzz-regress fuzz-clean

$(FUZZ_BIN): tests/fuzz/fuzz_policy.c shim/policy.c shim/policy.h \
		shim/addr.c shim/cl.h
	@mkdir -p tests/fuzz/bin
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ tests/fuzz/fuzz_policy.c

fuzz: $(FUZZ_BIN)
	@mkdir -p tests/fuzz/work
	$(FUZZ_BIN) $(FUZZ_OPTS) -max_total_time=$(FUZZ_TIME) \
		-runs=$(FUZZ_RUNS) $(FUZZ_DIRS)

fuzz-smoke: $(FUZZ_BIN)
	@mkdir -p tests/fuzz/work
	$(FUZZ_BIN) $(FUZZ_OPTS) -max_total_time=15 $(FUZZ_DIRS)

fuzz-regress: $(FUZZ_BIN)
	$(FUZZ_BIN) $(wildcard tests/fuzz/corpus/* tests/fuzz/regress/*)

fuzz-clean:
	rm -rf tests/fuzz/bin tests/fuzz/work

# tpolicy includes these sources; rebuild it when they change.
tests/bin/tpolicy: shim/policy.c shim/policy.h shim/addr.c shim/cl.h

.DEFAULT_GOAL := $(fuzz_saved_goal)
