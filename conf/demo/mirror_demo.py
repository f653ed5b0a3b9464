#!/usr/bin/env python3
"""`make demo-mirror` / `make demo-mirror-stop`: a Krenalis-style PostgreSQL database (a
throwaway cluster with the tables of SPEC §11.1), `krenalis-keys mirror` keeping a store in
step with it, and httpd with mod_krenalis_auth on 127.0.0.1:8081 answering from that store.

    python3 conf/demo/mirror_demo.py start | stop
    python3 conf/demo/mirror_demo.py create-key     # an API key made the Krenalis way: prints it
    python3 conf/demo/mirror_demo.py revoke KEY_ID  # deleted the Krenalis way

Every process is stopped by its PID (PostgreSQL with pg_ctl) on `stop`. Root only (the
cluster runs as the postgres user, httpd as www-data).
"""
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests" / "mirror"))
sys.dont_write_bytecode = True

from harness import Harness, random_id  # noqa: E402
from krenalis import Krenalis  # noqa: E402
from pg import Cluster, Writer  # noqa: E402

DIR = Path("/tmp/krenalis-auth-mirror-demo")
STATE = DIR / "state.json"
PORT = 8081


def load():
    return json.loads(STATE.read_text())


def cluster(st):
    c = Cluster(DIR, name="pg", port=st["pg_port"])
    return c


def krenalis(st):
    c = cluster(st)
    w = Writer(c)
    return w, Krenalis(w, bytes.fromhex(st["pepper"]))


def start():
    if STATE.exists():
        print("the mirror demo is running already (make demo-mirror-stop)")
        return 1
    if os.geteuid() != 0:
        print("make demo-mirror needs root (PostgreSQL runs as postgres, httpd as www-data)")
        return 1
    shutil.rmtree(DIR, ignore_errors=True)
    DIR.mkdir(mode=0o755)
    h = Harness(ROOT / "build", "event")
    st = {"harness_root": str(h.root)}
    pepper = secrets.token_bytes(32)
    st["pepper"] = pepper.hex()
    c = Cluster(DIR, name="pg").init(statement_log=False).start()
    st["pg_port"] = c.port
    STATE.write_text(json.dumps(st))
    c.psql("CREATE DATABASE krenalis", db="postgres")
    c.psql(None, file=ROOT / "tests" / "mirror" / "schema.sql", variables={"schema": "public"})
    c.psql(None, file=ROOT / "conf" / "krenalis-mirror-role.sql",
           variables={"schema": "public", "role": "edge"})
    password = secrets.token_hex(12)
    c.psql("ALTER ROLE edge PASSWORD '%s'" % password)
    pgpass = DIR / "pgpass"
    pgpass.write_text("127.0.0.1:*:krenalis:edge:%s\n" % password)
    pgpass.chmod(0o600)
    pf = DIR / "pepper"
    pf.write_bytes(pepper)
    pf.chmod(0o600)
    w = Writer(c)
    k = Krenalis(w, pepper)
    org = k.create_org("Demo")
    ws = k.create_ws(org, "Web")
    st.update(org=org, ws=ws)
    conn, wk = k.create_conn(ws, "Source", "Fusion")
    w.close()
    store = DIR / "store"
    store.mkdir()
    shutil.chown(store, "www-data", "www-data")
    mirror = [str(ROOT / "build" / "krenalis-keys"), "--store", str(store), "mirror",
              "--postgres", "host=127.0.0.1 port=%d dbname=krenalis user=edge" % c.port,
              "--pepper-file", str(pf)]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C", "PGPASSFILE": str(pgpass)}
    subprocess.run(mirror + ["--once"], env=env, check=True)
    log = open(DIR / "mirror.log", "a")
    p = subprocess.Popen(mirror, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    st["mirror_pid"] = p.pid
    STATE.write_text(json.dumps(st))
    h.f.update(org1=org, org2=random_id(), ws1a=ws, ws1b=random_id())
    h.start_backend()
    st["backend_pid"] = h.backend.pid
    srv = h.httpd("main", store=store, global_extra="KrenalisAuthMaxStaleness 30")
    srv.port_cgi = PORT
    srv.write_conf()
    srv.start()
    st["httpd_pid"] = srv.proc.pid
    STATE.write_text(json.dumps(st))
    me = "python3 conf/demo/mirror_demo.py"
    print("""
mirror demo: PostgreSQL on 127.0.0.1:%d (database krenalis), krenalis-keys mirror (log:
%s/mirror.log), httpd on 127.0.0.1:%d. Try:

  # an API key created the Krenalis way (the access_keys row, its notification and NOTIFY
  # in one transaction), used at once:
  TOKEN=$(%s create-key)
  curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:%d/v1/users

  # revoked the Krenalis way: refused within a second
  %s revoke $(%s key-id "$TOKEN")
  curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:%d/v1/users

  # the event write key of the demo's source connection:
  curl -s -X POST -H "Authorization: Bearer %s" -d '{"type":"track"}' \\
       http://127.0.0.1:%d/v1/events

  krenalis-keys --store %s organization add     # refused: a mirrored store
  make demo-mirror-stop
""" % (c.port, DIR, PORT, me, PORT, me, me, PORT, wk, PORT, store))
    return 0


def create_key():
    st = load()
    w, k = krenalis(st)
    kid, tok = k.create_access_key(st["org"])
    w.close()
    keys = st.setdefault("keys", {})
    keys[tok] = kid
    STATE.write_text(json.dumps(st))
    print(tok)
    return 0


def key_id(tok):
    print(load().get("keys", {}).get(tok, ""))
    return 0


def revoke(kid):
    st = load()
    w, k = krenalis(st)
    k.delete_access_key(kid)
    w.close()
    return 0


def stop():
    if not STATE.exists():
        print("the mirror demo is not running")
        return 0
    st = load()
    for name in ("httpd_pid", "mirror_pid", "backend_pid"):
        pid = st.get(name)
        if not pid:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    if st.get("pg_port"):
        cluster(st).stop()
    shutil.rmtree(st.get("harness_root", ""), ignore_errors=True)
    shutil.rmtree(DIR, ignore_errors=True)
    print("mirror demo stopped")
    return 0


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "start":
        return start()
    if cmd == "stop":
        return stop()
    if cmd == "create-key":
        return create_key()
    if cmd == "key-id" and len(sys.argv) == 3:
        return key_id(sys.argv[2])
    if cmd == "revoke" and len(sys.argv) == 3:
        return revoke(sys.argv[2])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
