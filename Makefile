# Makefile - libconnlimit
#
#   make                 build libconnlimit.so and connlimit-status
#   make test            build the test helpers and run the bats suites
#   make SANITIZE=1 ...  the same with AddressSanitizer and UBSan built in
#   make CC=clang        any C11 compiler with GNU extensions
#
# Local overrides go in config.mak.  The user's CFLAGS come last and win.

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
MANDIR ?= $(PREFIX)/share/man
DESTDIR ?=

CC ?= cc
CFLAGS ?= -O2 -g
BATS ?= bats
SANITIZE ?= 0

-include config.mak

WARN = -Wall -Wextra -Wshadow -Wstrict-prototypes \
       -Werror=implicit-function-declaration
BASE = -std=gnu11 -D_GNU_SOURCE $(WARN)
# -z defs: a symbol left undefined fails the build instead of killing the
# server at its first connection.  (Sanitizer runtimes are resolved at
# load time by design, so not with SANITIZE=1.)
DEFS = -Wl,-z,defs
ifeq ($(SANITIZE),1)
SAN = -fsanitize=address,undefined -fno-omit-frame-pointer \
      -fno-sanitize-recover=undefined
DEFS =
endif

LIB = libconnlimit.so
LIB_SRC = shim/addr.c shim/core.c shim/fdtab.c shim/interpose.c \
          shim/diag.c shim/config.c shim/kcheck.c shim/log.c \
          shim/policy.c shim/zone.c \
          shim/zonefile.c
LIB_HDR = shim/cl.h shim/zone.h shim/diag.h shim/policy.h
HELPERS = $(patsubst tests/helpers/%.c,tests/bin/%,\
          $(wildcard tests/helpers/*.c))

.PHONY: all test helpers clean install uninstall

# Fragments append their own steps to these.
INSTALL_EXTRA =
UNINSTALL_EXTRA =
CLEAN_EXTRA =

all: $(LIB) connlimit-status

# Fragments owned by the parts they build: benchmarks, fuzzing, tools.
# Included after `all` so that a bare `make` still builds the library.
-include bench/bench.mk
-include tests/fuzz/fuzz.mk
-include scripts/scripts.mk

$(LIB): $(LIB_SRC) $(LIB_HDR)
	$(CC) $(BASE) -fPIC -shared -fvisibility=hidden $(SAN) $(CFLAGS) \
		-o $@ $(LIB_SRC) $(DEFS) -ldl -lpthread $(LDFLAGS)

connlimit-status: shim/status.c shim/addr.c shim/diag.c $(LIB_HDR)
	$(CC) $(BASE) $(CFLAGS) -o $@ shim/status.c shim/addr.c shim/diag.c \
		$(LDFLAGS)

tests/bin/%: tests/helpers/%.c tests/helpers/say.h
	@mkdir -p tests/bin
	$(CC) $(BASE) -O2 -pthread -o $@ $< $(LDFLAGS)

helpers: $(HELPERS)

test: all helpers
	SANITIZE=$(SANITIZE) $(BATS) tests

install: all $(INSTALL_EXTRA)
	install -D -m 755 $(LIB) $(DESTDIR)$(LIBDIR)/$(LIB)
	install -D -m 755 connlimit-status $(DESTDIR)$(BINDIR)/connlimit-status

uninstall: $(UNINSTALL_EXTRA)
	rm -f $(DESTDIR)$(LIBDIR)/$(LIB) $(DESTDIR)$(BINDIR)/connlimit-status

clean: $(CLEAN_EXTRA)
	rm -f $(LIB) connlimit-status $(HELPERS)
