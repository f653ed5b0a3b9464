# Benchmark targets (see bench/README.md). Included from the top Makefile, or:
#     make -f Makefile -f bench/bench.mk bench
# Uses BUILD, CC, CSTD, WARN, CFLAGS, LIB, LIB_HDR, LIBS and PYTHON of the top Makefile.

BENCH_PKGS := wrk apache2-utils valgrind nghttp2-client lmdb-utils libnghttp2-dev pkg-config

.PHONY: bench bench-large bench-deps

# Installs wrk, apache2-utils (htpasswd, htdbm, httxt2dbm), valgrind (callgrind), nghttp2-client
# (h2load), lmdb-utils (mdb_stat), and libnghttp2-dev with pkg-config (build/pairload) when
# missing.
bench-deps:
	$(call apt_install,$(BENCH_PKGS))

# The bench links the module's own store code (src/apache/store.c) over APR, outside httpd.
BENCH_APR_CFLAGS = $(shell $(APXS) -q EXTRA_CPPFLAGS) -I$(shell $(APXS) -q INCLUDEDIR) \
                   -I$(shell $(APXS) -q APR_INCLUDEDIR)

$(BUILD)/decide_bench: bench/decide_bench.c src/apache/store.c $(MOD_HDR) $(LIB) $(LIB_HDR) | $(BUILD)
	$(CC) $(CSTD) $(WARN) $(CFLAGS) $(BENCH_APR_CFLAGS) -Isrc -o $@ bench/decide_bench.c \
	  src/apache/store.c $(LIB) $(LIBS) -lapr-1 -lpthread

# The floor: a do-nothing Bearer module (bench/floor.c), built with apxs like the module.
$(BUILD)/mod_bench_floor.so: bench/floor.c | $(BUILD)
	$(APXS) -c -o mod_bench_floor.la $(addprefix -Wc$(comma),$(CSTD) $(WARN)) \
	  bench/floor.c >$(BUILD)/apxs-floor.log 2>&1 || { cat $(BUILD)/apxs-floor.log; exit 1; }
	@! grep -E "(warning|error):" $(BUILD)/apxs-floor.log
	install -m 0755 .libs/mod_bench_floor.so $@

# The load client of paired runs, over HTTP/1.1 and HTTP/2 (bench/pairload.c, libnghttp2).
$(BUILD)/pairload: bench/pairload.c | $(BUILD)
	$(CC) $(CSTD) $(WARN) $(CFLAGS) -o $@ bench/pairload.c $(shell pkg-config --cflags --libs libnghttp2)

# 10 thousand and 1 million keys; under 10 minutes on 2 CPUs. Writes bench/RESULTS.md.
bench: deps bench-deps
	@$(MAKE) --no-print-directory all $(BUILD)/decide_bench $(BUILD)/mod_bench_floor.so \
	  $(BUILD)/pairload
	$(PYTHON) bench/run.py $(BENCH_ARGS)

# The same with a 10-million-key store as well (5 GiB in /tmp while it runs, about 12 min).
bench-large: deps bench-deps
	@$(MAKE) --no-print-directory all $(BUILD)/decide_bench $(BUILD)/mod_bench_floor.so \
	  $(BUILD)/pairload
	$(PYTHON) bench/run.py --large $(BENCH_ARGS)
