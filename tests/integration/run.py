#!/usr/bin/python3
"""Integration tests of mod_krenalis_auth against a real Apache httpd 2.4.

    python3 tests/integration/run.py --mpm event|prefork [--build build] [-k SUBSTRING]
                                     [--keep] [--loglevel LEVEL]

Builds a temporary ServerRoot under /tmp with a key store made by build/krenalis-keys, starts
the proxy echo backend (tests/backends/echo_server.py) and httpd with the module, runs the
tests of test_api.py (SPEC §6.1, §8), test_ingestion.py (§6.2, §6.3, §9), test_orgs.py
(§6.4), test_browser.py (§6.2, §9 in headless Chromium) and test_metrics.py (§12), calls the
modules' teardown(h), then checks that no credential appears in the logs. Prints "ok NAME", "FAIL NAME: detail" or
"skip NAME: reason" per test and finally "N passed, N failed"; exits 1 on any failure.
Every process it starts is stopped by its PID.
"""
import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import harness  # noqa: E402
from harness import Failure, Harness  # noqa: E402

MODULES = ("test_api", "test_ingestion", "test_orgs", "test_security", "test_cli", "test_browser",
           "test_metrics")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpm", choices=("event", "prefork"), required=True)
    ap.add_argument("--build", default="build",
                    help="directory with mod_krenalis_auth.so and krenalis-keys "
                         "(relative to the repository root)")
    ap.add_argument("-k", dest="filter", action="append", default=[],
                    help="run only tests whose name contains SUBSTRING (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--loglevel", default="info", help="httpd LogLevel (default info)")
    a = ap.parse_args()

    build = harness.find_build(a.build)
    if build is None:
        return 1

    mods = [importlib.import_module(m) for m in MODULES]
    h = Harness(build, a.mpm, loglevel=a.loglevel, keep=a.keep)
    h.modules = mods
    passed = failed = 0
    t0 = time.time()
    try:
        try:
            h.base_fixture()
            for m in mods:
                fx = getattr(m, "fixture", None)
                if fx:
                    fx(h)
            h.start_backend()
            h.httpd("main").start()
        except Exception as e:  # set-up failure: nothing can run
            detail = str(e) if isinstance(e, Failure) else traceback.format_exc()
            print("FAIL setup: %s" % detail)
            failed += 1
        else:
            for name, fn in harness.TESTS:
                if a.filter and not any(s in name for s in a.filter):
                    continue
                t_test = time.monotonic()
                try:
                    fn(h)
                except harness.Skip as e:
                    print("skip %s: %s" % (name, e))
                except Failure as e:
                    print("FAIL %s: %s" % (name, e))
                    failed += 1
                except Exception:
                    print("FAIL %s: %s" % (name, traceback.format_exc().rstrip()))
                    failed += 1
                else:
                    took = time.monotonic() - t_test
                    # The slow ones say so: make test must stay well under 10 minutes.
                    print("ok %s%s" % (name, " (%.1f s)" % took if took >= 1 else ""))
                    passed += 1
                sys.stdout.flush()
                if h.main.proc is None or h.main.proc.poll() is not None:
                    print("FAIL main httpd died (exit %r); see %s" % (
                        h.main.proc and h.main.proc.poll(), h.main.error_log))
                    failed += 1
                    break
    finally:
        for m in mods:
            td = getattr(m, "teardown", None)
            if td:
                try:
                    td(h)
                except Exception:
                    print("FAIL teardown %s: %s" % (m.__name__, traceback.format_exc().rstrip()))
                    failed += 1
        h.stop_all()
    # SPEC §10: no key or presented token in the logs (access log: settings path excepted).
    found = harness.scan_logs(h)
    if found:
        print("FAIL logs.no-credentials: %s" % ", ".join("%s in %s" % (s, f) for f, s in found))
        failed += 1
    else:
        print("ok logs.no-credentials (%d credentials checked)" % len(h.secrets))
        passed += 1
    removed = h.cleanup(failed > 0)
    if not removed:
        print("# kept %s" % h.root)
    print("# %s, %.1f s" % (a.mpm, time.time() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
