# mod_krenalis_auth: the module (built with apxs), the krenalis-keys command, tests, demo.
APXS ?= apxs
PREFIX ?= /usr/local
BUILD := build
PYTHON ?= python3

# Debian packages the build, the tests, the demo and the benchmark need.
PKGS := apache2 apache2-dev libapr1-dev libaprutil1-dev liblmdb-dev lmdb-utils libjson-c-dev \
        libssl-dev zlib1g-dev libcmocka-dev python3 python3-h2 curl chromium valgrind \
        postgresql libpq-dev
WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
CSTD := -std=c11 -D_GNU_SOURCE
CFLAGS ?= -O2 -g
LIB_SRC := src/token.c src/crypto.c src/keystore.c src/decide.c src/json.c src/cors.c src/body.c \
           src/mapguard.c
LIB_HDR := $(wildcard src/*.h)
LIBS := -llmdb -lcrypto -lz
# krenalis-keys mirror (src/mirror*.c, src/kms.c): libpq; the module does not link it.
MIRROR_SRC := src/mirror.c src/mirror_apply.c src/kms.c
PQ_CFLAGS := -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)



.PHONY: all deps install test unit ct-check integration mirror mirror-bench demo demo-stop \
        demo-mirror demo-mirror-stop clean format lint

all: deps $(BUILD)/mod_krenalis_auth.so $(BUILD)/krenalis-keys

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

deps:
	$(call apt_install,$(PKGS))

$(BUILD):
	@mkdir -p $(BUILD)

$(BUILD)/mod_krenalis_auth.so: mod_krenalis_auth.c $(LIB_SRC) $(LIB_HDR) | $(BUILD)
	$(APXS) -c -o mod_krenalis_auth.la $(addprefix -Wc$(comma),$(CSTD) $(WARN)) \
	  mod_krenalis_auth.c $(LIB_SRC) $(LIBS) >$(BUILD)/apxs.log 2>&1 || { cat $(BUILD)/apxs.log; exit 1; }
	@! grep -E "(warning|error):" $(BUILD)/apxs.log
	install -m 0755 .libs/mod_krenalis_auth.so $@

$(BUILD)/krenalis-keys: src/cli.c $(MIRROR_SRC) $(LIB_SRC) $(LIB_HDR) | $(BUILD)
	$(CC) $(CSTD) $(WARN) $(CFLAGS) $(PQ_CFLAGS) -o $@ src/cli.c $(MIRROR_SRC) $(LIB_SRC) \
	  $(LIBS) -ljson-c -lpq

comma := ,

install: all
	install -d $(DESTDIR)$(shell $(APXS) -q LIBEXECDIR) $(DESTDIR)$(PREFIX)/bin
	install -m 0644 $(BUILD)/mod_krenalis_auth.so $(DESTDIR)$(shell $(APXS) -q LIBEXECDIR)/
	install -m 0755 $(BUILD)/krenalis-keys $(DESTDIR)$(PREFIX)/bin/
	install -d $(DESTDIR)/etc/apache2/mods-available
	install -m 0644 conf/krenalis_auth.load conf/krenalis_auth.conf $(DESTDIR)/etc/apache2/mods-available/

UNIT_SRC := $(wildcard tests/unit/test_*.c)

# The mirror's code that needs no PostgreSQL is unit-tested too.
UNIT_LIB_SRC := src/mirror_apply.c src/kms.c

$(BUILD)/unit_tests: $(UNIT_SRC) tests/unit/main.c $(LIB_SRC) $(UNIT_LIB_SRC) $(LIB_HDR) | $(BUILD)
	$(CC) $(CSTD) $(WARN) $(CFLAGS) -Isrc -o $@ tests/unit/main.c $(UNIT_SRC) $(LIB_SRC) \
	  $(UNIT_LIB_SRC) $(LIBS) -ljson-c -lcmocka

unit: deps $(BUILD)/unit_tests ct-check
	$(BUILD)/unit_tests

# ka_ct_equal branches on nothing it compares: memcheck reports a jump on the (undefined)
# inputs; the same run through memcmp must be reported, or the check proves nothing.
$(BUILD)/ct_check: tests/unit/ct_check.c src/crypto.c src/crypto.h | $(BUILD)
	$(CC) $(CSTD) $(WARN) $(CFLAGS) -Isrc -o $@ tests/unit/ct_check.c src/crypto.c -lcrypto

ct-check: $(BUILD)/ct_check
	valgrind -q --error-exitcode=3 $(BUILD)/ct_check
	@valgrind -q --error-exitcode=3 $(BUILD)/ct_check --leaky >/dev/null 2>&1; rc=$$?; \
	  if [ $$rc -ne 3 ]; then echo "ct-check: memcmp was not reported (exit $$rc)"; exit 1; fi; \
	  echo "ct-check: memcmp reported as a branch on secret bytes, as expected"

# deps installs chromium, so a browser test that cannot run is a failure here, not a skip.
integration: all
	KRENALIS_TEST_REQUIRE_BROWSER=1 $(PYTHON) tests/integration/run.py --mpm event
	KRENALIS_TEST_REQUIRE_BROWSER=1 $(PYTHON) tests/integration/run.py --mpm prefork

# Everything CI runs: unit tests, the integration suite under both MPMs, the same suite with
# ASan+UBSan preloaded into httpd (tests/fuzz/fuzz.mk), and the short reliability suites
# (hostile input, key churn under load, store faults, restarts, the secret scan; about 75 s,
# tests/reliability/reliability.mk).
test: all unit integration test-sanitize reliability mirror

# krenalis-keys mirror against a throwaway PostgreSQL cluster and a real httpd (tests/mirror/).
$(BUILD)/kms_seal: tests/mirror/kms_seal.c | $(BUILD)
	$(CC) $(CSTD) $(WARN) $(CFLAGS) -o $@ $< -lcrypto

mirror: all $(BUILD)/kms_seal
	$(PYTHON) tests/mirror/run.py

# A snapshot of 1 000 000 API keys and 100 000 write keys in under 20 s, Apache answering from
# the old store until the swap (about 1 min, 1.5 GB of /tmp; not part of make test).
mirror-bench: all $(BUILD)/kms_seal
	$(PYTHON) tests/mirror/bench.py

demo: all
	@$(PYTHON) conf/demo/demo.py start

demo-stop:
	@$(PYTHON) conf/demo/demo.py stop

# The mirrored set-up: a Krenalis-style PostgreSQL database, krenalis-keys mirror, httpd on
# 127.0.0.1:8081 (conf/demo/mirror_demo.py; root).
demo-mirror: all
	@$(PYTHON) conf/demo/mirror_demo.py start

demo-mirror-stop:
	@$(PYTHON) conf/demo/mirror_demo.py stop

format:
	clang-format -i mod_krenalis_auth.c src/*.c src/*.h tests/unit/*.c

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr \
	  --suppress=missingIncludeSystem -I src mod_krenalis_auth.c src tests/unit

clean:
	rm -rf $(BUILD) .libs *.la *.lo *.slo *.o src/*.lo src/*.slo src/*.o src/.libs

# Benchmark (bench/), fuzzing and sanitizer runs (tests/fuzz/).
-include bench/bench.mk
-include tests/fuzz/fuzz.mk
-include tests/reliability/reliability.mk
# Debian packages (make deb), lintian and the package test, which `make test` runs too.
-include debian/deb.mk
