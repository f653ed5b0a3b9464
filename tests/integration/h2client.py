#!/usr/bin/python3
"""One HTTP/2 request with prior knowledge, its header fields sent exactly as given, for the
integration tests (python3-h2 is Debian's: run this with /usr/bin/python3).

    /usr/bin/python3 h2client.py PORT METHOD PATH FIELDS_JSON

FIELDS_JSON is a list of [name, value] pairs, repeated names and empty values kept. Prints one
line of JSON: {"status": N, "body": "..."}.
"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events


def main():
    port, method, path, fields = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                    validate_outbound_headers=False,
                                    normalize_outbound_headers=False)
    conn = h2.connection.H2Connection(config=cfg)
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        head = [(":method", method), (":scheme", "http"), (":authority", "127.0.0.1:%d" % port),
                (":path", path)] + [tuple(f) for f in fields]
        conn.send_headers(sid, head, end_stream=True)
        s.sendall(conn.data_to_send())
        status, body, done = None, b"", False
        while not done:
            data = s.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            s.sendall(conn.data_to_send())
    finally:
        s.close()
    print(json.dumps({"status": status, "body": body.decode("latin-1")}))


if __name__ == "__main__":
    main()
