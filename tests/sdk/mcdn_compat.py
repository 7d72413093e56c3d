#!/usr/bin/env python3
"""Calls preloadd's Volcengine multi-cloud CDN facade with requests signed by the official
`volcengine` SDK's SignerV4 (service `mcdn`, region cn-north-1), exactly as the SDK signs them.

Usage: .venv/bin/python tests/sdk/mcdn_compat.py HOST:PORT ACCESS_KEY_ID SECRET

Prints one JSON document with each response (status and body). The Rust test
`compat::volcengine_signed_content_tasks_match_the_seed` checks it.
"""

import json
import sys
import urllib.error
import urllib.request

from volcengine.auth.SignerV4 import SignerV4
from volcengine.base.Request import Request
from volcengine.Credentials import Credentials


def call(endpoint, ak, sk, action, body, version="2022-03-01"):
    r = Request()
    r.set_method("POST")
    r.set_path("/")
    r.set_query({"Action": action, "Version": version})
    r.set_headers({"Host": endpoint, "Content-Type": "application/json"})
    r.set_body(json.dumps(body))
    SignerV4.sign(r, Credentials(ak, sk, "mcdn", "cn-north-1"))
    url = f"http://{endpoint}/?Action={action}&Version={version}"
    req = urllib.request.Request(url, data=r.body.encode(), method="POST", headers=r.headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return {"status": resp.status, "body": json.loads(resp.read())}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": json.loads(e.read() or b"null")}


def main():
    endpoint, ak, sk = sys.argv[1], sys.argv[2], sys.argv[3]
    out = {}
    out["SubmitPreloadTask"] = call(endpoint, ak, sk, "SubmitPreloadTask",
                                    {"Urls": ["https://www.example.com/home.html", "https://www.example.com/a.js"]})
    out["SubmitRefreshTask"] = call(endpoint, ak, sk, "SubmitRefreshTask",
                                    {"Type": "file", "Urls": ["http://www.example.com/home.html"]})
    # The seed's request example, against both action names.
    seed = {"TaskType": "refresh_file", "Pagination": {"PageSize": 10, "PageNum": 1}}
    out["ListContentTask"] = call(endpoint, ak, sk, "ListContentTask", seed)
    out["ListContentTasks"] = call(endpoint, ak, sk, "ListContentTasks", {"Url": "https://www.example.com/a.js"})
    out["bad_status"] = call(endpoint, ak, sk, "ListContentTasks", {"TaskStatus": "sleeping"})
    out["wrong_secret"] = call(endpoint, ak, "not-the-secret", "ListContentTasks", {})
    print(json.dumps(out, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
