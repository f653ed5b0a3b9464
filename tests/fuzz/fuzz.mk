# Fuzzing (libFuzzer) and sanitizer runs. Included from the top Makefile, whose BUILD, LIB_SRC,
# LIB_HDR, LIBS, CSTD, WARN, APXS, PYTHON and lib_rules it uses. See tests/fuzz/README.md.
#
#   make fuzz               each target for FUZZ_SECONDS (default 20) on a copy of its corpus
#   make fuzz-smoke         each target for 3 s (part of make test)
#   make fuzz-json          one target (bearer apikey json workspace origin decide)
#   make test-sanitize      the module and krenalis-keys with ASan+UBSan, integration suite
#   make test-valgrind      the unit tests under valgrind

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 20
FUZZ_FLAGS ?=
FUZZ_TARGETS := bearer apikey json workspace origin decide
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
               $(CSTD) $(WARN) -Isrc -Itests/fuzz -Itests/common
# The library for the fuzzers: instrumented the same way, without libFuzzer's main.
FUZZ_LIB_CFLAGS := -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all \
                   $(CSTD) $(WARN)
FUZZ_BINS := $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))
FUZZ_HDR := tests/fuzz/fuzz_common.h $(wildcard tests/common/*.h)

SAN_CC ?= gcc
SAN_DIR := $(BUILD)/asan
SAN_FLAGS := -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
             -fno-sanitize-recover=undefined
SAN_LOGS := $(SAN_DIR)/logs
# httpd itself is not instrumented: the ASan runtime must be the first library it loads.
SAN_PRELOAD = $(shell $(SAN_CC) -print-file-name=libasan.so) $(shell $(SAN_CC) -print-file-name=libubsan.so)
SAN_UBSAN_OPTIONS = print_stacktrace=1:halt_on_error=1:log_path=$(CURDIR)/$(SAN_LOGS)/ubsan
# httpd leaks by design at exit (its pools go with the process): no leak check there.
SAN_HTTPD_ASAN_OPTIONS = detect_leaks=0:abort_on_error=1:log_path=$(CURDIR)/$(SAN_LOGS)/asan
SAN_CLI_ASAN_OPTIONS = detect_leaks=1:abort_on_error=1:log_path=$(CURDIR)/$(SAN_LOGS)/asan
SAN_MPMS ?= event prefork
SAN_APXS_CFLAGS = $(shell $(APXS) -q EXTRA_CPPFLAGS) -I$(shell $(APXS) -q INCLUDEDIR) \
                  -I$(shell $(APXS) -q APR_INCLUDEDIR)

VALGRIND ?= valgrind
VALGRIND_FLAGS ?= --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
                  --errors-for-leak-kinds=definite,indirect --track-origins=yes

.PHONY: fuzz fuzz-build fuzz-deps fuzz-smoke $(addprefix fuzz-,$(FUZZ_TARGETS)) test-sanitize sanitize-build \
        test-valgrind

# ---- libFuzzer ----

$(eval $(call lib_rules,$(FUZZ_DIR),$(FUZZ_CC),$(FUZZ_LIB_CFLAGS)))

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_HDR) $(FUZZ_DIR)/libkrenalis.a $(LIB_HDR)
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_DIR)/libkrenalis.a $(LIBS)

fuzz-build: $(FUZZ_BINS)

# Runs one target on a fresh copy of its seed corpus under build/fuzz/corpus/; a crash or a
# violated property leaves the input in build/fuzz/artifacts/<target>/ and fails the target.
define FUZZ_RUN
	@rm -rf $(FUZZ_DIR)/corpus/$(1) $(FUZZ_DIR)/artifacts/$(1)
	@mkdir -p $(FUZZ_DIR)/corpus/$(1) $(FUZZ_DIR)/artifacts/$(1)
	@cp tests/fuzz/corpus/$(1)/* $(FUZZ_DIR)/corpus/$(1)/
	@echo "fuzz_$(1): $(FUZZ_SECONDS) s"
	@if $(FUZZ_DIR)/fuzz_$(1) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	     -artifact_prefix=$(FUZZ_DIR)/artifacts/$(1)/ \
	     $(if $(wildcard tests/fuzz/$(1).dict),-dict=tests/fuzz/$(1).dict) $(FUZZ_FLAGS) \
	     $(FUZZ_DIR)/corpus/$(1) >$(FUZZ_DIR)/fuzz_$(1).log 2>&1; then \
	  awk '/stat::number_of_executed_units/ {n=$$2} /stat::average_exec_per_sec/ {s=$$2} \
	       END {printf "fuzz_$(1): ok, %s execs, %s execs/s\n", n, s}' $(FUZZ_DIR)/fuzz_$(1).log; \
	else \
	  grep -v -E '^#[0-9]+' $(FUZZ_DIR)/fuzz_$(1).log | tail -60; \
	  echo "fuzz_$(1): FAILED; input: $$(ls $(FUZZ_DIR)/artifacts/$(1)/* 2>/dev/null)"; \
	  echo "  reproduce: $(FUZZ_DIR)/fuzz_$(1) <input>"; \
	  exit 1; \
	fi
endef

$(addprefix fuzz-,$(FUZZ_TARGETS)): fuzz-%: $(FUZZ_DIR)/fuzz_%
	$(call FUZZ_RUN,$*)

# The compiler and libFuzzer's runtime (clang's sanitizer runtimes).
FUZZ_PKGS := clang libclang-rt-14-dev

fuzz-deps:
	$(call apt_install,$(FUZZ_PKGS))

# In make test: every target for a few seconds on its seed corpus and dictionary, so that a
# change that a fuzzer's independent oracle disagrees with fails CI (issue 12's classification
# once broke two oracles unnoticed, because no test ran them). About a minute, build included.
fuzz-smoke: fuzz-deps
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS)
FUZZ_SMOKE_SECONDS ?= 3
TEST_TARGETS += fuzz-smoke

# Every target, each for FUZZ_SECONDS; all run even when one fails.
fuzz: $(FUZZ_BINS)
	@fail=""; for t in $(FUZZ_TARGETS); do \
	  $(MAKE) --no-print-directory fuzz-$$t FUZZ_SECONDS=$(FUZZ_SECONDS) || fail="$$fail $$t"; \
	done; \
	if [ -n "$$fail" ]; then echo "fuzz: FAILED:$$fail"; exit 1; fi; echo "fuzz: all targets ok"

# ---- AddressSanitizer + UndefinedBehaviorSanitizer ----

$(eval $(call lib_rules,$(SAN_DIR),$(SAN_CC),$(CSTD) $(WARN) $(SAN_FLAGS)))

$(SAN_DIR)/krenalis-keys: $(CLI_SRC) $(CLI_HDR) $(MIRROR_SRC) $(SAN_DIR)/libkrenalis.a $(LIB_HDR)
	@mkdir -p $(SAN_DIR)
	$(SAN_CC) $(CSTD) $(WARN) $(SAN_FLAGS) $(PQ_CFLAGS) -Isrc -o $@ $(CLI_SRC) $(MIRROR_SRC) \
	  $(SAN_DIR)/libkrenalis.a $(LIBS) -ljson-c -lpq

# Built directly (not through apxs/libtool) so that nothing lands in src/; linked against
# libasan/libubsan, which httpd gets through LD_PRELOAD.
$(SAN_DIR)/mod_krenalis_auth.so: $(MOD_SRC) $(MOD_HDR) $(SAN_DIR)/libkrenalis.a $(LIB_HDR)
	@mkdir -p $(SAN_DIR)
	$(SAN_CC) $(CSTD) $(WARN) $(SAN_FLAGS) -shared -fPIC $(SAN_APXS_CFLAGS) -Isrc -o $@ \
	  $(MOD_SRC) $(SAN_DIR)/libkrenalis.a $(LIBS)
	@ldd $@ | grep -q libasan || { echo "$@ is not linked against libasan"; exit 1; }

$(SAN_DIR)/unit_tests: $(UNIT_SRC) $(UNIT_HDR) tests/unit/main.c $(SAN_DIR)/libkrenalis.a $(LIB_HDR)
	@mkdir -p $(SAN_DIR)
	$(SAN_CC) $(CSTD) $(WARN) $(SAN_FLAGS) -Isrc -Itests/common -o $@ tests/unit/main.c \
	  $(UNIT_SRC) $(SAN_DIR)/libkrenalis.a $(LIBS) -ljson-c -lcmocka

sanitize-build: $(SAN_DIR)/mod_krenalis_auth.so $(SAN_DIR)/krenalis-keys $(SAN_DIR)/unit_tests

# The unit tests (leak check on), then the integration suite against the sanitized module and
# krenalis-keys (both MPMs); any ASan/UBSan report (a file in build/asan/logs/) fails the target.
test-sanitize: sanitize-build
	@rm -rf $(SAN_LOGS) && mkdir -p $(SAN_LOGS) && chmod 1777 $(SAN_LOGS)
	@fail=0; echo "unit tests with ASan+UBSan (leak check on)"; \
	ASAN_OPTIONS=$(SAN_CLI_ASAN_OPTIONS) UBSAN_OPTIONS=$(SAN_UBSAN_OPTIONS) \
	  $(SAN_DIR)/unit_tests >$(SAN_DIR)/unit_tests.log 2>&1 || { tail -30 $(SAN_DIR)/unit_tests.log; fail=1; }; \
	for mpm in $(SAN_MPMS); do \
	  echo "integration ($$mpm) with ASan+UBSan"; \
	  KRENALIS_TEST_HTTPD_ENV="LD_PRELOAD='$(SAN_PRELOAD)' ASAN_OPTIONS=$(SAN_HTTPD_ASAN_OPTIONS) UBSAN_OPTIONS=$(SAN_UBSAN_OPTIONS)" \
	  KRENALIS_TEST_CLI_ENV="ASAN_OPTIONS=$(SAN_CLI_ASAN_OPTIONS) UBSAN_OPTIONS=$(SAN_UBSAN_OPTIONS)" \
	  $(PYTHON) tests/integration/run.py --mpm $$mpm --build $(CURDIR)/$(SAN_DIR) $(SAN_ARGS) \
	    || fail=1; \
	done; \
	if [ -n "$$(ls -A $(SAN_LOGS))" ]; then \
	  for f in $(SAN_LOGS)/*; do echo "==> $$f"; head -80 "$$f"; done; \
	  echo "test-sanitize: sanitizer reports in $(SAN_LOGS)"; exit 1; \
	fi; \
	if [ $$fail -ne 0 ]; then echo "test-sanitize: integration failures"; exit 1; fi; \
	echo "test-sanitize: no sanitizer report"

# ---- valgrind ----

test-valgrind: $(BUILD)/unit_tests
	$(VALGRIND) $(VALGRIND_FLAGS) $(BUILD)/unit_tests
