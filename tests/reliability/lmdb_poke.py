#!/usr/bin/python3
"""Reads or overwrites one record of an LMDB store (python3 + ctypes), to damage a store in a
way LMDB itself accepts -- a record the module cannot decode -- for the corrupted-record test.

    python3 lmdb_poke.py STORE_DIR DB get KEYHEX          prints the value as hex
    python3 lmdb_poke.py STORE_DIR DB put KEYHEX VALUEHEX  writes it (one write transaction)
"""
import ctypes
import ctypes.util
import sys

MDB_RDONLY = 0x20000
MDB_NOTLS = 0x200000


class Val(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("data", ctypes.c_void_p)]


def main():
    store, db, op, key = sys.argv[1], sys.argv[2], sys.argv[3], bytes.fromhex(sys.argv[4])
    lib = ctypes.CDLL(ctypes.util.find_library("lmdb") or "liblmdb.so.0")
    env = ctypes.c_void_p()
    lib.mdb_env_create(ctypes.byref(env))
    lib.mdb_env_set_maxdbs(env, 8)
    lib.mdb_env_set_maxreaders(env, 4094)
    rc = lib.mdb_env_open(env, store.encode(), MDB_NOTLS | (MDB_RDONLY if op == "get" else 0),
                          0o640)
    if rc:
        print("mdb_env_open: %d" % rc, file=sys.stderr)
        return 1
    txn = ctypes.c_void_p()
    rc = lib.mdb_txn_begin(env, None, MDB_RDONLY if op == "get" else 0, ctypes.byref(txn))
    dbi = ctypes.c_uint()
    rc = rc or lib.mdb_dbi_open(txn, db.encode(), 0, ctypes.byref(dbi))
    kbuf = ctypes.create_string_buffer(key, len(key))
    k = Val(len(key), ctypes.cast(kbuf, ctypes.c_void_p))
    if rc == 0 and op == "get":
        v = Val()
        rc = lib.mdb_get(txn, dbi, ctypes.byref(k), ctypes.byref(v))
        if rc == 0:
            print(ctypes.string_at(v.data, v.size).hex())
        lib.mdb_txn_abort(txn)
    elif rc == 0:
        value = bytes.fromhex(sys.argv[5])
        vbuf = ctypes.create_string_buffer(value, len(value))
        v = Val(len(value), ctypes.cast(vbuf, ctypes.c_void_p))
        rc = lib.mdb_put(txn, dbi, ctypes.byref(k), ctypes.byref(v), 0)
        rc = rc or lib.mdb_txn_commit(txn)
    lib.mdb_env_close(env)
    if rc:
        print("lmdb error %d" % rc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
