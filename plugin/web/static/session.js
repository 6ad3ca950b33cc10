// The signed-in API key (sessionStorage: this tab only), API calls with it, and the role-aware page frame.

const STORE = window.sessionStorage;
const KEY = "housestyle.key";
const BRAND = "housestyle.brand";
const ROOT = document.body.dataset.root || "";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export function url(path) {
  return ROOT + path;
}

export function apiKey() {
  return STORE.getItem(KEY);
}

export function saveKey(key) {
  STORE.setItem(KEY, key);
}

export function forgetKey() {
  STORE.removeItem(KEY);
  STORE.removeItem(BRAND);
}

// The brand this tab works on (a key of several brands picks one in the top bar); every API call names it.
export function currentBrand() {
  return STORE.getItem(BRAND);
}

function withBrand(path) {
  const brand = currentBrand();
  if (!brand || path === "/me") return path;
  return `${path}${path.includes("?") ? "&" : "?"}brand=${encodeURIComponent(brand)}`;
}

// A key of several brands: a switcher in the top bar; the page reloads on the chosen brand.
function showBrandSwitcher(brands) {
  const names = brands.map((brand) => brand.name);
  if (!names.includes(currentBrand())) {
    if (names.length > 0) STORE.setItem(BRAND, names[0]);
    else STORE.removeItem(BRAND);
  }
  const switcher = document.getElementById("brand-switcher");
  if (brands.length < 2) return;
  const select = switcher.querySelector("select");
  for (const brand of brands) {
    select.append(element("option", { value: brand.name, text: `${brand.company_name} (${brand.name})`,
                                      selected: brand.name === currentBrand() }));
  }
  select.addEventListener("change", () => {
    STORE.setItem(BRAND, select.value);
    window.location.reload();
  });
  switcher.hidden = false;
}

// One way to call the API: JSON in and out, the key as Bearer, failures as ApiError with the server's own message.
export async function api(path, { method = "GET", body, key = apiKey() } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url(withBrand(path)), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError(0, "the HouseStyle service cannot be reached; check that it runs");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (error) {
    data = null;
  }
  if (!response.ok) {
    let detail = data && data.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    throw new ApiError(response.status, detail || `${response.status} ${response.statusText}`);
  }
  return data;
}

export function showPageError(message) {
  const banner = document.getElementById("page-error");
  banner.textContent = message;
  banner.hidden = !message;
}

function goToLogin() {
  const next = window.location.pathname + window.location.search;
  window.location.assign(url(`/ui/login?next=${encodeURIComponent(next)}`));
}

// Ask the server who the key is, show the links that role may use, and stop if it may not use this page.
export async function requireRole(roles) {
  if (!apiKey()) {
    goToLogin();
    return null;
  }
  let me;
  try {
    me = await api("/me");
  } catch (error) {
    if (error.status === 401) {
      forgetKey();
      goToLogin();
      return null;
    }
    showPageError(error.message);
    return null;
  }
  for (const link of document.querySelectorAll("#nav [data-roles]")) {
    link.hidden = !link.dataset.roles.split(" ").includes(me.role);
    if (link.getAttribute("href") === window.location.pathname) link.setAttribute("aria-current", "page");
  }
  document.getElementById("nav").hidden = false;
  showBrandSwitcher(me.brands || []);
  document.getElementById("who").textContent = `${me.name} (${me.role})`;
  const logout = document.getElementById("logout");
  logout.hidden = false;
  logout.addEventListener("click", () => {
    forgetKey();
    window.location.assign(url("/ui/login"));
  });
  if (!roles.includes(me.role)) {
    showPageError(`This page needs a key with role ${roles.join(" or ")}; you are logged in as ${me.role} key '${me.name}'.`);
    return null;
  }
  return me;
}

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// The store keeps UTC; SQLite hands times back without a zone, which Date would read as local time.
export function parseTime(iso) {
  return new Date(/(Z|[+-]\d\d:?\d\d)$/.test(iso) ? iso : `${iso}Z`);
}

export function formatTime(iso) {
  if (!iso) return "";
  return parseTime(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function formatClock(iso) {
  return iso ? parseTime(iso).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" }) : "";
}

export function isTyping(event) {
  const target = event.target;
  return target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}
