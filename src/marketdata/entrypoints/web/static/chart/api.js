// The REST API: JSON answers, errors in words, and candles read through windows of
// /candles/range and its cursor.

import { CONFIG, MINUTE } from "./dom.js";

const PAGE = Math.min(2000, CONFIG.maxLimit); // candles per range request

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function describe(status, body) {
  const said = body && (body.message || body.error);
  if (status === 503) return `The database is unavailable: ${said || "no answer"}.`;
  if (status >= 500) return `The server failed (${status}); its log has the details.`;
  return said || `The server answered ${status}.`;
}

export async function api(path) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: "application/json" } });
  } catch {
    throw new ApiError(0, "Cannot reach the marketdata server: is it running?");
  }
  let body;
  try {
    body = await response.json();
  } catch {
    body = null; // not JSON: a proxy's error page, say
  }
  if (!response.ok) throw new ApiError(response.status, describe(response.status, body));
  return body;
}

// A query string of the parameters that are set (null and undefined are left out).
export const query = (params) =>
  new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined));

export const iso = (ms) => new Date(ms).toISOString();

export const toCandle = (c) => ({
  t: Date.parse(c.ts),
  o: c.open,
  h: c.high,
  l: c.low,
  c: c.close,
  v: c.volume,
});

// A `source` is what to read: { ticker, tf, params, first }: `params` the bar options sent
// with every request (tz, session, day_start), `first` the time (ms) of the first stored
// candle it is made of, where reading older candles stops (null: unknown).

export async function fetchRange(source, start, end) {
  const rows = [];
  let cursor = null;
  do {
    const params = {
      ticker: source.ticker,
      tf_min: source.tf,
      ...source.params,
      start: iso(start),
      end: iso(end),
      limit: PAGE,
      cursor,
    };
    let body;
    try {
      body = await api(`/candles/range?${query(params)}`);
    } catch (error) {
      if (error.status === 404) break; // nothing in this window
      throw error;
    }
    for (const c of body.data) rows.push(toCandle(c));
    cursor = body.next || null;
  } while (cursor);
  return rows;
}

// The `want` (or more) candles just before `before` (ms, exclusive; null: the newest),
// through windows of the range API that widen until they hold enough or reach the first.
export async function fetchBefore(source, before, want) {
  if (before === null) {
    const params = { ticker: source.ticker, tf_min: source.tf, ...source.params, limit: want, order: "desc" };
    const body = await api(`/candles?${query(params)}`);
    const rows = body.data.map(toCandle).reverse();
    return { rows, done: rows.length < want };
  }
  if (source.first !== null && before <= source.first) return { rows: [], done: true };
  // the bar that holds the first candle starts less than a bar before it: a range that
  // starts there holds that bar whole (the API leaves out a bar the range cuts)
  const floor = source.first === null ? null : source.first - source.tf * MINUTE + 1;
  let span = want * source.tf * MINUTE * 3;
  for (;;) {
    const start = Math.max(before - span, floor ?? before - span);
    const rows = await fetchRange(source, start, before - 1);
    const done = floor === null || start <= floor;
    if (rows.length >= want || done) return { rows, done };
    span *= 4;
  }
}
