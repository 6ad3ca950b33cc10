// Log in: check the key against /me, keep it for this tab, and go where that role works.

import { api, saveKey, url } from "./session.js";

const HOME_BY_ROLE = { agent: "/ui/console", admin: "/ui/admin" };

// Only a page of this service: a crafted ?next= (//evil, /\evil, https://evil) must not send the key holder elsewhere.
function sameSitePath(next) {
  if (!next) return null;
  const target = new URL(next, window.location.origin);
  return target.origin === window.location.origin && target.pathname.startsWith(url("/ui/"))
    ? target.pathname + target.search + target.hash
    : null;
}

const form = document.getElementById("login-form");
const input = document.getElementById("api-key");
const error = document.getElementById("login-error");
input.focus();

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = input.value.trim();
  error.textContent = "";
  if (!key) {
    error.textContent = "Paste an API key first.";
    input.focus();
    return;
  }
  let me;
  try {
    me = await api("/me", { key });
  } catch (failure) {
    error.textContent = failure.status === 401 ? "This key is unknown or revoked; ask an admin for a new one." : failure.message;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  if (me.role === "widget") {
    // widget keys are public by design (every embedding page shows one): the demo site carries it in its address
    window.location.assign(url(`/ui/demo-site?key=${encodeURIComponent(key)}`));
    return;
  }
  saveKey(key);
  const next = new URLSearchParams(window.location.search).get("next");
  // only same-site paths: a crafted ?next= must not send the key holder elsewhere
  const target = sameSitePath(next) || url(HOME_BY_ROLE[me.role]);
  window.location.assign(target);
});
