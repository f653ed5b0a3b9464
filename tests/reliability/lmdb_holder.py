#!/usr/bin/python3
"""Takes reader slots of an LMDB environment, for the reader-table tests (python3 + ctypes).

    python3 lmdb_holder.py STORE_DIR [LEAVE]

Opens STORE_DIR read-only (MDB_RDONLY | MDB_NOTLS, as the module does) and begins read
transactions until LMDB answers MDB_READERS_FULL, then ends LEAVE of them again (so that LEAVE
slots stay free). LEAVE -1: only opens the environment (a process that has the store open,
which keeps LMDB from resetting the reader table when the next process opens it). Prints "HELD N" and waits for a line on stdin: "close" closes the environment
(its slots are freed) and exits. Killed instead (SIGKILL), it leaves its N slots to a dead PID,
as an httpd child that crashed would.
"""
import ctypes
import ctypes.util
import sys

MDB_RDONLY = 0x20000
MDB_NOTLS = 0x200000
MDB_READERS_FULL = -30790


def main():
    name = ctypes.util.find_library("lmdb") or "liblmdb.so.0"
    lib = ctypes.CDLL(name)
    env = ctypes.c_void_p()
    if lib.mdb_env_create(ctypes.byref(env)) != 0:
        print("ERROR mdb_env_create", flush=True)
        return 1
    lib.mdb_env_set_maxreaders(env, 4094)
    lib.mdb_env_set_maxdbs(env, 8)
    rc = lib.mdb_env_open(env, sys.argv[1].encode(), MDB_RDONLY | MDB_NOTLS, 0o640)
    if rc != 0:
        print("ERROR mdb_env_open %d" % rc, flush=True)
        return 1
    leave = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if leave < 0:
        print("HELD 0", flush=True)
        if sys.stdin.readline().strip() == "close":
            lib.mdb_env_close(env)
        return 0
    txns = []
    while True:
        t = ctypes.c_void_p()
        rc = lib.mdb_txn_begin(env, None, MDB_RDONLY, ctypes.byref(t))
        if rc != 0:
            break
        txns.append(t)
    if rc != MDB_READERS_FULL:
        print("ERROR mdb_txn_begin %d after %d" % (rc, len(txns)), flush=True)
        return 1
    for t in txns[len(txns) - leave:] if leave else []:
        lib.mdb_txn_abort(t)
    print("HELD %d" % (len(txns) - leave), flush=True)
    if sys.stdin.readline().strip() == "close":
        lib.mdb_env_close(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
