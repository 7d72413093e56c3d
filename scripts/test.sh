#!/usr/bin/env bash
# The whole test suite, with its own set-up: the Python virtual environment holding the
# vendors' official SDKs (the referees of the interoperability tests), then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/python-env.sh
cargo test --all-targets "$@"
