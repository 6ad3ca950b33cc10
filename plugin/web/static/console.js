// The agent console: the review queue, a draft beside its conversation, and approve / edit / reject from the keyboard.

import { api, element, formatClock, formatTime, isTyping, parseTime, requireRole } from "./session.js";
import { renderDiff, wordDiff } from "./worddiff.js";

const QUEUE_POLL_MS = 3000;
const TYPING_EVERY_MS = 2500; // the server shows "An agent is typing…" for a few seconds after each signal
const $ = (id) => document.getElementById(id);

const state = { me: null, queue: [], selected: null, claimed: false, busy: false, typingSent: 0, decisions: 0 };

function claimHolder(item) {
  const live = item.claimed_by && item.claimed_until && parseTime(item.claimed_until) > new Date();
  return live ? item.claimed_by : null;
}

function lastCustomerLine(item) {
  const user = [...item.context].reverse().find((m) => m.role === "user");
  return user ? user.content : "(no customer message)";
}

function renderQueue() {
  const list = $("queue");
  // the list is rebuilt on every poll: keep keyboard focus on the same draft
  const focused = document.activeElement?.dataset?.draftId;
  list.replaceChildren();
  $("queue-count").textContent = `(${state.queue.length})`;
  $("queue-empty").hidden = state.queue.length > 0;
  for (const item of state.queue) {
    const holder = claimHolder(item);
    const button = element(
      "button",
      { type: "button", class: "queue-item", "data-draft-id": item.draft_id, "aria-current": item.draft_id === state.selected?.draft_id ? "true" : null },
      element("span", { class: "queue-line", text: lastCustomerLine(item) }),
      element("span", { class: "muted", text: `#${item.draft_id} · ${item.channel} · ${formatTime(item.created_at)}` }),
      holder ? element("span", { class: holder === state.me.name ? "badge mine" : "badge held", text: holder === state.me.name ? "claimed by you" : `claimed by ${holder}` }) : null,
    );
    button.addEventListener("click", () => select(item.draft_id));
    list.append(element("li", {}, button));
  }
  if (focused) list.querySelector(`[data-draft-id="${focused}"]`)?.focus();
}

async function loadQueue() {
  const epoch = state.decisions;
  let queue;
  try {
    queue = await api("/reviews/queue?limit=100");
  } catch (error) {
    showResult(error.message, "error");
    return;
  }
  if (epoch !== state.decisions) return; // asked before the last decision: it would bring the decided draft back
  state.queue = queue;
  renderQueue();
  if (state.selected && !state.queue.some((item) => item.draft_id === state.selected.draft_id) && !state.busy) {
    clearReview();
    showResult("That draft was reviewed elsewhere; pick the next one.", "info");
  }
}

function showResult(message, kind = "ok") {
  const banner = $("review-result");
  banner.textContent = message;
  banner.className = `banner ${kind}`;
  banner.hidden = !message;
}

function setActionsEnabled(enabled) {
  for (const id of ["approve", "edit", "reject"]) $(id).disabled = !enabled;
}

function clearReview() {
  state.selected = null;
  state.claimed = false;
  $("review").hidden = true;
  $("review-placeholder").hidden = false;
  closeForms();
  renderQueue();
}

function renderReview(item) {
  $("review-placeholder").hidden = true;
  $("review").hidden = false;
  $("review-title").textContent = `Draft #${item.draft_id}`;
  const transcript = $("context");
  transcript.replaceChildren(
    ...item.context.map((m) =>
      element("li", { class: `turn ${m.role}` }, element("span", { class: "speaker", text: m.role === "user" ? "Customer" : "Support" }), element("span", { text: m.content })),
    ),
  );
  $("draft-text").textContent = item.draft;
  // auto mode handed this one to an agent first (no usable reply, a topic the model has not learned): say why
  $("handoff").hidden = !item.handoff_reason;
  $("handoff").textContent = item.handoff_reason ? `Sent to you before the customer sees it: ${item.handoff_reason}` : "";
  $("draft-version").textContent = item.adapter_version ? `· ${item.adapter_version}` : "· base model";
  // the knowledge-base passages the draft's prompt carried: the agent checks its facts against them
  const passages = item.passages || [];
  $("passages").hidden = passages.length === 0;
  $("passages-title").textContent = `Knowledge the draft was given (${passages.length})`;
  $("passage-list").replaceChildren(
    ...passages.map((p) =>
      element("li", { class: "passage" },
        element("strong", { text: p.title }),
        element("span", { class: "muted", text: ` · ${p.document} · score ${p.score.toFixed(2)}` }),
        element("p", { text: p.text || "(removed from the knowledge base since)" })),
    ),
  );
  // the brand's past replies (answer memory) the draft's prompt carried: one that no longer holds is marked outdated
  const recalled = item.recalled || [];
  $("recalled").hidden = recalled.length === 0;
  $("recalled-title").textContent = `Past replies the draft leaned on (${recalled.length})`;
  $("recalled-list").replaceChildren(
    ...recalled.map((r) => {
      const button = element("button", { type: "button", text: "Outdated" });
      button.title = "Never offer this reply as an example again";
      button.addEventListener("click", () => markOutdated(item, r, button));
      return element("li", { class: "passage" },
        element("strong", { text: `Customer: ${r.customer}` }),
        element("span", { class: "muted", text: ` · score ${r.score.toFixed(2)} ` }), button,
        element("p", { text: `Agent: ${r.reply}` }));
    }),
  );
  closeForms();
}

async function markOutdated(item, recalled, button) {
  button.disabled = true;
  try {
    await api(`/reviews/${item.draft_id}/recalled/${recalled.review_id}/outdated`, { method: "POST", body: {} });
    button.textContent = "Marked outdated";
    showResult("That past reply is never offered as an example again.");
  } catch (error) {
    button.disabled = false;
    showResult(error.message, "error");
  }
}

// Opening another draft gives back the one this agent claimed but did not decide, so it is not held for nobody.
function releaseClaim(item) {
  api(`/reviews/${item.draft_id}/release`, { method: "POST", body: {} }).then(
    () => { item.claimed_by = null; item.claimed_until = null; renderQueue(); },
    () => {}, // reviewed or taken over meanwhile: nothing to give back
  );
}

async function select(draftId) {
  const item = state.queue.find((candidate) => candidate.draft_id === draftId);
  if (!item) return;
  if (state.selected && state.claimed && state.selected.draft_id !== draftId) releaseClaim(state.selected);
  state.selected = item;
  state.claimed = false;
  state.typingSent = 0;
  showResult("");
  renderReview(item);
  renderQueue();
  setActionsEnabled(false);
  const status = $("claim-status");
  status.className = "claim";
  status.textContent = "Claiming…";
  try {
    const claim = await api(`/reviews/${draftId}/claim`, { method: "POST", body: {} });
    if (state.selected !== item) {
      releaseClaim(item); // the agent moved on while the claim was in flight
      return;
    }
    state.claimed = true;
    status.textContent = `Claimed by you (${claim.claimed_by}) until ${formatClock(claim.claimed_until)}; other agents cannot take it meanwhile.`;
    setActionsEnabled(true);
    item.claimed_by = claim.claimed_by;
    item.claimed_until = claim.claimed_until;
    renderQueue();
  } catch (error) {
    if (state.selected !== item) return; // an answer about a draft the agent has left: the current one decides
    status.className = "claim conflict";
    status.textContent = error.status === 409 ? `Conflict (409): ${error.message}. Pick another draft.` : error.message;
  }
}

// Tell the customer's widget that this agent is writing (throttled; a failed signal never blocks the agent).
function signalTyping() {
  const item = state.selected;
  if (!state.claimed || !item || Date.now() - state.typingSent < TYPING_EVERY_MS) return;
  state.typingSent = Date.now();
  api(`/reviews/${item.draft_id}/typing`, { method: "POST", body: {} }).then(
    (claim) => { item.claimed_until = claim.claimed_until; },
    () => { state.typingSent = 0; },
  );
}

function closeForms() {
  $("edit-form").hidden = true;
  $("reject-form").hidden = true;
}

function openEdit() {
  if (!state.claimed) return;
  closeForms();
  $("edit-form").hidden = false;
  const box = $("edit-text");
  box.value = state.selected.draft;
  renderDiff($("diff"), wordDiff(state.selected.draft, box.value));
  box.focus();
}

function openReject() {
  if (!state.claimed) return;
  closeForms();
  $("reject-form").hidden = false;
  $("reject-reply").value = "";
  $("reject-reason").value = "";
  $("reject-reply").focus();
}

const OUTCOME = {
  approve: "Approved: the draft went to the customer unchanged.",
  edit: "Edited: your text went to the customer; the draft is kept for training.",
  reject: "Rejected: the draft was not sent.",
};

async function decide(action, body) {
  if (!state.claimed || state.busy) return;
  const item = state.selected;
  state.busy = true;
  setActionsEnabled(false);
  try {
    await api(`/reviews/${item.draft_id}/${action}`, { method: "POST", body });
  } catch (error) {
    showResult(error.status === 409 ? `Conflict (409): ${error.message}` : error.message, "error");
    setActionsEnabled(state.claimed);
    state.busy = false;
    return;
  }
  state.decisions += 1;
  const index = state.queue.findIndex((candidate) => candidate.draft_id === item.draft_id);
  state.queue = state.queue.filter((candidate) => candidate.draft_id !== item.draft_id);
  clearReview();
  showResult(`Draft #${item.draft_id} — ${OUTCOME[action]}`, "ok");
  state.busy = false;
  // focus (not claim) the next draft: opening it is the agent's choice, so nothing is held by someone who walked away
  const next = state.queue[Math.min(index, state.queue.length - 1)];
  if (next) document.querySelector(`[data-draft-id="${next.draft_id}"]`)?.focus();
}

function move(step) {
  if (!state.queue.length) return;
  const index = state.queue.findIndex((item) => item.draft_id === state.selected?.draft_id);
  const next = state.queue[Math.max(0, Math.min(state.queue.length - 1, index + step))];
  if (next && next.draft_id !== state.selected?.draft_id) {
    select(next.draft_id);
    document.querySelector(`[data-draft-id="${next.draft_id}"]`)?.focus();
  }
}

function bindKeys() {
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && (!$("edit-form").hidden || !$("reject-form").hidden)) {
      closeForms();
      $("edit").focus();
      return;
    }
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      const form = event.target.closest?.("form");
      if (form && (form.id === "edit-form" || form.id === "reject-form")) {
        event.preventDefault();
        form.requestSubmit();
      }
      return;
    }
    if (isTyping(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = { a: () => decide("approve", {}), e: openEdit, r: openReject, j: () => move(1), k: () => move(-1) };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });
}

function bindButtons() {
  $("approve").addEventListener("click", () => decide("approve", {}));
  $("edit").addEventListener("click", openEdit);
  $("reject").addEventListener("click", openReject);
  $("edit-cancel").addEventListener("click", closeForms);
  $("reject-cancel").addEventListener("click", closeForms);
  $("reload-queue").addEventListener("click", loadQueue);
  $("edit-text").addEventListener("input", (event) => {
    renderDiff($("diff"), wordDiff(state.selected.draft, event.target.value));
    signalTyping();
  });
  $("reject-reply").addEventListener("input", signalTyping);
  $("edit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("edit-text").value.trim();
    if (!text) {
      showResult("The edited reply is empty; write the reply or reject the draft.", "error");
      return;
    }
    decide(text === state.selected.draft.trim() ? "approve" : "edit", text === state.selected.draft.trim() ? {} : { final_text: text });
  });
  $("reject-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const reply = $("reject-reply").value.trim();
    const reason = $("reject-reason").value.trim();
    decide("reject", { reply: reply || null, reason: reason || null });
  });
}

async function start() {
  state.me = await requireRole(["agent", "admin"]);
  if (!state.me) return;
  $("console").hidden = false;
  bindButtons();
  bindKeys();
  await loadQueue();
  window.setInterval(loadQueue, QUEUE_POLL_MS);
}

start();
