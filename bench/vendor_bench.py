"""The vendor protocols' cost: a page of 1,000 Binance klines against `/candles?limit=1000`
for the same rows, side by side on one running server.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/vendor_bench.py [--duration 5] [--rounds 2] [--admin-url ...]

It uses the database of `http_bench.py` (`marketdata_bench`: 2,000,000 five-minute candles,
made once), starts `marketdata serve` with its defaults (answers kept by URL and version,
for both requests; `--setting RESPONSE_CACHE_MB=0` makes both read the database every
time), checks that both requests answer the same 1,000 candles, then runs wrk on each in
turn, `--rounds` times, and prints each run and the ratio of their request rates. Nothing
is asserted.
"""

import argparse
import json
import signal
import sys
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, ensure_data, free_port, start_server, wrk

CANDLES = "/candles?ticker=T025.US&tf_min=5&limit=1000"
KLINES = "/binance/api/v3/klines?symbol=T025.US&interval=5m&startTime=0&limit=1000"


def fetch(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def same_rows(base: str) -> None:
    """Both answers hold the same candles, or the comparison means nothing."""
    candles = fetch(base + CANDLES)["data"]  # type: ignore[index]
    klines = fetch(base + KLINES)
    assert isinstance(klines, list)
    assert len(candles) == len(klines) == 1000, (len(candles), len(klines))
    for candle, row in zip(candles, klines, strict=True):
        opens = int(datetime.fromisoformat(candle["ts"]).timestamp() * 1000)
        prices = [candle[k] for k in ("open", "high", "low", "close", "volume")]
        assert [row[0], *map(float, row[1:6])] == [opens, *prices], (candle, row)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--setting", action="append", default=[], help="KEY=VALUE for serve")
    args = parser.parse_args()
    settings = dict(s.split("=", 1) for s in args.setting)
    dsn = ensure_data(args.admin_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(dsn, port, WORKERS=str(args.workers), **settings)
    runs: dict[str, list[dict[str, float]]] = {"candles": [], "klines": []}
    try:
        same_rows(base)
        for path in (CANDLES, KLINES):
            wrk(base + path, args.connections, 2)  # warm-up
        for _ in range(args.rounds):
            for name, path in (("candles", CANDLES), ("klines", KLINES)):
                result = wrk(base + path, args.connections, args.duration)
                runs[name].append(result)
                print(f"{name}: {result}", file=sys.stderr)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    print(
        f"WORKERS={args.workers}, {args.connections} connections, {args.rounds} x "
        f"{args.duration} s each, alternating, {settings}"
    )
    print("| request | req/s (each run) | p50 ms | p99 ms | non-2xx |")
    print("|---|---:|---:|---:|---:|")
    for name, path in (("candles", CANDLES), ("klines", KLINES)):
        each = runs[name]
        rates = "; ".join(f"{r['rps']:,.0f}" for r in each)
        p50 = "; ".join(f"{r['p50']:.2f}" for r in each)
        p99 = "; ".join(f"{r['p99']:.2f}" for r in each)
        print(f"| `{path}` | {rates} | {p50} | {p99} | {sum(r['non2xx'] for r in each):.0f} |")
    mean = {name: sum(r["rps"] for r in each) / len(each) for name, each in runs.items()}
    print(f"\nklines / candles: {mean['klines'] / mean['candles']:.0%}")


if __name__ == "__main__":
    main()
