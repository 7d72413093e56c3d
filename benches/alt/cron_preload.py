#!/usr/bin/env python3
"""Preload a URL list into Alibaba Cloud CDN a slice at a time, from cron.

The alternative an ops engineer would write instead of running preloadd, kept as they would keep
it: the official SDK (alibabacloud-cdn20180510), a list file, and a progress file holding the
offset of the next URL. Each run reads both, submits the next slice with PushObjectCache (URLs
joined with newlines, at most the vendor's 100 URLs per request) and saves the new offset after
each successful call, written to a temporary file and renamed over the old one so a crash never
leaves a half-written offset. A failed call exits 1 (cron mails the output) and the next run
retries the same URLs.

    # crontab: one slice of 100 URLs a minute
    * * * * * cd /opt/preload && flock -n .lock .venv/bin/python cron_preload.py \\
        --list urls.txt --progress urls.offset --slice 100

With `--loop` one process keeps going, sleeping `--interval` seconds between slices, until the
list is done: the long-running variant of the same script.

Credentials come from ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, as the
SDK's documentation suggests. `--endpoint HOST:PORT --protocol http` point it at preloadd's
emulator (benches/suite.rs, part `alternative`).
"""

import argparse
import os
import sys
import time

from alibabacloud_cdn20180510 import models as cdn_models
from alibabacloud_cdn20180510.client import Client as CdnClient
from alibabacloud_tea_openapi.utils_models import Config

MAX_URLS_PER_REQUEST = 100  # PushObjectCache takes at most 100 URLs per call


def read_list(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def read_offset(path):
    try:
        with open(path, encoding="utf-8") as f:
            return int(f.read().strip())
    except FileNotFoundError:
        return 0


def write_offset(path, offset):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{offset}\n")
    os.replace(tmp, path)


def client(args):
    return CdnClient(
        Config(
            access_key_id=os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"],
            access_key_secret=os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
            endpoint=args.endpoint,
            protocol=args.protocol,
            connect_timeout=5000,
            read_timeout=10000,
        )
    )


def submit_slice(cdn, urls, offset, slice_len, progress):
    """Submits urls[offset:offset + slice_len]; returns the new offset."""
    end = min(offset + slice_len, len(urls))
    while offset < end:
        chunk = urls[offset : min(offset + MAX_URLS_PER_REQUEST, end)]
        resp = cdn.push_object_cache(cdn_models.PushObjectCacheRequest(object_path="\n".join(chunk), area="domestic"))
        offset += len(chunk)
        write_offset(progress, offset)
        print(f"submitted {len(chunk)} URLs, task {resp.body.push_task_id}, offset {offset}/{len(urls)}")
    return offset


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--list", required=True, help="URL list, one a line")
    p.add_argument("--progress", required=True, help="file holding the offset of the next URL")
    p.add_argument("--slice", type=int, default=100, help="URLs per run (per slice with --loop)")
    p.add_argument("--endpoint", default="cdn.aliyuncs.com")
    p.add_argument("--protocol", default="https")
    p.add_argument("--loop", action="store_true", help="keep going until the list is done")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between slices with --loop")
    args = p.parse_args()

    urls = read_list(args.list)
    offset = read_offset(args.progress)
    cdn = client(args)
    try:
        while offset < len(urls):
            offset = submit_slice(cdn, urls, offset, args.slice, args.progress)
            if not args.loop:
                break
            if offset < len(urls) and args.interval > 0:
                time.sleep(args.interval)
    except Exception as e:  # the SDK's errors carry code and message; cron mails stderr
        print(f"preload failed at offset {offset}: {e}", file=sys.stderr)
        return 1
    if offset >= len(urls):
        print(f"done: {len(urls)} URLs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
