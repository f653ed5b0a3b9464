#!/usr/bin/python3
"""Writes the seed corpus of the libFuzzer targets into tests/fuzz/corpus/<target>/.

    python3 tests/fuzz/gen_corpus.py

The seeds are small valid and near-valid inputs of each target (see the comment at the top of
each tests/fuzz/fuzz_*.c for its input layout). Re-running rewrites the same files; files the
fuzzers add to a copy under build/ are never written back here.
"""
import gzip
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

# SPEC §2 test vector.
VECTOR_PAYLOAD = bytes(range(1, 33))
VECTOR_BODY = "AOyrCBBQEmI63fgWAAw8F12XcPvUqkg0aEwlIqnO0xyCeS3NT"


def b62(n, width):
    s = ""
    for _ in range(width):
        n, r = divmod(n, 62)
        s = ALPHA[r] + s
    assert n == 0
    return s


def api_body(payload):
    return b62(int.from_bytes(payload, "big"), 43) + b62(zlib.crc32(payload), 6)


assert api_body(VECTOR_PAYLOAD) == VECTOR_BODY

WRITE_KEY = "WriteKeyA1aaaaaaaaaaaaaaaaaaaaaa"
ORG_KEY = "org_" + "OrganizationsKey0123456789abcdefghijklmnopq"
assert len(ORG_KEY) == 47


def gz(b, **kw):
    return gzip.compress(b, mtime=0, **kw)


def write(target, items):
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    for name, data in items:
        if isinstance(data, str):
            data = data.encode("latin-1")
        (d / name).write_bytes(data)


def bearer():
    return [
        ("vector", "Bearer api_" + VECTOR_BODY),
        ("lower-tab", "bearer\t\t " + WRITE_KEY),
        ("upper", "BEARER x"),
        ("scheme-only", "Bearer"),
        ("scheme-space", "Bearer "),
        ("scheme-blanks", "Bearer \t \t"),
        ("glued", "Bearerx"),
        ("colon", "Bearer:x"),
        ("basic", "Basic dXNlcjpwYXNz"),
        ("empty", ""),
        ("repeated", "Bearer api_" + VECTOR_BODY + ", Bearer " + WRITE_KEY),
        ("nul", b"Bearer ab\x00cd"),
        ("max-len", "Bearer " + "a" * 8192),
        ("over-max", "Bearer " + "a" * 8193),
    ]


def apikey():
    bad_crc = VECTOR_BODY[:-1] + ("A" if VECTOR_BODY[-1] != "A" else "B")
    return [
        ("vector-body", VECTOR_BODY),
        ("vector-token", "api_" + VECTOR_BODY),
        ("zero-payload", api_body(bytes(32))),
        ("max-payload", api_body(b"\xff" * 32)),
        ("bad-crc", bad_crc),
        ("short", VECTOR_BODY[:-1]),
        ("long", VECTOR_BODY + "A"),
        ("bad-char", VECTOR_BODY[:10] + "-" + VECTOR_BODY[11:]),
        ("payload-overflow", "9" * 43 + "AAAAAA"),
        ("crc-overflow", VECTOR_BODY[:43] + "999999"),
        ("payload-bytes", VECTOR_PAYLOAD),
        ("write-key", WRITE_KEY),
        ("org-key", ORG_KEY),
        ("org-key-utf8", ORG_KEY[:-2] + "\u00e9".encode().decode("latin-1")),
        ("org-key-ctrl", ORG_KEY[:-1] + "\x01"),
        ("org-key-short", "org_abc"),
    ]


SPEC_BODY = ('{"writeKey":"%s","batch":[{"type":"track","event":"Signup",'
             '"properties":{"plan":"pro","price":12.5e0,"tags":["a",null,true,false]},'
             '"context":{"library":{"name":"krenalis.js"}}}],"sentAt":"2024-01-01T00:00:00Z"}'
             % WRITE_KEY)
API_BODY = '{"connectionId":"cnA123456789","batch":[{"type":"identify","userId":"u1"}]}'


def json_seeds():
    raw = [
        ("sdk-body", SPEC_BODY),
        ("api-body", API_BODY),
        ("empty-object", "{}"),
        ("whitespace", " \t\r\n{ \"writeKey\" : \"k\" , \"connectionId\" : 1 } \n"),
        ("duplicate", '{"writeKey":"a","writeKey":"b"}'),
        ("dup-other", '{"writeKey":"a","writeKey":1}'),
        ("escaped-key", '{"write\\u004bey":"\\u0041\\/\\"\\\\\\b\\f\\n\\r\\t"}'),
        ("surrogates", '{"writeKey":"\\ud83d\\ude00\\ud800\\u0041\\udc00x\\ud800"}'),
        ("nul-escape", '{"writeKey":"ab\\u0000cd"}'),
        ("too-long", '{"writeKey":"%s"}' % ("x" * 65)),
        ("exact-64", '{"connectionId":"%s"}' % ("y" * 64)),
        ("nested", '{"a":{"writeKey":"inner"},"b":[{"connectionId":"x"}]}'),
        ("numbers", '{"a":[0,-0,1.5,-1e10,2E+3,3e-2,10]}'),
        ("bad-number", '{"a":01}'),
        ("not-object", '["writeKey"]'),
        ("trailing", '{"writeKey":"k"} x'),
        ("unterminated", '{"writeKey":"k'),
        ("ctrl-in-string", '{"writeKey":"a\x01b"}'),
        ("utf8", '{"writeKey":"\u00e9\u00e8"}'.encode().decode("latin-1")),
        ("depth-64", "{\"a\":" * 63 + "{}" + "}" * 63),
        ("depth-65", "{\"a\":" * 64 + "{}" + "}" * 64),
        ("array-depth", '{"a":' + "[" * 62 + "1" + "]" * 62 + "}"),
        ("literals", '{"a":true,"b":false,"c":null,"writeKey":null}'),
        ("empty", ""),
        ("encoding-gzip", "gZiP"),  # also a Content-Encoding value (short inputs)
        ("encoding-identity", "IDENTITY"),
    ]
    out = [("raw-" + n, b"0" + (v.encode("latin-1") if isinstance(v, str) else v))
           for n, v in raw]
    out += [
        ("gzip-sdk-body", b"1" + gz(SPEC_BODY.encode())),
        ("gzip-api-body", b"1" + gz(API_BODY.encode(), compresslevel=1)),
        ("gzip-empty", b"1" + gz(b"")),
        ("gzip-truncated", b"1" + gz(SPEC_BODY.encode())[:-5]),
        ("gzip-trailing", b"1" + gz(b"{}") + b"junk"),
        ("gzip-two-members", b"1" + gz(b'{"writeKey":') + gz(b'"k"}')),
        ("gzip-bad-crc", b"1" + gz(b"{}")[:-8] + b"\0\0\0\0\2\0\0\0"),
        ("zlib-not-gzip", b"1" + zlib.compress(b"{}")),
        ("gzip-small-limit", bytes([1 + 3 * 1]) + gz(SPEC_BODY.encode())),  # limit 16
        ("gzip-bomb", b"1" + gz(b"{\"a\":\"" + b"x" * 100000 + b"\"}")),
        ("gzip-pool", bytes([1 + 3 * 4]) + gz(API_BODY.encode())),
        ("roundtrip-sdk", b"2" + SPEC_BODY.encode()),
        ("roundtrip-exact", bytes([2 + 3 * 10]) + API_BODY.encode()),
        ("roundtrip-short", bytes([2 + 3 * 20]) + API_BODY.encode()),
    ]
    return out


def workspace():
    return [
        ("valid", "wsA123456789"),
        ("valid-other", "wsA223456789"),
        ("other-org", "wsB123456789"),
        ("gone", "wsG123456789"),
        ("empty", ""),
        ("short", "wsA12345678"),
        ("long", "wsA1234567890"),
        ("not-base58", "0OIl23456789"),
        ("repeated", "wsA123456789, wsA223456789"),
        ("comma", ","),
        ("nul", b"wsA12345678\x009"),
        ("space", " wsA123456789"),
    ]


def origin():
    return [
        ("https", "https://example.com"),
        ("port", "http://localhost:8080"),
        ("null", "null"),
        ("path", "https://example.com/"),
        ("userinfo", "https://user@example.com"),
        ("query", "https://example.com?x"),
        ("no-host", "https://"),
        ("no-scheme", "://example.com"),
        ("list-match", "https://a.example\nhttps://b.example\nhttps://b.example"),
        ("list-case", "https://a.example\nHTTPS://A.EXAMPLE"),
        ("list-miss", "https://a.example\nhttps://evil.example"),
        ("list-empty-origin", "https://a.example\n"),
        ("crlf", "https://a.example\r\nSet-Cookie: x=y"),
        ("comma", "https://a.example, https://b.example"),
        ("high-bit", "https://\xe9xample.com"),
        ("empty", ""),
    ]


def decide():
    AUTO, API, ING, SET, ORGS = 0, 1, 2, 3, 4
    REQ, FORB = 0x08, 0x10
    NOAUTH, NOWS, ORGKEY = 0x20, 0x40, 0x80
    GET, POST, OPTIONS, PUT = 0, 1, 2, 3
    BODY = 0x80

    def s(b0, b1, path, auth="", ws="", body=""):
        return bytes([b0, b1]) + ("%s\n%s\n%s\n%s" % (path, auth, ws, body)).encode("latin-1")

    api = "/v1/workspaces"
    ev = "/v1/events"
    return [
        ("api-ok", s(NOWS, GET, api, "Bearer $A0")),
        ("api-ws", s(0, GET, api, "Bearer $A0", "$S0")),
        ("api-ws-other-org", s(0, GET, api, "Bearer $A0", "$S2")),
        ("api-ws-invalid", s(0, GET, api, "Bearer $A0", "ws")),
        ("api-ws-multi", s(0, GET, api, "Bearer $A0", "$S0, $S1")),
        ("api-restricted", s(NOWS, PUT, api, "Bearer $A1")),
        ("api-restricted-ws", s(0, PUT, api, "Bearer $A1", "$S0")),
        ("api-required", s(REQ | NOWS, GET, api, "Bearer $A0")),
        ("api-forbidden", s(FORB, GET, api, "Bearer $A0", "$S1")),
        ("api-disabled", s(NOWS, GET, api, "Bearer $A2")),
        ("api-org-gone", s(NOWS, GET, api, "Bearer $A3")),
        ("api-ws-gone", s(NOWS, GET, api, "Bearer $A4")),
        ("api-ws-foreign", s(NOWS, GET, api, "Bearer $A5")),
        ("api-unknown", s(NOWS, GET, api, "Bearer $A6")),
        ("api-wrong-type", s(NOWS, GET, api, "Bearer $A7")),
        ("api-malformed", s(NOWS, GET, api, "Bearer api_" + VECTOR_BODY[:-1] + "B")),
        ("api-vector", s(NOWS, GET, api, "Bearer api_" + VECTOR_BODY)),
        ("api-write-key", s(NOWS, GET, api, "Bearer $W0")),
        ("api-no-auth", s(NOAUTH | NOWS, GET, api)),
        ("api-basic", s(NOWS, GET, api, "Basic eDp5")),
        ("api-multi", s(NOWS, GET, api, "Bearer $A0, Bearer $A0")),
        ("api-store-fails", s(NOWS, GET | (1 << 3), api, "Bearer $A0")),
        ("api-store-fails-ws", s(0, GET | (3 << 3), api, "Bearer $A0", "$S0")),
        ("ing-write-key", s(NOWS, POST, ev, "Bearer $W0")),
        # Reproducer (SPEC §6.2, header write key and a body connectionId -> 400).
        ("ing-write-key-body-conn", s(NOWS, POST | BODY, ev, "Bearer $W0", "",
                                      '{"connectionId":"$C0","batch":[]}')),
        ("ing-write-key-track", s(NOWS, POST, ev + "/track", "Bearer $W5")),
        ("ing-write-disabled", s(NOWS, POST, ev, "Bearer $W1")),
        ("ing-write-gone", s(NOWS, POST, ev, "Bearer $W2")),
        ("ing-write-unknown", s(NOWS, POST, ev, "Bearer $W3")),
        ("ing-write-wrong-type", s(NOWS, POST, ev, "Bearer $W4")),
        ("ing-api-key", s(NOWS, POST, ev, "Bearer $A0", "", '{"connectionId":"$C0"}')),
        ("ing-api-key-ws", s(0, POST, ev, "Bearer $A0", "$S0", '{"connectionId":"$C0"}')),
        ("ing-api-key-ws-mismatch", s(0, POST, ev, "Bearer $A0", "$S1", '{"connectionId":"$C0"}')),
        ("ing-api-key-restricted", s(NOWS, POST, ev, "Bearer $A1", "", '{"connectionId":"$C1"}')),
        ("ing-api-key-foreign-conn", s(NOWS, POST | BODY, ev, "Bearer $A0", "",
                                       '{"connectionId":"$C3"}')),
        ("ing-api-key-no-conn", s(NOWS, POST, ev, "Bearer $A0", "", '{"batch":[]}')),
        ("ing-api-key-bad-conn", s(NOWS, POST, ev, "Bearer $A0", "", '{"connectionId":"x\\n"}')),
        ("ing-api-key-conn-fails", s(NOWS, POST | (3 << 3), ev, "Bearer $A0", "",
                                     '{"connectionId":"$C0"}')),
        ("ing-body-key", s(NOAUTH | NOWS, POST, ev, "", "",
                           '{"writeKey":"$W0","batch":[{"type":"track"}]}')),
        ("ing-body-key-upfront", s(NOAUTH | NOWS, POST | BODY, ev, "", "", '{"writeKey":"$W0"}')),
        ("ing-body-key-dup", s(NOAUTH | NOWS, POST, ev, "", "", '{"writeKey":"$W0","writeKey":"$W0"}')),
        ("ing-body-key-conn", s(NOAUTH | NOWS, POST, ev, "", "",
                                '{"writeKey":"$W0","connectionId":"$C0"}')),
        ("ing-body-key-empty", s(NOAUTH | NOWS, POST, ev, "", "", '{"writeKey":""}')),
        ("ing-body-key-number", s(NOAUTH | NOWS, POST, ev, "", "", '{"writeKey":1}')),
        ("ing-body-key-typed-path", s(NOAUTH | NOWS, POST, ev + "/page", "", "", '{"writeKey":"$W0"}')),
        ("ing-body-key-fails", s(NOAUTH | NOWS, POST | (2 << 3), ev, "", "", '{"writeKey":"$W0"}')),
        ("ing-preflight", s(NOAUTH | NOWS, OPTIONS, ev)),
        ("ing-configured", s(ING | NOAUTH | NOWS, POST, "/collect", "", "", '{"writeKey":"$W0"}')),
        ("settings-ok", s(NOAUTH | NOWS, GET, ev + "/settings/$W0")),
        ("settings-disabled", s(NOAUTH | NOWS, GET, ev + "/settings/$W1")),
        ("settings-unknown", s(NOAUTH | NOWS, GET, ev + "/settings/nope")),
        ("settings-empty", s(NOAUTH | NOWS, GET, ev + "/settings/")),
        ("settings-slash", s(NOAUTH | NOWS, GET, ev + "/settings/$W0/x")),
        ("settings-configured", s(SET | NOAUTH | NOWS, GET, "/s/settings/$W0")),
        ("orgs-ok", s(ORGKEY | NOWS, GET, "/v1/organizations", "Bearer $O")),
        ("orgs-sub", s(ORGKEY | NOWS, PUT, "/v1/organizations/$G0", "Bearer $O")),
        ("orgs-unset", s(NOWS, GET, "/v1/organizations", "Bearer $O")),
        ("orgs-wrong", s(ORGKEY | NOWS, GET, "/v1/organizations", "Bearer org_x")),
        ("orgs-api-key", s(ORGKEY, GET, "/v1/organizations", "Bearer $A0", "$S0")),
        ("orgs-no-auth", s(ORGKEY | NOAUTH | NOWS, GET, "/v1/organizations")),
        ("orgs-configured", s(ORGS | ORGKEY | NOWS, GET, "/admin", "Bearer $O")),
    ]


def main():
    write("bearer", bearer())
    write("apikey", apikey())
    write("json", json_seeds())
    write("workspace", workspace())
    write("origin", origin())
    write("decide", decide())
    for t in ("bearer", "apikey", "json", "workspace", "origin", "decide"):
        d = HERE / "corpus" / t
        print("%-10s %3d seeds, %6d bytes" % (t, len(list(d.iterdir())),
                                               sum(f.stat().st_size for f in d.iterdir())))


if __name__ == "__main__":
    main()
