#!/usr/bin/env python3
"""Drives preloadd's ESA-compatible API with Alibaba Cloud's official ESA SDK, unmodified but for
the endpoint and the keys.

Usage: .venv/bin/python tests/sdk/esa_compat.py HOST:PORT ACCESS_KEY_ID SECRET SITE_ID

Prints one JSON document: the response body of every step, and for each error case the code
the SDK raised. The Rust test `compat::the_official_esa_sdk_drives_scheduled_preload` checks it.
"""

import datetime
import json
import sys
import traceback

from alibabacloud_esa20240910 import models as m
from alibabacloud_esa20240910.client import Client
from alibabacloud_tea_openapi.utils_models import Config


def client(endpoint, ak, sk):
    return Client(Config(access_key_id=ak, access_key_secret=sk, endpoint=endpoint, protocol="http",
                         read_timeout=10000, connect_timeout=5000))


def body(r):
    return r.body.to_map()


def error_code(call):
    try:
        call()
    except Exception as e:  # the SDK's ClientException: only the code and status matter
        return {"code": getattr(e, "code", None), "status": getattr(e, "status_code", None)}
    return {"code": None}


def main():
    endpoint, ak, sk, site = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    c = client(endpoint, ak, sk)
    out = {}
    tz = datetime.timezone(datetime.timedelta(hours=8))
    start = datetime.datetime(2031, 5, 31, 17, 10, 48, 849000, tzinfo=tz)

    def iso(t):
        return t.isoformat(timespec="milliseconds")

    steps = []
    urls = " ".join(f"https://www.example.com/sdk/{i}.js" for i in range(5)) + "\nhttps://www.example.com/sdk/5.js"
    job = c.create_scheduled_preload_job(m.CreateScheduledPreloadJobRequest(
        name="sdk-job", site_id=site, insert_way="textBox", url_list=urls))
    out["CreateScheduledPreloadJob"] = body(job)
    job_id = job.body.id
    execs = [
        m.CreateScheduledPreloadExecutionsRequestExecutions(start_time=iso(start), end_time=iso(start + datetime.timedelta(hours=1)), interval=60, slice_len=2),
        m.CreateScheduledPreloadExecutionsRequestExecutions(start_time=iso(start + datetime.timedelta(days=1)), end_time=iso(start + datetime.timedelta(days=1, hours=1)), interval=30, slice_len=3),
        m.CreateScheduledPreloadExecutionsRequestExecutions(start_time=iso(start + datetime.timedelta(minutes=30)), end_time=iso(start + datetime.timedelta(hours=2)), interval=30, slice_len=3),
    ]
    created = c.create_scheduled_preload_executions(m.CreateScheduledPreloadExecutionsRequest(id=job_id, executions=execs))
    out["CreateScheduledPreloadExecutions"] = body(created)
    first = created.body.success_executions[0].id
    out["UpdateScheduledPreloadExecution"] = body(c.update_scheduled_preload_execution(
        m.UpdateScheduledPreloadExecutionRequest(id=first, start_time=iso(start), end_time=iso(start + datetime.timedelta(minutes=50)), interval=120, slice_len=10)))
    out["StopScheduledPreloadExecution"] = body(c.stop_scheduled_preload_execution(m.StopScheduledPreloadExecutionRequest(id=first)))
    out["StartScheduledPreloadExecution"] = body(c.start_scheduled_preload_execution(m.StartScheduledPreloadExecutionRequest(id=first)))
    out["ListScheduledPreloadExecutions"] = body(c.list_scheduled_preload_executions(m.ListScheduledPreloadExecutionsRequest(id=job_id)))
    out["ListScheduledPreloadJobs"] = body(c.list_scheduled_preload_jobs(m.ListScheduledPreloadJobsRequest(site_id=site, page_number=1, page_size=20)))
    out["GetScheduledPreloadJob"] = body(c.get_scheduled_preload_job(m.GetScheduledPreloadJobRequest(id=job_id)))
    out["ResetScheduledPreloadJob"] = body(c.reset_scheduled_preload_job(m.ResetScheduledPreloadJobRequest(id=job_id)))

    out["errors"] = {
        "end_before_start": error_code(lambda: c.update_scheduled_preload_execution(m.UpdateScheduledPreloadExecutionRequest(
            id=first, end_time=iso(start - datetime.timedelta(days=1))))),
        "bad_object_id": error_code(lambda: c.get_scheduled_preload_job(m.GetScheduledPreloadJobRequest(id="not-an-id"))),
        "unknown_job": error_code(lambda: c.get_scheduled_preload_job(m.GetScheduledPreloadJobRequest(id="0" * 23 + "f"))),
        "unknown_execution": error_code(lambda: c.start_scheduled_preload_execution(m.StartScheduledPreloadExecutionRequest(id="0" * 22 + "ff"))),
        "missing_url_list": error_code(lambda: c.create_scheduled_preload_job(m.CreateScheduledPreloadJobRequest(name="x", site_id=site, insert_way="textBox"))),
        "missing_oss_url": error_code(lambda: c.create_scheduled_preload_job(m.CreateScheduledPreloadJobRequest(name="x", site_id=site, insert_way="oss"))),
        "unknown_site": error_code(lambda: c.create_scheduled_preload_job(m.CreateScheduledPreloadJobRequest(name="x", site_id=999, insert_way="textBox", url_list="https://a.example/1"))),
        "wrong_secret": error_code(lambda: client(endpoint, ak, "not-the-secret").get_scheduled_preload_job(m.GetScheduledPreloadJobRequest(id=job_id))),
    }
    out["DeleteScheduledPreloadExecution"] = body(c.delete_scheduled_preload_execution(m.DeleteScheduledPreloadExecutionRequest(id=first)))
    out["job_id"] = job_id
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
