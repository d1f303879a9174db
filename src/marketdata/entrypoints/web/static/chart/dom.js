// What every module of the page reads: its elements, and the settings the server wrote
// into it (the replay's pace bounds, MAX_LIMIT, the default timeframe).

export const $ = (id) => document.getElementById(id);

export const CONFIG = JSON.parse($("config").textContent);

export const MINUTE = 60_000;

// candles a series opens with, in one request (and the history a replay loads before it)
export const INITIAL = Math.min(600, CONFIG.maxLimit);
