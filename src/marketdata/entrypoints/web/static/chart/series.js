// The candles of one ticker and timeframe as loaded, and the timeframes the server can
// serve for the ticker. Its readers see the bindings below (read-only outside this module)
// and change them through the functions below only; they never change an array handed out.

export let ticker = null;
export let tf = null;
// ascending and contiguous: no candle of the series between two neighbours
export let candles = [];
// ms of the first stored candle the timeframe is made of (where older loading stops)
export let first = null;
export let exhausted = false;
// bumped on every change of ticker or timeframe: late answers to older requests are dropped
export let generation = 0;
// what the server can serve (GET /symbols/{ticker}'s `served`): {tf, source, stored, first}
export let timeframes = [];

export const tfLabel = (minutes) =>
  minutes % 10080 === 0
    ? `${minutes / 10080}w`
    : minutes % 1440 === 0
      ? `${minutes / 1440}d`
      : minutes % 60 === 0
        ? `${minutes / 60}h`
        : `${minutes}m`;

// The timeframes of a ticker's coverage, each with the first candle of the stored
// timeframe it is made of. The server decides what it can serve, and how.
export function setTimeframes(coverage) {
  const firsts = new Map(coverage.timeframes.map((c) => [c.tf_min, Date.parse(c.first)]));
  timeframes = coverage.served.map((s) => ({
    tf: s.tf_min,
    source: s.source,
    stored: s.source === "stored",
    from: s.from_tf_min,
    first: firsts.get(s.from_tf_min) ?? null,
  }));
}

export const option = (minutes = tf) => timeframes.find((o) => o.tf === minutes) ?? null;

// A new ticker or timeframe on the way; the generation its answers must carry.
export function begin() {
  generation += 1;
  return generation;
}

export const current = (g) => g === generation;

export function reset(newTicker, newTf) {
  ticker = newTicker;
  tf = newTf;
  candles = [];
  first = newTf === null ? null : option(newTf)?.first ?? null;
  exhausted = false;
}

// The history a load or a replay found: `done` when nothing is stored before it.
export function fill(rows, done) {
  candles = rows;
  exhausted = done;
}

// Older candles joined in front; how many were added.
export function prepend(rows, done) {
  const oldest = candles[0].t;
  const older = rows.filter((c) => c.t < oldest);
  candles = older.concat(candles);
  exhausted = done;
  return older.length;
}

export function append(candle) {
  candles.push(candle);
}

// A candle written again (a live correction) drawn where it stands; whether it was here.
export function revise(candle) {
  const at = candles.findLastIndex((c) => c.t === candle.t);
  if (at < 0) return false;
  candles[at] = candle;
  return true;
}

// Keeps the candles before `t`; whether `t` was within what is loaded.
export function cutAt(t) {
  const j = lowerBound(t);
  if (j === candles.length) return false;
  candles = candles.slice(0, j);
  return true;
}

// The index of the first candle at or after `t`.
export function lowerBound(t) {
  let lo = 0;
  let hi = candles.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (candles[mid].t < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
