// The marketdata chart page: candles from the REST API drawn on a canvas, replays driven
// over WS /ws/replay, in the time zone the user picks. ES modules, no dependencies, no
// build step; this one wires the others together and starts the page.

import { iso } from "./api.js";
import { bindControls, updateControls } from "./controls.js";
import { $ } from "./dom.js";
import { draw, readColors, resize, scheduleDraw, stats } from "./draw.js";
import { bindInput } from "./input.js";
import { loadOlder, loadSeries, loadSymbols, optionsChanged, selectTicker } from "./load.js";
import { showMessage } from "./messages.js";
import * as options from "./options.js";
import * as replay from "./replay.js";
import * as series from "./series.js";
import * as view from "./view.js";

async function start() {
  const params = new URLSearchParams(location.search);
  const problem = options.readAddress(params);
  const symbols = await loadSymbols(start);
  if (!symbols) return;
  const ticker = params.get("ticker") || symbols[0];
  if (ticker) await selectTicker(ticker, Number(params.get("tf")) || null);
  if (problem) showMessage(problem);
}

// For tests and benchmarks: what the page shows, in numbers.
window.marketdata = {
  state: () => ({
    // what the last draw showed
    ticker: stats.ticker,
    tf: stats.tf,
    drawn: stats.drawn,
    first: stats.first === null ? null : iso(stats.first),
    last: stats.last === null ? null : iso(stats.last),
    axis: stats.axis.slice(), // the time labels drawn: {ts, label, crosshair?}
    zone: options.zone,
    // what the page holds
    candles: series.candles.map((c) => iso(c.t)),
    lastClose: series.candles.length ? series.candles[series.candles.length - 1].c : null,
    loaded: series.candles.length,
    drawMs: stats.drawMs,
    timeframes: series.timeframes.map((o) => ({ tf: o.tf, source: o.source })),
    replay: replay.snapshot(),
  }),
  // CSS pixels, relative to the canvas, of the centre of the candle at `ts` (or null)
  positionOf: (ts) => {
    const t = Date.parse(ts);
    const i = series.lowerBound(t);
    if (!series.candles[i] || series.candles[i].t !== t) return null;
    const x = view.xOf(i);
    return x >= 0 && x < view.plot().w ? { x, y: view.plot().h / 2 } : null;
  },
  setView: (right, count) => {
    view.setView(right, count);
    draw();
  },
  redraw: () => {
    draw();
    return stats.drawMs;
  },
};

view.onChange(scheduleDraw);
view.onNearOldest(loadOlder);
replay.onChange(updateControls);
options.bindOptions(optionsChanged);
bindInput();
bindControls();
// fired by Enter, by leaving the box and by picking from the list
$("ticker").addEventListener("change", () => selectTicker($("ticker").value));
$("tf").addEventListener("change", () => loadSeries(series.ticker, Number($("tf").value)));
readColors();
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  readColors();
  scheduleDraw();
});
new ResizeObserver(resize).observe($("chart"));
updateControls();
start();
