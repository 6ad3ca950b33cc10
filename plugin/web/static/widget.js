// HouseStyle chat widget: embed with
//   <script src="https://HOUSESTYLE/ui/widget.js" data-key="WIDGET_KEY" data-channel="web" defer></script>
// It builds a chat bubble and window inside a shadow root (the host page's CSS cannot break it), streams auto-mode
// replies, and in assist mode says whether an agent has the draft or is typing until the agent's final text arrives.
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || !script.dataset.key) {
    console.warn("HouseStyle widget: add data-key=\"WIDGET_KEY\" to the <script> tag");
    return;
  }
  var scriptUrl = new URL(script.src, window.location.href);
  var BASE = scriptUrl.origin + scriptUrl.pathname.replace(/\/ui\/widget\.js$/, "");
  var KEY = script.dataset.key;
  var CHANNEL = script.dataset.channel || "web";
  var MODE = script.dataset.mode || null;
  var TITLE = script.dataset.title || "Support";
  // a signed-in customer, if the site knows them: HouseStyle redacts these exactly and may greet them by name
  var CUSTOMER_NAME = script.dataset.customerName || null;
  var CUSTOMER_EMAIL = script.dataset.customerEmail || null;
  var STORAGE = "housestyle.widget." + CHANNEL + "." + KEY.slice(-8);
  var POLL_MS = 1500;

  var PHONE = window.matchMedia("(max-width: 480px)"); // the window takes the whole screen: it becomes modal
  // seen: transcript positions already on screen; echoes: the customer's own messages shown before the server has them
  // `token`: the conversation's secret from the answer that started it; only this tab has it
  var state = { conversation: null, token: null, seen: new Set(), echoes: [], busy: false, polling: null, open: false };

  // --- DOM ---------------------------------------------------------------------------------------
  var host = document.createElement("div");
  host.id = "housestyle-widget";
  var shadow = host.attachShadow({ mode: "open" });
  var sheet = document.createElement("link");
  sheet.rel = "stylesheet";
  sheet.href = BASE + "/ui/static/widget.css";
  shadow.append(sheet);

  function node(tag, attributes, text) {
    var el = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) { el.setAttribute(name, attributes[name]); });
    if (text) el.textContent = text;
    return el;
  }

  var bubble = node("button", { type: "button", class: "bubble", "aria-label": "Chat with " + TITLE, "aria-expanded": "false", "aria-controls": "hs-panel" });
  bubble.innerHTML = '<svg viewBox="0 0 24 24" width="28" height="28" aria-hidden="true" focusable="false"><path fill="currentColor" d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"/></svg>';
  var panel = node("section", { id: "hs-panel", class: "panel", role: "dialog", "aria-labelledby": "hs-title", hidden: "" });
  var header = node("header", { class: "head" });
  var title = node("h2", { id: "hs-title" }, TITLE);
  var close = node("button", { type: "button", class: "close", "aria-label": "Close chat" }, "×");
  header.append(title, close);
  var log = node("ol", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Messages" });
  var statusLine = node("p", { class: "status", role: "status", "aria-live": "polite" });
  var form = node("form", { class: "composer" });
  var label = node("label", { for: "hs-input", class: "visually-hidden" }, "Your message");
  var input = node("textarea", { id: "hs-input", rows: "1", placeholder: "Type your question…", maxlength: "8000", "aria-describedby": "hs-help" });
  var help = node("span", { id: "hs-help", class: "visually-hidden" }, "Enter sends, Shift+Enter adds a line, Escape closes the chat.");
  var send = node("button", { type: "submit", class: "send" }, "Send");
  form.append(label, input, help, send);
  panel.append(header, log, statusLine, form);
  shadow.append(bubble, panel);

  function mount() {
    document.body.append(host);
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);

  // --- rendering ---------------------------------------------------------------------------------
  function addMessage(role, text) {
    var item = node("li", { class: "msg " + (role === "user" ? "user" : "agent") });
    var who = node("span", { class: "visually-hidden" }, role === "user" ? "You said: " : TITLE + " said: ");
    var body = node("span", { class: "text" }, text);
    item.append(who, body);
    log.append(item);
    log.scrollTop = log.scrollHeight;
    return body;
  }

  function setStatus(text, kind) {
    statusLine.textContent = text || "";
    statusLine.className = "status" + (kind ? " " + kind : "");
  }

  function setBusy(busy) {
    state.busy = busy;
    send.disabled = busy;
    input.setAttribute("aria-busy", busy ? "true" : "false");
  }

  // --- API -----------------------------------------------------------------------------------------
  function call(path, options) {
    options = options || {};
    var headers = { Authorization: "Bearer " + KEY };
    if (state.token) headers["X-Conversation-Token"] = state.token;
    if (options.body) headers["Content-Type"] = "application/json";
    return fetch(BASE + path, { method: options.method || "GET", headers: headers, body: options.body ? JSON.stringify(options.body) : undefined });
  }

  function detailText(detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map(function (item) { return item.msg || String(item); }).join("; ");
    return "";
  }

  function failure(response) {
    return response.json().then(
      function (data) { return new Error(detailText(data && data.detail) || "the chat service answered " + response.status); },
      function () { return new Error("the chat service answered " + response.status); }
    );
  }

  function ensureConversation() {
    if (state.conversation) return Promise.resolve(state.conversation);
    var body = { channel: CHANNEL };
    if (MODE) body.mode = MODE;
    if (CUSTOMER_NAME) body.customer_name = CUSTOMER_NAME;
    if (CUSTOMER_EMAIL) body.customer_email = CUSTOMER_EMAIL;
    return call("/widget/conversations", { method: "POST", body: body }).then(function (response) {
      if (!response.ok) return failure(response).then(function (error) { throw error; });
      return response.json().then(function (data) {
        state.conversation = data.conversation_id;
        state.token = data.conversation_token;
        window.sessionStorage.setItem(STORAGE, JSON.stringify({ id: state.conversation, token: state.token }));
        return state.conversation;
      });
    });
  }

  // Server-sent events over fetch (EventSource cannot POST or send a key): split on blank lines, read event + data.
  function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) return;
        buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, "\n");
        var end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          var block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          var name = "message";
          var data = [];
          block.split("\n").forEach(function (line) {
            if (line.indexOf("event:") === 0) name = line.slice(6).trim();
            else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
          });
          if (data.length) onEvent(name, JSON.parse(data.join("\n")));
        }
        return pump();
      });
    }
    return pump();
  }

  function history() {
    return call("/widget/conversations/" + encodeURIComponent(state.conversation)).then(function (response) {
      if (!response.ok) return failure(response).then(function (error) { throw error; });
      return response.json();
    });
  }

  // Show messages the customer has not seen yet (the agent's final text in assist mode). Positions, not counts: a
  // draft waiting for an agent holds a slot, so a second question can land after it and the reply before it.
  function showNew(conversation) {
    conversation.messages.forEach(function (message) {
      if (message.role === "system" || state.seen.has(message.position)) return;
      state.seen.add(message.position);
      if (message.role === "user") {
        var echo = state.echoes.indexOf(message.content);
        if (echo >= 0) {
          state.echoes.splice(echo, 1); // already on screen since the customer sent it
          return;
        }
      }
      addMessage(message.role, message.content);
    });
  }

  // what the customer is told while an agent has the draft (the agent is never named)
  var ACTIVITY = {
    waiting: ["Waiting for an agent to review the reply…", "waiting"],
    reviewing: ["An agent is reviewing the reply…", "waiting"],
    typing: ["An agent is typing…", "typing"],
    delayed: ["We have your message; the reply follows in a moment…", "waiting"],
  };

  function showActivity(activity) {
    var shown = ACTIVITY[activity] || ACTIVITY.waiting;
    setStatus(shown[0], shown[1]);
  }

  function waitForAgent(activity) {
    showActivity(activity);
    window.clearTimeout(state.polling);
    state.polling = window.setTimeout(function poll() {
      history().then(function (conversation) {
        showNew(conversation);
        if (conversation.awaiting_agent || conversation.awaiting_reply) {
          showActivity(conversation.awaiting_agent ? conversation.agent_activity : activity);
          state.polling = window.setTimeout(poll, POLL_MS);
        } else {
          setStatus("");
        }
      }, function () {
        state.polling = window.setTimeout(poll, POLL_MS * 4);
      });
    }, POLL_MS);
  }

  function sendMessage(text) {
    setBusy(true);
    setStatus("");
    addMessage("user", text);
    state.echoes.push(text);
    var streamed = null;
    var received = "";
    var ended = false;
    return ensureConversation()
      .then(function (id) {
        setStatus(TITLE + " is typing…", "typing");
        return call("/widget/conversations/" + encodeURIComponent(id) + "/messages", { method: "POST", body: { content: text, stream: true } });
      })
      .then(function (response) {
        if (response.status === 503 && response.headers.get("X-Message-Stored") === "true") {
          ended = true;  // the message is kept and the service answers once a model is back: wait, never resend
          waitForAgent("delayed");
          return;
        }
        if (!response.ok) return failure(response).then(function (error) { throw error; });
        return readEvents(response, function (name, data) {
          if (name === "delta") {
            if (!streamed) streamed = addMessage("assistant", "");
            received += data.text;
            streamed.textContent = received;
            log.scrollTop = log.scrollHeight;
          } else if (name === "reply") {
            ended = true;
            if (!streamed) streamed = addMessage("assistant", "");
            streamed.textContent = data.reply.content;
            state.seen.add(data.reply.position);
            setStatus("");
          } else if (name === "awaiting_agent") {
            ended = true;
            waitForAgent("waiting");
          } else if (name === "error") {
            ended = true;
            throw new Error(detailText(data.detail) || "the reply failed");
          }
        }).then(function () {
          if (!ended) throw new Error("the connection closed before the reply was complete");
        });
      })
      .catch(function (error) {
        setStatus("Sorry, your message could not be answered right now (" + error.message + "). Please try again in a moment.", "error");
      })
      .then(function () {
        setBusy(false);
      });
  }

  // --- behaviour -----------------------------------------------------------------------------------
  function openPanel() {
    state.open = true;
    panel.hidden = false;
    if (PHONE.matches) panel.setAttribute("aria-modal", "true");
    else panel.removeAttribute("aria-modal");
    bubble.setAttribute("aria-expanded", "true");
    host.classList.add("open");
    input.focus();
  }

  function closePanel() {
    state.open = false;
    panel.hidden = true;
    bubble.setAttribute("aria-expanded", "false");
    host.classList.remove("open");
    bubble.focus();
  }

  bubble.addEventListener("click", function () {
    if (state.open) closePanel();
    else openPanel();
  });
  close.addEventListener("click", closePanel);
  panel.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      event.preventDefault();
      closePanel();
    } else if (event.key === "Tab" && PHONE.matches) {
      // full screen on a phone: Tab cycles inside the chat instead of wandering into the hidden page behind it
      var stops = [close, input, send].filter(function (el) { return !el.disabled; });
      var at = stops.indexOf(shadow.activeElement);
      var next = event.shiftKey ? (at <= 0 ? stops.length - 1 : at - 1) : (at === stops.length - 1 ? 0 : at + 1);
      event.preventDefault();
      stops[next].focus();
    }
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text || state.busy) return;
    input.value = "";
    sendMessage(text);
  });

  // a reload keeps the conversation of this tab (and picks up an agent reply that arrived meanwhile)
  var saved = null;
  try { saved = JSON.parse(window.sessionStorage.getItem(STORAGE) || "null"); } catch (ignored) { saved = null; }
  if (saved && saved.id && saved.token) {
    state.conversation = saved.id;
    state.token = saved.token;
    history().then(function (conversation) {
      showNew(conversation);
      if (conversation.awaiting_agent) waitForAgent(conversation.agent_activity);
    }, function () {
      state.conversation = state.token = null;
      window.sessionStorage.removeItem(STORAGE);
    });
  }
})();
