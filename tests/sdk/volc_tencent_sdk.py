#!/usr/bin/env python3
"""Drives preloadd's vendor emulator with Volcengine's and Tencent Cloud's official Python SDKs.

Usage: .venv/bin/python tests/sdk/volc_tencent_sdk.py HOST:PORT   (after scripts/python-env.sh)

Calls every emulated Volcengine CDN (2021-03-01, `volcengine` CDNService) and Tencent Cloud CDN
(2018-06-06, `tencentcloud-sdk-python-cdn` CdnClient) action over plain HTTP with the emulator's
demo key, shows that a wrong secret is refused with each vendor's code, and prints what the
SDKs' own signers produce for fixed inputs (Volcengine SignerV4 at a fixed X-Date, Tencent's
TC3 request builder at a fixed timestamp) so the Rust test can compare them with src/sign.rs, and
what they produce for each vendor's documented worked example.

Prints one JSON document on stdout. Exits 0 when every call behaved, 1 otherwise (the document
then says which call failed and why). The Rust test
`emulator::official_volcengine_and_tencent_sdks_interoperate` runs it and checks the document.
"""

import json
import sys
import traceback

from tencentcloud.cdn.v20180606 import cdn_client, models as tc_models
from tencentcloud.common import credential
from tencentcloud.common import abstract_client as tc_abstract
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.http.request import RequestInternal
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.common.sign import Sign
from volcengine.auth.SignerV4 import SignerV4
from volcengine.base.Request import Request as VolcRequest
from volcengine.cdn.service import CDNService
from volcengine.Credentials import Credentials as VolcCredentials

ACCESS_KEY_ID = "demo-ak"
ACCESS_KEY_SECRET = "demo-sk"


# ------------------------------------------------------------------ Volcengine


def volc_service(endpoint, secret=ACCESS_KEY_SECRET):
    svc = CDNService()  # a process-wide singleton in the SDK: reconfigured on every call
    svc.service_info.host = endpoint
    svc.service_info.scheme = "http"
    svc.set_ak(ACCESS_KEY_ID)
    svc.set_sk(secret)
    return svc


def volc_calls(endpoint):
    svc = volc_service(endpoint)
    out = {}
    urls = ["https://v.example.com/a/1.js", "https://v.example.com/a/2.js", "https://w.example.com/b/3.js"]
    out["SubmitPreloadTask"] = svc.submit_preload_task(
        {"Urls": "\n".join(urls), "Area": "chinese_mainland", "ConcurrentLimit": 20}
    )
    out["SubmitRefreshTask"] = svc.submit_refresh_task({"Type": "file", "Urls": "https://v.example.com/a/1.js"})
    out["SubmitRefreshTask_dir"] = svc.submit_refresh_task({"Type": "dir", "Urls": "https://v.example.com/a/"})
    task_id = out["SubmitPreloadTask"]["Result"]["TaskID"]
    out["DescribeContentTasks"] = svc.describe_content_tasks(
        {"TaskType": "preload", "TaskID": task_id, "PageNum": 1, "PageSize": 100}
    )
    out["DescribeContentTasks_domain"] = svc.describe_content_tasks(
        {"TaskType": "refresh_file", "DomainName": "v.example.com"}
    )
    out["DescribeContentQuota"] = svc.describe_content_quota({})
    return out


def volc_wrong_secret(endpoint):
    svc = volc_service(endpoint, secret="not-the-secret")
    try:
        svc.describe_content_quota({})
    except Exception as e:  # the SDK raises the body of a non-200 answer
        raw = e.args[0]
        body = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        return body["ResponseMetadata"]["Error"]
    finally:
        volc_service(endpoint)
    raise AssertionError("a wrong secret was accepted")


def volc_signer():
    """SignerV4 on fixed inputs: the X-Date is pinned, everything else as CDNService sends it."""
    original = SignerV4.get_current_format_date
    SignerV4.get_current_format_date = staticmethod(lambda: "20261123T081805Z")
    try:
        r = VolcRequest()
        r.set_method("POST")
        r.set_path("/")
        r.set_query({"Action": "SubmitPreloadTask", "Version": "2021-03-01"})
        r.set_headers({"Host": "cdn.volcengineapi.com", "Content-Type": "application/json"})
        r.set_body(json.dumps({"Urls": "https://v.example.com/a.js"}))
        SignerV4.sign(r, VolcCredentials(ACCESS_KEY_ID, ACCESS_KEY_SECRET, "CDN", "cn-north-1"))
    finally:
        SignerV4.get_current_format_date = original
    headers = {k: v for k, v in r.headers.items() if k != "Authorization"}
    return {
        "method": r.method,
        "path": r.path,
        "query": r.query,
        "headers": headers,
        "body": r.body,
        "authorization": r.headers["Authorization"],
    }


def volc_doc_example():
    """SignerV4 on the IAM ListUsers example of Volcengine's signature doc (its keys and X-Date)."""
    original = SignerV4.get_current_format_date
    SignerV4.get_current_format_date = staticmethod(lambda: "20201230T081805Z")
    try:
        r = VolcRequest()
        r.set_method("GET")
        r.set_path("/")
        r.set_query({"Action": "ListUsers", "Version": "2018-01-01", "Limit": "10", "Offset": "0"})
        r.set_headers(
            {"Host": "iam.volcengineapi.com", "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        )
        r.set_body("")
        creds = VolcCredentials(
            "AKLTMjI2ODVlYzI3ZGY1NGU4ZjhjYWRjMTlmNTM5OTZkYzE",
            "TnpCak5XWXpZV1U0WkRaaE5ERmxaR0ZpTmpjeVkyUXlZek0wTWpJMU1qWQ==",
            "iam",
            "cn-north-1",
        )
        SignerV4.sign(r, creds)
    finally:
        SignerV4.get_current_format_date = original
    return r.headers["Authorization"]


# ------------------------------------------------------------------ Tencent Cloud


def tc_client(endpoint, secret=ACCESS_KEY_SECRET):
    http = HttpProfile()
    http.endpoint = endpoint
    http.scheme = "http"
    http.reqTimeout = 10
    return cdn_client.CdnClient(credential.Credential(ACCESS_KEY_ID, secret), "", ClientProfile(httpProfile=http))


def tc_req(model, **fields):
    req = model()
    req.from_json_string(json.dumps(fields))
    return req


def tc_calls(endpoint):
    c = tc_client(endpoint)
    out = {}
    urls = ["https://t.example.com/a/1.js", "https://t.example.com/a/2.js"]
    out["PushUrlsCache"] = json.loads(
        c.PushUrlsCache(tc_req(tc_models.PushUrlsCacheRequest, Urls=urls, Area="overseas")).to_json_string()
    )
    out["PurgeUrlsCache"] = json.loads(
        c.PurgeUrlsCache(tc_req(tc_models.PurgeUrlsCacheRequest, Urls=urls[:1])).to_json_string()
    )
    out["PurgePathCache"] = json.loads(
        c.PurgePathCache(
            tc_req(tc_models.PurgePathCacheRequest, Paths=["https://t.example.com/a/"], FlushType="flush")
        ).to_json_string()
    )
    push_id = out["PushUrlsCache"]["TaskId"]
    out["DescribePushTasks"] = json.loads(
        c.DescribePushTasks(tc_req(tc_models.DescribePushTasksRequest, TaskId=push_id)).to_json_string()
    )
    out["DescribePurgeTasks"] = json.loads(
        c.DescribePurgeTasks(
            tc_req(
                tc_models.DescribePurgeTasksRequest,
                PurgeType="url",
                StartTime="2000-01-01 00:00:00",
                EndTime="2100-01-01 00:00:00",
                Keyword="t.example.com",
            )
        ).to_json_string()
    )
    out["DescribePushQuota"] = json.loads(c.DescribePushQuota(tc_models.DescribePushQuotaRequest()).to_json_string())
    out["DescribePurgeQuota"] = json.loads(
        c.DescribePurgeQuota(tc_models.DescribePurgeQuotaRequest()).to_json_string()
    )
    return out


def tc_wrong_secret(endpoint):
    try:
        tc_client(endpoint, secret="not-the-secret").DescribePushQuota(tc_models.DescribePushQuotaRequest())
    except TencentCloudSDKException as e:
        return {"code": e.get_code(), "message": e.get_message()}
    raise AssertionError("a wrong secret was accepted")


def tc_signer():
    """The SDK's own TC3 request builder at a fixed timestamp."""
    client = tc_client("cdn.tencentcloudapi.com")
    original = tc_abstract.time.time
    tc_abstract.time.time = lambda: 1795975200
    try:
        req = RequestInternal("cdn.tencentcloudapi.com", "POST", "/")
        client._build_req_with_tc3_signature("PushUrlsCache", {"Urls": ["https://t.example.com/a.js"]}, req)
    finally:
        tc_abstract.time.time = original
    headers = {k: v for k, v in req.header.items() if k != "Authorization"}
    return {
        "method": req.method,
        "path": req.uri,
        "headers": headers,
        "body": req.data,
        "authorization": req.header["Authorization"],
    }


def tc_doc_example():
    """The SDK's TC3 signer on the string to sign of Tencent's "Signature v3" worked example."""
    string_to_sign = (
        "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    )
    return Sign.sign_tc3("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", "2019-02-25", "cvm", string_to_sign)


def main():
    endpoint = sys.argv[1]
    report = {"ok": False}
    step = "start"
    try:
        step = "volcengine"
        report["volcengine"] = volc_calls(endpoint)
        step = "volcengine wrong secret"
        report["volc_wrong_secret"] = volc_wrong_secret(endpoint)
        step = "volcengine signer"
        report["volc_signer"] = volc_signer()
        step = "volcengine doc example"
        report["volc_doc_example"] = volc_doc_example()
        step = "tencent"
        report["tencent"] = tc_calls(endpoint)
        step = "tencent wrong secret"
        report["tc_wrong_secret"] = tc_wrong_secret(endpoint)
        step = "tencent signer"
        report["tc_signer"] = tc_signer()
        step = "tencent doc example"
        report["tc_doc_example"] = tc_doc_example()
        report["ok"] = True
    except Exception as e:  # report which call failed, for the Rust test's message
        report["failed_step"] = step
        report["error"] = repr(e)
        report["traceback"] = traceback.format_exc()
    print(json.dumps(report, default=str))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
