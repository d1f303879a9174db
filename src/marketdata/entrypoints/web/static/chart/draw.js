// The canvas: candlesticks and volume, grid, price and time axes in the chart's zone, the
// crosshair; at most one redraw per animation frame.

import { $ } from "./dom.js";
import { updateLegend } from "./legend.js";
import * as options from "./options.js";
import * as series from "./series.js";
import { niceStep, timeTicks } from "./ticks.js";
import * as view from "./view.js";
import { shortName, stamp } from "./zone.js";

const canvas = $("chart");
const ctx = canvas.getContext("2d");
let colors = {};
let pending = false;
let xOf = view.xOf; // where candle i is drawn: view.xScale() of this draw

// what the last draw showed (for window.marketdata.state())
export const stats = { drawn: 0, first: null, last: null, ticker: null, tf: null, drawMs: 0, axis: [] };

export function readColors() {
  const style = getComputedStyle(document.documentElement);
  const v = (name) => style.getPropertyValue(name).trim();
  colors = {
    bg: v("--bg"),
    fg: v("--fg"),
    grid: v("--grid"),
    axis: v("--axis"),
    up: v("--up"),
    down: v("--down"),
    cross: v("--cross"),
    border: v("--border"),
    volumeAlpha: Number(v("--volume-alpha")) || 0.35,
  };
}

export function resize() {
  const dpr = window.devicePixelRatio || 1;
  view.setSize(canvas.clientWidth, canvas.clientHeight, dpr);
  canvas.width = Math.max(1, Math.round(canvas.clientWidth * dpr));
  canvas.height = Math.max(1, Math.round(canvas.clientHeight * dpr));
  draw();
}

export function scheduleDraw() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    draw();
  });
}

export function draw() {
  const started = performance.now();
  const { w, h, dpr } = view.size;
  const area = view.plot();
  const [lo, hi] = view.visibleRange();
  const candles = series.candles;
  Object.assign(stats, {
    drawn: Math.max(0, hi - lo + 1),
    first: hi >= lo ? candles[lo].t : null,
    last: hi >= lo ? candles[hi].t : null,
    ticker: series.ticker,
    tf: series.tf,
    axis: [],
  });
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = colors.bg;
  ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = colors.border;
  ctx.lineWidth = 1 / dpr;
  ctx.beginPath();
  ctx.moveTo(crisp(area.w), 0);
  ctx.lineTo(crisp(area.w), area.h);
  ctx.moveTo(0, crisp(area.h));
  ctx.lineTo(w, crisp(area.h));
  ctx.stroke();
  if (stats.drawn) {
    xOf = view.xScale();
    const scale = priceScale(candles, lo, hi, area);
    const ticks = timeTicks(candles, lo, hi, area.w, series.tf, options.zone);
    const hovered = view.hoveredIndex();
    const cross = view.pointer.dragX === null ? hovered : null; // none while dragging
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, 0, area.w, area.h);
    ctx.clip();
    grid(scale, ticks, area);
    bars(candles, lo, hi, scale, area);
    if (cross !== null) crosshair(cross, area);
    ctx.restore();
    axes(scale, ticks, cross, hi, area);
    updateLegend(hovered ?? hi, lo, hi);
  } else {
    updateLegend(null);
  }
  canvas.dataset.drawn = String(stats.drawn);
  stats.drawMs = performance.now() - started;
}

const crisp = (x) => (Math.round(x * view.size.dpr) + 0.5) / view.size.dpr; // mid-pixel

// The price range in view, padded, and where a price is drawn.
function priceScale(candles, lo, hi, area) {
  let low = Infinity;
  let high = -Infinity;
  let maxVolume = 0;
  for (let i = lo; i <= hi; i++) {
    const c = candles[i];
    if (c.l < low) low = c.l;
    if (c.h > high) high = c.h;
    if (c.v > maxVolume) maxVolume = c.v;
  }
  if (high === low) {
    high += Math.abs(high) * 0.01 || 1;
    low -= Math.abs(low) * 0.01 || 1;
  }
  const top = 10;
  const height = area.h * 0.78 - top;
  const padding = (high - low) * 0.04;
  high += padding;
  low -= padding;
  const step = niceStep((high - low) / Math.max(2, height / 48));
  const prices = [];
  for (let p = Math.ceil(low / step) * step; p <= high; p += step) prices.push(p);
  return {
    low,
    high,
    top,
    height,
    maxVolume,
    prices,
    decimals: Math.max(0, -Math.floor(Math.log10(step))),
    yOf: (price) => top + ((high - price) / (high - low)) * height,
  };
}

function grid(scale, ticks, area) {
  ctx.strokeStyle = colors.grid;
  ctx.beginPath();
  for (const p of scale.prices) {
    const y = crisp(scale.yOf(p));
    ctx.moveTo(0, y);
    ctx.lineTo(area.w, y);
  }
  for (const [i] of ticks) {
    const x = crisp(xOf(i));
    ctx.moveTo(x, 0);
    ctx.lineTo(x, area.h);
  }
  ctx.stroke();
}

// Volume bars, then candles. Everything is a rectangle on whole device pixels, filled with
// fillRect: Chromium's software canvas fills those fast, while it antialiases paths and
// strokes lines wider than one device pixel many times slower (bench/chart_bench.py).
function bars(candles, lo, hi, scale, area) {
  const dpr = view.size.dpr;
  const px = view.spacing();
  const body = Math.min(px * 0.7, px - 1);
  const rects = { up: [], down: [], upVolume: [], downVolume: [] }; // x, y, w, h in device px
  const volumeScale = scale.maxVolume > 0 ? (area.h * 0.18 * dpr) / scale.maxVolume : 0;
  const wickWidth = Math.max(1, Math.round(dpr)); // device pixels
  const bottom = Math.round(area.h * dpr);
  const yd = (price) => Math.round(scale.yOf(price) * dpr);
  const push = (list, x, y1, w, y2) => list.push(x, y1, w, Math.max(1, y2 - y1));
  if (body >= 2) {
    const bodyWidth = Math.round(body * dpr);
    for (let i = lo; i <= hi; i++) {
      const c = candles[i];
      const up = c.c >= c.o;
      const x = xOf(i) * dpr;
      const left = Math.round(x - bodyWidth / 2);
      const vh = Math.round(c.v * volumeScale);
      if (vh > 0) push(up ? rects.upVolume : rects.downVolume, left, bottom - vh, bodyWidth, bottom);
      const list = up ? rects.up : rects.down;
      push(list, Math.round(x - wickWidth / 2), yd(c.h), wickWidth, yd(c.l));
      push(list, left, yd(Math.max(c.o, c.c)), bodyWidth, yd(Math.min(c.o, c.c)));
    }
  } else {
    // Too narrow for bodies: the candles sharing a wick-wide column of pixels make one
    // wick and one volume bar per colour, the union of theirs: the pixels of drawing them
    // one by one, at a fraction of the cost when thousands are in view.
    const merged = { up: [Infinity, -Infinity, 0], down: [Infinity, -Infinity, 0] };
    let column = null;
    const flush = () => {
      const x = column * wickWidth;
      for (const side of ["up", "down"]) {
        const m = merged[side];
        if (m[0] === Infinity) continue;
        push(rects[side], x, yd(m[1]), wickWidth, yd(m[0]));
        const vh = Math.round(m[2] * volumeScale);
        if (vh > 0) push(rects[`${side}Volume`], x, bottom - vh, wickWidth, bottom);
        m[0] = Infinity;
        m[1] = -Infinity;
        m[2] = 0;
      }
    };
    for (let i = lo; i <= hi; i++) {
      const c = candles[i];
      const at = Math.floor((xOf(i) * dpr) / wickWidth);
      if (at !== column) {
        if (column !== null) flush();
        column = at;
      }
      const m = merged[c.c >= c.o ? "up" : "down"];
      if (c.l < m[0]) m[0] = c.l;
      if (c.h > m[1]) m[1] = c.h;
      if (c.v > m[2]) m[2] = c.v;
    }
    flush();
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  const fill = (list, color) => {
    ctx.fillStyle = color;
    for (let k = 0; k < list.length; k += 4) ctx.fillRect(list[k], list[k + 1], list[k + 2], list[k + 3]);
  };
  ctx.globalAlpha = colors.volumeAlpha;
  fill(rects.upVolume, colors.up);
  fill(rects.downVolume, colors.down);
  ctx.globalAlpha = 1;
  fill(rects.up, colors.up);
  fill(rects.down, colors.down);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
}

function crosshair(hovered, area) {
  ctx.strokeStyle = colors.cross;
  ctx.lineWidth = 1 / view.size.dpr;
  ctx.setLineDash([4, 4]);
  ctx.beginPath();
  ctx.moveTo(crisp(xOf(hovered)), 0);
  ctx.lineTo(crisp(xOf(hovered)), area.h);
  ctx.moveTo(0, crisp(view.pointer.y));
  ctx.lineTo(area.w, crisp(view.pointer.y));
  ctx.stroke();
  ctx.setLineDash([]);
}

// Price labels at the right, time labels below (in the chart's zone, its short name in
// the corner), and the crosshair's price and time.
function axes(scale, ticks, hovered, newest, area) {
  const zone = options.zone;
  const candles = series.candles;
  const middle = area.h + view.AXIS_BOTTOM / 2;
  ctx.fillStyle = colors.axis;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  for (const p of scale.prices) {
    const y = scale.yOf(p);
    if (y > 6 && y < area.h - 6) ctx.fillText(p.toFixed(scale.decimals), area.w + 6, y);
  }
  ctx.textAlign = "center";
  let lastRight = -Infinity;
  for (const [i, text] of ticks) {
    const x = xOf(i);
    const half = ctx.measureText(text).width / 2;
    if (x - half < Math.max(0, lastRight + 8) || x + half > area.w) continue;
    ctx.fillText(text, x, middle);
    stats.axis.push({ ts: new Date(candles[i].t).toISOString(), label: text });
    lastRight = x + half;
  }
  ctx.textAlign = "right";
  ctx.fillText(shortName(zone, candles[newest].t), view.size.w - 4, middle);
  if (hovered !== null) {
    const { high, low, top, height } = scale;
    const price = high - ((view.pointer.y - top) / height) * (high - low);
    label(price.toFixed(scale.decimals + 1), area.w + 1, view.pointer.y, view.AXIS_RIGHT - 2, "left");
    const when = stamp(zone, candles[hovered].t);
    label(when, xOf(hovered), middle, null, "center");
    stats.axis.push({ ts: new Date(candles[hovered].t).toISOString(), label: when, crosshair: true });
  }
}

function label(text, x, y, width, align) {
  const boxWidth = width ?? ctx.measureText(text).width + 8;
  const left = align === "center" ? x - boxWidth / 2 : x;
  ctx.fillStyle = colors.cross;
  ctx.fillRect(left, y - 9, boxWidth, 18);
  ctx.fillStyle = colors.bg;
  ctx.textAlign = "left";
  ctx.fillText(text, left + 4, y);
}
