// conveyor dashboard: small progressive enhancements; every page works without it.
// Loaded with the page's CSP nonce; no inline script or style anywhere.
"use strict";

(function () {
  const FINISHED = new Set(["succeeded", "dead", "cancelled"]);
  const REFRESH_EVERY = 2000; // a list page refreshes at most this often
  const OPERATION_POLL = 1000; // an operation is read from the dashboard's memory, not the store
  const root = () => document.body.dataset.root || "";
  const main = () => document.getElementById("main");

  // --- forms: confirmations, "select all" -------------------------------------------------
  document.addEventListener("submit", (event) => {
    const form = event.target;
    const button = event.submitter;
    const question = (button && button.dataset && button.dataset.confirm) || (form.dataset && form.dataset.confirm);
    if (question && !window.confirm(question)) event.preventDefault();
    if (form.hasAttribute && form.hasAttribute("data-selection")) {
      const picked = document.querySelectorAll("input.pick:checked");
      if (picked.length === 0) {
        event.preventDefault();
        window.alert("Select some jobs first (the boxes on the left).");
      }
    }
  });

  document.addEventListener("change", (event) => {
    const box = event.target;
    if (box.classList && box.classList.contains("pick-all")) {
      document.querySelectorAll("input.pick").forEach((b) => { b.checked = box.checked; });
    }
  });

  // --- swapping <main> with a fresh copy of this page ---------------------------------------
  async function refreshMain() {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!response.ok || response.redirected) return false;
    const html = await response.text();
    const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
    const current = main();
    if (!fresh || !current) return false;
    current.replaceChildren(...Array.from(fresh.childNodes).map((n) => document.importNode(n, true)));
    for (const attr of fresh.attributes) current.setAttribute(attr.name, attr.value);
    return true;
  }

  function busy() {
    // never throw away what someone is doing: a selection, a half-typed filter
    const active = document.activeElement;
    if (active && active.closest && active.closest("main form") && active.tagName !== "BUTTON") return true;
    return document.querySelector("input.pick:checked") !== null;
  }

  // --- list pages: refresh on "changed", at most every 2 s ---------------------------------
  function followList() {
    const source = new EventSource(root() + "/api/events");
    let last = Date.now();
    let timer = null;
    const refresh = () => {
      timer = null;
      if (busy() || document.hidden) { schedule(); return; }
      last = Date.now();
      refreshMain().catch(() => {});
    };
    const schedule = () => {
      if (timer !== null) return;
      timer = setTimeout(refresh, Math.max(0, last + REFRESH_EVERY - Date.now()));
    };
    source.addEventListener("changed", schedule);
  }

  // --- a job's page: progress and state in place -------------------------------------------
  function setProgress(bar, value, max) {
    if (!bar) return;
    if (max !== undefined) { bar.max = max; bar.setAttribute("aria-valuemax", String(max)); }
    bar.value = value;
    bar.setAttribute("aria-valuenow", String(value));
  }

  function field(name) { return main().querySelector(`[data-field="${name}"]`); }

  function shortNumber(n) { return String(Math.round(n * 10) / 10); }

  function showJob(job) {
    const state = field("state");
    if (state) { state.textContent = job.state; state.className = "state state-" + job.state; }
    const percent = job.state === "succeeded" ? 100 : job.progress;
    if (percent !== null && percent !== undefined) {
      setProgress(field("progress"), shortNumber(Math.max(0, Math.min(100, percent))));
      const text = field("progress-text");
      if (text) text.textContent = shortNumber(percent) + "%";
    }
    const message = field("progress-message");
    if (message) message.textContent = job.progress_message || "";
    const attempt = field("attempt");
    if (attempt) attempt.textContent = `${job.attempt} of ${job.max_attempts}`;
  }

  function followJob(id) {
    const source = new EventSource(`${root()}/api/jobs/${encodeURIComponent(id)}/events`);
    let shownState = field("state") ? field("state").textContent : "";
    source.addEventListener("job", (event) => {
      const job = JSON.parse(event.data);
      showJob(job);
      if (FINISHED.has(job.state)) {
        source.close();
        // the attempts, result and buttons of a finished job: the page itself, without a reload
        refreshMain().then(() => showJob(job)).catch(() => {});
      } else if (job.state !== shownState) {
        refreshMain().then(() => showJob(job)).catch(() => {});
      }
      shownState = job.state;
    });
    source.addEventListener("gone", () => { source.close(); refreshMain().catch(() => {}); });
  }

  // --- a bulk operation's page -----------------------------------------------------------------
  function showOperation(op) {
    const total = op.total === null ? Math.max(op.done, 1) : Math.max(op.total, 1);
    setProgress(field("progress"), op.done, total);
    const text = field("progress-text");
    if (text) text.textContent = `${op.done} of ${op.total === null ? "…" : op.total}`;
    const state = field("state");
    if (state) { state.textContent = op.state; state.className = "state state-" + op.state; }
    const changed = field("changed");
    if (changed) changed.textContent = String(op.changed);
    const finished = field("finished_at");
    if (finished && op.finished_at) finished.textContent = op.finished_at.replace("T", " ").slice(0, 19);
    const error = field("error");
    if (error) error.textContent = op.error || "";
  }

  function followOperation(id) {
    const url = `${root()}/api/operations/${encodeURIComponent(id)}`;
    const source = new EventSource(root() + "/api/events");
    let timer = null;
    const load = async () => {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) return;
      const op = await response.json();
      showOperation(op);
      if (op.state !== "running") { source.close(); clearInterval(timer); }
    };
    source.addEventListener("changed", () => { load().catch(() => {}); });
    timer = setInterval(() => { load().catch(() => {}); }, OPERATION_POLL);
    load().catch(() => {});
  }

  function start() {
    const m = main();
    if (!m || !window.EventSource) return;
    const live = m.dataset.live;
    if (live === "list") followList();
    else if (live === "job" && m.dataset.finished !== "true") followJob(m.dataset.jobId);
    else if (live === "operation" && m.querySelector('[data-field="state"]').textContent === "running") {
      followOperation(m.dataset.operation);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
