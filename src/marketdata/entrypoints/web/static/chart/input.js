// The canvas's input: the wheel zooms (about the pointer), dragging pans, arrow keys, +, -
// and End do the same from the keyboard.

import { $ } from "./dom.js";
import * as series from "./series.js";
import * as view from "./view.js";

export function bindInput() {
  const canvas = $("chart");
  canvas.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const rect = canvas.getBoundingClientRect();
      view.zoom(Math.exp(event.deltaY * 0.0015), Math.min(event.clientX - rect.left, view.plot().w));
    },
    { passive: false },
  );
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    view.setDrag(event.clientX);
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", (event) => {
    const rect = canvas.getBoundingClientRect();
    const dragX = view.pointer.dragX;
    view.setPointer(event.clientX - rect.left, event.clientY - rect.top);
    if (dragX !== null) {
      view.setDrag(event.clientX);
      view.pan(event.clientX - dragX);
    }
  });
  const endDrag = () => {
    view.setDrag(null);
    canvas.classList.remove("dragging");
  };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("pointerleave", () => view.setPointer(null, null));
  canvas.addEventListener("keydown", (event) => {
    const middle = () => view.plot().w / 2;
    const keys = {
      ArrowLeft: () => view.setView(view.right - view.count * 0.1, view.count),
      ArrowRight: () => view.setView(view.right + view.count * 0.1, view.count),
      "+": () => view.zoom(1 / 1.25, middle()),
      "=": () => view.zoom(1 / 1.25, middle()),
      "-": () => view.zoom(1.25, middle()),
      End: () => view.setView(series.candles.length + 2, view.count),
    };
    if (keys[event.key]) {
      event.preventDefault();
      keys[event.key]();
    }
  });
}
