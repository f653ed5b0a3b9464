# mod_krenalis_auth: the module (built with apxs), the krenalis-keys command, tests, demo.
#
#   make            builds build/mod_krenalis_auth.so and build/krenalis-keys; installs nothing
#                   (a missing build dependency stops it with the Debian package to install)
#   make install    copies them into place (build first; installs no package either)
#   make deps       installs the Debian packages the build, the tests and the demo need
#   make test       everything CI runs (installs what is missing first)
APXS ?= apxs
PREFIX ?= /usr/local
BUILD := build
PYTHON ?= python3
AR ?= ar

# Debian packages the build needs (checked by `make`, installed by `make deps`), and those the
# tests, the demo and the benchmark need besides (prometheus: promtool and the server the metrics
# test scrapes with; its service is not used).
BUILD_PKGS := apache2-dev libapr1-dev libaprutil1-dev liblmdb-dev libjson-c-dev libpq-dev \
              libssl-dev zlib1g-dev
PKGS := $(BUILD_PKGS) apache2 lmdb-utils libcmocka-dev python3 python3-h2 curl chromium valgrind \
        postgresql prometheus
WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
# GNU C (the code uses __int128, __thread and __asm__) and the GNU C library's declarations.
CSTD := -std=gnu11 -D_GNU_SOURCE
CFLAGS ?= -O2 -g
# The library: everything but the Apache glue and the command line, compiled once into a static
# PIC archive that the module, krenalis-keys, the unit tests, the fuzzers and the bench link.
LIB_SRC := src/token.c src/crypto.c src/keystore.c src/keycache.c src/decide.c src/json.c src/cors.c src/body.c \
           src/mapguard.c src/names.c src/mirror_apply.c src/kms.c src/metrics.c
LIB_HDR := $(wildcard src/*.h)
LIB := $(BUILD)/libkrenalis.a
LIBS := -llmdb -lcrypto -lz
# The Apache glue: mod_krenalis_auth.c over src/apache/ (ka_private.h).
MOD_SRC := mod_krenalis_auth.c $(wildcard src/apache/*.c)
MOD_HDR := $(wildcard src/apache/*.h)
# krenalis-keys: src/cli/ and the mirror (src/mirror.c, libpq; the module does not link it).
CLI_SRC := $(wildcard src/cli/*.c)
CLI_HDR := $(wildcard src/cli/*.h)
MIRROR_SRC := src/mirror.c
PQ_CFLAGS := -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)

.PHONY: all deps check-build-deps install test unit ct-check integration mirror mirror-bench \
        demo demo-check demo-stop demo-mirror demo-mirror-stop clean format lint

all: $(BUILD)/mod_krenalis_auth.so $(BUILD)/krenalis-keys

# $(call apt_install,PACKAGES): installs those of the Debian packages that are missing (a
# no-op when all are there). Also used by bench/bench.mk.
define apt_install
@missing=""; for p in $(1); do \
  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
  echo "installing:$$missing"; \
  if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; fi; \
  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
fi
endef

# $(call apt_require,PACKAGES): fails, naming the missing Debian packages, installs nothing.
define apt_require
@missing=""; for p in $(1); do \
  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
  echo "error: the build needs these Debian packages, which are not installed:$$missing" >&2; \
  echo "       install them with 'apt-get install$$missing' (as root), or run 'make deps'" >&2; \
  exit 1; \
fi
endef

deps:
	$(call apt_install,$(PKGS))

check-build-deps:
	$(call apt_require,$(BUILD_PKGS))

$(BUILD):
	@mkdir -p $(BUILD)

# $(call lib_rules,DIR,CC,FLAGS): DIR/libkrenalis.a from LIB_SRC, objects in DIR/lib/. One
# archive per kind of build: plain here, sanitized and fuzzing ones in tests/fuzz/fuzz.mk.
define lib_rules
$(1)/lib/%.o: src/%.c $(LIB_HDR) | check-build-deps
	@mkdir -p $$(@D)
	$(2) $(3) -fPIC -c -o $$@ $$<

$(1)/libkrenalis.a: $(patsubst src/%.c,$(1)/lib/%.o,$(LIB_SRC))
	@rm -f $$@
	$(AR) rcs $$@ $$^
endef

$(eval $(call lib_rules,$(BUILD),$(CC),$(CSTD) $(WARN) $(CFLAGS)))

# apxs links the archive before the libraries it needs (libtool notes in apxs.log that a
# non-libtool archive is not portable: it is PIC, made for this).
$(BUILD)/mod_krenalis_auth.so: $(MOD_SRC) $(MOD_HDR) $(LIB) $(LIB_HDR) | $(BUILD) check-build-deps
	$(APXS) -c -o mod_krenalis_auth.la $(addprefix -Wc$(comma),$(CSTD) $(WARN)) \
	  $(MOD_SRC) $(LIB) $(LIBS) >$(BUILD)/apxs.log 2>&1 || { cat $(BUILD)/apxs.log; exit 1; }
	@! grep -E "(warning|error):" $(BUILD)/apxs.log
	install -m 0755 .libs/mod_krenalis_auth.so $@

$(BUILD)/krenalis-keys: $(CLI_SRC) $(CLI_HDR) $(MIRROR_SRC) $(LIB) $(LIB_HDR) | $(BUILD) check-build-deps
	$(CC) $(CSTD) $(WARN) $(CFLAGS) $(PQ_CFLAGS) -Isrc -o $@ $(CLI_SRC) $(MIRROR_SRC) $(LIB) \
	  $(LIBS) -ljson-c -lpq

comma := ,

install: all
	install -d $(DESTDIR)$(shell $(APXS) -q LIBEXECDIR) $(DESTDIR)$(PREFIX)/bin
	install -m 0644 $(BUILD)/mod_krenalis_auth.so $(DESTDIR)$(shell $(APXS) -q LIBEXECDIR)/
	install -m 0755 $(BUILD)/krenalis-keys $(DESTDIR)$(PREFIX)/bin/
	install -d $(DESTDIR)/etc/apache2/mods-available
	install -m 0644 conf/krenalis_auth.load conf/krenalis_auth.conf $(DESTDIR)/etc/apache2/mods-available/

UNIT_SRC := $(wildcard tests/unit/test_*.c) $(wildcard tests/common/*.c)
UNIT_HDR := $(wildcard tests/unit/*.h) $(wildcard tests/common/*.h)

$(BUILD)/unit_tests: $(UNIT_SRC) $(UNIT_HDR) tests/unit/main.c $(LIB) $(LIB_HDR) | $(BUILD)
	$(CC) $(CSTD) $(WARN) $(CFLAGS) -Isrc -Itests/common -o $@ tests/unit/main.c $(UNIT_SRC) \
	  $(LIB) $(LIBS) -ljson-c -lcmocka -lpthread

unit: deps
	@$(MAKE) --no-print-directory $(BUILD)/unit_tests ct-check
	$(BUILD)/unit_tests

# ka_ct_equal branches on nothing it compares: memcheck reports a jump on the (undefined)
# inputs; the same run through memcmp must be reported, or the check proves nothing.
$(BUILD)/ct_check: tests/unit/ct_check.c $(LIB) $(LIB_HDR) | $(BUILD)
	$(CC) $(CSTD) $(WARN) $(CFLAGS) -Isrc -o $@ tests/unit/ct_check.c $(LIB) -lcrypto

ct-check: $(BUILD)/ct_check
	valgrind -q --error-exitcode=3 $(BUILD)/ct_check
	@valgrind -q --error-exitcode=3 $(BUILD)/ct_check --leaky >/dev/null 2>&1; rc=$$?; \
	  if [ $$rc -ne 3 ]; then echo "ct-check: memcmp was not reported (exit $$rc)"; exit 1; fi; \
	  echo "ct-check: memcmp reported as a branch on secret bytes, as expected"

# deps installs chromium, so a browser test that cannot run is a failure here, not a skip.
integration: deps
	@$(MAKE) --no-print-directory all
	KRENALIS_TEST_REQUIRE_BROWSER=1 $(PYTHON) tests/integration/run.py --mpm event
	KRENALIS_TEST_REQUIRE_BROWSER=1 $(PYTHON) tests/integration/run.py --mpm prefork

# Everything CI runs: unit tests, the integration suite under both MPMs, the same suite with
# ASan+UBSan preloaded into httpd (tests/fuzz/fuzz.mk), and the short reliability suites
# (hostile input, key churn under load, store faults, restarts, the secret scan; about 75 s,
# tests/reliability/reliability.mk) and the mirror's (tests/mirror/); included makefiles add
# theirs to TEST_TARGETS (the Debian packages: debian/deb.mk). Run in that order, after deps.
TEST_TARGETS := all unit integration demo-check test-sanitize reliability mirror

# make demo on a free loopback port in a folder of its own (a running demo is left alone):
# every curl line it prints, run as printed, must answer as its label says (tests/demo/).
demo-check: deps
	@$(MAKE) --no-print-directory all
	$(PYTHON) tests/demo/check.py

# krenalis-keys mirror against a throwaway PostgreSQL cluster and a real httpd (tests/mirror/).
$(BUILD)/kms_seal: tests/mirror/kms_seal.c | $(BUILD)
	$(CC) $(CSTD) $(WARN) $(CFLAGS) -o $@ $< -lcrypto

mirror: deps
	@$(MAKE) --no-print-directory all $(BUILD)/kms_seal
	$(PYTHON) tests/mirror/run.py

# A snapshot of 1 000 000 API keys and 100 000 write keys in under 20 s, Apache answering from
# the old store until the swap (about 1 min, 1.5 GB of /tmp; not part of make test).
mirror-bench: deps
	@$(MAKE) --no-print-directory all $(BUILD)/kms_seal
	$(PYTHON) tests/mirror/bench.py

test: deps
	@$(MAKE) --no-print-directory $(TEST_TARGETS)

demo: deps
	@$(MAKE) --no-print-directory all
	@$(PYTHON) conf/demo/demo.py start

demo-stop:
	@$(PYTHON) conf/demo/demo.py stop

# The mirrored set-up: a Krenalis-style PostgreSQL database, krenalis-keys mirror, httpd on
# 127.0.0.1:8081 (conf/demo/mirror_demo.py; root).
demo-mirror: deps
	@$(MAKE) --no-print-directory all
	@$(PYTHON) conf/demo/mirror_demo.py start

demo-mirror-stop:
	@$(PYTHON) conf/demo/mirror_demo.py stop

FORMAT_SRC = mod_krenalis_auth.c $(wildcard src/*.c src/*.h src/*/*.c src/*/*.h) \
             $(wildcard tests/unit/*.c tests/unit/*.h tests/common/*.c tests/common/*.h) \
             $(wildcard tests/fuzz/*.c tests/fuzz/*.h bench/*.c)

format:
	clang-format -i $(FORMAT_SRC)

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr \
	  --suppress=missingIncludeSystem -I src -I tests/common mod_krenalis_auth.c src tests/unit \
	  tests/common

clean:
	rm -rf $(BUILD) .libs *.la *.lo *.slo *.o src/*.lo src/*.slo src/*.o src/.libs \
	  src/apache/*.lo src/apache/*.slo src/apache/*.o src/apache/.libs

# Benchmark (bench/), fuzzing and sanitizer runs (tests/fuzz/).
-include bench/bench.mk
-include tests/fuzz/fuzz.mk
-include tests/reliability/reliability.mk
# Debian packages (make deb), lintian and the package test, which `make test` runs too.
-include debian/deb.mk
