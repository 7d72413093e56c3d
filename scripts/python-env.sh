#!/usr/bin/env bash
# Creates .venv at the repository root with the vendors' official SDKs (Alibaba Cloud, Volcengine,
# Tencent Cloud) and aiosmtpd (the real SMTP server of the report tests, tests/smtp/sink.py), pinned
# in scripts/requirements.txt, for the SDK interoperability tests (tests/sdk/*.py, run by
# `cargo test --test it emulator::official_` and `compat::`). Idempotent: an up-to-date .venv
# is left as it is. Needs python3 (with venv) and access to PyPI.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# pip does nothing when every pin is already installed.
.venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements.txt
echo "python env ready: $root/.venv"
