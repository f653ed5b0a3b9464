#!/usr/bin/python3
"""Reliability tests of mod_krenalis_auth against a real Apache httpd 2.4.

    python3 tests/reliability/run.py --mode short|soak [--mpm event|prefork|both]
                                     [--build build] [-k SUBSTRING]... [--keep]
                                     [--duration SECONDS] [--figures FILE.json]

short: hostile input, key churn under load for ~10 s, graceful restarts under load, the store
faults, the secret scan (`make reliability`, both MPMs in < 90 s). soak: the same with 60 s of
churn (--duration), more restarts and the fuller fault list (`make soak`).

Reuses tests/integration/harness.py (temporary ServerRoot under /tmp, key store made with
krenalis-keys, echo backends, httpd by PID). Prints "ok NAME [mpm]" / "FAIL NAME [mpm]: detail",
"# ..." lines with the figures, and finally exactly "N passed, N failed"; exits 1 on any
failure. Traffic goes to 127.0.0.1 only; every process started is stopped by its PID.
"""
import argparse
import importlib
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True

import common  # noqa: E402
from common import Ctx, Failure, Skip, harness  # noqa: E402

MODULES = ("t_hostile", "t_churn", "t_faults", "t_secrets")


def run_mpm(a, mpm, build):
    h = harness.Harness(build, mpm, loglevel="info", keep=a.keep)
    ctx = Ctx(h, a.mode, mpm, a.duration or (60 if a.mode == "soak" else 10))
    passed = failed = 0
    t0 = time.time()
    # a process that crashes with core dumps enabled (apache2 -t, krenalis-keys) writes ./core:
    # into the run's directory, where the secret scan looks, never into the source tree
    cwd = os.getcwd()
    os.chdir(str(h.root))
    try:
        try:
            h.base_fixture()
            h.start_backend()
        except Exception as e:
            print("FAIL setup [%s]: %s" % (mpm, e if isinstance(e, Failure)
                                           else traceback.format_exc()))
            return 0, 1, ctx
        for name, fn, modes, short_mpms in common.TESTS:
            if a.mode not in modes or (a.mode == "short" and mpm not in short_mpms):
                continue
            if a.filter and not any(s in name for s in a.filter) and not name.startswith(
                    "secrets."):
                continue
            t1 = time.time()
            try:
                fn(ctx)
            except Skip as e:
                print("skip %s [%s]: %s" % (name, mpm, e))
            except Failure as e:
                print("FAIL %s [%s] (%.1f s): %s" % (name, mpm, time.time() - t1, e))
                failed += 1
            except Exception:
                print("FAIL %s [%s] (%.1f s): %s" % (name, mpm, time.time() - t1,
                                                      traceback.format_exc().rstrip()))
                failed += 1
            else:
                print("ok %s [%s] (%.1f s)" % (name, mpm, time.time() - t1))
                passed += 1
            sys.stdout.flush()
    finally:
        h.stop_all()
        ctx.close()
    # after every process stopped: logs, cores and backend environments (t_secrets.final)
    import t_secrets
    try:
        t_secrets.final_scan(ctx)
    except Failure as e:
        print("FAIL secrets.no secret in logs, cores, backend environments [%s]: %s" % (mpm, e))
        failed += 1
    else:
        print("ok secrets.no secret in logs, cores, backend environments [%s]" % mpm)
        passed += 1
    os.chdir(cwd)
    removed = h.cleanup(failed > 0)
    if not removed:
        # keep the logs and configurations, not the bulk stores and token files
        big = [p for p in h.root.rglob("*") if p.is_file() and not p.is_symlink()
               and p.stat().st_size > 20 * 1024 * 1024 and "logs" not in p.parts]
        for p in big:
            p.unlink()
        print("# kept %s%s" % (h.root, " (%d large store/token files removed)" % len(big)
                                if big else ""))
    print("# %s: %.1f s" % (mpm, time.time() - t0))
    sys.stdout.flush()
    return passed, failed, ctx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("short", "soak"), required=True)
    ap.add_argument("--mpm", choices=("event", "prefork", "both"), default="both")
    ap.add_argument("--build", default="build")
    ap.add_argument("-k", dest="filter", action="append", default=[])
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds of key churn under load (short 10, soak 60)")
    ap.add_argument("--figures", help="write the figures of the run to this JSON file")
    a = ap.parse_args()

    build = harness.find_build(a.build)
    if build is None:
        return 1
    # core dumps of httpd children land in CoreDumpDirectory (ServerRoot/cores), where the
    # secret scan looks for them
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass
    for m in MODULES:
        importlib.import_module(m)
    mpms = ("event", "prefork") if a.mpm == "both" else (a.mpm,)
    passed = failed = 0
    figures = {"mode": a.mode, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t0 = time.time()
    for mpm in mpms:
        p, f, ctx = run_mpm(a, mpm, build)
        passed += p
        failed += f
        figures[mpm] = ctx.figures
    figures["seconds"] = round(time.time() - t0, 1)
    if a.figures:
        Path(a.figures).write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    print("# total %.1f s" % (time.time() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
