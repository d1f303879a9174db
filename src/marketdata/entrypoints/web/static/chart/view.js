// Which candles are in view, and where the pointer is. The view is counted in candles:
// `right` is the index of its right edge (exclusive, fractional) and `count` its width, so
// that nights and weekends take no room (one slot per candle).

import * as series from "./series.js";

export const AXIS_RIGHT = 72;
export const AXIS_BOTTOM = 24;
const MIN_VISIBLE = 10;
const MAX_VISIBLE = 50_000;

export let right = 0;
export let count = 150;
export let size = { w: 0, h: 0, dpr: 1 }; // CSS pixels of the canvas, and its pixel ratio
export let pointer = { x: null, y: null, dragX: null }; // CSS pixels relative to the canvas

const listeners = { change: [], nearOldest: [] };
export const onChange = (fn) => listeners.change.push(fn);
// called when the user moved the view near the oldest loaded candle
export const onNearOldest = (fn) => listeners.nearOldest.push(fn);
const changed = () => listeners.change.forEach((fn) => fn());

export const plot = () => ({ w: Math.max(1, size.w - AXIS_RIGHT), h: Math.max(1, size.h - AXIS_BOTTOM) });
export const spacing = () => plot().w / count; // CSS pixels per candle
export const xOf = (i) => (i + 0.5 - (right - count)) * spacing();
// xOf for one draw: the view and the size taken once (thousands of candles are placed)
export function xScale() {
  const px = spacing();
  const left = right - count;
  return (i) => (i + 0.5 - left) * px;
}

export function setSize(w, h, dpr) {
  size = { w, h, dpr };
}

// The candles whose centre is inside the plot: i + 0.5 in [right - count, right).
export function visibleRange() {
  const n = series.candles.length;
  const left = right - count;
  const lo = Math.max(0, Math.ceil(left - 0.5));
  const hi = Math.min(n - 1, Math.ceil(right - 0.5) - 1);
  return [lo, hi];
}

// The view a freshly loaded series opens with: its newest candles (a short series fills
// the width).
export function open() {
  count = Math.max(MIN_VISIBLE, Math.min(150, series.candles.length + 2));
  right = series.candles.length + 2;
  changed();
}

export function clear() {
  right = 0;
  changed();
}

// The newest candle at the right edge.
export function toNewest() {
  right = series.candles.length + 2;
  changed();
}

// Whether the newest candle is in view: the view then follows candles as they come.
export const showsNewest = () => right >= series.candles.length - 0.5;

// Moves the view by `n` candles: after `n` older ones came in at the left, it shows the
// same candles; after one came at the right, it follows the newest.
export function shift(n) {
  right += n;
  changed();
}

export function setView(newRight, newCount) {
  const n = series.candles.length;
  count = Math.min(MAX_VISIBLE, Math.max(MIN_VISIBLE, newCount));
  right = Math.min(n + Math.max(2, count * 0.2), Math.max(Math.min(n, count * 0.2), newRight));
  changed();
  if (right - count < count * 0.1) listeners.nearOldest.forEach((fn) => fn());
}

// Zoom about the candle under `anchorX`; about the right edge while the newest is in view.
export function zoom(factor, anchorX) {
  if (right >= series.candles.length) anchorX = plot().w;
  const anchor = right - count + anchorX / spacing();
  const newCount = Math.min(MAX_VISIBLE, Math.max(MIN_VISIBLE, count * factor));
  const left = anchor - (anchorX / plot().w) * newCount;
  setView(left + newCount, newCount);
}

export function pan(dx) {
  setView(right - dx / spacing(), count);
}

export function setPointer(x, y) {
  pointer = { ...pointer, x, y };
  changed();
}

export function setDrag(x) {
  pointer = { ...pointer, dragX: x };
  changed();
}

// The candle under the pointer, or null.
export function hoveredIndex() {
  if (pointer.x === null || pointer.x >= plot().w || pointer.y >= plot().h) return null;
  const i = Math.floor(right - count + pointer.x / spacing());
  const [lo, hi] = visibleRange();
  return i >= lo && i <= hi ? i : null;
}
