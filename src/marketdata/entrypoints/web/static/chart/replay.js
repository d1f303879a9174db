// A replay over WS /ws/replay: the chart keeps the history before its first candle and
// appends each candle as it arrives; a lost connection is reconnected with growing pauses
// and `from_seq`, so that no candle is missed or drawn twice. The controls (controls.js)
// start it and send its commands; they hear of every change through onChange.

import { fetchBefore, iso, query, toCandle } from "./api.js";
import { CONFIG, INITIAL } from "./dom.js";
import { scheduleDraw } from "./draw.js";
import { showMessage } from "./messages.js";
import * as series from "./series.js";
import * as view from "./view.js";

// idle | connecting | playing | live | paused | reconnecting | done
export let state = "idle";
export let nextSeq = 0;
export let total = null;
export let seeking = false; // the progress bar is being dragged, or its seek not yet answered

const replay = {
  socket: null,
  timer: null,
  request: null, // { ticker, tf, bars, start (ISO): seqs count from it, generation }
  pace: null, // { step_seconds } or { speed }, as last asked
  base: 0, // index in series.candles of seq 0
  placed: false, // whether seq numbers map onto series.candles yet
  queue: null, // candles that arrive while the chart is being re-based
  paused: false,
  live: false, // the history has been played: candles come as they are written
  attempts: 0,
  lastError: null,
  lastStatus: null,
  reconnects: 0,
  received: [], // seqs as they arrived, for the page's own checks
};

const listeners = [];
export const onChange = (fn) => listeners.push(fn);
const changed = () => listeners.forEach((fn) => fn());

// What the replay is at, for window.marketdata.state().
export const snapshot = () => ({
  state,
  start: replay.request?.start ?? null,
  nextSeq,
  total,
  reconnects: replay.reconnects,
  lastStatus: replay.lastStatus,
  received: replay.received.slice(),
  seqOfFirst: replay.placed ? replay.base : null,
});

// Plays `ticker` at `tf` from `start` (ms), with the bar options `bars` (the query
// parameters options.barParams gives), at `pace`.
export function startReplay({ ticker, tf, bars, start, pace }) {
  stopReplay();
  nextSeq = 0;
  total = null;
  seeking = false;
  Object.assign(replay, {
    request: { ticker, tf, bars, start: iso(start), generation: series.generation },
    pace,
    placed: false,
    queue: null,
    paused: false,
    live: false,
    attempts: 0,
    lastError: null,
    reconnects: 0,
    received: [],
  });
  connect();
}

export function stopReplay() {
  clearTimeout(replay.timer);
  replay.timer = null;
  const socket = replay.socket;
  replay.socket = null;
  socket?.close(1000); // the server ends a replay whose client leaves
  state = "idle";
  changed();
}

export function send(command) {
  if (replay.socket && replay.socket.readyState === WebSocket.OPEN) {
    replay.socket.send(JSON.stringify(command));
    return true;
  }
  return false;
}

// A new pace for the replay, sent while it plays the history (or is paused in it), and
// asked for by its reconnections.
export function changePace(pace) {
  replay.pace = pace;
  if (state === "playing" || state === "paused") send({ action: "speed", ...pace });
}

export function seek(seq) {
  seeking = true;
  if (!send({ action: "seek", seq })) seeking = false;
}

export const startSeeking = () => {
  seeking = true;
};

// Older candles were put in front of the series: seq 0 moved with them.
export function shiftBase(n) {
  replay.base += n;
}

function connect() {
  const { ticker, tf, bars, start, generation } = replay.request;
  const params = {
    ticker,
    tf_min: tf,
    ...bars,
    start,
    ...(replay.pace ?? { step_seconds: CONFIG.defaultStep }),
    from_seq: nextSeq > 0 ? nextSeq : null,
    live: "true", // at the end of the history, the candles written since, as they come
  };
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/replay?${query(params)}`);
  replay.socket = socket;
  state = replay.attempts ? "reconnecting" : "connecting";
  socket.onopen = () => {
    if (replay.paused) send({ action: "pause" });
  };
  socket.onmessage = (event) => {
    if (socket !== replay.socket || !series.current(generation)) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type === "CANDLE") onCandle(message.seq, toCandle(message.candle), Boolean(message.revision));
    else if (message.type === "STATUS") onStatus(message);
  };
  socket.onclose = (event) => {
    if (socket !== replay.socket) return; // replaced or stopped on purpose
    replay.socket = null;
    onClose(event);
  };
  changed();
}

function onStatus(message) {
  replay.lastStatus = message.message;
  switch (message.message) {
    case "replay_starting":
      total = message.total_candles;
      state = replay.paused ? "paused" : "playing";
      if (replay.attempts) {
        showMessage(`Reconnected: the replay goes on from candle ${nextSeq + 1}.`, { kind: "info", ttl: 4000 });
      }
      replay.attempts = 0;
      replay.lastError = null;
      break;
    case "paused":
      replay.paused = true;
      state = "paused";
      break;
    case "resumed":
      replay.paused = false;
      state = replay.live ? "live" : "playing";
      break;
    case "seeked":
      seeking = false;
      replay.live = false; // back to the history; live again at its end
      if (state === "live") state = "playing";
      break;
    case "live":
      state = replay.paused ? "paused" : "live";
      replay.live = true;
      break;
    case "replay_complete":
      state = "done";
      showMessage(`Replay complete: ${total} candles.`, { kind: "info", ttl: 6000 });
      break;
    case "replay_stopped":
      state = "idle";
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
  changed();
}

function onClose(event) {
  if (event.code === 1000 || state === "done" || state === "idle") {
    state = state === "done" ? "done" : "idle";
    changed();
    return;
  }
  if (event.code === 1008) {
    // refused: bad parameters or nothing to replay; the STATUS before said why
    state = "idle";
    if (!replay.lastError) showMessage(`The replay was refused (${event.reason || "code 1008"}).`);
    changed();
    return;
  }
  replay.attempts += 1;
  state = "reconnecting";
  const delay = Math.min(5000, 250 * 2 ** (replay.attempts - 1));
  const why = replay.lastError ? `: ${replay.lastError}` : ` (code ${event.code})`;
  showMessage(
    `The replay connection was lost${why}. Reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${replay.attempts})…`,
  );
  replay.timer = setTimeout(() => {
    replay.timer = null;
    if (state !== "reconnecting") return;
    replay.reconnects += 1;
    connect();
  }, delay);
  changed();
}

function onCandle(seq, candle, revised) {
  replay.received.push(seq);
  if (revised && replay.placed && seq === nextSeq && series.revise(candle)) {
    // a correction of a candle already drawn: drawn again where it stands
    nextSeq = seq + 1;
    changed();
    scheduleDraw();
    return;
  }
  if (replay.queue) {
    replay.queue.push([seq, candle]);
    return;
  }
  if (replay.placed && seq === nextSeq) {
    append(seq, candle);
    return;
  }
  // The first candle, or the first after a seek: put the chart's history just before it.
  replay.queue = [[seq, candle]];
  rebase(candle.t).finally(() => {
    const queued = replay.queue;
    replay.queue = null;
    replay.placed = true;
    nextSeq = queued[0][0];
    replay.base = series.candles.length - nextSeq;
    for (const [s, c] of queued) if (s === nextSeq) append(s, c);
    view.toNewest();
  });
}

// Keep the candles before `t` (the series is contiguous, so they are exactly the history
// of the candle at `t`); when `t` is beyond what is loaded, load the history before it.
async function rebase(t) {
  if (series.cutAt(t)) return;
  const { ticker, tf, bars, generation } = replay.request;
  try {
    const source = { ticker, tf, params: bars, first: series.first };
    const { rows, done } = await fetchBefore(source, t, Math.max(INITIAL, Math.ceil(view.count)));
    if (series.current(generation)) series.fill(rows, done);
  } catch (error) {
    if (!series.current(generation)) return;
    showMessage(`Could not load the history before the replay. ${error.message}`);
    series.fill([], false);
  }
}

function append(seq, candle) {
  const following = view.showsNewest();
  series.append(candle);
  nextSeq = seq + 1;
  if (following) view.shift(1);
  changed();
  scheduleDraw();
}
