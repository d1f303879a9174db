"""Chart page drawing benchmark: how long a full redraw takes in headless Chromium.

Usage (from the repository root, with the project installed in .venv and Debian's chromium):

    .venv/bin/python bench/chart_bench.py [--frames 60] [--tz ZONE] [--admin-url postgresql://...]

It creates a database `marketdata_chart_bench` on the local server, loads the 50,000 real
five-minute SBER candles of shared/data/TQBR.SBER_M5.csv with `marketdata ingest`, starts
the service, opens the chart page, has the page load older candles (through the range/cursor
API, as panning does) until it holds 10,000, and then times, inside the page with
performance.now():
- `draw`: the page's full redraw (the JavaScript that issues the canvas calls);
- `draw+raster`: the same followed by a one-pixel getImageData, which makes Chromium finish
  rasterising before it returns: the time the frame really costs;
- `pan frame`: frames of a pan driven by requestAnimationFrame (move the view, redraw), as
  the interval between frames: 16.7 ms means every frame made its 60 Hz deadline.
at 1,000 and 10,000 candles in view, and at device pixel ratios 1 and 2, in one run. It
prints a Markdown table of medians and 95th percentiles. Nothing is asserted.
"""

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[1]))
from http_bench import ADMIN_URL, free_port, start_server

from tests.browser.chromium import CHROMIUM, FLAGS

DB = "marketdata_chart_bench"
SBER = Path(__file__).resolve().parents[2] / "shared" / "data" / "TQBR.SBER_M5.csv"

TIME_DRAWS = """async ([count, frames]) => {
  const md = window.marketdata;
  const ctx = document.getElementById('chart').getContext('2d');
  const n = md.state().loaded;
  md.setView(n + 2, count);
  const draw = [], raster = [];
  for (let i = 0; i < frames; i++) {
    draw.push(md.redraw());
    const t0 = performance.now();
    md.redraw();
    ctx.getImageData(0, 0, 1, 1);
    raster.push(performance.now() - t0);
  }
  const intervals = [];
  await new Promise((done) => {
    let last = null, i = 0;
    const frame = (now) => {
      if (last !== null) intervals.push(now - last);
      last = now;
      md.setView(n + 2 - (i % 200) * 5, count);  // pan left 5 candles a frame
      ctx.getImageData(0, 0, 1, 1);
      if (++i <= frames) requestAnimationFrame(frame); else done();
    };
    requestAnimationFrame(frame);
  });
  return {drawn: md.state().drawn, draw, raster, intervals};
}"""


def prepare(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    params = conninfo_to_dict(make_conninfo(admin_url, dbname=DB))
    dsn = (
        f"postgresql://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', 5432)}/{DB}"
    )
    env = {**os.environ, "DATABASE_URL": dsn}
    cli = [sys.executable, "-m", "marketdata.entrypoints.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*cli, "ingest", "--ticker", "SBER", "--tf-min", "5", "--tz", "Europe/Moscow", str(SBER)],
        env=env,
        check=True,
        capture_output=True,
    )
    return dsn


def summary(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=20)
    return f"{statistics.median(values):.1f} | {cuts[18]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--chromium", default=CHROMIUM)
    parser.add_argument("--tz", default="UTC", help="the chart's time zone (labels and ticks)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    dsn = prepare(args.admin_url)
    port = free_port()
    server = start_server(dsn, port)
    rows: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
            for dpr in (1, 2):
                page = browser.new_page(
                    viewport={"width": 1280, "height": 720}, device_scale_factor=dpr
                )
                page.goto(f"http://127.0.0.1:{port}/?ticker=SBER&tf=5&tz={args.tz}")
                page.wait_for_function("window.marketdata && window.marketdata.state().drawn > 0")
                while page.evaluate("window.marketdata.state().loaded") < 10_500:
                    loaded = page.evaluate("window.marketdata.state().loaded")
                    page.evaluate("(n) => window.marketdata.setView(n + 2, 10000)", loaded)
                    page.wait_for_function(f"window.marketdata.state().loaded > {loaded}")
                for count in (1_000, 10_000):
                    result: dict[str, Any] = page.evaluate(TIME_DRAWS, [count, args.frames])
                    rows.append(
                        f"| {result['drawn']:,} | {dpr} | {summary(result['draw'])} | "
                        f"{summary(result['raster'])} | {summary(result['intervals'])} |"
                    )
                page.close()
            version = browser.version
            browser.close()
    finally:
        server.terminate()
        server.wait()
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    print(
        f"Chromium {version}, headless, 1280x720 viewport, zone {args.tz},"
        f" {args.frames} frames each (ms)\n"
    )
    print(
        "| candles drawn | device pixel ratio | draw p50 | p95 | draw+raster p50 | p95"
        " | pan frame interval p50 | p95 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
