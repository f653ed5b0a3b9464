# Reliability suites (tests/reliability/, see its README.md): hostile input, key churn under
# load, graceful restarts, store faults and the secret scan, against a real httpd (event and
# prefork). Included from the top Makefile, whose BUILD, PYTHON and `all` it uses.
#
#   make reliability        short mode, both MPMs (< 90 s): ~10 s of churn, the main faults
#   make soak               SOAK_SECONDS (default 60) of churn per MPM and the fuller fault
#                           list (a map grown past 1 GiB, repeated kills, ...): ~10 min,
#                           ~2 GB of /tmp for a while
#   make soak SOAK_SECONDS=300 RELIABILITY_ARGS="--mpm event"
#
# The figures of the last run go to $(BUILD)/reliability-{short,soak}.json.

SOAK_SECONDS ?= 60
RELIABILITY_ARGS ?=

.PHONY: reliability soak

reliability: deps
	@$(MAKE) --no-print-directory all
	$(PYTHON) tests/reliability/run.py --mode short --figures $(BUILD)/reliability-short.json \
	  $(RELIABILITY_ARGS)

soak: deps
	@$(MAKE) --no-print-directory all
	$(PYTHON) tests/reliability/run.py --mode soak --duration $(SOAK_SECONDS) \
	  --figures $(BUILD)/reliability-soak.json $(RELIABILITY_ARGS)

# A fault of the map while a child opens the store on the request path (open_fault.c): 503,
# not a hung thread. Links src/apache/store.c outside httpd, as bench/decide_bench does.
.PHONY: open-fault
$(BUILD)/open_fault: tests/reliability/open_fault.c tests/common/tmpdir.c src/apache/store.c \
                     $(MOD_HDR) $(LIB) $(LIB_HDR) | $(BUILD)
	$(CC) $(CSTD) $(WARN) $(CFLAGS) $(BENCH_APR_CFLAGS) -Isrc -Itests/common -o $@ \
	  tests/reliability/open_fault.c tests/common/tmpdir.c src/apache/store.c $(LIB) $(LIBS) \
	  -lapr-1 -lpthread -Wl,--wrap=mdb_txn_begin

open-fault: deps
	@$(MAKE) --no-print-directory $(BUILD)/open_fault
	$(BUILD)/open_fault
TEST_TARGETS += open-fault
