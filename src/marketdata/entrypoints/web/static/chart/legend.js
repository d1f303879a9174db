// The legend over the chart (the candle under the pointer, else the newest in view: its
// time in the chart's zone and its OHLCV) and the line in the header that says what is
// in view.

import { $ } from "./dom.js";
import { iso } from "./api.js";
import * as options from "./options.js";
import * as series from "./series.js";
import { shortName, stamp } from "./zone.js";

export function updateLegend(i, lo, hi) {
  const legend = $("legend");
  const c = series.candles[i];
  if (!c) {
    legend.replaceChildren();
    $("info").textContent = "";
    return;
  }
  const zone = options.zone;
  const fields = [
    ["O", "open", c.o],
    ["H", "high", c.h],
    ["L", "low", c.l],
    ["C", "close", c.c],
    ["V", "volume", c.v],
  ];
  const head = document.createElement("b");
  head.textContent = `${series.ticker} ${series.tfLabel(series.tf)}`;
  const when = document.createElement("span");
  when.dataset.field = "ts";
  when.textContent = `${stamp(zone, c.t)} ${shortName(zone, c.t)}`;
  when.title = zone;
  const parts = fields.map(([short, name, value]) => {
    const span = document.createElement("span");
    const tag = document.createElement("i");
    tag.textContent = short;
    span.append(tag, String(value));
    span.dataset.field = name;
    span.dataset.value = String(value);
    return span;
  });
  legend.replaceChildren(head, when, ...parts);
  legend.dataset.ts = iso(c.t);
  const [first, last] = [series.candles[lo].t, series.candles[hi].t];
  $("info").textContent = `${hi - lo + 1} candles · ${stamp(zone, first)} → ${stamp(zone, last)} ${zone}`;
}
