// What the chart shows, loaded: the tickers, a ticker's timeframes (those the server says
// it can serve), a timeframe's newest candles (or those before `end` in the address), and
// older ones as the view nears the oldest loaded. The address keeps what is shown.

import { api, fetchBefore, iso, query } from "./api.js";
import { updateControls } from "./controls.js";
import { $, CONFIG, INITIAL } from "./dom.js";
import { scheduleDraw } from "./draw.js";
import { clearMessage, showMessage } from "./messages.js";
import * as options from "./options.js";
import * as replay from "./replay.js";
import * as series from "./series.js";
import * as view from "./view.js";

const OLDER = 1000; // candles per load of older data (a page at a time, through the cursor)
let loadingOlder = false;
let loadedWith = "{}"; // the bar options (query parameters) the series was loaded with

// The tickers, listed for the ticker box; null when they could not be read.
export async function loadSymbols(retry) {
  $("ticker").placeholder = "loading…";
  let body;
  try {
    body = await api(`/symbols?${query({ limit: CONFIG.maxLimit })}`);
  } catch (error) {
    $("ticker").placeholder = "unavailable";
    showMessage(`Could not list the tickers. ${error.message}`, { retry });
    return null;
  }
  $("tickers").replaceChildren(...body.symbols.map((s) => new Option(s, s)));
  $("ticker").placeholder = body.count ? "ticker" : "no data";
  if (!body.count) {
    showMessage("No candles are stored yet. Load some with `marketdata ingest FILE…` or POST /candles.", {
      kind: "info",
    });
  }
  return body.symbols;
}

const describeSource = (o) =>
  o.source === "stored"
    ? "stored"
    : o.source === "rollup"
      ? `resampled from the ${series.tfLabel(o.from)} candles, read from a rollup kept at write time`
      : `resampled from the ${series.tfLabel(o.from)} candles`;

export async function selectTicker(ticker, preferredTf = null) {
  ticker = ticker.trim();
  if (!ticker) return;
  replay.stopReplay();
  const generation = series.begin();
  clearMessage();
  let coverage;
  try {
    coverage = await api(`/symbols/${encodeURIComponent(ticker)}`);
  } catch (error) {
    if (!series.current(generation)) return;
    reset(ticker, null);
    if (error.status === 404) {
      showMessage(`Unknown ticker "${ticker}": no candles are stored for it.`);
    } else {
      showMessage(`Could not load ${ticker}. ${error.message}`, { retry: () => selectTicker(ticker, preferredTf) });
    }
    return;
  }
  if (!series.current(generation)) return;
  series.setTimeframes(coverage);
  const choices = series.timeframes.map((o) => {
    const label = o.stored ? series.tfLabel(o.tf) : `${series.tfLabel(o.tf)} (resampled)`;
    const item = new Option(label, o.tf);
    item.title = describeSource(o);
    return item;
  });
  $("tf").replaceChildren(...choices);
  $("tf").disabled = false;
  const stored = series.timeframes.filter((o) => o.stored);
  const wanted =
    [preferredTf, series.tf, CONFIG.defaultTf].find((tf) => stored.some((o) => o.tf === tf)) ?? stored[0].tf;
  const chosen = series.option(preferredTf) ? preferredTf : wanted;
  $("tf").value = String(chosen);
  $("ticker").value = coverage.ticker;
  await loadSeries(coverage.ticker, chosen);
}

function reset(ticker, tf) {
  series.reset(ticker, tf);
  loadingOlder = false;
  view.clear();
  options.showOptions(series.option());
  updateControls();
}

const source = () => ({
  ticker: series.ticker,
  tf: series.tf,
  params: options.barParams(series.option()),
  first: series.first,
});
const sameParams = (params) => JSON.stringify(params) === loadedWith;

export async function loadSeries(ticker, tf) {
  replay.stopReplay();
  const generation = series.begin();
  reset(ticker, tf);
  loadedWith = JSON.stringify(source().params);
  const params = new URLSearchParams(location.search);
  params.set("ticker", ticker);
  params.set("tf", String(tf));
  options.writeAddress(params, series.option());
  history.replaceState(null, "", `?${params}`);
  const rawEnd = params.get("end");
  const end = rawEnd ? Date.parse(rawEnd) : null;
  if (Number.isNaN(end)) {
    showMessage(`end=${rawEnd} in the address is not a date (use e.g. 2026-01-30T21:00:00Z).`);
    return;
  }
  let result;
  try {
    result = await fetchBefore(source(), end === null ? null : end + 1, INITIAL);
  } catch (error) {
    if (!series.current(generation)) return;
    showMessage(`Could not load ${ticker} ${series.tfLabel(tf)}. ${error.message}`, {
      retry: () => loadSeries(ticker, tf),
    });
    return;
  }
  if (!series.current(generation)) return;
  if (!result.rows.length) {
    const until = end === null ? "" : ` up to ${iso(end)}`;
    showMessage(`No ${ticker} candles at ${series.tfLabel(tf)}${until}: the range is empty.`);
    return;
  }
  series.fill(result.rows, result.done);
  view.open();
  updateControls();
}

export async function loadOlder() {
  if (loadingOlder || series.exhausted || !series.candles.length) return;
  loadingOlder = true;
  const generation = series.generation;
  const oldest = series.candles[0].t;
  try {
    const { rows, done } = await fetchBefore(source(), oldest, OLDER);
    // a replay may have re-based the series meanwhile: these rows no longer join it
    if (!series.current(generation) || series.candles[0]?.t !== oldest) return;
    const added = series.prepend(rows, done);
    replay.shiftBase(added);
    view.shift(added);
  } catch (error) {
    if (series.current(generation)) {
      showMessage(`Could not load older candles. ${error.message}`, { retry: loadOlder });
    }
  } finally {
    if (series.current(generation)) loadingOlder = false;
  }
}

// The zone, session or day start changed: a timeframe whose bars they shape is loaded
// again; otherwise the same candles are labelled anew.
export function optionsChanged() {
  const option = series.option();
  options.showOptions(option);
  if (series.ticker === null || series.tf === null) return;
  if (!sameParams(options.barParams(option))) {
    loadSeries(series.ticker, series.tf);
    return;
  }
  const params = new URLSearchParams(location.search);
  options.writeAddress(params, option);
  history.replaceState(null, "", `?${params}`);
  scheduleDraw();
}
