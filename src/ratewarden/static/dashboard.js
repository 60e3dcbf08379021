// The dashboard page: reads /dashboard/state once, then follows /dashboard/events (server-sent
// events); draws the chart on a canvas and fills the tables. No dependencies.
const base = document.body.dataset.base || "/dashboard";
const $ = (sel) => document.querySelector(sel);

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = String(text);
  if (cls) td.className = cls;
  return td;
}

function sum(a) { return a.reduce((x, y) => x + y, 0); }

function spark(values) {
  const c = document.createElement("canvas");
  c.className = "spark"; c.width = 120; c.height = 18;
  const g = c.getContext("2d");
  const max = Math.max(1, ...values);
  const w = c.width / values.length;
  g.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--denied") || "#c0392b";
  values.forEach((v, i) => { if (v) g.fillRect(i * w, c.height * (1 - v / max), Math.max(1, w), c.height * v / max); });
  return c;
}

function drawChart(state) {
  const canvas = $("#chart");
  const g = canvas.getContext("2d");
  const n = state.seconds;
  const admitted = new Array(n).fill(0), denied = new Array(n).fill(0), shadow = new Array(n).fill(0);
  for (const r of Object.values(state.rules)) {
    for (let i = 0; i < n; i++) { admitted[i] += r.admitted[i]; denied[i] += r.denied[i]; shadow[i] += r.shadow[i]; }
  }
  const max = Math.max(1, ...admitted.map((a, i) => a + denied[i] + shadow[i]));
  const W = canvas.width, H = canvas.height, pad = 24;
  g.clearRect(0, 0, W, H);
  g.fillStyle = "#6b7280"; g.font = "11px system-ui, sans-serif";
  g.fillText(String(max) + "/s", 2, 10);
  g.fillText(`-${Math.round(n / 60)} min`, 2, H - 4);
  g.fillText("now", W - 24, H - 4);
  const w = (W - pad) / n, h = H - 20;
  const colors = getComputedStyle(document.documentElement);
  for (let i = 0; i < n; i++) {
    let y = h;
    for (const [v, color] of [[admitted[i], "--admitted"], [denied[i], "--denied"], [shadow[i], "--shadow"]]) {
      if (!v) continue;
      const bh = (v / max) * (h - 14);
      g.fillStyle = colors.getPropertyValue(color).trim();
      g.fillRect(pad + i * w, y - bh, Math.max(1, w - 0.5), bh);
      y -= bh;
    }
  }
}

function render(state) {
  $("#minutes").textContent = String(Math.round(state.seconds / 60));
  const store = $("#store");
  store.textContent = state.store.healthy ? "store: healthy" : `store: failing (${state.store.errors} errors)`;
  store.classList.toggle("bad", !state.store.healthy);
  if (state.store.detail) store.title = state.store.detail;
  let decisions = 0, deniedMinute = 0;
  const body = $("#rules tbody");
  body.replaceChildren();
  for (const [name, r] of Object.entries(state.rules)) {
    decisions += r.last_minute.decisions; deniedMinute += r.last_minute.denied;
    const tr = document.createElement("tr");
    tr.dataset.rule = name;
    const th = document.createElement("th"); th.scope = "row"; th.textContent = name;
    tr.append(th, cell(r.last_minute.decisions, "num decisions"),
      cell(r.last_minute.denied, "num denied" + (r.last_minute.denied ? " hot" : "")),
      cell(r.window.decisions, "num"), cell(r.window.denied, "num"), cell(r.total.denied, "num total-denied"));
    const td = document.createElement("td"); td.append(spark(r.denied.slice(-60))); tr.append(td);
    body.append(tr);
  }
  $("#total-decisions").textContent = String(decisions);
  $("#total-denied").textContent = String(deniedMinute);
  const keys = $("#keys tbody");
  keys.replaceChildren();
  for (const k of state.top_denied) {
    const tr = document.createElement("tr");
    tr.append(cell(k.key, "key"), cell(k.denied, "num"));
    keys.append(tr);
  }
  if (!state.top_denied.length) { const tr = document.createElement("tr"); tr.append(cell("none", "muted")); keys.append(tr); }
  const reloads = $("#reloads");
  reloads.replaceChildren();
  for (const r of state.reloads) {
    const li = document.createElement("li");
    li.className = r.ok ? "ok" : "bad";
    li.textContent = `${new Date(r.at * 1000).toLocaleTimeString()} ${r.ok ? "reloaded" : "refused"}: ${r.message}`;
    reloads.append(li);
  }
  if (!state.reloads.length) { const li = document.createElement("li"); li.className = "muted"; li.textContent = "none yet"; reloads.append(li); }
  drawChart(state);
  document.body.dataset.updated = String(state.now);
}

async function poll() {
  const r = await fetch(`${base}/state`, { credentials: "same-origin" });
  if (r.ok) render(await r.json());
}

poll();
if ("EventSource" in window) {
  const live = $("#live");
  const es = new EventSource(`${base}/events`);
  es.addEventListener("state", (e) => { render(JSON.parse(e.data)); live.textContent = "live"; });
  es.onerror = () => { live.textContent = "reconnecting…"; };
} else {
  setInterval(poll, 2000);
}
