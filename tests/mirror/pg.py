"""A throwaway PostgreSQL cluster and a writer that changes it as Krenalis does (SPEC §11.1).

Cluster: initdb/pg_ctl of the Debian `postgresql` package, run as the `postgres` system user
when the tests run as root (CI), in a temporary directory it owns; it listens on a loopback
port picked with bind(0) and on a unix socket in that directory. Every server is stopped with
pg_ctl (by its data directory) and, failing that, by the PID in postmaster.pid.

Writer: one long-lived psql process (no Python driver needed). Each change is one
transaction: the DML, then LOCK TABLE notifications IN EXCLUSIVE MODE, the notifications row
numbered MAX(version)+1, and NOTIFY krenalis '<opaque body>@<version>' (a long body split
over several NOTIFYs, each but the last ending in '*'), committed together.
"""
import glob
import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
from harness import Failure, free_port  # noqa: E402


def pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    if not dirs:
        raise Failure("PostgreSQL is not installed (Debian package postgresql)")
    return Path(dirs[-1])


def _demote(user):
    if os.geteuid() != 0:
        return None, os.getuid(), os.getgid()
    pw = pwd.getpwnam(user)

    def pre():
        os.setgid(pw.pw_gid)
        os.initgroups(user, pw.pw_gid)
        os.setuid(pw.pw_uid)
    return pre, pw.pw_uid, pw.pw_gid


class Cluster:
    def __init__(self, root, name="primary", port=None):
        self.bin = pg_bindir()
        self.root = Path(root)
        self.name = name
        self.dir = self.root / name
        self.data = self.dir / "data"
        self.sock = self.dir
        self.port = port or free_port()
        self.log = self.dir / "server.log"
        self.pre, self.uid, self.gid = _demote("postgres")

    def run(self, *args, check=True, timeout=60, input=None):
        p = subprocess.run([str(a) for a in args], preexec_fn=self.pre, cwd=str(self.dir),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           input=input, env={"PATH": "/usr/bin:/bin", "LANG": "C"})
        if check and p.returncode != 0:
            raise Failure("%s: exit %d: %s" % (args[0], p.returncode, p.stdout.decode()[-2000:]))
        return p

    def _mkdir(self):
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.dir.mkdir()
        os.chown(self.dir, self.uid, self.gid)
        os.chmod(self.dir, 0o700)

    def conf_lines(self, statement_log):
        return ["listen_addresses = '127.0.0.1'", "port = %d" % self.port,
                "unix_socket_directories = '%s'" % self.sock, "fsync = off",
                "full_page_writes = off", "max_connections = 40",
                "shared_buffers = 32MB", "wal_level = replica", "max_wal_senders = 4",
                "hot_standby = on", "log_line_prefix = '%m [%p] %u '",
                "log_statement = '%s'" % ("all" if statement_log else "none"),
                "logging_collector = off"]

    def init(self, statement_log=True):
        self._mkdir()
        self.run(self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth-local=trust",
                 "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n".join(self.conf_lines(statement_log)) + "\n")
        return self

    def replica_of(self, primary):
        """A streaming replica of primary (pg_basebackup over loopback)."""
        self._mkdir()
        # Over the primary's unix socket (local connections are trusted; TCP ones need a
        # password), streaming from it afterwards the same way (-R writes primary_conninfo).
        self.run(self.bin / "pg_basebackup", "-h", primary.sock, "-p", primary.port, "-U",
                 "postgres", "-D", self.data, "-R", "-X", "stream", "-c", "fast", "--no-sync",
                 "-w", timeout=60)
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n".join(self.conf_lines(False)) + "\n")
        return self

    def start(self):
        self.run(self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "30", "start")
        return self

    def stop(self, mode="fast"):
        if not (self.data / "postmaster.pid").exists():
            return
        p = self.run(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop",
                     check=False)
        if p.returncode != 0:
            pid = self.pid()
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def pid(self):
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n")[0])
        except (OSError, ValueError):
            return None

    def psql(self, sql, db="krenalis", user="postgres", variables=None, file=None):
        args = [self.bin / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h",
                self.sock, "-p", self.port, "-U", user, "-d", db]
        for k, v in (variables or {}).items():
            args += ["-v", "%s=%s" % (k, v)]
        data = None
        if file:  # through stdin: the postgres user may not read the repository
            args += ["-f", "-"]
            data = Path(file).read_bytes()
        else:
            args += ["-c", sql]
        return self.run(*args, input=data).stdout.decode().strip()

    def statement_log(self):
        return self.log.read_text("utf-8", "replace") if self.log.exists() else ""


class Writer:
    """Changes the database as Krenalis does, through one psql process (superuser)."""

    def __init__(self, cluster, schema="public", db="krenalis"):
        self.c = cluster
        self.schema = schema
        self.n = 0
        self.p = subprocess.Popen(
            [str(cluster.bin / "psql"), "-X", "-q", "-A", "-t", "-h", str(cluster.sock), "-p",
             str(cluster.port), "-U", "postgres", "-d", db],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=cluster.pre, env={"PATH": "/usr/bin:/bin", "LANG": "C"})
        self.sql("SET search_path TO %s" % self.ident(schema))

    @staticmethod
    def lit(s):
        return "'" + str(s).replace("'", "''") + "'"

    @staticmethod
    def ident(s):
        return '"' + s.replace('"', '""') + '"'

    def sql(self, text):
        """Runs statements; returns the output lines; fails on an ERROR."""
        self.n += 1
        mark = "__mark_%d__" % self.n
        self.p.stdin.write((text.rstrip().rstrip(";") + ";\n\\echo " + mark + "\n").encode())
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise Failure("psql writer exited: %s" % "\n".join(out))
            line = line.decode().rstrip("\n")
            if line == mark:
                break
            out.append(line)
        errs = [ln for ln in out if "ERROR" in ln]
        if errs:
            self.sql("ROLLBACK") if "ROLLBACK" not in text else None
            raise Failure("SQL failed: %s" % "; ".join(errs))
        return out

    def change(self, dml, name, payload, long_body=False):
        """One Krenalis change: dml (may be ''), its notifications row and NOTIFY, in one
        transaction. Returns the version."""
        body = secrets.token_urlsafe(300 if long_body else 24)
        if long_body:
            parts = [body[:200] + "*", body[200:400] + "*"]
            last = body[400:]
        else:
            parts, last = [], body
        notifies = "".join("SELECT pg_notify('krenalis', %s);\n" % self.lit(p) for p in parts)
        out = self.sql(
            "BEGIN;\n%s%s"
            "LOCK TABLE notifications IN EXCLUSIVE MODE;\n"
            "WITH v AS (INSERT INTO notifications (version, name, payload) "
            "SELECT COALESCE(MAX(version), 0) + 1, %s, %s FROM notifications "
            "RETURNING version) SELECT version FROM v;\n"
            "%s"
            "SELECT pg_notify('krenalis', %s || '@' || MAX(version)) FROM notifications;\n"
            "COMMIT" % (dml + ";\n" if dml else "", "", self.lit(name),
                        self.lit(json.dumps(payload)), notifies, self.lit(last)))
        vals = [ln for ln in out if ln.strip().isdigit()]
        return int(vals[0])

    def unversioned_notify(self):
        self.sql("NOTIFY krenalis, %s" % self.lit("leader-" + secrets.token_hex(8)))

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write(b"\\q\n")
                self.p.stdin.flush()
                self.p.wait(10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait(10)
