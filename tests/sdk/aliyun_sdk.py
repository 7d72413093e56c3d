#!/usr/bin/env python3
"""Drives preloadd's vendor emulator with Alibaba Cloud's official Python SDKs.

Usage: .venv/bin/python tests/sdk/aliyun_sdk.py HOST:PORT   (after scripts/python-env.sh)

Calls every emulated CDN (2018-05-10) and ESA (2024-09-10) action through the SDK clients over
plain HTTP with the emulator's demo key, signed with ACS3-HMAC-SHA256 (the SDK default) and, for
the submit actions, with the legacy RPC HMAC-SHA1 scheme (signature_algorithm="v2"). Shows that a
wrong secret is refused with SignatureDoesNotMatch, and prints the SDK signer's output for fixed
inputs so the Rust test can compare it with src/sign.rs.

Prints one JSON document on stdout. Exits 0 when every call behaved, 1 otherwise (the document
then says which call failed and why). The Rust test `emulator::official_sdks_interoperate`
runs it and checks the document.
"""

import hashlib
import json
import sys
import traceback

from alibabacloud_cdn20180510 import models as cdn_models
from alibabacloud_cdn20180510.client import Client as CdnClient
from alibabacloud_esa20240910 import models as esa_models
from alibabacloud_esa20240910.client import Client as EsaClient
from alibabacloud_tea_openapi.utils import Utils
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.request import DaraRequest

ACCESS_KEY_ID = "demo-ak"
ACCESS_KEY_SECRET = "demo-sk"
SITE_ID = 123456789


def config(endpoint, secret=ACCESS_KEY_SECRET, rpc=False):
    c = Config(
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=secret,
        endpoint=endpoint,
        protocol="http",
        read_timeout=10000,
        connect_timeout=5000,
    )
    if rpc:
        # The SDK's switch to SignatureVersion 1.0 (HMAC-SHA1 RPC signing).
        c.signature_algorithm = "v2"
    return c


def body(response):
    return response.body.to_map()


def cdn_calls(client, tag):
    out = {}
    urls = [f"https://a.example.com/{tag}/1.js", f"https://a.example.com/{tag}/2.js", f"https://b.example.com/{tag}/3.js"]
    push = client.push_object_cache(
        cdn_models.PushObjectCacheRequest(object_path="\n".join(urls), area="domestic", l_2preload=True)
    )
    out["PushObjectCache"] = body(push)
    refresh = client.refresh_object_caches(
        cdn_models.RefreshObjectCachesRequest(
            object_path=f"https://a.example.com/{tag}/dir/", object_type="Directory", force=True
        )
    )
    out["RefreshObjectCaches"] = body(refresh)
    ids = push.body.push_task_id.split(",") + [refresh.body.refresh_task_id]
    out["DescribeRefreshTaskById"] = body(
        client.describe_refresh_task_by_id(cdn_models.DescribeRefreshTaskByIdRequest(task_id=",".join(ids)))
    )
    out["DescribeRefreshTasks"] = body(
        client.describe_refresh_tasks(
            cdn_models.DescribeRefreshTasksRequest(object_type="preload", page_number=1, page_size=50)
        )
    )
    out["DescribeRefreshQuota"] = body(client.describe_refresh_quota(cdn_models.DescribeRefreshQuotaRequest()))
    return out


def esa_calls(client, tag):
    out = {}
    urls = [f"https://www.example.com/{tag}/a.png", f"https://www.example.com/{tag}/b.png?v=1"]
    out["PreloadCaches"] = body(
        client.preload_caches(
            esa_models.PreloadCachesRequest(site_id=SITE_ID, content=urls, headers={"Accept-Encoding": "gzip"})
        )
    )
    out["PurgeCaches"] = body(
        client.purge_caches(
            esa_models.PurgeCachesRequest(
                site_id=SITE_ID,
                type="file",
                content=esa_models.PurgeCachesRequestContent(files=urls),
                force=False,
            )
        )
    )
    out["DescribePreloadTasks"] = body(
        client.describe_preload_tasks(esa_models.DescribePreloadTasksRequest(site_id=SITE_ID, page_size=50))
    )
    out["DescribePurgeTasks"] = body(
        client.describe_purge_tasks(esa_models.DescribePurgeTasksRequest(site_id=SITE_ID, type="file"))
    )
    out["GetPurgeQuota"] = body(client.get_purge_quota(esa_models.GetPurgeQuotaRequest(site_id=SITE_ID, type="file")))
    return out


def wrong_secret(endpoint):
    """A wrong secret must be refused; returns the error code the SDK raised."""
    client = CdnClient(config(endpoint, secret="not-the-secret"))
    try:
        client.describe_refresh_quota(cdn_models.DescribeRefreshQuotaRequest())
    except Exception as e:  # the SDK raises its ClientException; only the code matters here
        return {"code": getattr(e, "code", None), "status": getattr(e, "status_code", None)}
    return {"code": None, "status": 200}


def signer_samples():
    """The SDK signer over fixed inputs. Headers are limited to host, content-type and x-acs-*,
    the set src/sign.rs signs, so both must produce the same Authorization; the `all_headers`
    variant also signs accept and user-agent, as the SDK does on the wire, for the verifier."""
    empty_hash = hashlib.sha256(b"").hexdigest()
    query = {"SiteId": "123", "Content": '["https://a.example.com/x y.js?q=1&r=*"]'}
    headers = {
        "host": "esa.cn-hangzhou.aliyuncs.com",
        "x-acs-action": "PreloadCaches",
        "x-acs-version": "2024-09-10",
        "x-acs-date": "2024-01-02T03:04:05Z",
        "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
        "x-acs-content-sha256": empty_hash,
    }

    def authorization(hdrs):
        req = DaraRequest()
        req.method = "POST"
        req.pathname = "/"
        req.query = dict(query)
        req.headers = dict(hdrs)
        return Utils.get_authorization(req, "ACS3-HMAC-SHA256", empty_hash, ACCESS_KEY_ID, ACCESS_KEY_SECRET)

    all_headers = dict(headers, accept="application/json", **{"user-agent": "AlibabaCloud (sdk-test)"})
    rpc_params = {
        "Action": "PushObjectCache",
        "Version": "2018-05-10",
        "Format": "json",
        "AccessKeyId": ACCESS_KEY_ID,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "Timestamp": "2024-01-02T03:04:05Z",
        "ObjectPath": "https://a.example.com/1.js\nhttps://a.example.com/2 3.js",
    }
    return {
        "method": "POST",
        "path": "/",
        "query": query,
        "headers": headers,
        "acs3": authorization(headers),
        "all_headers": all_headers,
        "acs3_all_headers": authorization(all_headers),
        "rpc_params": rpc_params,
        "rpc": Utils.get_rpcsignature(rpc_params, "POST", ACCESS_KEY_SECRET),
    }


def main():
    if len(sys.argv) != 2:
        print("usage: aliyun_sdk.py HOST:PORT", file=sys.stderr)
        return 2
    endpoint = sys.argv[1]
    result = {"endpoint": endpoint}
    steps = [
        ("cdn", lambda: cdn_calls(CdnClient(config(endpoint)), "acs3")),
        ("cdn_rpc", lambda: cdn_calls(CdnClient(config(endpoint, rpc=True)), "rpc")),
        ("esa", lambda: esa_calls(EsaClient(config(endpoint)), "acs3")),
        ("esa_rpc", lambda: esa_calls(EsaClient(config(endpoint, rpc=True)), "rpc")),
        ("wrong_secret", lambda: wrong_secret(endpoint)),
        ("signer", signer_samples),
    ]
    ok = True
    for name, step in steps:
        try:
            result[name] = step()
        except Exception as e:
            ok = False
            result[name] = {"error": f"{type(e).__name__}: {e}", "code": getattr(e, "code", None)}
            traceback.print_exc(file=sys.stderr)
    result["ok"] = ok and result["wrong_secret"].get("code") == "SignatureDoesNotMatch"
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
