#!/usr/bin/env python3
"""Talks to a KernelCI API server the way upstream's `kernelci.api.latest` client does
(api spec section 10), with the standard library only.

Usage: upstream_client.py BASE_URL TOKEN [USERNAME PASSWORD]
Exit 0 and print "ALL OK" when every step behaved as the client expects.
"""

import json
import sys
import urllib.error
import urllib.parse
import urllib.request


class Api:
    """The bits of kernelci.api.latest.LatestAPI and kernelci.api.API used here."""

    def __init__(self, url, token=None, version="latest", timeout=60):
        self.url = url
        self.token = token
        self.version = version
        self.timeout = timeout

    def _make_url(self, path):
        # Upstream: urllib.parse.urljoin(self.config.url, '/'.join([version, path]))
        return urllib.parse.urljoin(self.url, "/".join([self.version, path]))

    def _request(self, method, path, params=None, data=None, json_data=None, form=None):
        url = self._make_url(path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {}
        body = None
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        if json_data is not None:
            body = json.dumps(json_data).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif data is not None:
            # requests.post(url, data) with a JSON content type, like set_kv does.
            body = data.encode() if isinstance(data, str) else data
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = raw.decode(errors="replace")
            raise RuntimeError(f"{method} {url}: HTTP {err.code}: {detail}") from None

    def _get(self, path, params=None):
        return self._request("GET", path, params=params)[1]

    def _post(self, path, data=None, params=None):
        return self._request("POST", path, params=params, json_data=data)[1]

    def _put(self, path, data=None, params=None):
        return self._request("PUT", path, params=params, json_data=data)[1]

    def _get_paginated(self, path, params=None, offset=None, limit=None):
        params = dict(params or {})
        if offset is not None or limit is not None:
            params.update({"offset": offset or 0, "limit": limit or 10})
            return self._get(path, params)["items"]
        objs = []
        offset, limit = 0, 100
        while True:
            params.update({"offset": offset, "limit": limit})
            items = self._get(path, params)["items"]
            objs.extend(items)
            if len(items) < limit:
                break
            offset += limit
        return objs

    # user
    def create_token(self, username, password):
        return self._request(
            "POST", "user/login", form={"username": username, "password": password}
        )[1]

    def whoami(self):
        return self._get("whoami")

    # node
    def node_get(self, node_id):
        return self._get(f"node/{node_id}")

    def node_find(self, attributes, offset=None, limit=None):
        return self._get_paginated("nodes", attributes, offset, limit)

    def node_count(self, attributes):
        return self._get("count", attributes)

    def node_add(self, node):
        return self._post("node", node)

    def node_update(self, node, noevent=False):
        params = {"noevent": "true"} if noevent else None
        return self._put(f"node/{node['id']}", node, params)

    # pub/sub
    def subscribe(self, channel, promisc=None, subscriber_id=None):
        params = {}
        if promisc:
            params["promisc"] = promisc
        if subscriber_id:
            params["subscriber_id"] = subscriber_id
        return self._post(f"subscribe/{channel}", params=params or None)["id"]

    def unsubscribe(self, sub_id):
        self._post(f"unsubscribe/{sub_id}")

    def send_event(self, channel, data):
        self._post(f"publish/{channel}", data)

    def receive_event(self, sub_id, block=True):
        path = f"listen/{sub_id}"
        while True:
            resp = self._get(path)
            data = resp.get("data")
            if not data:
                continue
            event = json.loads(data)
            if event.get("data") == "BEEP":
                if not block:
                    return None
                continue
            return event

    # kv
    def set_kv(self, namespace, key, value):
        return self._request("POST", f"kv/{namespace}/{key}", data=value)[1]

    def get_kv(self, namespace, key):
        return self._get(f"kv/{namespace}/{key}")


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}")
        sys.exit(1)
    print(f"ok: {what}")


def main():
    base, token = sys.argv[1], sys.argv[2]
    if not base.endswith("/"):
        base += "/"
    api = Api(base, token)

    me = api.whoami()
    check(me["username"] and "id" in me and me["is_verified"], "whoami")
    if len(sys.argv) > 4:
        tok = Api(base).create_token(sys.argv[3], sys.argv[4])
        check(tok["token_type"] == "bearer" and tok["access_token"], "form login")
        check(Api(base, tok["access_token"]).whoami()["id"] == me["id"], "login token works")

    # A durable subscription first, so every later node event is owed to us.
    sub_id = api.subscribe("node", subscriber_id="compat:node")
    check(isinstance(sub_id, int), "subscribe returns an int id")
    # The keep-alive BEEP arrives before any event and is skipped by non-blocking receive.
    check(api.receive_event(sub_id, block=False) is None, "BEEP skipped (block=False)")

    root = api.node_add({
        "kind": "checkout", "name": "compat-checkout", "path": ["compat-checkout"],
        "data": {"kernel_revision": {
            "tree": "mainline", "branch": "master", "commit": "0123abcd",
            "url": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
            "version": {"version": "6", "patchlevel": "9"}}},
    })
    check(len(root["id"]) == 24 and root["owner"] == me["username"], "node.add")
    check(root["data"]["kernel_revision"]["version"]["version"] == 6, "version coerced")
    for i in range(205):
        api.node_add({"kind": "kbuild", "name": f"compat-build-{i}",
                      "path": ["compat-checkout", f"compat-build-{i}"], "parent": root["id"]})
    found = api.node_find({"parent": root["id"]})
    check(len(found) == 205, f"node.find paging loop (limit=100): {len(found)}")
    check(len(api.node_find({"parent": root["id"]}, offset=0, limit=10)) == 10, "node.find one page")
    check(api.node_count({"kind": "kbuild", "parent": root["id"]}) == 205, "count")

    node = api.node_get(root["id"])
    node["state"] = "available"
    node["artifacts"] = {"tarball": "https://storage.example.org/linux.tar.gz"}
    updated = api.node_update(node)
    check(updated["state"] == "available" and updated["artifacts"]["tarball"].startswith("https://"),
          "node.update (PUT)")
    node = api.node_get(root["id"])
    node["state"] = "done"
    node["result"] = "pass"
    api.node_update(node, noevent=True)
    check(api.node_get(root["id"])["state"] == "done", "node.update noevent")

    event = api.receive_event(sub_id)
    check(event["data"]["op"] == "created" and event["data"]["id"] == root["id"],
          "receive_event: created")
    for _ in range(205):
        event = api.receive_event(sub_id)
    check(event["data"]["name"] == "compat-build-204", "receive_event: every build")
    event = api.receive_event(sub_id)
    check(event["data"]["op"] == "updated" and event["data"]["previous_state"] == "running"
          and event["data"]["state"] == "available", "receive_event: updated with previous_state")

    chan = api.subscribe("compat_channel")
    api.send_event("compat_channel", {"data": {"hello": "world"}, "type": "compat"})
    event = api.receive_event(chan)
    check(event["data"] == {"hello": "world"} and event["type"] == "compat", "send_event")
    api.unsubscribe(chan)
    api.unsubscribe(sub_id)

    # set_kv sends the raw value as JSON content: only a pre-quoted string works.
    check(api.set_kv("compat", "key", json.dumps("some value")) == "OK", "set_kv")
    check(api.get_kv("compat", "key") == "some value", "get_kv")
    try:
        api.set_kv("compat", "key", "bare words")
        check(False, "set_kv with a bare word must fail")
    except RuntimeError as err:
        check("422" in str(err), "set_kv bare word is 422")

    print("ALL OK")


if __name__ == "__main__":
    main()
