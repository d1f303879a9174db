// The replay's controls: Play (from the `from` time, read in the chart's zone, or from the
// left edge of the view), Pause, Resume, Step, Stop, the pace and the progress bar (drag
// to seek); and what they show of the replay.

import { $, CONFIG } from "./dom.js";
import { clearMessage, showMessage } from "./messages.js";
import * as options from "./options.js";
import * as replay from "./replay.js";
import * as series from "./series.js";
import * as view from "./view.js";
import { instantOf } from "./zone.js";

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
  let chosen;
  try {
    chosen = pace();
  } catch (error) {
    showMessage(error.message);
    return;
  }
  let start;
  const from = $("from").value;
  if (from) {
    const local = Date.parse(`${from}Z`); // the wall-clock time typed, read as if in UTC
    if (Number.isNaN(local)) {
      showMessage(`"${from}" is not a date and time.`);
      return;
    }
    start = instantOf(options.zone, local);
  } else {
    const [lo] = view.visibleRange();
    if (!series.candles[lo]) return;
    start = series.candles[lo].t;
  }
  clearMessage();
  const bars = options.barParams(series.option());
  replay.startReplay({ ticker: series.ticker, tf: series.tf, bars, start, pace: chosen });
}

export function updateControls() {
  const state = replay.state;
  const live = state === "playing" || state === "paused" || state === "live";
  $("play").disabled = !series.candles.length && !$("from").value;
  $("play").textContent = live || state === "reconnecting" ? "Restart" : "Play";
  $("pause").disabled = state !== "playing" && state !== "live";
  $("resume").disabled = state !== "paused";
  $("step").disabled = state !== "paused";
  $("stop").disabled = !(live || state === "connecting" || state === "reconnecting");
  $("progress").disabled = !live;
  $("replay-state").textContent = state === "idle" || state === "live" ? "" : state;
  $("live-badge").hidden = state !== "live";
  document.body.dataset.replay = state;
  const bar = $("progress");
  const { total, nextSeq } = replay;
  if (total !== null) bar.max = String(Math.max(total, nextSeq));
  if (!replay.seeking) bar.value = String(nextSeq);
  $("progress-text").textContent = total === null ? "" : `${nextSeq} / ${Math.max(total, nextSeq)}`;
}

export function bindControls() {
  $("pace").value = String(CONFIG.defaultStep);
  $("pace").min = String(CONFIG.minStep);
  $("pace").max = String(CONFIG.maxStep);
  $("play").addEventListener("click", play);
  $("pause").addEventListener("click", () => replay.send({ action: "pause" }));
  $("resume").addEventListener("click", () => replay.send({ action: "resume" }));
  $("step").addEventListener("click", () => replay.send({ action: "step" }));
  $("stop").addEventListener("click", replay.stopReplay);
  $("progress").addEventListener("input", replay.startSeeking);
  $("progress").addEventListener("change", () => replay.seek(Number($("progress").value)));
  const changePace = () => {
    if (replay.state === "idle" || replay.state === "done") return;
    try {
      replay.changePace(pace());
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
}
