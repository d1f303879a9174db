// Wall-clock time in an IANA time zone, through the browser's Intl (no zone data of our
// own). `wall(zone, t)` is the instant `t` (ms) shifted by the zone's offset then, so that
// its getUTC* parts are the zone's date and time; everything drawn reads those.

import { MINUTE } from "./dom.js";

export const UTC = "UTC";

// Offsets change on quarter hours of UTC (every zone's offset since the 1970s is a whole
// number of quarter hours, and clocks change at a local whole hour): one offset per
// quarter hour, computed once.
const SLOT = 15 * MINUTE;
const offsets = new Map(); // zone -> Map(slot -> offset ms)
const partsFormats = new Map();
const nameFormats = new Map();

export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || UTC;
}

// The zone named by `text`, case normalised; a RangeError that says what to type when no
// zone has that name.
export function zoneOf(text) {
  const name = String(text ?? "").trim();
  if (!name) throw new RangeError("Type a time zone: an IANA name such as America/New_York, or UTC.");
  try {
    return new Intl.DateTimeFormat("en-US", { timeZone: name }).resolvedOptions().timeZone;
  } catch {
    throw new RangeError(
      `"${name}" is not a time zone: type an IANA name such as America/New_York, Europe/London or UTC.`,
    );
  }
}

function partsFormat(zone) {
  let format = partsFormats.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat("en-US", {
      timeZone: zone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    partsFormats.set(zone, format);
  }
  return format;
}

function offsetAt(zone, t) {
  const p = {};
  for (const { type, value } of partsFormat(zone).formatToParts(t)) p[type] = Number(value);
  const local = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return local - Math.floor(t / 1000) * 1000;
}

// The zone's offset from UTC at `t`, in ms (east positive).
export function offsetOf(zone, t) {
  if (zone === UTC) return 0;
  let cache = offsets.get(zone);
  if (!cache || cache.size > 200_000) {
    cache = new Map();
    offsets.set(zone, cache);
  }
  const slot = Math.floor(t / SLOT);
  let offset = cache.get(slot);
  if (offset === undefined) {
    offset = offsetAt(zone, slot * SLOT);
    cache.set(slot, offset);
  }
  return offset;
}

export const wall = (zone, t) => t + offsetOf(zone, t);

// The instant at which the zone's clocks read `local` (ms of a wall-clock time read as
// UTC); in a gap of a clock change, the time as if the old offset still held.
export function instantOf(zone, local) {
  const guess = local - offsetOf(zone, local);
  return local - offsetOf(zone, guess);
}

const pad2 = (n) => String(n).padStart(2, "0");

// "2026-01-26 09:30" in the zone
export function stamp(zone, t) {
  const d = new Date(wall(zone, t));
  const date = `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`;
  return `${date} ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
}

// The zone's short name at `t`: "UTC", "EST", "GMT+1".
export function shortName(zone, t) {
  if (zone === UTC) return UTC;
  let format = nameFormats.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "short" });
    nameFormats.set(zone, format);
  }
  return format.formatToParts(t).find((p) => p.type === "timeZoneName")?.value ?? zone;
}
