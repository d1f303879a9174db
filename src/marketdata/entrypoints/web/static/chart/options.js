// What the page asks of bars beyond ticker and timeframe: the time zone (the axis and the
// legend read it; resampled timeframes are cut in it), and for resampled days and weeks
// the session hours and the local time a day starts. Kept in the address (tz, session,
// day_start) beside ticker and tf; the server checks session and day_start, and says why
// when it refuses them.

import { $ } from "./dom.js";
import { showMessage } from "./messages.js";
import { UTC, browserZone, zoneOf } from "./zone.js";

export let zone = UTC;
export let session = ""; // "HH:MM-HH:MM", or "" for the whole day
export let dayStart = ""; // "HH:MM", or "" for midnight

const days = (option) => Boolean(option) && !option.stored && option.tf % 1440 === 0;

// The query parameters that shape the bars of a timeframe (`option`, one of those the
// server can serve): none for a stored one, which is served as stored; the zone for a
// resampled one; and session and day start for resampled days and weeks. REST requests,
// replays and live candles all carry them.
export function barParams(option) {
  if (!option || option.stored) return {};
  return {
    tz: zone === UTC ? null : zone,
    session: days(option) && session ? session : null,
    day_start: days(option) && dayStart ? dayStart : null,
  };
}

// Reads tz, session and day_start from the address; a zone no browser knows is replaced
// by UTC, and what is wrong with it returned (null when nothing is).
export function readAddress(params) {
  const tz = params.get("tz");
  let problem = null;
  zone = UTC;
  if (tz) {
    try {
      zone = zoneOf(tz);
    } catch (error) {
      problem = `tz in the address: ${error.message} The chart is in UTC.`;
    }
  }
  session = (params.get("session") || "").trim();
  dayStart = (params.get("day_start") || "").trim();
  showOptions(null);
  return problem;
}

export function writeAddress(params, option) {
  const set = (name, value) => (value ? params.set(name, value) : params.delete(name));
  set("tz", zone === UTC ? null : zone);
  set("session", days(option) ? session : null);
  set("day_start", days(option) ? dayStart : null);
}

// The picker and the fields as the state is; the day fields only where they apply.
export function showOptions(option) {
  const local = browserZone();
  $("zone-local").textContent = `Browser (${local})`;
  const mode = zone === UTC ? "utc" : zone === local ? "local" : "other";
  $("zone-mode").value = mode;
  $("zone").hidden = mode !== "other";
  if (mode === "other") $("zone").value = zone;
  $("session").value = session;
  $("day-start").value = dayStart;
  $("day-options").hidden = !days(option);
  $("from-zone").textContent = zone;
}

// Wires the controls; `changed()` is called after the options changed.
export function bindOptions(changed) {
  const setZone = (name) => {
    try {
      zone = zoneOf(name);
    } catch (error) {
      showMessage(error.message);
      return;
    }
    changed();
  };
  $("zone-mode").addEventListener("change", () => {
    const mode = $("zone-mode").value;
    $("zone").hidden = mode !== "other";
    if (mode === "utc") setZone(UTC);
    else if (mode === "local") setZone(browserZone());
    else if ($("zone").value.trim()) setZone($("zone").value);
    else $("zone").focus();
  });
  $("zone").addEventListener("change", () => setZone($("zone").value));
  $("session").addEventListener("change", () => {
    session = $("session").value.trim();
    changed();
  });
  $("day-start").addEventListener("change", () => {
    dayStart = $("day-start").value.trim();
    changed();
  });
}
