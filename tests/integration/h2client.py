#!/usr/bin/python3
"""One HTTP/2 request with prior knowledge, its header fields sent exactly as given, for the
integration tests (python3-h2 is Debian's: run this with /usr/bin/python3).

    /usr/bin/python3 h2client.py PORT METHOD PATH FIELDS_JSON
    /usr/bin/python3 h2client.py PORT --session

FIELDS_JSON is a list of [name, value] pairs, repeated names and empty values kept. Prints one
line of JSON: {"status": N, "body": "..."}. With --session, one connection carries many
requests, one stream each, in turn: each line read from stdin, [METHOD, PATH, FIELDS], is sent
once the previous response has been printed (and flushed), until stdin ends. A line
{"batch": [[METHOD, PATH, FIELDS], ...]} sends all its requests at once, each on its own
stream, and prints one line: the list of their responses, in the same order.
"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events


def main():
    port = int(sys.argv[1])
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                    validate_outbound_headers=False,
                                    normalize_outbound_headers=False)
    conn = h2.connection.H2Connection(config=cfg)
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        if sys.argv[2] != "--session":
            request(conn, s, port, sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
            return
        for line in iter(sys.stdin.readline, ""):
            if line.strip():
                req = json.loads(line)
                if isinstance(req, dict):
                    print(json.dumps(exchange(conn, s, port, req["batch"])), flush=True)
                else:
                    print(json.dumps(exchange(conn, s, port, [req])[0]), flush=True)
    finally:
        s.close()


def request(conn, s, port, method, path, fields):
    """One request on its own stream; prints its response."""
    print(json.dumps(exchange(conn, s, port, [[method, path, fields]])[0]), flush=True)


def exchange(conn, s, port, reqs):
    """Sends every request of reqs on a stream of its own, all at once; returns their responses,
    {"status": N, "body": "..."}, in the same order."""
    sids = []
    for method, path, fields in reqs:
        sid = conn.get_next_available_stream_id()
        head = [(":method", method), (":scheme", "http"), (":authority", "127.0.0.1:%d" % port),
                (":path", path)] + [tuple(f) for f in fields]
        conn.send_headers(sid, head, end_stream=True)
        sids.append(sid)
    s.sendall(conn.data_to_send())
    res = {sid: {"status": None, "body": b""} for sid in sids}
    open_ = set(sids)
    while open_:
        data = s.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            r = res.get(getattr(ev, "stream_id", None))
            if r is None:
                continue
            if isinstance(ev, h2.events.ResponseReceived):
                r["status"] = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                r["body"] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                open_.discard(ev.stream_id)
        s.sendall(conn.data_to_send())
    return [{"status": res[sid]["status"], "body": res[sid]["body"].decode("latin-1")}
            for sid in sids]


if __name__ == "__main__":
    main()
