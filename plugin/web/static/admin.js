// The admin dashboard: what is served, the adapter versions with their metrics, correction rate over time, refresh runs, data.

import { ApiError, api, element, formatTime, parseTime, requireRole, showPageError } from "./session.js";
import { PALETTE, correctionRateChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const RUN_POLL_BUSY_MS = 2000;
const RUN_POLL_IDLE_MS = 10000;
const ADAPTER_POLL_MS = 10000;

function status(message) {
  const banner = $("admin-status");
  banner.textContent = message;
  banner.hidden = !message;
}

function facts(list, pairs) {
  list.replaceChildren(...pairs.flatMap(([term, value]) => [element("dt", { text: term }), element("dd", { text: String(value) })]));
}

function percent(value) {
  return `${(value * 100).toFixed(0)}%`;
}

// Eval metrics are a free-form dict (chrF, loss, golden...): show numbers, flatten one level of nesting.
function metricEntries(metrics) {
  const number = (value) => String(Number(value.toFixed(3)));
  const entries = [];
  // the refresh's simulated correction rate on held-out replies: the figure a support lead reads first
  const heldOut = metrics && metrics.held_out;
  if (heldOut && typeof heldOut.correction_rate === "number") entries.push(["held-out corrections", percent(heldOut.correction_rate)]);
  for (const [name, value] of Object.entries(metrics || {})) {
    if (typeof value === "number") entries.push([name, number(value)]);
    else if (value && typeof value === "object") {
      for (const [inner, innerValue] of Object.entries(value)) {
        if (typeof innerValue === "number" && !(name === "held_out" && inner === "correction_rate")) entries.push([`${name}.${inner}`, number(innerValue)]);
      }
    } else if (typeof value === "string" || typeof value === "boolean") entries.push([name, String(value)]);
  }
  return entries;
}

// --- the confirmation dialog ----------------------------------------------------------------
function confirmChange({ title, text, share = false, version = false, action = "Confirm" }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-share-row").hidden = !share;
  $("confirm-version-row").hidden = !version;
  $("confirm-reason").value = "";
  $("confirm-version").value = "";
  $("confirm-error").textContent = "";
  $("confirm-ok").textContent = action;
  dialog.returnValue = "";
  dialog.showModal();
  (share ? $("confirm-share") : $("confirm-reason")).focus();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnValue !== "confirm") return resolve(null);
        const share = $("confirm-share").value.trim();
        resolve({
          reason: $("confirm-reason").value.trim() || null,
          share: share === "" ? NaN : Number(share) / 100,
          version: $("confirm-version").value.trim() || null,
        });
      },
      { once: true },
    );
  });
}

async function change(message, path, body, done) {
  status(message);
  showPageError("");
  try {
    const result = await api(path, { method: "POST", body });
    status(done(result));
  } catch (error) {
    status("");
    showPageError(error instanceof ApiError ? error.message : String(error));
  }
  await loadAdapters();
}

async function promote(version) {
  const answer = await confirmChange({ title: `Promote ${version}?`, text: `Every new reply will come from ${version}, on every replica. The live version stays on disk for rollback.`, action: "Promote" });
  if (answer) await change(`Promoting ${version}…`, `/admin/adapters/${encodeURIComponent(version)}/promote`, { reason: answer.reason }, (r) => `${r.version} is live (was ${r.previous || "the base model"}).`);
}

async function canary(version, stop = false) {
  const answer = await confirmChange(
    stop
      ? { title: `Stop the canary of ${version}?`, text: "New conversations go back to the live version.", action: "Stop canary" }
      : { title: `Canary ${version}?`, text: `A share of new conversations will be answered by ${version}; the rest stay on the live version.`, share: true, action: "Start canary" },
  );
  if (!answer) return;
  const share = stop ? 0 : answer.share;
  if (!stop && !(share > 0 && share <= 1)) {
    showPageError("The canary share must be between 1 and 100 %.");
    return;
  }
  await change(`Setting the canary of ${version}…`, `/admin/adapters/${encodeURIComponent(version)}/canary`, { share, reason: answer.reason }, () => (share ? `${version} answers ${percent(share)} of new conversations.` : `Canary of ${version} stopped.`));
}

async function rollback() {
  const answer = await confirmChange({ title: "Roll back?", text: "The version live before this one (or the one you name) becomes live again, everywhere.", version: true, action: "Roll back" });
  if (answer) await change("Rolling back…", "/admin/adapters/rollback", { version: answer.version, reason: answer.reason }, (r) => `${r.version || "the base model"} is live again (was ${r.previous}).`);
}

// --- serving and versions ------------------------------------------------------------------------
const EVENT_WORDS = { register: "registered", promote: "promoted", rollback: "made live by a rollback", retire: "retired", "rolled-back": "rolled back", canary: "canary", "canary-end": "canary ended", reject: "rejected" };

// What the card calls the version: a retired version that a rollback took off says so.
function shownStatus(adapter, events) {
  return adapter.status === "retired" && events[0]?.action === "rolled-back" ? "rolled back" : adapter.status;
}

function timeline(events) {
  if (!events.length) return null;
  return element(
    "details",
    { class: "version-history" },
    element("summary", { text: `history (${events.length})` }),
    element("ol", { reversed: "" }, ...events.map((e) => element("li", { text: `${formatTime(e.created_at)} ${EVENT_WORDS[e.action] || e.action} by ${e.actor}${e.reason ? ` — “${e.reason}”` : ""}` }))),
  );
}

function versionCard(adapter, events) {
  const lastEvent = events[0];
  const label = shownStatus(adapter, events);
  const buttons = element("div", { class: "actions" });
  const add = (label, handler, kind) => {
    const button = element("button", { type: "button", class: kind, text: label, "data-action": label.toLowerCase().replace(/\W+/g, "-") });
    button.addEventListener("click", handler);
    buttons.append(button);
  };
  if (["candidate", "canary", "retired"].includes(adapter.status)) add("Promote", () => promote(adapter.version), "primary");
  if (["candidate", "retired"].includes(adapter.status)) add("Canary…", () => canary(adapter.version));
  if (adapter.status === "canary") add("Stop canary", () => canary(adapter.version, true));
  const metrics = metricEntries(adapter.metrics);
  const share = adapter.status === "canary" ? ` · ${percent(adapter.canary_share)} of new conversations` : "";
  return element(
    "li",
    { class: `version ${adapter.status}`, "data-version": adapter.version, "data-status": adapter.status, "data-shown-status": label },
    element("div", { class: "version-head" }, element("strong", { text: adapter.version }), element("span", { class: `badge status-${label.replace(" ", "-")}`, text: label })),
    element("p", { class: "muted", text: `registered ${formatTime(adapter.created_at)} · LoRA rank ${adapter.rank}${share}` }),
    lastEvent ? element("p", { class: "muted", text: `last change: ${EVENT_WORDS[lastEvent.action] || lastEvent.action} by ${lastEvent.actor}, ${formatTime(lastEvent.created_at)}${lastEvent.reason ? ` — “${lastEvent.reason}”` : ""}` }) : null,
    metrics.length ? element("dl", { class: "metrics", "aria-label": "evaluation metrics" }, ...metrics.map(([name, value]) => element("div", {}, element("dt", { text: name }), element("dd", { text: value })))) : element("p", { class: "muted", text: "no evaluation metrics recorded" }),
    timeline(events),
    buttons,
  );
}

async function loadAdapters() {
  let adapters;
  let history;
  try {
    [adapters, history] = await Promise.all([api("/admin/adapters"), api("/admin/adapter-history?limit=200")]);
  } catch (error) {
    showPageError(error.message);
    return;
  }
  const serving = adapters.serving;
  facts($("serving"), serving
    ? [
        ["Live", serving.live || "base model (no adapter)"],
        ["Canary", serving.canary ? `${serving.canary} (${percent(serving.canary_share)})` : "none"],
        ["Public model name", serving.public_model],
        ["Replicas", serving.replicas.map((r) => `${r.url} ${r.healthy ? "healthy" : "DOWN"}`).join(", ") || "none"],
        ["Ready", serving.ready ? "yes" : "no"],
      ]
    : [["Model servers", "none attached: promote, rollback and canary need `housestyle serve`"]]);
  $("rollback").disabled = !serving;
  const events = new Map(); // version -> its events, newest first (as the history comes)
  for (const event of history) events.set(event.version, [...(events.get(event.version) || []), event]);
  const newestFirst = [...adapters.adapters].sort((a, b) => parseTime(b.created_at) - parseTime(a.created_at));
  // the cards are rebuilt on every poll: keep keyboard focus and open histories where they were
  const focused = document.activeElement?.closest?.("[data-version]");
  const focus = focused && { version: focused.dataset.version, action: document.activeElement.dataset.action };
  const open = new Set([...document.querySelectorAll("#versions details[open]")].map((d) => d.closest("[data-version]").dataset.version));
  $("versions").replaceChildren(...(newestFirst.length ? newestFirst.map((a) => versionCard(a, events.get(a.version) || [])) : [element("li", { class: "empty", text: "No adapter registered yet; a refresh or `housestyle train` makes one." })]));
  for (const version of open) document.querySelector(`#versions [data-version="${version}"] details`)?.setAttribute("open", "");
  if (focus) {
    const card = document.querySelector(`#versions [data-version="${focus.version}"]`);
    (card?.querySelector(focus.action ? `[data-action="${focus.action}"]` : "summary") || card?.querySelector("button"))?.focus();
  }
}

// --- correction rate chart ---------------------------------------------------------------------------
async function loadChart() {
  const bucketMinutes = Number($("bucket").value);
  let data;
  try {
    data = await api(`/admin/correction-rate?bucket_minutes=${bucketMinutes}`);
  } catch (error) {
    showPageError(error.message);
    return;
  }
  const series = data.series.map((s) => ({ version: s.version, points: s.points.map((p) => ({ ...p, start: parseTime(p.start) })) }));
  const chart = $("chart");
  const table = $("chart-table");
  if (!series.length) {
    chart.replaceChildren(element("p", { class: "empty", text: "No reviews in the last 30 days yet." }));
    table.replaceChildren();
    return;
  }
  const legend = element("ul", { class: "legend", "aria-hidden": "true" }, ...series.map((s, i) => element("li", { "data-color": i % PALETTE.length, text: s.version })));
  chart.replaceChildren(correctionRateChart(series, { bucketMs: bucketMinutes * 60000, label: `Correction rate (drafts edited or rejected) per adapter version, last 30 days: ${series.map((s) => `${s.version} ${percent(s.points[s.points.length - 1].correction_rate)} in the latest bucket`).join("; ")}` }), legend);
  table.replaceChildren(
    element("thead", {}, element("tr", {}, ...["Version", "From", "Reviews", "Edited", "Rejected", "Correction rate"].map((h) => element("th", { scope: "col", text: h })))),
    element("tbody", {}, ...series.flatMap((s) => s.points.map((p) => element("tr", {}, ...[s.version, p.start.toLocaleString(), p.reviews, p.edited, p.rejected, percent(p.correction_rate)].map((v) => element("td", { text: String(v) })))))),
  );
}

// --- refresh runs -----------------------------------------------------------------------------------
let runTimer = null;

async function loadRuns() {
  window.clearTimeout(runTimer);
  let runs;
  try {
    runs = await api("/admin/runs?limit=10");
  } catch (error) {
    showPageError(error.message); // keep the rows shown last time; try again later
    runTimer = window.setTimeout(loadRuns, RUN_POLL_IDLE_MS);
    return false;
  }
  $("runs-empty").hidden = runs.length > 0;
  $("runs").replaceChildren(
    ...runs.map((run) => {
      const bar = element("progress", { max: 1, value: run.progress, "aria-label": `run ${run.id} ${run.step || ""} progress` });
      return element(
        "tr",
        { "data-run-id": run.id, "data-status": run.status },
        element("td", { text: `#${run.id} ${run.kind}` }),
        element("td", {}, element("span", { class: `badge run-${run.status}`, text: run.status }), run.error ? element("div", { class: "field-error", text: run.error }) : null),
        element("td", { text: run.step || "" }),
        element("td", {}, bar, element("span", { class: "muted", text: ` ${percent(run.progress)}` })),
        element("td", { text: run.adapter_version || "" }),
        element("td", { text: formatTime(run.started_at) }),
      );
    }),
  );
  const busy = runs.some((run) => run.status === "running" || run.status === "queued");
  runTimer = window.setTimeout(loadRuns, busy ? RUN_POLL_BUSY_MS : RUN_POLL_IDLE_MS);
  return busy;
}

async function startRefresh() {
  const answer = await confirmChange({ title: "Start a refresh now?", text: "Export the reviewed conversations, train a candidate, evaluate it against the live version and swap it in if it passes the gate. This takes a while; progress shows below.", action: "Start refresh" });
  if (!answer) return;
  try {
    const started = await api("/admin/refresh", { method: "POST" });
    status(started.detail);
  } catch (error) {
    showPageError(error.message);
  }
  await loadRuns();
}

// --- data set -----------------------------------------------------------------------------------------
async function loadStats() {
  let stats;
  let quality;
  try {
    [stats, quality] = await Promise.all([api("/admin/stats"), api("/admin/quality")]);
  } catch (error) {
    showPageError(error.message);
    return;
  }
  const channels = Object.entries(stats.conversations_by_channel).map(([channel, count]) => `${channel} ${count}`).join(", ");
  facts($("stats"), [
    ["Conversations", `${stats.conversations}${channels ? ` (${channels})` : ""}`],
    ["Drafts", stats.drafts],
    ...Object.entries(stats.drafts_by_decision).map(([decision, count]) => [decision[0].toUpperCase() + decision.slice(1), count]),
  ]);
  const rates = new Map(quality.map((q) => [q.version, q]));
  $("version-stats").replaceChildren(
    element("caption", { text: "Drafts per adapter version (live review rates exclude imported history)" }),
    element("thead", {}, element("tr", {}, ...["Version", "Drafts", "Pending", "Approved", "Edited", "Rejected", "Correction rate"].map((h) => element("th", { scope: "col", text: h })))),
    element("tbody", {}, ...stats.per_adapter_version.map((v) => {
      const rate = rates.get(v.adapter_version || "base");
      return element("tr", {}, ...[v.adapter_version || "base", v.drafts, v.pending, v.approved, v.edited, v.rejected, rate ? percent(rate.correction_rate) : "–"].map((value) => element("td", { text: String(value) })));
    })),
  );
}

// --- coverage ------------------------------------------------------------------------------------------
async function loadCoverage() {
  let coverage;
  try {
    coverage = await api("/admin/coverage");
  } catch (error) {
    showPageError(error.message);
    return;
  }
  const report = coverage.report;
  const source = coverage.run_id ? `recorded by refresh run ${coverage.run_id}` : "computed from the store (split rule)";
  $("coverage-source").textContent = `${coverage.live_version} · ${source} · ${report.documents} documents, ` +
    `${report.passages} passages · auto-mode routing ${coverage.routing ? "on" : "off"}`;
  $("coverage-gaps").replaceChildren(...report.gaps.map((gap) => element("li", { text: gap })));
  $("coverage-none").hidden = report.gaps.length > 0;
  const row = (topic) => [topic.name, topic.passages, topic.conversations, topic.splits.train ?? 0,
    topic.splits.validation ?? 0, topic.splits.test ?? 0, topic.reviews.reviews,
    topic.reviews.reviews ? percent(topic.correction_rate) : "–"];
  const head = ["Topic", "Passages", "Conversations", "Train", "Valid", "Test", "Reviews", "Corrected"];
  $("coverage-table").replaceChildren(
    element("thead", {}, element("tr", {}, ...head.map((h) => element("th", { scope: "col", text: h })))),
    element("tbody", {}, ...[...report.products, ...report.intents].map((topic) =>
      element("tr", { class: topic.gaps.length ? "gap" : null },
        ...row(topic).map((value) => element("td", { text: String(value) }))))),
  );
}

async function start() {
  const me = await requireRole(["admin"]);
  if (!me) return;
  $("admin").hidden = false;
  $("rollback").addEventListener("click", rollback);
  $("start-refresh").addEventListener("click", startRefresh);
  $("bucket").addEventListener("change", loadChart);
  await Promise.all([loadAdapters(), loadChart(), loadRuns(), loadStats(), loadCoverage()]);
  window.setInterval(() => {
    if (!$("confirm").open) loadAdapters();
  }, ADAPTER_POLL_MS);
}

start();
