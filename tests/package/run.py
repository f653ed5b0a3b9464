#!/usr/bin/python3
"""Package test: the .debs that `make deb` built, on this machine's own Apache.

    python3 tests/package/run.py [DEB_DIR]        (root; DEB_DIR defaults to build/deb)

Installs libapache2-mod-krenalis-auth and krenalis-keys with `apt-get install ./….deb`,
enables the module with a2enmod, creates a key store with the installed krenalis-keys in a
temporary directory, installs conf/krenalis-api.vhost.conf as a site (on a free loopback
port, in front of the proxy echo backend of the integration tests), and checks that
`apache2ctl configtest` passes, that `apache2ctl start` serves a valid API key (200, the
identity forwarded) and refuses an unknown one with SPEC §6.1's 401, and that `dpkg -r` and
`dpkg --purge` leave no module enabled, keep the operator's store and let Apache start.

The machine is put back as it was, also on failure or SIGTERM: the packages (and any
dependency apt pulled in for them) are purged, /etc/apache2 and /var/lib/apache2 are
restored file by file from a snapshot taken first (then compared with it: a difference is a
failure), the lines Apache wrote to /var/log/apache2 are cut off, and the run directories
apache2ctl created are removed. It refuses to run while the system's Apache is running or
the packages are installed. Runs on this machine are serialized by a lock file. Prints
"ok NAME" or "FAIL NAME: detail" per check, then "N passed, N failed"; exits 1 on a failure.
"""
import fcntl
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests" / "reliability"))
sys.dont_write_bytecode = True

from harness import (BACKENDS, Failure, assert_error, assert_identity, backend, check,  # noqa: E402
                     eq, free_port, hdrs, http, identity, project_version, random_api_token,
                     terminate, wait_port)
from common import pid_alive  # noqa: E402  (tests/reliability)

PKGS = ("libapache2-mod-krenalis-auth", "krenalis-keys")
SITE = "krenalis-package-test"
SNAPSHOT_DIRS = (Path("/etc/apache2"), Path("/var/lib/apache2"))
LOG_DIR = Path("/var/log/apache2")
RUN_DIRS = (Path("/var/run/apache2"), Path("/var/lock/apache2"))  # from /etc/apache2/envvars
PID_FILE = Path("/var/run/apache2/apache2.pid")
LOCK_FILE = "/run/lock/krenalis-package-test.lock"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "DEBIAN_FRONTEND": "noninteractive"}
NOT_EXIST = "API key in the Authorization header of the request does not exist"
NO_HEADER = "Authorization header with the API key is not present in the request"


def run(*cmd, ok=True, timeout=300):
    """Runs cmd; returns (exit status, stdout+stderr). With ok, a non-zero exit fails."""
    p = subprocess.run(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    if ok and p.returncode != 0:
        raise Failure("%s: exit %d:\n%s" % (" ".join(cmd), p.returncode, out[-3000:]))
    return p.returncode, out


def dpkg(*args):
    """dpkg ARGS, waiting (up to 5 minutes) while another apt or dpkg holds the lock."""
    end = time.time() + 300
    while True:
        rc, out = run("dpkg", *args, ok=False)
        if rc == 0 or "locked" not in out or time.time() > end:
            break
        time.sleep(5)
    if rc != 0:
        raise Failure("dpkg %s: exit %d:\n%s" % (" ".join(args), rc, out[-3000:]))
    return out


def status(pkg):
    """dpkg's status of pkg ("install ok installed", "deinstall ok config-files", …), or
    None when dpkg has no trace of it."""
    rc, out = run("dpkg-query", "-W", "-f=${Status}", pkg, ok=False)
    return None if rc != 0 or out.endswith(" not-installed") else out


def installed(pkg):
    return status(pkg) == "install ok installed"


def system_apache_pid():
    try:
        pid = int(PID_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


# --------------------------------------------------------------------------------------
# Snapshot and restore of the directories the test changes


def snapshot():
    """{path: (kind, mode, uid, gid, content or link target)} for every entry under
    SNAPSHOT_DIRS (kind: d, l or f)."""
    snap = {}
    for top in SNAPSHOT_DIRS:
        if not top.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [""] + dirnames + filenames:
                p = os.path.join(dirpath, name) if name else dirpath
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    data = ("l", os.readlink(p))
                elif stat.S_ISDIR(st.st_mode):
                    data = ("d", None)
                else:
                    data = ("f", Path(p).read_bytes())
                snap[p] = (data[0], stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, data[1])
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    return snap


def remove(p):
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p)
    elif os.path.lexists(p):
        os.unlink(p)


def restore(saved):
    """Makes SNAPSHOT_DIRS equal to saved again."""
    now = snapshot()
    for p in sorted(set(now) - set(saved), reverse=True):
        if os.path.lexists(p):
            remove(p)
    for p in sorted(saved):
        kind, mode, uid, gid, data = saved[p]
        if now.get(p) == saved[p]:
            continue
        if p in now and now[p][0] != kind:
            remove(p)
        if kind == "d":
            os.makedirs(p, exist_ok=True)
        elif kind == "l":
            if os.path.lexists(p):
                os.unlink(p)
            os.symlink(data, p)
        else:
            Path(p).write_bytes(data)
        os.lchown(p, uid, gid)
        if kind != "l":
            os.chmod(p, mode)


def differences(saved):
    now = snapshot()
    return sorted(p for p in set(saved) | set(now) if saved.get(p) != now.get(p))


def log_sizes():
    return {p: p.stat().st_size for p in LOG_DIR.iterdir() if p.is_file()} \
        if LOG_DIR.is_dir() else {}


def restore_logs(saved):
    """Cuts off what was appended to /var/log/apache2 since saved; removes new files."""
    for p, size in log_sizes().items():
        if p not in saved:
            p.unlink()
        elif size > saved[p]:
            os.truncate(p, saved[p])


# --------------------------------------------------------------------------------------


class PackageTest:
    def __init__(self, deb_dir):
        self.deb_dir = deb_dir
        self.version = project_version()
        self.debs = []
        self.extra_pkgs = []
        self.apache_pids = []
        self.backend = None
        self.tmp = None
        self.passed = self.failed = 0
        self.port = None
        self.f = {}

    def step(self, name, fn):
        """Runs one check and reports it; a failure ends the run (each check builds on the
        ones before it) and goes on to the cleanup."""
        try:
            fn()
        except Failure as e:
            print("FAIL %s: %s" % (name, e), flush=True)
            self.failed += 1
            raise
        print("ok %s" % name, flush=True)
        self.passed += 1

    # -- Apache ----------------------------------------------------------------------------

    def apache_start(self):
        rc, out = run("apache2ctl", "start", ok=False, timeout=60)
        pid = None
        for _ in range(100):
            pid = system_apache_pid()
            if pid:
                break
            time.sleep(0.1)
        if pid:
            self.apache_pids.append(pid)
        eq(rc, 0, "apache2ctl start exit status (output: %r)" % out)
        check(pid is not None, "no live PID in %s after apache2ctl start" % PID_FILE)
        check(wait_port(self.port, None, 15), "Apache does not listen on 127.0.0.1:%d"
              % self.port)

    def apache_stop(self):
        """apache2ctl stop, then waits for the PIDs it started to be gone (SIGKILL after
        15 s: a failure)."""
        if not any(pid_alive(p) for p in self.apache_pids):
            self.apache_pids = []
            return
        run("apache2ctl", "stop", ok=False, timeout=60)
        end = time.time() + 15
        while time.time() < end and any(pid_alive(p) for p in self.apache_pids):
            time.sleep(0.1)
        stuck = [p for p in self.apache_pids if pid_alive(p)]
        for p in stuck:
            os.kill(p, signal.SIGKILL)
        self.apache_pids = []
        check(not stuck, "Apache (PID %s) did not stop within 15 s of apache2ctl stop" % stuck)

    def configtest(self):
        return run("apache2ctl", "configtest", ok=False, timeout=60)

    # -- the steps ---------------------------------------------------------------------------

    def find_debs(self):
        for pkg in PKGS:
            found = sorted(self.deb_dir.glob("%s_*.deb" % pkg))
            check(len(found) == 1, "expected one %s_*.deb in %s, found %s (run make deb)"
                  % (pkg, self.deb_dir, [p.name for p in found]))
            _, v = run("dpkg-deb", "-f", str(found[0]), "Version")
            eq(v.strip(), self.version, "%s's version (src/version.h)" % found[0].name)
            self.debs.append(found[0])

    def install(self):
        debs = [str(d) for d in self.debs]  # absolute: apt-get takes them as files
        _, sim = run("apt-get", "-s", "install", "--no-install-recommends", *debs)
        will = re.findall(r"^Inst (\S+)", sim, re.M)
        self.extra_pkgs = [p for p in will if p not in PKGS]
        run("apt-get", "install", "-y", "-q", "--no-install-recommends",
            "-o", "DPkg::Lock::Timeout=300", *debs)
        for pkg in PKGS:
            check(installed(pkg), "%s is not installed" % pkg)
        for f in ("/usr/lib/apache2/modules/mod_krenalis_auth.so", "/usr/bin/krenalis-keys",
                  "/etc/apache2/mods-available/krenalis_auth.load",
                  "/etc/apache2/mods-available/krenalis_auth.conf",
                  "/usr/share/man/man1/krenalis-keys.1.gz",
                  "/usr/share/doc/krenalis-keys/krenalis-mirror-role.sql"):
            check(os.path.exists(f), "%s is not installed" % f)
        # The mirror's unit, for the packaged command, enabled for no store.
        unit = Path("/lib/systemd/system/krenalis-keys-mirror@.service")
        check(unit.exists(), "%s is not installed" % unit)
        text = unit.read_text()
        check("ExecStart=/usr/bin/krenalis-keys " in text and "/usr/local" not in text,
              "the unit does not run the packaged krenalis-keys")
        eq(sorted(str(p) for p in Path("/etc/systemd/system").rglob("krenalis-keys-mirror*")), [],
           "krenalis-keys-mirror units enabled by the install")
        # The package enables nothing and creates no store.
        eq(sorted(Path("/etc/apache2/mods-enabled").glob("krenalis_auth.*")), [],
           "mods-enabled/krenalis_auth.* right after the install")
        check(not os.path.exists("/var/lib/krenalis-auth"), "the install created a store")

    def cli_version(self):
        rc, out = run("/usr/bin/krenalis-keys", "--version", ok=False)
        eq((rc, out), (0, "krenalis-keys %s\n" % self.version), "krenalis-keys --version")

    def enable(self):
        run("a2enmod", "krenalis_auth")
        for ext in ("load", "conf"):
            p = Path("/etc/apache2/mods-enabled/krenalis_auth." + ext)
            eq(os.readlink(p) if p.is_symlink() else None,
               "../mods-available/krenalis_auth." + ext, str(p))
        run("a2enmod", "proxy", "proxy_http")  # the example vhost's ProxyPass

    def store(self):
        store = self.tmp / "store"
        keys = ["/usr/bin/krenalis-keys", "--store", str(store)]
        run(*keys, "init", "--owner", "www-data:www-data")
        _, org = run(*keys, "organization", "add", "--name", "package test")
        _, out = run(*keys, "api-key", "create", "--organization", org.strip())
        key_id, token = out.split()
        self.f.update(store=store, org=org.strip(), key_id=key_id, token=token)

    def site(self):
        """conf/krenalis-api.vhost.conf on 127.0.0.1:PORT with the temporary store and the
        echo backend; ports.conf listens on that port only; no other site enabled."""
        conf = (REPO / "conf" / "krenalis-api.vhost.conf").read_text()
        for old, new, count in (
                ("<VirtualHost *:443>", "<VirtualHost 127.0.0.1:%d>" % self.port, 1),
                ("KrenalisAuthKeyStore /var/lib/krenalis-auth",
                 "KrenalisAuthKeyStore %s" % self.f["store"], 1),
                ("http://127.0.0.1:2022/", "http://127.0.0.1:%d/" % self.f["backend_port"], 2),
                ("    ServerName api.example.com\n",
                 "    ServerName api.example.com\n    CustomLog %s combined\n"
                 % (self.tmp / "access.log"), 1)):
            eq(conf.count(old), count, "occurrences of %r in conf/krenalis-api.vhost.conf" % old)
            conf = conf.replace(old, new)
        head = ("# written by tests/package/run.py from conf/krenalis-api.vhost.conf\n"
                "ErrorLog %s\n<IfModule krenalis_auth_module>\n    LogLevel warn krenalis_auth:info\n"
                "</IfModule>\n\n" % (self.tmp / "error.log"))
        Path("/etc/apache2/sites-available/%s.conf" % SITE).write_text(head + conf)
        Path("/etc/apache2/ports.conf").write_text("Listen 127.0.0.1:%d\n" % self.port)
        for p in Path("/etc/apache2/sites-enabled").glob("*.conf"):
            run("a2dissite", p.name[:-len(".conf")])
        run("a2ensite", SITE)
        rc, out = self.configtest()
        eq(rc, 0, "apache2ctl configtest exit status (output: %r)" % out)
        check("Syntax OK" in out, "no 'Syntax OK' in %r" % out)

    def start_backend(self):
        self.backend = subprocess.Popen(
            ["python3", str(BACKENDS / "echo_server.py"), "--port", "0", "--hits",
             str(self.tmp / "hits.log")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True)
        line = self.backend.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise Failure("echo_server.py did not start: %r" % line)
        self.f["backend_port"] = int(line.split()[1])

    def requests(self):
        f = self.f
        r = http(self.port, "GET", "/v1/users", [("Authorization", "Bearer " + f["token"])])
        d = backend(r, "proxy")
        assert_identity(d, identity("api", f["key_id"], f["org"]), forwarded=True)
        eq(hdrs(d, "Authorization"), [], "Authorization at the backend "
           "(KrenalisAuthPassAuthorization Off)")
        r = http(self.port, "GET", "/v1/users", [("Authorization", "Bearer " + random_api_token())])
        assert_error(r, 401, "Unauthorized", NOT_EXIST, auth="invalid")
        r = http(self.port, "GET", "/v1/users")
        assert_error(r, 401, "Unauthorized", NO_HEADER, auth="realm")

    def logs(self):
        text = (self.tmp / "error.log").read_text("latin-1")
        lines = [ln for ln in text.splitlines() if "mod_krenalis_auth/" in ln]
        eq(len(lines), 1, "start-up lines naming mod_krenalis_auth/: %r" % lines)
        # The module's log lines carry their call site's tag (docs/internals.md).
        check("[krenalis_auth:info]" in lines[0] and
              re.search(r"\] KA\d{5}: mod_krenalis_auth/%s configured$" % re.escape(self.version),
                        lines[0]),
              "start-up line %r" % lines[0])
        for p in (self.tmp / "error.log", self.tmp / "access.log"):
            check(self.f["token"] not in p.read_text("latin-1"), "the API key is in %s" % p)

    def remove(self):
        dpkg("-r", *PKGS)
        for pkg in PKGS:
            eq(status(pkg), "deinstall ok config-files" if pkg == PKGS[0] else None,
               "dpkg's status of %s after dpkg -r" % pkg)
        eq(sorted(Path("/etc/apache2/mods-enabled").glob("krenalis_auth.*")), [],
           "mods-enabled/krenalis_auth.* after dpkg -r")
        check(not os.path.exists("/usr/lib/apache2/modules/mod_krenalis_auth.so"),
              "the module is still there after dpkg -r")
        # dpkg -r keeps configuration files; purge removes them.
        check(os.path.exists("/etc/apache2/mods-available/krenalis_auth.conf"),
              "dpkg -r removed the conffile krenalis_auth.conf")
        # A site that still uses the module's directives does not start without the module:
        # the API never opens unauthenticated.
        rc, out = self.configtest()
        check(rc != 0 and "Invalid command 'KrenalisAuthKeyStore'" in out,
              "configtest with the site but without the module: exit %d, %r" % (rc, out))
        run("a2dissite", SITE)

    def apache_without_module(self):
        rc, out = self.configtest()
        eq(rc, 0, "apache2ctl configtest exit status (output: %r)" % out)
        self.apache_start()
        r = http(self.port, "GET", "/v1/users", [("Authorization", "Bearer " + self.f["token"])])
        eq(r.status, 404, "status without the module and the site" + r.brief())
        self.apache_stop()

    def purge(self):
        dpkg("--purge", *PKGS)
        for pkg in PKGS:
            eq(status(pkg), None, "dpkg's status of %s after dpkg --purge" % pkg)
        left = sorted(str(p) for d in ("/etc/apache2", "/var/lib/apache2")
                      for p in Path(d).rglob("krenalis_auth*"))
        eq(left, [], "files named krenalis_auth* under /etc/apache2 and /var/lib/apache2")
        # Purge removes nothing the operator created.
        for name in ("data.mdb", "lock.mdb", "secret"):
            check((self.f["store"] / name).exists(), "purge removed the store's %s" % name)

    # -- the whole run -------------------------------------------------------------------------

    def steps(self):
        self.step("debs built for version %s" % self.version, self.find_debs)
        self.step("apt-get install ./build/deb/*.deb (enables nothing, creates no store)",
                   self.install)
        self.step("krenalis-keys --version", self.cli_version)
        self.step("a2enmod krenalis_auth", self.enable)
        self.step("krenalis-keys init and api-key create (installed command)", self.store)
        self.port = free_port()
        self.start_backend()
        self.step("site from conf/krenalis-api.vhost.conf passes apache2ctl configtest",
                   self.site)
        self.step("apache2ctl start", self.apache_start)
        self.step("valid API key 200, unknown 401 (SPEC 6.1), no header 401", self.requests)
        self.step("apache2ctl stop", self.apache_stop)
        self.step("error log: one start-up line with the version, no key", self.logs)
        self.step("dpkg -r: module disabled, conffiles kept, configtest refuses the site",
                   self.remove)
        self.step("Apache without the module: configtest, start, stop", self.apache_without_module)
        self.step("dpkg --purge: no trace under /etc/apache2, the store kept", self.purge)
        self.step("Apache after the purge: configtest, start, stop", self.apache_without_module)

    def main(self):
        if os.geteuid() != 0:
            print("FAIL setup: the package test installs packages: run it as root")
            print("0 passed, 1 failed")
            return 1
        lock = open(LOCK_FILE, "w")
        fcntl.flock(lock, fcntl.LOCK_EX)  # one package test at a time on this machine
        pid = system_apache_pid()
        busy = [p for p in PKGS if status(p)]
        if pid or busy:
            print("FAIL setup: %s" % ("the system's Apache is running (PID %d); stop it first"
                                      % pid if pid else
                                      "%s already installed; remove first" % " ".join(busy)))
            print("0 passed, 1 failed")
            return 1
        saved, saved_logs = snapshot(), log_sizes()
        run_dirs = [d for d in RUN_DIRS if not d.exists()]
        self.tmp = Path(tempfile.mkdtemp(prefix="krenalis-pkg-", dir="/tmp"))
        os.chmod(self.tmp, 0o755)
        t0 = time.time()
        try:
            self.steps()
        except Failure:
            pass
        finally:
            self.cleanup(saved, saved_logs, run_dirs)
        print("# package test, %.1f s" % (time.time() - t0))
        print("%d passed, %d failed" % (self.passed, self.failed))
        return 1 if self.failed else 0

    def cleanup(self, saved, saved_logs, run_dirs):
        """Puts the machine back; reports what could not be."""
        problems = []
        try:
            self.apache_stop()
        except Failure as e:
            problems.append(str(e))
        if self.backend is not None:
            terminate(self.backend, 10)
        left = [p for p in PKGS + tuple(self.extra_pkgs) if status(p)]
        if left:
            try:
                dpkg("--purge", *left)
            except Failure as e:
                problems.append(str(e))
        left = [p for p in PKGS + tuple(self.extra_pkgs) if status(p)]
        if left:
            problems.append("dpkg still knows %s" % left)
        restore(saved)
        restore_logs(saved_logs)
        for d in run_dirs:
            shutil.rmtree(d, ignore_errors=True)
        diff = differences(saved)
        if diff:
            problems.append("not as before: %s" % diff[:20])
        shutil.rmtree(self.tmp, ignore_errors=True)
        name = "machine restored (/etc/apache2, /var/lib/apache2, packages, logs)"
        if problems:
            print("FAIL %s: %s" % (name, "; ".join(problems)))
            self.failed += 1
        else:
            print("ok %s" % name)
            self.passed += 1


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # runs the cleanup
    deb_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "deb"
    return PackageTest(deb_dir.resolve()).main()


if __name__ == "__main__":
    sys.exit(main())
