"""Debian's Chromium, as the browser tests and bench/chart_bench.py start it."""

import os

CHROMIUM = os.environ.get("MARKETDATA_CHROMIUM", "/usr/bin/chromium")
# Flags for a machine with a closed network: no background connections, no first-run work.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
