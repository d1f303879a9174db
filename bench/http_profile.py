"""Where a request's time goes: one server process (WORKERS=1) under wrk, sampled by
py-spy, its samples sorted into the parts of a request, in microseconds per request.

Usage (from the repository root; py-spy installed in .venv, wrk on PATH; the data of
http_bench.py):

    .venv/bin/python bench/http_profile.py [--url '/candles?ticker=T025.US&limit=200']
        [--seconds 8] [--setting RESPONSE_CACHE_MB=0 ...]

Each sample is put in the part of the innermost frame of its stack that belongs to one
(walking from the running function outwards); a part's time per request is its share of
the samples times the process's busy time over the requests served. The sampler slows the
server: compare parts, not the req/s, with bench/http_bench.py's.
"""

import argparse
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from http_bench import ADMIN_URL, ensure_data, free_port, start_server, wrk

# (part, substrings of the frames that belong to it)
PARTS = [
    ("access log (structlog)", ("structlog", "entrypoints/logging.py")),
    ("catalog: ETag, what is stored", ("CandleQueries.version", "KnownSeries", "_readable")),
    ("answers kept in memory", ("Answers.get", "Answers.keep")),
    ("candles read (psycopg, pool)", ("psycopg", "pool.py", "reads.py", "bars.py")),
    ("JSON encoding (msgspec)", ("_encode", "msgspec", "encode_json")),
    ("compression middleware", ("compression",)),
    ("dependency injection (dishka)", ("dishka",)),
    ("handler and domain", ("http/candles.py", "domain/")),
    ("Litestar: routing, parameters, response", ("litestar",)),
    ("uvicorn: HTTP parsing and sending", ("uvicorn", "httptools")),
    ("event loop, other", ("",)),
]


def part_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, keys in PARTS[:-1]:
            if any(k in frame for k in keys):
                return name
    return PARTS[-1][0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="/candles?ticker=T025.US&limit=200")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--setting", action="append", default=[])
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw samples here")
    args = parser.parse_args()
    settings = dict(s.split("=", 1) for s in args.setting)
    dsn = ensure_data(ADMIN_URL)
    port = free_port()
    url = f"http://127.0.0.1:{port}{args.url}"
    server = start_server(dsn, port, WORKERS="1", **settings)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "samples.txt"
        try:
            wrk(url, args.connections, 2)  # warm-up
            process = psutil.Process(server.pid)
            before = process.cpu_times()
            spy = subprocess.Popen(
                [
                    sys.executable.replace("python", "py-spy"),
                    "record",
                    "-p",
                    str(server.pid),
                    "-o",
                    str(out),
                    "-f",
                    "raw",
                    "-d",
                    str(args.seconds),
                    "-r",
                    "250",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result = wrk(url, args.connections, args.seconds)
            spy.wait()
            after = process.cpu_times()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
        if args.raw is not None:
            args.raw.write_text(out.read_text())
        samples: Counter[str] = Counter()
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            samples[part_of(stack.split(";"))] += int(count)
    busy = (after.user + after.system) - (before.user + before.system)
    requests = result["rps"] * args.seconds
    per_request = busy / requests * 1e6
    total = sum(samples.values())
    print(f"{args.url} {settings or ''}: {result['rps']:,.0f} req/s under the sampler,")
    print(f"{per_request:,.0f} µs of CPU per request")
    print("| part | share | µs per request |")
    print("|---|---:|---:|")
    for name, _ in PARTS:
        share = samples[name] / total if total else 0.0
        print(f"| {name} | {share:.0%} | {share * per_request:,.0f} |")


if __name__ == "__main__":
    main()
