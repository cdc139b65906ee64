/* fedchain node dashboard: plain script, no build step. It reads this node's JSON API and follows
   /subscribe (WebSocket JSON events); each final block refreshes the views. Everything a peer or
   the chain supplies is written with textContent, never as HTML. */
"use strict";

const REFRESH_DEBOUNCE_MS = 250;
const POLL_MS = 5000;
const TIMELINE_HEIGHTS = 40;   // columns of the per-sender grid
const HEIGHT_STEPS = [0, 1, 2, 3, 4, 5, 6, 7].flatMap((e) => [1, 2, 5].map((m) => m * 10 ** e));  // whole heights only
const names = new Map();       // node id -> delegate name, when the chain has one
const view = { fl: null, status: null, charts: {}, lastBlockMs: null, ws: null, wsDelay: 1000, timer: null };

const $ = (id) => document.getElementById(id);

async function getJSON(path) {
  const resp = await fetch(path, { cache: "no-store" });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

function short(id) { return id ? id.slice(0, 10) + "…" : "-"; }
function who(id) { return names.get(id) || short(id); }
function pct(x) { return typeof x === "number" ? (100 * x).toFixed(1) + " %" : "-"; }
function num(x, digits = 2) { return typeof x === "number" ? x.toFixed(digits) : "-"; }
function sig(x) { return typeof x === "number" ? x.toLocaleString("en", { maximumSignificantDigits: 4 }) : "-"; }
function age(ms) {
  if (!ms) return "-";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  return s < 120 ? s.toFixed(1) + " s ago" : s < 7200 ? (s / 60).toFixed(0) + " min ago" : (s / 3600).toFixed(1) + " h ago";
}
function bytes(n) {
  if (typeof n !== "number") return "-";
  return n >= 1 << 30 ? (n / (1 << 30)).toFixed(2) + " GiB" : (n / (1 << 20)).toFixed(0) + " MiB";
}
function duration(s) {
  if (typeof s !== "number") return "-";
  return s < 120 ? s.toFixed(0) + " s" : s < 7200 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h";
}

function set(id, text) { $(id).textContent = text; }

/* A row of cells; each cell is text, or [text, className, title]. */
function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    const [text, cls, title] = Array.isArray(c) ? c : [c];
    td.textContent = text;
    if (cls) td.className = cls;
    if (title) td.title = title;
    tr.appendChild(td);
  }
  return tr;
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows.map(row));
}

/* ---- charts (uPlot) ---------------------------------------------------------------------- */
function makeChart(id, series, axes) {
  const el = $(id);
  const opts = {
    width: Math.max(300, el.clientWidth), height: 220,
    scales: { x: { time: false } },
    series: [{ label: "height" }, ...series],
    axes: [{ label: "height", incrs: HEIGHT_STEPS }, ...axes],
    legend: { live: true },
  };
  const chart = new uPlot(opts, [[], ...series.map(() => [])], el);
  view.charts[id] = chart;
  return chart;
}

function setChart(id, columns) {
  const chart = view.charts[id];
  chart.setData(columns);
  $(id).dataset.points = String(columns[0].length);
}

window.addEventListener("resize", () => {
  for (const [id, chart] of Object.entries(view.charts)) chart.setSize({ width: Math.max(300, $(id).clientWidth), height: 220 });
});

/* ---- views ------------------------------------------------------------------------------- */
function showStatus(s) {
  view.status = s;
  set("moniker", s.moniker);
  set("node-url", s.url);
  set("chain-id", s.chain_id);
  set("node-id", short(s.node_id));
  $("node-id").title = s.node_id;
  set("height", String(s.final_height));
  view.lastBlockMs = s.latest_block_time_ms;
  set("last-block", age(view.lastBlockMs));
  set("epoch-slot", `${s.epoch} · ${s.current_slot}`);
  set("role", (s.is_delegate ? "delegate" : "follower") + (s.syncing ? " (syncing)" : ""));
  set("peer-count", String(s.peers));
  set("mempool", String(s.mempool_size));
}

function showDelegates(d) {
  for (const r of d.delegates) if (r.name) names.set(r.id, r.name);
  set("delegates-caption", `epoch ${d.epoch}, quorum ${d.quorum} of ${d.active}, next election at height ${d.next_election_height}`);
  fillTable("delegates", d.delegates.map((r) => [
    [who(r.id), "", r.id], String(r.stake), pct(r.trust), String(r.produced), String(r.missed_total),
    r.jailed ? ["jailed", "rejected"] : ["active", "accepted"],
  ]));
}

function showTelemetry(t) {
  if (t.fl !== view.fl) {
    view.fl = t.fl;
    set("app-kind", t.fl ? "federated learning" : "counter application");
    for (const el of document.querySelectorAll("section.fl")) el.hidden = !t.fl;
    if (t.fl && !view.charts["accuracy-chart"]) {
      makeChart("accuracy-chart",
        [{ label: "test accuracy %", stroke: "#2563eb", scale: "%" },
         { label: "validation accuracy %", stroke: "#16a34a", scale: "%" },
         { label: "test loss", stroke: "#dc2626", scale: "loss" }],
        [{ scale: "%", label: "accuracy %" }, { scale: "loss", side: 1, label: "loss", grid: { show: false } }]);
    }
  }
  const blocks = t.blocks;
  setChart("block-chart", [blocks.map((b) => b.height), blocks.map((b) => b.interval_s), blocks.map((b) => b.finality_s)]);
  const lag = t.event_loop_lag_ms;
  set("loop-lag", `${num(lag.p50_ms, 1)} / ${num(lag.p99_ms, 1)} / ${num(lag.max_ms, 1)} ms`);
  set("rss", bytes(t.process.rss_bytes));
  set("cpu", num(t.process.cpu_percent, 1) + " %");
  set("uptime", duration(t.process.uptime_s));
  set("fds", t.process.open_fds == null ? "-" : String(t.process.open_fds));
  view.peerProbes = new Map(t.peers.map((p) => [p.node_id, p]));
  if (!t.fl) return;
  const m = t.model;
  const hundred = (x) => (x == null ? null : 100 * x);
  setChart("accuracy-chart", [m.map((p) => p.height), m.map((p) => hundred(p.test_accuracy)),
    m.map((p) => hundred(p.val_accuracy)), m.map((p) => p.test_loss)]);
  showRounds(t.rounds);
}

function showRounds(rounds) {
  const last = rounds[rounds.length - 1];
  if (last) {
    const accepted = last.updates.filter((u) => u.accepted).length;
    set("round-caption", `height ${last.height}: ${accepted} of ${last.updates.length} accepted` +
      (last.skipped ? ` (round skipped: ${last.skipped})` : ""));
    fillTable("round-updates", last.updates.map((u) => [
      [who(u.sender), "", u.sender], num(u.weight, 1),
      u.accepted ? ["accepted", "accepted"] : ["rejected", "rejected"], [u.reason, "reason"],
    ]));
  }
  const rejections = [];
  for (const r of rounds) for (const u of r.updates) if (!u.accepted) rejections.push([String(r.height), [who(u.sender), "", u.sender], [u.reason, "reason"]]);
  fillTable("rejections", rejections.reverse().slice(0, 20));
  /* the per-sender grid: one row per sender, one column per recent height */
  const recent = rounds.slice(-TIMELINE_HEIGHTS);
  const senders = [...new Set(recent.flatMap((r) => r.updates.map((u) => u.sender)))].sort();
  const grid = $("timeline");
  grid.style.gridTemplateColumns = `max-content repeat(${recent.length}, 12px)`;
  const cells = [];
  for (const s of senders) {
    const label = document.createElement("div");
    label.className = "who";
    label.textContent = who(s);
    label.title = s;
    cells.push(label);
    for (const r of recent) {
      const u = r.updates.find((x) => x.sender === s);
      const cell = document.createElement("div");
      cell.className = "cell" + (u ? (u.accepted ? " ok" : " no") : "");
      cell.title = `height ${r.height}: ` + (u ? (u.accepted ? "accepted" : "rejected") + (u.reason ? ` (${u.reason})` : "") : "no update");
      cells.push(cell);
    }
  }
  grid.replaceChildren(...cells);
}

function showModel(m) {
  set("model-height", String(m.height));
  set("test-accuracy", pct(m.test_accuracy));
  set("val-accuracy", pct(m.val_accuracy));
  set("rule", m.rule);
  set("model-caption", `${m.model} (${m.params} parameters) on ${m.dataset}, hash ${short(m.hash)}`);
}

function showPrivacy(mine) {
  const rows = [];
  const add = (id, p) => {
    if (!p) return;
    const bar = document.createElement("progress");
    bar.max = p.epsilon_budget || 1;
    bar.value = Math.min(bar.max, p.epsilon || 0);
    const spent = p.epsilon == null ? "no formal privacy" : sig(p.epsilon) + (p.exhausted ? " (budget reached: stopped)" : "");
    rows.push([[id === view.status.node_id ? who(id) + " (this node)" : who(id), "", id],
      spent, sig(p.epsilon_budget), bar, p.guarantee || (p.preset ? "preset " + p.preset : "")]);
  };
  add(view.status.node_id, mine);
  for (const [id, probe] of view.peerProbes || []) add(id, probe.privacy);
  const body = $("privacy").querySelector("tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = row(cells.slice(0, 3));
    const td = document.createElement("td");
    td.appendChild(cells[3]);
    tr.appendChild(td);
    const what = document.createElement("td");
    what.textContent = cells[4];  // e.g. "no formal privacy: ..." for the default testnet
    tr.appendChild(what);
    return tr;
  }));
}

function showPeers(info) {
  fillTable("peers", info.peers.map((p) => [
    [who(p.node_id), "", p.node_id], p.url, p.direction, num(p.score),
    p.rtt_ms == null ? "-" : num(p.rtt_ms, 1) + " ms", age(p.connected_since * 1000),
  ]));
}

/* ---- refresh ----------------------------------------------------------------------------- */
async function refresh() {
  try {
    showStatus(await getJSON("/status"));
    showDelegates(await getJSON("/delegates"));
    showTelemetry(await getJSON("/telemetry"));
    showPeers(await getJSON("/net_info"));
    if (view.fl) {
      showModel(await getJSON("/fl/model"));
      showPrivacy(await getJSON("/fl/privacy").catch(() => null));  // 503 until the trainer starts
    }
  } catch (err) {
    console.warn("refresh failed:", err);
  }
}

function scheduleRefresh() {
  if (view.timer) return;
  view.timer = setTimeout(async () => { view.timer = null; await refresh(); }, REFRESH_DEBOUNCE_MS);
}

function setLive(text, cls) {
  const badge = $("live");
  badge.textContent = text;
  badge.className = "badge " + cls;
}

function subscribe() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/subscribe";
  const ws = new WebSocket(url);
  view.ws = ws;
  ws.onopen = () => { view.wsDelay = 1000; setLive("live", ""); scheduleRefresh(); };
  ws.onmessage = (msg) => {
    const ev = JSON.parse(msg.data);
    if (ev.type === "final_block") {
      set("height", String(ev.height));
      view.lastBlockMs = ev.time_ms;
      set("last-block", age(ev.time_ms));
      scheduleRefresh();
    } else if (ev.type === "new_delegates" || ev.type === "evidence") {
      scheduleRefresh();
    }
  };
  ws.onclose = () => {
    setLive("reconnecting", "bad");
    view.ws = null;
    setTimeout(subscribe, view.wsDelay);
    view.wsDelay = Math.min(10000, view.wsDelay * 2);
  };
}

makeChart("block-chart",
  [{ label: "block interval s", stroke: "#2563eb" }, { label: "finality s", stroke: "#f59e0b" }],
  [{ label: "seconds" }]);
refresh();
subscribe();
setInterval(refresh, POLL_MS);  // what no event announces (peers, process), and the fallback while offline
setInterval(() => set("last-block", age(view.lastBlockMs)), 1000);
