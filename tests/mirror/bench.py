#!/usr/bin/python3
"""A large snapshot (make mirror-bench): a Krenalis database with 1 000 000 API keys and
100 000 event write keys, loaded by `krenalis-keys mirror` in under 20 s, while an Apache
node keeps answering from the old store until the new one is swapped in.

    python3 tests/mirror/bench.py [--build build] [--api-keys N] [--write-keys N] [--keep]

Prints figures as "# ..." lines and "N passed, N failed"; exits 1 on a failure.
"""
import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests" / "integration"))
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True

from harness import Failure  # noqa: E402
from krenalis import Krenalis  # noqa: E402
from pg import Writer  # noqa: E402
import importlib.util  # noqa: E402
_spec = importlib.util.spec_from_file_location("mirror_run", HERE / "run.py")
mirror_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mirror_run)

LIMIT_S = 20.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--api-keys", type=int, default=1000000)
    ap.add_argument("--write-keys", type=int, default=100000)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    e = mirror_run.new_env(a.build)
    if e is None:
        return 1
    h = e.h
    failed = 0
    stop = threading.Event()
    try:
        mirror_run.prepare_database(e, statement_log=False)
        e.w = Writer(e.pg)
        e.k = k = Krenalis(e.w, e.pepper)
        org = k.create_org("Big")
        ws = k.create_ws(org)
        old_id, old_tok = k.create_access_key(org)
        e.p.store.mkdir()
        if h.is_root:
            shutil.chown(e.p.store, "www-data", "www-data")
        rc, out = e.p.run_once()
        if rc != 0:
            raise Failure("first load: %s" % out)
        h.start_backend()
        h.httpd("main").start()
        mirror_run.expect(e.p.api(old_tok), 200)
        # The bulk: as Krenalis would hold it, written straight into the tables (the
        # notifications do not matter: a gap below makes the mirror take a snapshot).
        t0 = time.monotonic()
        e.w.sql(
            "INSERT INTO workspaces SELECT 'w' || translate(lpad(i::text, 11, 'x'), '0', 'z'), "
            "%s, 'ws ' || i FROM generate_series(1, 100) i" % e.w.lit(org))
        e.w.sql(
            "INSERT INTO connections (id, workspace, name, role, strategy) SELECT "
            "'c' || translate(lpad(i::text, 11, 'x'), '0', 'z'), "
            "'w' || translate(lpad((i %% 100 + 1)::text, 11, 'x'), '0', 'z'), 'conn', 'Source', "
            "'Fusion' FROM generate_series(1, %d) i" % a.write_keys)
        e.w.sql(
            "INSERT INTO event_write_keys (connection, key) SELECT "
            "'c' || translate(lpad(i::text, 11, 'x'), '0', 'z'), "
            "translate(md5(i::text), '0', 'Z') FROM generate_series(1, %d) i" % a.write_keys)
        e.w.sql(
            "INSERT INTO access_keys (id, organization, workspace, name, type, hmac, hint) "
            "SELECT 'k' || translate(lpad(i::text, 11, 'x'), '0', 'z'), %s, "
            "CASE WHEN i %% 10 = 0 THEN 'w' || translate(lpad((i %% 100 + 1)::text, 11, 'x'), "
            "'0', 'z') END, 'key ' || i, 'API', decode(md5(i::text) || md5((-i)::text), 'hex'), "
            "'abcd...efghij' FROM generate_series(1, %d) i" % (e.w.lit(org), a.api_keys))
        new_id, new_tok = k.create_access_key(org)
        e.w.sql("DELETE FROM access_keys WHERE id = %s" % e.w.lit(old_id))
        e.w.sql("INSERT INTO notifications SELECT MAX(version) + 2, 'ElectLeader', '{}' "
                "FROM notifications")
        print("# database filled in %.1f s: %d API keys, %d write keys"
              % (time.monotonic() - t0, a.api_keys, a.write_keys))
        # Apache answers throughout; until the swap, from the old store.
        seen = []

        def client():
            while not stop.is_set():
                r = e.p.api(old_tok)
                seen.append((time.monotonic(), r.status))
                time.sleep(0.02)
        th = threading.Thread(target=client)
        th.start()
        t0 = time.monotonic()
        rc, out = e.p.run_once()
        took = time.monotonic() - t0
        time.sleep(1.5)  # every child adopts the new store within a second
        stop.set()
        th.join()
        if rc != 0:
            raise Failure("snapshot: %s" % out)
        line = [ln for ln in out.splitlines() if "snapshot at version" in ln]
        print("# %s" % (line[0] if line else out.strip()))
        print("# mirror --once (gap -> snapshot of %d API keys + %d write keys, swap): %.1f s"
              % (a.api_keys, a.write_keys, took))
        during = [s for t, s in seen if t < t0 + took - 0.5]
        after = [s for t, s in seen if t > t0 + took + 1.2]
        print("# requests during the snapshot: %d, statuses %s; after the swap: %s"
              % (len(during), sorted(set(during)), sorted(set(after))))
        du = subprocess.run(["du", "-sh", str(e.p.store)], stdout=subprocess.PIPE).stdout
        print("# store size: %s" % du.decode().split()[0])
        checks = [
            (took < LIMIT_S, "snapshot took %.1f s (limit %.0f s)" % (took, LIMIT_S)),
            (during and set(during) == {200}, "old store not served during the snapshot: %r"
             % sorted(set(during))),
            (after and set(after) == {401}, "old key after the swap: %r" % sorted(set(after))),
            (e.p.api(new_tok).status == 200, "new key refused"),
        ]
        for ok, msg in checks:
            if not ok:
                print("FAIL mirror-bench: %s" % msg)
                failed += 1
        if not failed:
            print("ok mirror-bench")
    except Failure as ex:
        print("FAIL mirror-bench: %s" % ex)
        failed += 1
    finally:
        stop.set()
        e.p.stop()
        if e.w:
            e.w.close()
        if e.pg:
            e.pg.stop()
        h.stop_all()
    if failed or a.keep:
        print("# kept %s" % h.root)
    else:
        shutil.rmtree(h.root, ignore_errors=True)
    print("%d passed, %d failed" % (0 if failed else 1, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
