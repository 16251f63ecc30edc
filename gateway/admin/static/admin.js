// The operator page's live parts, in plain JS (no build step, no external script):
// - the strip under the bar: events/s in, deliveries/s out and each subscriber's backlog,
//   from /admin/live every few seconds (rates are the change of the gateway's counters between
//   two polls);
// - the element marked data-live, when the page has one: fetched again from the page's own URL
//   and swapped in when it changed (the first page of events shows new events as they arrive).
"use strict";
(function () {
  const POLL_MS = 3000;
  const base = document.body.dataset.base;
  let previous = null;

  function text(node, value) {
    node.textContent = value;
  }

  function rate(now, then, key) {
    const seconds = now.at - then.at;
    if (seconds <= 0) return null;
    return Math.max(0, (now[key] - then[key]) / seconds);
  }

  function showStrip(sample) {
    const strip = document.getElementById("strip");
    if (!strip) return;
    if (previous !== null) {
      const incoming = rate(sample, previous, "stored");
      const outgoing = rate(sample, previous, "delivered");
      text(document.getElementById("rate-in"), incoming === null ? "–" : incoming.toFixed(1));
      text(document.getElementById("rate-out"), outgoing === null ? "–" : outgoing.toFixed(1));
    }
    previous = sample;
    const backlog = document.getElementById("backlog");
    backlog.replaceChildren(
      ...sample.subscribers.map(function (s) {
        const chip = document.createElement("span");
        chip.className = "chip " + s.state;
        const age = s.oldest_pending_seconds === null ? "" : " · " + ago(s.oldest_pending_seconds);
        const dead = s.dead > 0 ? " · " + s.dead + " dead" : "";
        chip.className = "chip " + s.state + (s.dead > 0 ? " has-dead" : "");
        chip.textContent =
          s.name + " " + s.pending + (s.state === "active" ? "" : " " + s.state) + age + dead;
        chip.title = s.name + ": " + s.pending + " pending, " + s.dead + " dead, " + s.state;
        return chip;
      })
    );
    document.getElementById("strip-state").className = "";
    text(document.getElementById("strip-state"), "live");
  }

  function ago(seconds) {
    if (seconds < 60) return Math.round(seconds) + "s";
    if (seconds < 3600) return Math.round(seconds / 60) + "m";
    return Math.round(seconds / 3600) + "h";
  }

  function stale() {
    const state = document.getElementById("strip-state");
    if (!state) return;
    state.className = "stale";
    text(state, "not updating");
  }

  async function pollStrip() {
    try {
      const answer = await fetch(base + "/live", { credentials: "same-origin", cache: "no-store" });
      if (answer.status === 401) {
        window.location.assign(base + "/");
        return;
      }
      if (!answer.ok) throw new Error(String(answer.status));
      showStrip(await answer.json());
    } catch (error) {
      stale();
    }
  }

  async function pollRegion() {
    const region = document.querySelector("[data-live]");
    if (!region) return;
    try {
      const answer = await fetch(window.location.href, { credentials: "same-origin", cache: "no-store" });
      if (!answer.ok) return;
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = page.querySelector("[data-live]");
      if (fresh && fresh.innerHTML !== region.innerHTML) {
        region.innerHTML = fresh.innerHTML;
      }
    } catch (error) {
      stale();
    }
  }

  function tick() {
    if (document.visibilityState !== "visible") return;
    pollStrip();
    pollRegion();
  }

  document.addEventListener("visibilitychange", tick);
  tick();
  // A second reading soon after the first: the rates show within a second of opening a view.
  window.setTimeout(pollStrip, 1000);
  window.setInterval(tick, POLL_MS);

  // A button that asks first (drop a quarantined payload, redrive every dead letter).
  document.addEventListener("submit", function (event) {
    const question = event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
