// peerdex agent web client: keeps the transfers table current from the agent's event stream
// (/events). The pages work without it; this only spares a reload.
"use strict";
(function () {
  const table = document.querySelector('[data-live="transfers"]');
  if (!table || !window.EventSource) {
    return;
  }
  const set = (row, selector, text) => {
    const cell = row.querySelector(selector);
    if (cell && cell.textContent !== text) {
      cell.textContent = text;
    }
  };
  let reloading = false;
  const events = new EventSource("/events");
  events.addEventListener("transfers", (message) => {
    let lines;
    try {
      lines = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    for (const line of lines) {
      const row = document.getElementById("t" + line.id);
      // A new transfer, or one whose buttons change with its state: the page says it best.
      if (!row || row.dataset.state !== line.state) {
        if (!reloading) {
          reloading = true;
          events.close();
          window.location.reload();
        }
        return;
      }
      set(row, ".bytes", line.bytes);
      set(row, ".rate", line.rate);
      set(row, ".detail", line.detail);
      const bar = row.querySelector("progress");
      if (bar) {
        bar.value = line.permille;
      }
    }
  });
})();
