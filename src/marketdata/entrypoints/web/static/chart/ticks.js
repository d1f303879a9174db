// Round ticks: prices on steps of 1, 2 or 5 times a power of ten; times at the first
// candle of each calendar unit (minutes, hours, days, weeks from Monday, months, quarters,
// years) of the chart's time zone.

import { MINUTE } from "./dom.js";
import { wall } from "./zone.js";

const DAY = 1440 * MINUTE;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const TIME_UNITS = [1, 5, 15, 30, 60, 120, 240, 720, 1440, 10080, "month", "quarter", "year"];
const pad2 = (n) => String(n).padStart(2, "0");

export function niceStep(raw) {
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
}

// Which bucket of `unit` the wall-clock time `local` falls in.
function bucketOf(local, unit) {
  if (typeof unit === "number") {
    if (unit === 10080) return Math.floor((local / MINUTE + 4 * 1440) / 10080); // weeks from Monday
    return Math.floor(local / (unit * MINUTE));
  }
  const d = new Date(local);
  const months = d.getUTCFullYear() * 12 + d.getUTCMonth();
  return unit === "month" ? months : unit === "quarter" ? Math.floor(months / 3) : d.getUTCFullYear();
}

// The label of a tick at wall-clock `local`, the candle before it at `previous` (or null).
function timeLabel(local, unit, previous) {
  const d = new Date(local);
  const day = `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]}`;
  const newDay = previous === null || Math.floor(previous / DAY) !== Math.floor(local / DAY);
  const newYear = previous === null || new Date(previous).getUTCFullYear() !== d.getUTCFullYear();
  if (typeof unit === "number" && unit < 1440) {
    return newDay ? day : `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
  }
  if (unit === "year" || ((unit === "month" || unit === "quarter") && newYear)) return String(d.getUTCFullYear());
  if (unit === "month" || unit === "quarter") return MONTHS[d.getUTCMonth()];
  return newYear && previous !== null ? String(d.getUTCFullYear()) : day;
}

// Time ticks for candles[lo..hi] of timeframe `tf` in `zone`: the finest unit whose ticks
// are at least 90 px apart on average over `width`, each tick [index, label].
export function timeTicks(candles, lo, hi, width, tf, zone) {
  const allowed = Math.max(1, Math.floor(width / 90));
  const locals = new Float64Array(hi - lo + 2).fill(NaN); // wall-clock times, once per draw
  const local = (i) => {
    const k = i - lo + 1;
    if (Number.isNaN(locals[k])) locals[k] = wall(zone, candles[i].t);
    return locals[k];
  };
  for (const unit of TIME_UNITS) {
    if (typeof unit === "number" && unit < tf) continue;
    const ticks = [];
    let previous = lo > 0 ? bucketOf(local(lo - 1), unit) : null;
    for (let i = lo; i <= hi && ticks.length <= allowed; i++) {
      const bucket = bucketOf(local(i), unit);
      if (bucket !== previous) ticks.push(i);
      previous = bucket;
    }
    if (ticks.length <= allowed) {
      return ticks.map((i) => [i, timeLabel(local(i), unit, i > 0 ? local(i - 1) : null)]);
    }
  }
  return [];
}
