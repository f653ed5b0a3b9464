"""What the Krenalis server does to its database when an operator changes organizations,
workspaces, connections and keys (SPEC §11.1): the DML and the notification of each change,
through pg.Writer. IDs and keys are generated as Krenalis does (base58 IDs, 32-byte API key
payloads whose HMAC-SHA-256 under the pepper goes to access_keys.hmac, 32-character write
keys kept in plain text)."""
import base64
import hashlib
import hmac
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from harness import api_body, random_alnum, random_id  # noqa: E402

ROLES = {"Source": 1, "Destination": 2}


class Krenalis:
    def __init__(self, writer, pepper):
        self.w = writer
        self.pepper = pepper
        self.secrets = set()  # every token and key made: none may show in a log

    def q(self, s):
        return self.w.lit(s)

    # -- organizations --
    def create_org(self, name="Acme", enabled=True):
        oid = random_id()
        self.w.change("INSERT INTO organizations (id, name, enabled) VALUES (%s, %s, %s)"
                      % (self.q(oid), self.q(name), "true" if enabled else "false"),
                      "CreateOrganization", {"ID": oid, "Name": name, "Enabled": enabled})
        return oid

    def set_org_status(self, oid, enabled):
        return self.w.change("UPDATE organizations SET enabled = %s WHERE id = %s"
                             % ("true" if enabled else "false", self.q(oid)),
                             "SetOrganizationStatus", {"ID": oid, "Enabled": enabled})

    def update_org(self, oid, name):
        return self.w.change("UPDATE organizations SET name = %s WHERE id = %s"
                             % (self.q(name), self.q(oid)),
                             "UpdateOrganization", {"ID": oid, "Name": name})

    def delete_org(self, oid):
        return self.w.change("DELETE FROM organizations WHERE id = %s" % self.q(oid),
                             "DeleteOrganization", {"ID": oid})

    # -- workspaces --
    def create_ws(self, org, name="Web"):
        wid = random_id()
        self.w.change("INSERT INTO workspaces (id, organization, name) VALUES (%s, %s, %s)"
                      % (self.q(wid), self.q(org), self.q(name)),
                      "CreateWorkspace", {"ID": wid, "Organization": org, "Name": name})
        return wid

    def rename_ws(self, wid, name, kind="RenameWorkspace"):
        return self.w.change("UPDATE workspaces SET name = %s WHERE id = %s"
                             % (self.q(name), self.q(wid)), kind, {"Workspace": wid, "Name": name})

    def delete_ws(self, wid):
        return self.w.change("DELETE FROM workspaces WHERE id = %s" % self.q(wid),
                             "DeleteWorkspace", {"ID": wid})

    # -- connections --
    def create_conn(self, ws, role="Source", strategy="Fusion", with_key=True, name="site"):
        cid = random_id()
        key = random_alnum(32) if with_key else ""
        dml = ("INSERT INTO connections (id, workspace, name, role, strategy, settings) VALUES "
               "(%s, %s, %s, %s, %s, %s)" % (self.q(cid), self.q(ws), self.q(name),
                                             self.q(role),
                                             self.q(strategy) if strategy else "NULL",
                                             self.q("oauth-" + secrets.token_hex(8))))
        if key:
            self.secrets.add(key)
            dml += (";\nINSERT INTO event_write_keys (connection, key) VALUES (%s, %s)"
                    % (self.q(cid), self.q(key)))
        self.w.change(dml, "CreateConnection",
                      {"ID": cid, "Workspace": ws, "Name": name, "Role": ROLES[role],
                       "Strategy": strategy, "EventWriteKey": key,
                       "Settings": "c2VjcmV0", "Account": None})
        return cid, key

    def update_conn(self, cid, name, strategy):
        return self.w.change("UPDATE connections SET name = %s, strategy = %s WHERE id = %s"
                             % (self.q(name), self.q(strategy) if strategy else "NULL",
                                self.q(cid)),
                             "UpdateConnection",
                             {"Connection": cid, "Name": name, "Strategy": strategy})

    def rename_conn(self, cid, name):
        return self.w.change("UPDATE connections SET name = %s WHERE id = %s"
                             % (self.q(name), self.q(cid)),
                             "RenameConnection", {"Connection": cid, "Name": name})

    def delete_conn(self, cid):
        return self.w.change("DELETE FROM connections WHERE id = %s" % self.q(cid),
                             "DeleteConnection", {"ID": cid})

    # -- keys --
    def create_access_key(self, org, ws=None, kind="API", name="key"):
        kid = random_id()
        payload = secrets.token_bytes(32)
        token = "api_" + api_body(payload)
        self.secrets.add(token)
        digest = hmac.new(self.pepper, payload, hashlib.sha256).digest()
        hint = token[4:8] + "..." + token[-6:]
        self.w.change(
            "INSERT INTO access_keys (id, organization, workspace, name, type, hmac, hint) "
            "VALUES (%s, %s, %s, %s, %s, '\\x%s', %s)"
            % (self.q(kid), self.q(org), self.q(ws) if ws else "NULL", self.q(name),
               self.q(kind), digest.hex(), self.q(hint)),
            "CreateAccessKey",
            {"ID": kid, "Organization": org, "Workspace": ws or "", "Name": name,
             "Type": 0 if kind == "API" else 1,
             "HMAC": base64.b64encode(digest).decode(), "Hint": hint})
        return kid, token

    def delete_access_key(self, kid):
        return self.w.change("DELETE FROM access_keys WHERE id = %s" % self.q(kid),
                             "DeleteAccessKey", {"ID": kid})

    def create_write_key(self, cid):
        key = random_alnum(32)
        self.secrets.add(key)
        self.w.change("INSERT INTO event_write_keys (connection, key) VALUES (%s, %s)"
                      % (self.q(cid), self.q(key)),
                      "CreateEventWriteKey", {"Connection": cid, "Key": key})
        return key

    def delete_write_key(self, cid, key):
        return self.w.change("DELETE FROM event_write_keys WHERE connection = %s AND key = %s"
                             % (self.q(cid), self.q(key)),
                             "DeleteEventWriteKey", {"Connection": cid, "Key": key})

    # -- changes the edge ignores (their payloads may hold secrets) --
    def set_account(self, cid):
        token = "oauth-" + secrets.token_hex(16)
        self.secrets.add(token)
        return self.w.change("", "SetAccount",
                             {"Connection": cid, "AccessToken": token, "RefreshToken": token})
