// The line above the chart that says, in words, what went wrong (or, kind "info", what
// happened), with a Retry button when there is something to retry.

import { $ } from "./dom.js";

let timer = null;

export function showMessage(text, { kind = "error", retry = null, ttl = 0 } = {}) {
  clearTimeout(timer);
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
  if (ttl) timer = setTimeout(clearMessage, ttl);
}

export function clearMessage() {
  clearTimeout(timer);
  $("message").hidden = true;
  $("message-text").textContent = "";
}
