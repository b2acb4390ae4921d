// The ccproxy dashboard: plain DOM, no framework, no build step. Data comes from the proxy's own JSON
// endpoints through /dashboard/api/... and the live stream /dashboard/live (see ccproxy/dashboard).
const $ = (sel, root = document) => root.querySelector(sel);
const API = "/dashboard/api";
const MAX_LIVE_ROWS = 500;
const FOLD_AT = 400; // characters: longer tool-input values are folded
const state = { csrf: null, accounts: false, view: "overview", paused: false, held: [], timers: [], streams: [] };

class LoginNeeded extends Error {}

async function call(url, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.body !== undefined) headers["content-type"] = "application/json";
  if (options.method && options.method !== "GET" && state.csrf) headers["x-csrf-token"] = state.csrf;
  const res = await fetch(url, { credentials: "same-origin", ...options, headers });
  if (res.status === 401) { showLogin(); throw new LoginNeeded(); }
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw Object.assign(new Error(body?.error?.message || `${res.status} ${res.statusText}`), { body });
  return body;
}
const getJSON = (url) => call(url);
const postJSON = (url, data) => call(url, { method: "POST", body: JSON.stringify(data) });

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}
function row(cells, cls = []) {
  return el("tr", {}, ...cells.map((c, i) => el("td", cls[i] ? { class: cls[i] } : {}, c ?? "")));
}
const fmtInt = (n) => Number(n || 0).toLocaleString("en-US");
const fmtCost = (n) => (n == null ? "–" : "$" + Number(n).toFixed(n && n < 0.01 ? 4 : 2));
const fmtMs = (n) => (n >= 1000 ? (n / 1000).toFixed(2) + " s" : Math.round(n) + " ms");
const tokensOf = (r) => (r.input_tokens || 0) + (r.output_tokens || 0) + (r.cache_read_tokens || 0) + (r.cache_write_tokens || 0);
function fmtTime(ts) { return new Date(ts * 1000).toLocaleTimeString("en-GB"); }
function countdown(iso) {
  let s = Math.max(0, Math.round((Date.parse(iso) - Date.now()) / 1000));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s}s`;
}
function setStatus(text) { $("#status").textContent = text; }

// ---- theme
function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme; else delete document.documentElement.dataset.theme;
}
applyTheme(localStorage.getItem("ccproxy-theme"));
$("#theme").addEventListener("click", () => {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  const next = dark ? "light" : "dark";
  localStorage.setItem("ccproxy-theme", next);
  applyTheme(next);
});

// ---- login
function showLogin() {
  $("#login").hidden = false;
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("#nav").hidden = true;
}
$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("#login-error").textContent = "";
  try {
    const res = await fetch("/dashboard/login", {
      method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: $("#login-token").value }),
    });
    const body = await res.json();
    if (!res.ok) { $("#login-error").textContent = body?.error?.message || "login failed"; return; }
    state.csrf = body.csrf;
    $("#login-token").value = "";
    $("#login").hidden = true;
    $("#nav").hidden = false;
    start();
  } catch (err) { $("#login-error").textContent = String(err); }
});
$("#logout").addEventListener("click", async () => {
  await call("/dashboard/logout", { method: "POST", body: "{}" });
  location.reload();
});

// ---- navigation
function show(view) {
  state.view = view;
  for (const b of document.querySelectorAll("#nav button")) {
    if (b.dataset.view === view) b.setAttribute("aria-current", "page"); else b.removeAttribute("aria-current");
  }
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + view;
  history.replaceState(null, "", "#" + view);
  refresh();
}
$("#nav").addEventListener("click", (e) => { const b = e.target.closest("button"); if (b) show(b.dataset.view); });

const loaders = { overview: loadOverview, usage: loadUsage, accounts: loadAccounts, permissions: loadPermissions, health: loadHealth };
async function refresh() {
  const load = loaders[state.view];
  if (!load) return;
  try { await load(); setStatus("updated " + new Date().toLocaleTimeString("en-GB")); } catch (err) {
    if (!(err instanceof LoginNeeded)) setStatus(String(err.message || err));
  }
}

// ---- overview
const today = () => new Date().toISOString().slice(0, 10);
const monthStart = () => new Date().toISOString().slice(0, 8) + "01";
async function loadOverview() {
  const [info, hour, day, month] = await Promise.all([
    getJSON("/dashboard/info"),
    getJSON(`${API}/usage?since=1h&by=provider`),
    getJSON(`${API}/usage?since=${today()}&by=provider`),
    getJSON(`${API}/usage?since=${monthStart()}&by=provider`),
  ]);
  $("#up-since").textContent = new Date(info.started * 1000).toLocaleString("en-GB");
  $("#version").textContent = info.version + (info.mock ? " (offline mode)" : "");
  const t = hour.total;
  $("#rpm").textContent = (t.requests / 60).toFixed(2);
  $("#errors-hour").textContent = fmtInt(t.errors);
  $("#latency").textContent = t.requests ? `${fmtMs(t.p50_ms)} / ${fmtMs(t.p95_ms)}` : "–";
  $("#ttfb").textContent = t.requests ? `${fmtMs(t.p50_ttfb_ms)} / ${fmtMs(t.p95_ttfb_ms)}` : "–";
  const providers = [...new Set([...day.rows, ...month.rows].map((r) => r.key))].sort();
  const body = $("#periods tbody");
  const num = ["", "num", "num", "num", "num", "num", "num"];
  const line = (name, d, m) => row([name, fmtInt(d?.requests), fmtInt(tokensOf(d || {})), fmtCost(d?.cost_usd ?? 0),
    fmtInt(m?.requests), fmtInt(tokensOf(m || {})), fmtCost(m?.cost_usd ?? 0)], num);
  body.replaceChildren(...providers.map((p) => line(p, day.rows.find((r) => r.key === p), month.rows.find((r) => r.key === p))));
  const total = line("All", day.total, month.total);
  total.id = "periods-total";
  body.append(total);
}

// ---- live
function startLive() {
  const source = new EventSource("/dashboard/live");
  state.streams.push(source);
  source.addEventListener("request", (e) => {
    const r = JSON.parse(e.data);
    if (state.paused) { state.held.push(r); $("#live-note").textContent = `paused: ${state.held.length} new`; return; }
    addLive(r);
  });
  source.addEventListener("dropped", (e) => {
    $("#live-note").textContent = `${JSON.parse(e.data).dropped} rows skipped: this page fell behind`;
  });
  source.addEventListener("error", () => setStatus("live stream reconnecting…"));
}
function addLive(r) {
  const tr = row([fmtTime(r.ts), r.client || "–", r.route, r.model || "–", r.account || "–", String(r.status),
    `${fmtInt(r.input_tokens)} / ${fmtInt(r.output_tokens)}`, fmtCost(r.cost_usd), fmtMs(r.duration_ms)],
    ["", "", "", "", "", r.status >= 400 ? "s-error" : "s-ok", "num", "num", "num"]);
  tr.dataset.id = r.id;
  const body = $("#live tbody");
  body.prepend(tr);
  applyFilter(tr);
  while (body.rows.length > MAX_LIVE_ROWS) body.lastElementChild.remove();
}
function applyFilter(tr) {
  const q = $("#filter").value.trim().toLowerCase();
  tr.hidden = q !== "" && !tr.textContent.toLowerCase().includes(q);
}
$("#filter").addEventListener("input", () => { for (const tr of $("#live tbody").rows) applyFilter(tr); });
$("#pause").addEventListener("click", () => {
  state.paused = !state.paused;
  $("#pause").textContent = state.paused ? "Resume" : "Pause";
  if (!state.paused) { state.held.splice(0).forEach(addLive); $("#live-note").textContent = ""; }
});

// ---- usage: charts drawn as inline SVG
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) { const n = document.createElementNS(SVG, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); return n; }
function barChart(target, items, value, format) {
  const W = 480, H = 200, left = 8, bottom = 34, top = 16;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  const max = Math.max(...items.map(value), 0);
  root.append(svg("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, class: "axis" }));
  if (!items.length || !max) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }); t.textContent = "no data in this window"; root.append(t);
  }
  const slot = (W - left) / Math.max(items.length, 1);
  const bar = Math.max(2, Math.min(48, slot * 0.7));
  items.forEach((item, i) => {
    const v = value(item), h = max ? ((H - bottom - top) * v) / max : 0;
    const x = left + i * slot + (slot - bar) / 2;
    const rect = svg("rect", { x, y: H - bottom - h, width: bar, height: h, class: i % 2 ? "bar bar2" : "bar" });
    const tip = svg("title", {}); tip.textContent = `${item.key}: ${format(v)}`; rect.append(tip);
    root.append(rect);
    if (items.length <= 16) {
      const label = svg("text", { x: x + bar / 2, y: H - bottom + 12, "text-anchor": "middle" });
      label.textContent = item.key.length > 14 ? item.key.slice(0, 13) + "…" : item.key;
      const val = svg("text", { x: x + bar / 2, y: H - bottom - h - 3, "text-anchor": "middle" });
      val.textContent = format(v);
      root.append(label, val);
    }
  });
  target.replaceChildren(root);
}
let lastUsage = { day: null, model: null, client: null };
async function loadUsage() {
  const since = $("#window").value;
  const [day, model, client] = await Promise.all(
    ["day", "model", "client"].map((by) => getJSON(`${API}/usage?since=${since}&by=${by}`)),
  );
  lastUsage = { day, model, client };
  const days = [...day.rows].sort((a, b) => a.key.localeCompare(b.key));
  const compact = (n) => (n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e3 ? (n / 1e3).toFixed(1) + "k" : String(n));
  barChart($("#chart-day-tokens"), days, tokensOf, compact);
  barChart($("#chart-day-cost"), days, (r) => r.cost_usd, fmtCost);
  barChart($("#chart-model-tokens"), model.rows, tokensOf, compact);
  barChart($("#chart-model-cost"), model.rows, (r) => r.cost_usd, fmtCost);
  const t = day.total;
  $("#usage-total tbody").replaceChildren(row([fmtInt(t.requests), fmtInt(t.errors), fmtInt(t.input_tokens), fmtInt(t.output_tokens),
    fmtInt(t.cache_read_tokens), fmtInt(t.cache_write_tokens), fmtCost(t.cost_usd)], Array(7).fill("num")));
  $("#usage-clients tbody").replaceChildren(...client.rows.map((r) => row([r.key, fmtInt(r.requests), fmtInt(r.errors),
    fmtInt(r.input_tokens), fmtInt(r.output_tokens), fmtCost(r.cost_usd), fmtMs(r.p50_ms)], ["", ...Array(6).fill("num")])));
}
const CSV_FIELDS = ["key", "requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost_usd", "p50_ms", "p95_ms"];
function downloadCsv(by) {
  const data = lastUsage[by];
  if (!data) return;
  const quote = (v) => (/[",\n]/.test(String(v)) ? `"${String(v).replaceAll('"', '""')}"` : String(v ?? ""));
  const lines = [CSV_FIELDS.join(","), ...data.rows.map((r) => CSV_FIELDS.map((f) => quote(r[f])).join(","))];
  const a = el("a", { href: URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" })), download: `ccproxy-usage-${by}-${$("#window").value}.csv` });
  document.body.append(a); a.click(); a.remove();
}
$("#window").addEventListener("change", refresh);
$("#csv-day").addEventListener("click", () => downloadCsv("day"));
$("#csv-model").addEventListener("click", () => downloadCsv("model"));

// ---- accounts: GET /accounts, or one account per provider from /health until it exists
async function loadAccounts() {
  let providers;
  let note = "";
  if (state.accounts) {
    providers = (await getJSON(`${API}/accounts`)).providers;
  } else {
    const health = await getJSON(`${API}/health`);
    providers = {};
    for (const [name, checks] of Object.entries(health.checks)) {
      if (!name.endsWith(":credentials")) continue;
      const c = checks[0];
      const state = { valid: "ok", expired: "ok" }[c.state] || (c.state ? "login-needed" : c.status === "pass" ? "ok" : "login-needed");
      providers[name.split(":")[0]] = { accounts: [{ name: "default", source: c.source || "–", plan: c.plan || null,
        state, expires_at: c.expires_at ? new Date(c.expires_at * 1000 || c.expires_at).toISOString() : null, windows: [], note: c.output }] };
    }
    note = "Rate-limit windows appear once this ccproxy reports them (GET /accounts).";
  }
  const cards = [];
  for (const [provider, info] of Object.entries(providers)) {
    for (const a of info.accounts) {
      const card = el("div", { class: "card account", "data-account": a.name, "data-state": a.state },
        el("span", { class: "label", text: `${provider}${info.strategy ? " · " + info.strategy : ""}` }),
        el("strong", { text: a.name }),
        el("span", { class: "s-" + a.state, text: a.state + (a.resting_until ? ` · resting, back in ${countdown(a.resting_until)}` : "") }),
        el("span", { class: "muted", text: `source: ${a.source || "–"}${a.plan ? " · plan: " + a.plan : ""}` }));
      if (a.expires_at) card.append(el("span", { class: "muted", text: `token expires ${new Date(a.expires_at).toLocaleString("en-GB")}` }));
      for (const w of a.windows || []) {
        const pct = Math.round((w.utilization || 0) * 100);
        const meter = el("div", { class: "meter" + (pct >= 100 ? " full" : pct >= 80 ? " high" : "") }, el("span", {}));
        meter.firstChild.style.width = Math.min(100, pct) + "%";
        const reset = el("span", { class: "countdown muted", "data-reset": w.resets_at || "" });
        card.append(el("span", { class: "s-" + w.status, text: `${w.name}: ${pct}% used${w.status !== "allowed" ? " · " + w.status : ""}` }), meter, reset);
      }
      if (a.overage && a.overage.status) card.append(el("span", { class: "muted", text: `overage: ${a.overage.status}` }));
      if (a.note) card.append(el("span", { class: "muted", text: a.note }));
      cards.push(card);
    }
  }
  $("#accounts").replaceChildren(...(cards.length ? cards : [el("p", { class: "muted", text: "No provider is enabled." })]));
  $("#accounts-note").textContent = note;
  tickCountdowns();
}
function tickCountdowns() {
  for (const node of document.querySelectorAll(".countdown")) {
    node.textContent = node.dataset.reset ? `resets in ${countdown(node.dataset.reset)}` : "";
  }
}

// ---- permissions
function foldedJson(value) {
  const pre = el("pre", { text: JSON.stringify(value, (k, v) => (typeof v === "string" && v.length > FOLD_AT ? v.slice(0, FOLD_AT) + ` … (${v.length} characters)` : v), 2) });
  const text = JSON.stringify(value, null, 2);
  if (text.length <= FOLD_AT * 2 && !/.{400}/.test(text)) return pre;
  return el("div", {}, pre, el("details", { class: "fold" }, el("summary", { text: "Show everything" }), el("pre", { text })));
}
async function answer(id, allowed) {
  try {
    await postJSON(`${API}/permissions/${encodeURIComponent(id)}/respond`, allowed ? { allowed } : { allowed, message: "denied in the ccproxy dashboard" });
  } catch (err) { setStatus(String(err.message || err)); }
  await loadPermissions();
}
async function loadPermissions() {
  const snap = await getJSON(`${API}/permissions`);
  const pending = snap.pending.map((r) => {
    const allow = el("button", { class: "allow", text: "Allow" });
    const deny = el("button", { class: "deny", text: "Deny" });
    allow.addEventListener("click", () => answer(r.id, true));
    deny.addEventListener("click", () => answer(r.id, false));
    return el("div", { class: "request", "data-id": r.id },
      el("strong", { text: r.tool_name }), el("span", { class: "muted", text: ` · ${r.source} · asked ${fmtTime(r.created_at)}` }),
      foldedJson(r.input), el("div", { class: "actions" }, allow, deny));
  });
  $("#pending").replaceChildren(...(pending.length ? pending : [el("p", { class: "muted", text: "No tool is waiting for approval." })]));
  $("#recent tbody").replaceChildren(...snap.recent.map((r) => row([fmtTime(r.decided_at || r.created_at), r.tool_name,
    r.decision?.allowed ? "allowed" : "denied", r.decision?.by || "–"], ["", "", r.decision?.allowed ? "s-ok" : "s-error", ""])));
  const badge = $("#pending-count");
  badge.hidden = !snap.pending.length;
  badge.textContent = String(snap.pending.length);
}
function startPermissionStream() {
  const source = new EventSource(`${API}/permissions/stream`);
  state.streams.push(source);
  const update = () => (state.view === "permissions" ? refresh() : loadPermissions().catch(() => {}));
  for (const kind of ["pending", "resolved", "expired"]) source.addEventListener(kind, update);
}

// ---- health and config
async function loadHealth() {
  const [health, config] = await Promise.all([getJSON(`${API}/health`).catch((e) => e.body || { status: "fail", checks: {} }), getJSON("/dashboard/config")]);
  const pill = $("#health-status");
  pill.textContent = health.status;
  pill.className = "pill s-" + health.status;
  const rows = [];
  for (const [name, checks] of Object.entries(health.checks)) {
    for (const c of checks) {
      const { status, output, ...rest } = c;
      const detail = [output, ...Object.entries(rest).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)].filter(Boolean).join(" · ");
      rows.push(row([name, status, detail], ["", "s-" + status, ""]));
    }
  }
  $("#health tbody").replaceChildren(...rows);
  $("#config tbody").replaceChildren(...config.settings.map((s) => row([s.key, typeof s.value === "object" ? JSON.stringify(s.value) : String(s.value), s.source])));
  filterConfig();
}
function filterConfig() {
  const q = $("#config-filter").value.trim().toLowerCase();
  for (const tr of $("#config tbody").rows) tr.hidden = q !== "" && !tr.textContent.toLowerCase().includes(q);
}
$("#config-filter").addEventListener("input", filterConfig);

// ---- start
async function start() {
  let info;
  try { info = await getJSON("/dashboard/info"); } catch (err) { if (!(err instanceof LoginNeeded)) setStatus(String(err)); return; }
  state.csrf = info.csrf;
  state.accounts = info.accounts; // GET /accounts exists (several accounts per provider)
  $("#logout").hidden = !info.auth;
  startLive();
  startPermissionStream();
  loadPermissions().catch(() => {});
  const hash = location.hash.slice(1);
  show(loaders[hash] || hash === "live" ? hash : "overview");
  state.timers.push(setInterval(() => { if (state.view !== "live" && state.view !== "permissions") refresh(); }, 10000));
  state.timers.push(setInterval(tickCountdowns, 1000));
}
start();
