// The marketdata chart page: candles from the REST API drawn on a canvas, and replays
// driven over WS /ws/replay. No dependencies, no build step.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const CONFIG = JSON.parse($("config").textContent);
  const MINUTE = 60_000;
  const PAGE = Math.min(2000, CONFIG.maxLimit); // candles per range request
  const INITIAL = Math.min(600, CONFIG.maxLimit); // candles loaded first, in one request
  const OLDER = 1000; // candles per load of older data (PAGE at a time, through the cursor)
  const COMMON_TF = [1, 5, 15, 30, 60, 120, 240, 1440, 10080];
  const AXIS_RIGHT = 72;
  const AXIS_BOTTOM = 24;
  const MIN_VISIBLE = 10;
  const MAX_VISIBLE = 50_000;

  // ---------------------------------------------------------------- messages

  let messageTimer = null;

  function showMessage(text, { kind = "error", retry = null, ttl = 0 } = {}) {
    clearTimeout(messageTimer);
    const box = $("message");
    $("message-text").textContent = text;
    box.className = kind;
    box.hidden = false;
    const button = $("retry");
    button.hidden = !retry;
    button.onclick = retry
      ? () => {
          clearMessage();
          retry();
        }
      : null;
    if (ttl) messageTimer = setTimeout(clearMessage, ttl);
  }

  function clearMessage() {
    clearTimeout(messageTimer);
    $("message").hidden = true;
    $("message-text").textContent = "";
  }

  // ---------------------------------------------------------------- the REST API

  class ApiError extends Error {
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

  async function api(path) {
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

  const query = (params) =>
    new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined));
  const iso = (ms) => new Date(ms).toISOString();
  const toCandle = (c) => ({
    t: Date.parse(c.ts),
    o: c.open,
    h: c.high,
    l: c.low,
    c: c.close,
    v: c.volume,
  });

  // ---------------------------------------------------------------- the series

  const series = {
    ticker: null,
    tf: null,
    candles: [], // ascending, contiguous: no stored candle between two neighbours
    first: null, // ms of the first stored candle (where older loading stops)
    exhausted: false,
    loadingOlder: false,
    generation: 0, // bumped on every ticker/timeframe change: late answers are dropped
  };

  function lowerBound(candles, t) {
    let lo = 0;
    let hi = candles.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (candles[mid].t < t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  async function fetchRange(start, end) {
    const rows = [];
    let cursor = null;
    do {
      const params = { ticker: series.ticker, tf_min: series.tf, start: iso(start), end: iso(end) };
      let body;
      try {
        body = await api(`/candles/range?${query({ ...params, limit: PAGE, cursor })}`);
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
  async function fetchBefore(before, want) {
    if (before === null) {
      const params = { ticker: series.ticker, tf_min: series.tf, limit: want, order: "desc" };
      const body = await api(`/candles?${query(params)}`);
      const rows = body.data.map(toCandle).reverse();
      return { rows, done: rows.length < want };
    }
    if (series.first !== null && before <= series.first) return { rows: [], done: true };
    let span = want * series.tf * MINUTE * 3;
    for (;;) {
      const start = Math.max(before - span, series.first ?? before - span);
      const rows = await fetchRange(start, before - 1);
      const done = series.first === null || start <= series.first;
      if (rows.length >= want || done) return { rows, done };
      span *= 4;
    }
  }

  async function loadSymbols() {
    $("ticker").placeholder = "loading…";
    let body;
    try {
      body = await api(`/symbols?${query({ limit: CONFIG.maxLimit })}`);
    } catch (error) {
      $("ticker").placeholder = "unavailable";
      showMessage(`Could not list the tickers. ${error.message}`, { retry: start });
      return null;
    }
    const list = $("tickers");
    list.replaceChildren(...body.symbols.map((s) => new Option(s, s)));
    $("ticker").placeholder = body.count ? "ticker" : "no data";
    if (!body.count) {
      showMessage(
        "No candles are stored yet. Load some with `marketdata ingest FILE…` or POST /candles.",
        { kind: "info" },
      );
    }
    return body.symbols;
  }

  const tfLabel = (tf) =>
    tf % 10080 === 0 ? `${tf / 10080}w` : tf % 1440 === 0 ? `${tf / 1440}d` : tf % 60 === 0 ? `${tf / 60}h` : `${tf}m`;

  // Timeframes for a ticker: the stored ones, and common ones a stored timeframe divides
  // (the service resamples those from the finest such). Each with the time of the first
  // candle of the timeframe it is made from: loading older candles stops there.
  function timeframesOf(coverage) {
    const stored = new Map(coverage.timeframes.map((c) => [c.tf_min, c]));
    const finest = Math.min(...stored.keys());
    const options = new Map();
    for (const [tf, c] of stored) options.set(tf, { tf, stored: true, first: Date.parse(c.first) });
    for (const tf of COMMON_TF) {
      if (options.has(tf) || tf <= finest) continue;
      const source = [...stored.keys()].filter((s) => tf % s === 0).sort((a, b) => a - b)[0];
      if (source) options.set(tf, { tf, stored: false, first: Date.parse(stored.get(source).first) });
    }
    return [...options.values()].sort((a, b) => a.tf - b.tf);
  }

  let timeframes = [];

  async function selectTicker(ticker, preferredTf = null) {
    ticker = ticker.trim();
    if (!ticker) return;
    stopReplay();
    const generation = ++series.generation;
    clearMessage();
    let coverage;
    try {
      coverage = await api(`/symbols/${encodeURIComponent(ticker)}`);
    } catch (error) {
      if (generation !== series.generation) return;
      resetSeries(ticker, null);
      if (error.status === 404) {
        showMessage(`Unknown ticker "${ticker}": no candles are stored for it.`);
      } else {
        showMessage(`Could not load ${ticker}. ${error.message}`, {
          retry: () => selectTicker(ticker, preferredTf),
        });
      }
      return;
    }
    if (generation !== series.generation) return;
    timeframes = timeframesOf(coverage);
    const select = $("tf");
    select.replaceChildren(
      ...timeframes.map((o) => new Option(o.stored ? tfLabel(o.tf) : `${tfLabel(o.tf)} (resampled)`, o.tf)),
    );
    select.disabled = false;
    const wanted = [preferredTf, series.tf, CONFIG.defaultTf].find((tf) =>
      timeframes.some((o) => o.tf === tf && o.stored),
    ) ?? timeframes.find((o) => o.stored).tf;
    const chosen = timeframes.some((o) => o.tf === preferredTf) ? preferredTf : wanted;
    select.value = String(chosen);
    $("ticker").value = coverage.ticker;
    await loadSeries(coverage.ticker, chosen);
  }

  function resetSeries(ticker, tf) {
    series.ticker = ticker;
    series.tf = tf;
    series.candles = [];
    series.first = tf === null ? null : timeframes.find((o) => o.tf === tf)?.first ?? null;
    series.exhausted = false;
    series.loadingOlder = false;
    view.right = 0;
    updateControls();
    scheduleDraw();
  }

  async function loadSeries(ticker, tf) {
    stopReplay();
    const generation = ++series.generation;
    resetSeries(ticker, tf);
    const params = new URLSearchParams(location.search);
    params.set("ticker", ticker);
    params.set("tf", String(tf));
    history.replaceState(null, "", `?${params}`);
    const rawEnd = params.get("end");
    const end = rawEnd ? Date.parse(rawEnd) : null;
    if (Number.isNaN(end)) {
      showMessage(`end=${rawEnd} in the address is not a date (use e.g. 2026-01-30T21:00:00Z).`);
      return;
    }
    let result;
    try {
      result = await fetchBefore(end === null ? null : end + 1, INITIAL);
    } catch (error) {
      if (generation !== series.generation) return;
      showMessage(`Could not load ${ticker} ${tfLabel(tf)}. ${error.message}`, {
        retry: () => loadSeries(ticker, tf),
      });
      return;
    }
    if (generation !== series.generation) return;
    if (!result.rows.length) {
      const until = end === null ? "" : ` up to ${iso(end)}`;
      showMessage(`No ${ticker} candles at ${tfLabel(tf)}${until}: the range is empty.`);
      return;
    }
    series.candles = result.rows;
    series.exhausted = result.done;
    view.count = Math.max(MIN_VISIBLE, Math.min(150, series.candles.length + 2)); // a short series fills the width
    view.right = series.candles.length + 2;
    updateControls();
    scheduleDraw();
  }

  async function loadOlder() {
    if (series.loadingOlder || series.exhausted || !series.candles.length) return;
    series.loadingOlder = true;
    const generation = series.generation;
    const oldest = series.candles[0].t;
    try {
      const { rows, done } = await fetchBefore(oldest, OLDER);
      // a replay may have re-based the series meanwhile: these rows no longer join it
      if (generation !== series.generation || series.candles[0]?.t !== oldest) return;
      const older = rows.filter((c) => c.t < oldest);
      series.candles = older.concat(series.candles);
      replay.base += older.length;
      view.right += older.length;
      series.exhausted = done;
      scheduleDraw();
    } catch (error) {
      if (generation === series.generation) {
        showMessage(`Could not load older candles. ${error.message}`, { retry: loadOlder });
      }
    } finally {
      if (generation === series.generation) series.loadingOlder = false;
    }
  }

  // ---------------------------------------------------------------- the view and drawing

  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const view = { right: 0, count: 150 }; // index of the right edge (exclusive) and width, in candles
  const pointer = { x: null, y: null, dragX: null };
  const stats = { drawn: 0, first: null, last: null, ticker: null, tf: null, drawMs: 0 }; // of the last draw
  let colors = {};
  let size = { w: 0, h: 0, dpr: 1 };
  let drawPending = false;

  function readColors() {
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

  function resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    size = { w, h, dpr };
    canvas.width = Math.max(1, Math.round(w * dpr));
    canvas.height = Math.max(1, Math.round(h * dpr));
    draw();
  }

  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      draw();
    });
  }

  const plot = () => ({ w: Math.max(1, size.w - AXIS_RIGHT), h: Math.max(1, size.h - AXIS_BOTTOM) });
  const spacing = () => plot().w / view.count; // CSS pixels per candle

  // The candles whose centre is inside the plot: i + 0.5 in [right - count, right).
  function visibleRange() {
    const n = series.candles.length;
    const left = view.right - view.count;
    const lo = Math.max(0, Math.ceil(left - 0.5));
    const hi = Math.min(n - 1, Math.ceil(view.right - 0.5) - 1);
    return [lo, hi];
  }

  function niceStep(raw) {
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / magnitude;
    return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
  }

  const pad2 = (n) => String(n).padStart(2, "0");
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const TIME_UNITS = [1, 5, 15, 30, 60, 120, 240, 720, 1440, 10080, "month", "quarter", "year"];

  function bucketOf(t, unit) {
    if (typeof unit === "number") {
      if (unit === 10080) return Math.floor((t / MINUTE + 4 * 1440) / 10080); // weeks from Monday
      return Math.floor(t / (unit * MINUTE));
    }
    const d = new Date(t);
    const months = d.getUTCFullYear() * 12 + d.getUTCMonth();
    return unit === "month" ? months : unit === "quarter" ? Math.floor(months / 3) : d.getUTCFullYear();
  }

  function timeLabel(t, unit, previous) {
    const d = new Date(t);
    const day = `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]}`;
    const newDay = previous === null || Math.floor(previous / 86_400_000) !== Math.floor(t / 86_400_000);
    const newYear = previous === null || new Date(previous).getUTCFullYear() !== d.getUTCFullYear();
    if (typeof unit === "number" && unit < 1440) {
      return newDay ? day : `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
    }
    if (unit === "year" || ((unit === "month" || unit === "quarter") && newYear)) return String(d.getUTCFullYear());
    if (unit === "month" || unit === "quarter") return MONTHS[d.getUTCMonth()];
    return newYear && previous !== null ? String(d.getUTCFullYear()) : day;
  }

  // Time ticks at the first candle of each calendar unit, the finest unit whose ticks are
  // at least 90 px apart on average.
  function timeTicks(candles, lo, hi, width) {
    const allowed = Math.max(1, Math.floor(width / 90));
    for (const unit of TIME_UNITS) {
      if (typeof unit === "number" && unit < series.tf) continue;
      const ticks = [];
      let previous = lo > 0 ? bucketOf(candles[lo - 1].t, unit) : null;
      for (let i = lo; i <= hi && ticks.length <= allowed; i++) {
        const bucket = bucketOf(candles[i].t, unit);
        if (bucket !== previous) ticks.push(i);
        previous = bucket;
      }
      if (ticks.length <= allowed) return { unit, ticks };
    }
    return { unit: "year", ticks: [] };
  }

  function draw() {
    const started = performance.now();
    const { w, h, dpr } = size;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = colors.bg;
    ctx.fillRect(0, 0, w, h);
    const candles = series.candles;
    const area = plot();
    const px = spacing();
    const [lo, hi] = visibleRange();
    stats.drawn = Math.max(0, hi - lo + 1);
    stats.first = stats.drawn ? candles[lo].t : null;
    stats.last = stats.drawn ? candles[hi].t : null;
    stats.ticker = series.ticker;
    stats.tf = series.tf;
    const line = 1 / dpr; // one device pixel
    const crisp = (x) => (Math.round(x * dpr) + 0.5) / dpr;
    const xOf = (i) => (i + 0.5 - (view.right - view.count)) * px;

    ctx.strokeStyle = colors.border;
    ctx.lineWidth = line;
    ctx.beginPath();
    ctx.moveTo(crisp(area.w), 0);
    ctx.lineTo(crisp(area.w), area.h);
    ctx.moveTo(0, crisp(area.h));
    ctx.lineTo(w, crisp(area.h));
    ctx.stroke();
    if (!stats.drawn) {
      canvas.dataset.drawn = "0";
      stats.drawMs = performance.now() - started;
      return;
    }

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
    const priceHeight = area.h * 0.78 - top;
    const padding = (high - low) * 0.04;
    high += padding;
    low -= padding;
    const yOf = (price) => top + ((high - price) / (high - low)) * priceHeight;
    const volumeHeight = area.h * 0.18;

    ctx.save();
    ctx.beginPath();
    ctx.rect(0, 0, area.w, area.h);
    ctx.clip();

    // grid and price ticks
    const priceStep = niceStep((high - low) / Math.max(2, priceHeight / 48));
    const decimals = Math.max(0, -Math.floor(Math.log10(priceStep)));
    const prices = [];
    for (let p = Math.ceil(low / priceStep) * priceStep; p <= high; p += priceStep) prices.push(p);
    const { unit, ticks } = timeTicks(candles, lo, hi, area.w);
    ctx.strokeStyle = colors.grid;
    ctx.beginPath();
    for (const p of prices) {
      const y = crisp(yOf(p));
      ctx.moveTo(0, y);
      ctx.lineTo(area.w, y);
    }
    for (const i of ticks) {
      const x = crisp(xOf(i));
      ctx.moveTo(x, 0);
      ctx.lineTo(x, area.h);
    }
    ctx.stroke();

    // volume bars, then candles
    const body = Math.min(px * 0.7, px - 1);
    // Everything is a rectangle on whole device pixels, filled with fillRect: Chromium's
    // software canvas fills those fast, while it antialiases paths and strokes lines wider
    // than one device pixel many times slower (bench/chart_bench.py).
    const rects = { up: [], down: [], upVolume: [], downVolume: [] }; // x, y, w, h in device px
    const volumeScale = maxVolume > 0 ? (volumeHeight * dpr) / maxVolume : 0;
    const wickWidth = Math.max(1, Math.round(dpr)); // device pixels
    const bottom = Math.round(area.h * dpr);
    const yd = (price) => Math.round(yOf(price) * dpr);
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

    // crosshair
    const hovered = hoveredIndex();
    if (hovered !== null && pointer.dragX === null) {
      ctx.strokeStyle = colors.cross;
      ctx.lineWidth = line;
      ctx.setLineDash([4, 4]);
      ctx.beginPath();
      ctx.moveTo(crisp(xOf(hovered)), 0);
      ctx.lineTo(crisp(xOf(hovered)), area.h);
      ctx.moveTo(0, crisp(pointer.y));
      ctx.lineTo(area.w, crisp(pointer.y));
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.restore();

    // axes
    ctx.fillStyle = colors.axis;
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    for (const p of prices) {
      const y = yOf(p);
      if (y > 6 && y < area.h - 6) ctx.fillText(p.toFixed(decimals), area.w + 6, y);
    }
    ctx.textAlign = "center";
    let lastRight = -Infinity;
    for (const i of ticks) {
      const label = timeLabel(candles[i].t, unit, i > 0 ? candles[i - 1].t : null);
      const x = xOf(i);
      const half = ctx.measureText(label).width / 2;
      if (x - half < Math.max(0, lastRight + 8) || x + half > area.w) continue;
      ctx.fillText(label, x, area.h + AXIS_BOTTOM / 2);
      lastRight = x + half;
    }
    ctx.textAlign = "right";
    ctx.fillText("UTC", w - 4, area.h + AXIS_BOTTOM / 2);
    if (hovered !== null && pointer.dragX === null) {
      const price = high - ((pointer.y - top) / priceHeight) * (high - low);
      label(price.toFixed(decimals + 1), area.w + 1, pointer.y, AXIS_RIGHT - 2, "left");
      label(stamp(candles[hovered].t), xOf(hovered), area.h + AXIS_BOTTOM / 2, null, "center");
    }
    canvas.dataset.drawn = String(stats.drawn);
    updateLegend(hovered ?? hi);
    stats.drawMs = performance.now() - started;
  }

  function label(text, x, y, width, align) {
    const textWidth = ctx.measureText(text).width + 8;
    const boxWidth = width ?? textWidth;
    const left = align === "center" ? x - boxWidth / 2 : x;
    ctx.fillStyle = colors.cross;
    ctx.fillRect(left, y - 9, boxWidth, 18);
    ctx.fillStyle = colors.bg;
    ctx.textAlign = "left";
    ctx.fillText(text, left + 4, y);
  }

  const stamp = (t) => {
    const d = new Date(t);
    return `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
  };

  function hoveredIndex() {
    if (pointer.x === null || pointer.x >= plot().w || pointer.y >= plot().h) return null;
    const i = Math.floor(view.right - view.count + pointer.x / spacing());
    const [lo, hi] = visibleRange();
    return i >= lo && i <= hi ? i : null;
  }

  function updateLegend(i) {
    const legend = $("legend");
    const c = series.candles[i];
    if (!c) {
      legend.replaceChildren();
      return;
    }
    const fields = [
      ["O", "open", c.o],
      ["H", "high", c.h],
      ["L", "low", c.l],
      ["C", "close", c.c],
      ["V", "volume", c.v],
    ];
    const head = document.createElement("b");
    head.textContent = `${series.ticker} ${tfLabel(series.tf)}`;
    const when = document.createElement("span");
    when.dataset.field = "ts";
    when.textContent = `${stamp(c.t)} UTC`;
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
    const [lo, hi] = visibleRange();
    $("info").textContent =
      stats.drawn > 0 ? `${stats.drawn} candles · ${stamp(series.candles[lo].t)} → ${stamp(series.candles[hi].t)} UTC` : "";
  }

  function setView(right, count) {
    const n = series.candles.length;
    view.count = Math.min(MAX_VISIBLE, Math.max(MIN_VISIBLE, count));
    view.right = Math.min(n + Math.max(2, view.count * 0.2), Math.max(Math.min(n, view.count * 0.2), right));
    scheduleDraw();
    if (view.right - view.count < view.count * 0.1) loadOlder();
  }

  // Zoom about the candle under `anchorX`; about the right edge while the newest is in view.
  function zoom(factor, anchorX) {
    if (view.right >= series.candles.length) anchorX = plot().w;
    const px = spacing();
    const anchor = view.right - view.count + anchorX / px;
    const count = Math.min(MAX_VISIBLE, Math.max(MIN_VISIBLE, view.count * factor));
    const left = anchor - (anchorX / plot().w) * count;
    setView(left + count, count);
  }

  canvas.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const rect = canvas.getBoundingClientRect();
      zoom(Math.exp(event.deltaY * 0.0015), Math.min(event.clientX - rect.left, plot().w));
    },
    { passive: false },
  );
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    pointer.dragX = event.clientX;
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", (event) => {
    const rect = canvas.getBoundingClientRect();
    pointer.x = event.clientX - rect.left;
    pointer.y = event.clientY - rect.top;
    if (pointer.dragX !== null) {
      const dx = event.clientX - pointer.dragX;
      pointer.dragX = event.clientX;
      setView(view.right - dx / spacing(), view.count);
    }
    scheduleDraw();
  });
  const endDrag = () => {
    pointer.dragX = null;
    canvas.classList.remove("dragging");
    scheduleDraw();
  };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("pointerleave", () => {
    pointer.x = pointer.y = null;
    scheduleDraw();
  });
  canvas.addEventListener("keydown", (event) => {
    const keys = {
      ArrowLeft: () => setView(view.right - view.count * 0.1, view.count),
      ArrowRight: () => setView(view.right + view.count * 0.1, view.count),
      "+": () => zoom(1 / 1.25, plot().w / 2),
      "=": () => zoom(1 / 1.25, plot().w / 2),
      "-": () => zoom(1.25, plot().w / 2),
      End: () => setView(series.candles.length + 2, view.count),
    };
    if (keys[event.key]) {
      event.preventDefault();
      keys[event.key]();
    }
  });

  // ---------------------------------------------------------------- replay

  const replay = {
    socket: null,
    state: "idle", // idle | connecting | playing | live | paused | reconnecting | done
    start: null, // ISO start of the replay: seqs count from it
    nextSeq: 0,
    total: null,
    base: 0, // index in series.candles of seq 0
    placed: false, // whether seq numbers map onto series.candles yet
    queue: null, // candles that arrive while the chart is being re-based
    paused: false,
    live: false, // the history has been played: candles come as they are written
    attempts: 0,
    lastError: null,
    lastStatus: null,
    seeking: false,
    reconnects: 0,
    received: [], // seqs as they arrived, for the page's own checks
  };

  function pace() {
    const mode = $("pace-mode").value;
    const value = Number($("pace").value);
    if (!Number.isFinite(value) || value <= 0) {
      throw new Error(`The pace must be a positive number, got "${$("pace").value}".`);
    }
    if (mode === "step_seconds" && (value < CONFIG.minStep || value > CONFIG.maxStep)) {
      throw new Error(
        `The pace must be between ${CONFIG.minStep} and ${CONFIG.maxStep} s per candle (WS_MIN_STEP_SECONDS..WS_MAX_STEP_SECONDS).`,
      );
    }
    return { [mode]: value };
  }

  function play() {
    let chosenPace;
    try {
      chosenPace = pace();
    } catch (error) {
      showMessage(error.message);
      return;
    }
    let start;
    if ($("from").value) {
      start = Date.parse(`${$("from").value}Z`);
      if (Number.isNaN(start)) {
        showMessage(`"${$("from").value}" is not a date and time.`);
        return;
      }
    } else {
      const [lo] = visibleRange();
      if (!series.candles[lo]) return;
      start = series.candles[lo].t;
    }
    stopReplay();
    clearMessage();
    Object.assign(replay, {
      start: iso(start),
      nextSeq: 0,
      total: null,
      placed: false,
      queue: null,
      paused: false,
      live: false,
      attempts: 0,
      lastError: null,
      reconnects: 0,
      received: [],
    });
    connect(chosenPace);
  }

  function connect(chosenPace) {
    let currentPace = chosenPace;
    if (!currentPace) {
      try {
        currentPace = pace();
      } catch {
        currentPace = { step_seconds: CONFIG.defaultStep };
      }
    }
    const params = {
      ticker: series.ticker,
      tf_min: series.tf,
      start: replay.start,
      ...currentPace,
      from_seq: replay.nextSeq > 0 ? replay.nextSeq : null,
      live: "true", // at the end of the history, the candles written since, as they come
    };
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/replay?${query(params)}`);
    replay.socket = socket;
    replay.state = replay.attempts ? "reconnecting" : "connecting";
    const generation = series.generation;
    socket.onopen = () => {
      if (replay.paused) send({ action: "pause" });
    };
    socket.onmessage = (event) => {
      if (socket !== replay.socket || generation !== series.generation) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "CANDLE") {
        onCandle(message.seq, toCandle(message.candle), Boolean(message.revision));
      }
      else if (message.type === "STATUS") onStatus(message);
    };
    socket.onclose = (event) => {
      if (socket !== replay.socket) return; // replaced or stopped on purpose
      replay.socket = null;
      onClose(event);
    };
    updateControls();
  }

  function onStatus(message) {
    replay.lastStatus = message.message;
    switch (message.message) {
      case "replay_starting":
        replay.total = message.total_candles;
        replay.state = replay.paused ? "paused" : "playing";
        if (replay.attempts) {
          showMessage(`Reconnected: the replay goes on from candle ${replay.nextSeq + 1}.`, {
            kind: "info",
            ttl: 4000,
          });
        }
        replay.attempts = 0;
        replay.lastError = null;
        break;
      case "paused":
        replay.paused = true;
        replay.state = "paused";
        break;
      case "resumed":
        replay.paused = false;
        replay.state = replay.live ? "live" : "playing";
        break;
      case "seeked":
        replay.seeking = false;
        replay.live = false; // back to the history; live again at its end
        if (replay.state === "live") replay.state = "playing";
        break;
      case "live":
        replay.state = replay.paused ? "paused" : "live";
        replay.live = true;
        break;
      case "replay_complete":
        replay.state = "done";
        showMessage(`Replay complete: ${replay.total} candles.`, { kind: "info", ttl: 6000 });
        break;
      case "replay_stopped":
        replay.state = "idle";
        break;
      case "server_shutdown":
        replay.lastError = "the server is shutting down";
        break;
      case "error":
      case "server_busy":
        replay.lastError = message.error;
        showMessage(`Replay: ${message.error}`);
        break;
      default:
        break;
    }
    updateControls();
  }

  function onClose(event) {
    const finished = replay.state === "done" || replay.state === "idle";
    if (event.code === 1000 || finished) {
      replay.state = replay.state === "done" ? "done" : "idle";
      updateControls();
      return;
    }
    if (event.code === 1008) {
      // refused: bad parameters or nothing to replay; the STATUS before said why
      replay.state = "idle";
      if (!replay.lastError) showMessage(`The replay was refused (${event.reason || "code 1008"}).`);
      updateControls();
      return;
    }
    replay.attempts += 1;
    replay.state = "reconnecting";
    const delay = Math.min(5000, 250 * 2 ** (replay.attempts - 1));
    const why = replay.lastError ? `: ${replay.lastError}` : ` (code ${event.code})`;
    showMessage(
      `The replay connection was lost${why}. Reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${replay.attempts})…`,
      { kind: "error" },
    );
    replay.timer = setTimeout(() => {
      replay.timer = null;
      if (replay.state !== "reconnecting") return;
      replay.reconnects += 1;
      connect(null);
    }, delay);
    updateControls();
  }

  function send(command) {
    if (replay.socket && replay.socket.readyState === WebSocket.OPEN) {
      replay.socket.send(JSON.stringify(command));
      return true;
    }
    return false;
  }

  function stopReplay() {
    clearTimeout(replay.timer);
    replay.timer = null;
    const socket = replay.socket;
    replay.socket = null;
    socket?.close(1000); // the server ends a replay whose client leaves
    replay.state = "idle";
    updateControls();
  }

  function onCandle(seq, candle, revised) {
    replay.received.push(seq);
    if (revised && replay.placed && seq === replay.nextSeq) {
      // a correction of a candle already drawn: drawn again where it stands
      const at = series.candles.findLastIndex((c) => c.t === candle.t);
      if (at >= 0) {
        series.candles[at] = candle;
        replay.nextSeq = seq + 1;
        updateProgress();
        scheduleDraw();
        return;
      }
    }
    if (replay.queue) {
      replay.queue.push([seq, candle]);
      return;
    }
    if (replay.placed && seq === replay.nextSeq) {
      append(seq, candle);
      return;
    }
    // The first candle, or the first after a seek: put the chart's history just before it.
    replay.queue = [[seq, candle]];
    rebase(candle.t).finally(() => {
      const queued = replay.queue;
      replay.queue = null;
      replay.placed = true;
      replay.nextSeq = queued[0][0];
      replay.base = series.candles.length - replay.nextSeq;
      for (const [s, c] of queued) if (s === replay.nextSeq) append(s, c);
      view.right = series.candles.length + 2;
      scheduleDraw();
    });
  }

  // Keep the candles before `t` (the series is contiguous, so they are exactly the history
  // of the candle at `t`); when `t` is beyond what is loaded, load the history before it.
  async function rebase(t) {
    const j = lowerBound(series.candles, t);
    if (j < series.candles.length) {
      series.candles = series.candles.slice(0, j);
      return;
    }
    const generation = series.generation;
    try {
      const { rows, done } = await fetchBefore(t, Math.max(INITIAL, Math.ceil(view.count)));
      if (generation !== series.generation) return;
      series.candles = rows;
      series.exhausted = done;
    } catch (error) {
      showMessage(`Could not load the history before the replay. ${error.message}`);
      series.candles = [];
    }
  }

  function append(seq, candle) {
    const n = series.candles.length;
    const following = view.right >= n - 0.5;
    series.candles.push(candle);
    replay.nextSeq = seq + 1;
    if (following) view.right += 1;
    updateProgress();
    scheduleDraw();
  }

  function updateProgress() {
    const bar = $("progress");
    if (replay.total !== null) bar.max = String(Math.max(replay.total, replay.nextSeq));
    if (!replay.seeking) bar.value = String(replay.nextSeq);
    $("progress-text").textContent =
      replay.total === null ? "" : `${replay.nextSeq} / ${Math.max(replay.total, replay.nextSeq)}`;
  }

  function updateControls() {
    const state = replay.state;
    const live = state === "playing" || state === "paused" || state === "live";
    const haveData = series.candles.length > 0;
    $("play").disabled = !haveData && !$("from").value;
    $("play").textContent = live || state === "reconnecting" ? "Restart" : "Play";
    $("pause").disabled = state !== "playing" && state !== "live";
    $("resume").disabled = state !== "paused";
    $("step").disabled = state !== "paused";
    $("stop").disabled = !(live || state === "connecting" || state === "reconnecting");
    $("progress").disabled = !live;
    $("replay-state").textContent = state === "idle" || state === "live" ? "" : state;
    $("live-badge").hidden = state !== "live";
    document.body.dataset.replay = state;
    updateProgress();
  }

  $("play").addEventListener("click", play);
  $("pause").addEventListener("click", () => send({ action: "pause" }));
  $("resume").addEventListener("click", () => send({ action: "resume" }));
  $("step").addEventListener("click", () => send({ action: "step" }));
  $("stop").addEventListener("click", stopReplay);
  $("progress").addEventListener("input", () => {
    replay.seeking = true;
  });
  $("progress").addEventListener("change", () => {
    if (!send({ action: "seek", seq: Number($("progress").value) })) replay.seeking = false;
  });
  const changePace = () => {
    if (!(replay.state === "playing" || replay.state === "paused")) return;
    try {
      send({ action: "speed", ...pace() });
    } catch (error) {
      showMessage(error.message);
    }
  };
  $("pace").addEventListener("change", changePace);
  $("pace-mode").addEventListener("change", () => {
    $("pace").value = $("pace-mode").value === "speed" ? "60" : String(CONFIG.defaultStep);
    changePace();
  });
  $("from").addEventListener("input", updateControls);

  // ---------------------------------------------------------------- start

  // fired by Enter, by leaving the box and by picking from the list
  $("ticker").addEventListener("change", () => selectTicker($("ticker").value));
  $("tf").addEventListener("change", () => loadSeries(series.ticker, Number($("tf").value)));

  async function start() {
    const symbols = await loadSymbols();
    if (!symbols) return;
    const params = new URLSearchParams(location.search);
    const ticker = params.get("ticker") || symbols[0];
    if (ticker) await selectTicker(ticker, Number(params.get("tf")) || null);
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
      // what the page holds
      candles: series.candles.map((c) => iso(c.t)),
      lastClose: series.candles.length ? series.candles[series.candles.length - 1].c : null,
      loaded: series.candles.length,
      drawMs: stats.drawMs,
      replay: {
        state: replay.state,
        start: replay.start,
        nextSeq: replay.nextSeq,
        total: replay.total,
        reconnects: replay.reconnects,
        lastStatus: replay.lastStatus,
        received: replay.received.slice(),
        seqOfFirst: replay.placed ? replay.base : null,
      },
    }),
    // CSS pixels, relative to the canvas, of the centre of the candle at `ts` (or null)
    positionOf: (ts) => {
      const i = lowerBound(series.candles, Date.parse(ts));
      if (!series.candles[i] || series.candles[i].t !== Date.parse(ts)) return null;
      const x = (i + 0.5 - (view.right - view.count)) * spacing();
      return x >= 0 && x < plot().w ? { x, y: plot().h / 2 } : null;
    },
    setView: (right, count) => {
      setView(right, count);
      draw();
    },
    redraw: () => {
      draw();
      return stats.drawMs;
    },
  };

  readColors();
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    readColors();
    scheduleDraw();
  });
  new ResizeObserver(resize).observe(canvas);
  $("pace").value = String(CONFIG.defaultStep);
  $("pace").min = String(CONFIG.minStep);
  $("pace").max = String(CONFIG.maxStep);
  updateControls();
  start();
})();
