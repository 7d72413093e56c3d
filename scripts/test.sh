#!/usr/bin/env bash
# The whole test suite, with its own set-up: the systemd tools the service tests run (package
# `systemd`: systemd-analyze, systemd-sysusers, systemd-tmpfiles; nothing is started), the Python
# virtual environment holding the vendors' official SDKs and aiosmtpd, then cargo test (with the
# crash points compiled in: tests/it/failpoints.rs needs them).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends systemd
fi
./scripts/python-env.sh
cargo test --all-targets --features failpoints "$@"
