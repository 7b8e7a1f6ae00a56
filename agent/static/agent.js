// peerdex agent web client: keeps a page current from the agent's one event stream
// (/events): the transfers table from `transfers` events, the People pages from `people`
// events (a contact came online, a message arrived). The pages work without it; this only
// spares a reload.
"use strict";
(function () {
  const table = document.querySelector('[data-live="transfers"]');
  const people = document.querySelector('[data-live="people"]');
  if ((!table && !people) || !window.EventSource) {
    return;
  }
  let reloading = false;
  const events = new EventSource(people ? "/events?people=1" : "/events");
  const reload = () => {
    if (!reloading) {
      reloading = true;
      events.close();
      window.location.reload();
    }
  };
  const set = (row, selector, text) => {
    const cell = row.querySelector(selector);
    if (cell && cell.textContent !== text) {
      cell.textContent = text;
    }
  };
  // Something the user is typing would be lost by a reload: say there is news instead.
  const typing = () =>
    Array.from(document.querySelectorAll("input:not([type=hidden]), textarea")).some(
      (field) => field.type !== "checkbox" && field.value !== "",
    );
  const news = () => {
    let notice = document.getElementById("live-notice");
    if (!notice) {
      notice = document.createElement("p");
      notice.id = "live-notice";
      notice.className = "notice";
      notice.setAttribute("role", "status");
      notice.textContent = "Something new arrived: reload the page to see it.";
      people.before(notice);
    }
  };
  if (people) {
    events.addEventListener("people", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (e) {
        return;
      }
      if (event.type === "relay_open") {
        // Live from now on. What happened between the page's making and now came before the
        // relay listened: compare with the page as it is now, and show that if it changed.
        fetch(window.location.href, { credentials: "same-origin" })
          .then((response) => response.text())
          .then((html) => {
            const fresh = new DOMParser()
              .parseFromString(html, "text/html")
              .querySelector('[data-live="people"]');
            people.dataset.connected = "yes";
            if (fresh && fresh.innerHTML !== people.innerHTML) {
              if (typing()) {
                news();
              } else {
                reload();
              }
            }
          })
          .catch(() => {
            people.dataset.connected = "yes";
          });
        return;
      }
      // Presence changes one line in place.
      const line = event.type === "presence" && document.querySelector(
        '[data-contact="' + CSS.escape(event.name) + '"] .presence',
      );
      if (line) {
        line.textContent = event.online ? "online" : "offline, last seen just now";
        line.className = "presence " + (event.online ? "online" : "offline");
      } else if (typing()) {
        news();
      } else {
        reload();
      }
    });
  }
  if (!table) {
    return;
  }
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
        reload();
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
