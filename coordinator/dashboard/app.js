// rankswarm dashboard: polls the coordinator's JSON API and renders the page (no framework, no CDN).
//
// Every `pollMs` it fetches /api/v1/state (one page of peers, as the table's filter, order and page
// say); when a new round has been committed it fetches the new rows of /api/v1/history and redraws
// the charts. Strings that come from peers (versions, addresses, errors) are only ever set as text.

import { formatNumber, histogram, lineChart, shareChart, sparkline } from "./charts.js";

const STATES = ["online", "joining", "behind", "unreachable", "gone"];
const COLOR = {
  swarm: "#e6edf3", base: "#e3b341", mean: "#58a6ff", explore: "#bc8cff", exploit: "#2fb5a9",
  ok: "#3fb950", warn: "#d29922", bad: "#f85149", muted: "#8b949e",
  bars: "#4a5f7a",
};
const PALETTE = ["#58a6ff", "#3fb950", "#f0883e", "#bc8cff", "#ff7b72", "#39c5cf", "#f778ba", "#e3b341"];
const MAX_SELECTED = PALETTE.length;
const POLL_MS = 2000;
const HIDDEN_POLL_MS = 10000;
const MAX_RETRY_MS = 30000;

const ui = {
  paused: false,
  windowRounds: 300,
  table: { offset: 0, limit: 50, states: [], q: "", sort: "state", order: "asc" },
  selected: loadSelected(),   // peer id -> palette colour, in selection order
  autoSelected: false,
};
let state = null;             // latest /api/v1/state document
let history = null;           // {rounds: columns, peers: {id: columns}, behind: [...]}
let historyKey = "";          // window + selection the history was fetched for
let lastOk = 0;
let lastError = "";
let failures = 0;              // polls in a row that failed
let timer = null;
let drawnHistory = "";          // the history the charts show (last round | window | selection)
let drawnDistributions = "";

// ---------------------------------------------------------------- small helpers

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmt(value, digits = 3) {
  return formatNumber(value, digits);
}

function pct(value, digits = 1) {
  return value === null || value === undefined ? "–" : `${(100 * value).toFixed(digits)}%`;
}

function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = value;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${(s / 3600).toFixed(1)}h`;
  return `${Math.round(s / 86400)}d`;
}

function ago(t) {
  return state && t ? `${duration(state.generated_at - t)} ago` : "–";
}

function clock(t) {
  if (!t) return "–";
  const d = new Date(t * 1000);
  const today = state && new Date(state.generated_at * 1000).toDateString() === d.toDateString();
  const time = d.toLocaleTimeString([], { hour12: false });
  return today ? time : `${d.toLocaleDateString()} ${time}`;
}

// "/ip4/1.2.3.4/tcp/31337/p2p/12D3..." -> "1.2.3.4:31337" (the full multiaddr goes in the tooltip)
function hostPort(maddr) {
  if (!maddr) return "–";
  const parts = maddr.split("/");
  const at = (key) => {
    const i = parts.indexOf(key);
    return i >= 0 ? parts[i + 1] : undefined;
  };
  const host = at("ip4") || at("ip6") || at("dns") || at("dns4") || at("dns6");
  const port = at("tcp") || at("udp") || "";
  if (!host) return maddr.length > 24 ? `${maddr.slice(0, 23)}…` : maddr;
  const shown = host.includes(":") ? `[${host}]` : host;
  return port ? `${shown}:${port}` : shown;
}

function shortId(id) {
  return id ? `${id.slice(0, 8)}…${id.slice(-4)}` : "–";
}

function loadSelected() {
  try {
    const ids = JSON.parse(window.localStorage.getItem("rankswarm.selected") || "[]");
    return new Map(ids.slice(0, MAX_SELECTED).map((id, i) => [id, PALETTE[i]]));
  } catch (err) {
    return new Map();
  }
}

function saveSelected() {
  try {
    window.localStorage.setItem("rankswarm.selected", JSON.stringify([...ui.selected.keys()]));
  } catch (err) {
    // storage may be disabled: the selection then lasts for this page only
  }
}

function toggleSelected(peerId) {
  if (ui.selected.has(peerId)) {
    ui.selected.delete(peerId);
  } else {
    if (ui.selected.size >= MAX_SELECTED) ui.selected.delete(ui.selected.keys().next().value);
    const used = new Set(ui.selected.values());
    ui.selected.set(peerId, PALETTE.find((c) => !used.has(c)) || PALETTE[0]);
  }
  saveSelected();
  refreshSoon();
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.classList.add("copied");
    setTimeout(() => button.classList.remove("copied"), 1200);
  } catch (err) {
    window.getSelection().selectAllChildren(button);  // no clipboard (plain http): select it for Ctrl-C
  }
}

// ---------------------------------------------------------------- fetching

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json()).error.message;
    } catch (err) {
      // not a JSON error body
    }
    throw new Error(message);
  }
  return response.json();
}

function stateUrl() {
  const t = ui.table;
  const params = new URLSearchParams({ peer_offset: t.offset, peer_limit: t.limit, peer_sort: t.sort,
                                       peer_order: t.order });
  if (t.states.length) params.set("peer_state", t.states.join(","));
  if (t.q) params.set("peer_q", t.q);
  return `api/v1/state?${params}`;
}

function historyUrl(fromRound) {
  const params = new URLSearchParams({ max_rounds: ui.windowRounds });
  if (fromRound) params.set("from_round", fromRound);
  for (const id of ui.selected.keys()) params.append("peer", id);
  return `api/v1/history?${params}`;
}

function mergeColumns(old, fresh, fromRound, keep) {
  const cut = old.round.findIndex((r) => r >= fromRound);
  const n = cut < 0 ? old.round.length : cut;
  const out = {};
  for (const key of Object.keys(fresh)) out[key] = (old[key] || []).slice(0, n).concat(fresh[key]);
  const extra = out.round.length - keep;
  if (extra > 0) for (const key of Object.keys(out)) out[key] = out[key].slice(extra);
  return out;
}

async function refreshHistory() {
  const key = `${ui.windowRounds}|${[...ui.selected.keys()].join(",")}`;
  const rounds = history ? history.rounds.round : [];
  if (!history || key !== historyKey || !rounds.length) {
    const doc = await getJSON(historyUrl(0));
    history = { rounds: doc.rounds, peers: doc.peers, behind: doc.behind, windowRounds: doc.rate_window_rounds };
    historyKey = key;
    return;
  }
  const from = rounds[rounds.length - 1];  // the last row again: its status columns may have moved
  const doc = await getJSON(historyUrl(from));
  history.rounds = mergeColumns(history.rounds, doc.rounds, from, ui.windowRounds);
  for (const id of Object.keys(doc.peers)) {
    history.peers[id] = history.peers[id] ? mergeColumns(history.peers[id], doc.peers[id], from, ui.windowRounds)
                                          : doc.peers[id];
  }
  const spans = new Map(history.behind.map((s) => [`${s.peer_id}|${s.first_round}`, s]));
  for (const s of doc.behind) spans.set(`${s.peer_id}|${s.first_round}`, s);
  history.behind = [...spans.values()].sort((a, b) => b.first_round - a.first_round);
}

async function tick() {
  timer = null;
  if (!ui.paused) {
    try {
      const next = await getJSON(stateUrl());
      if (state && (next.run !== state.run || next.coordinator.key !== state.coordinator.key ||
                    (next.round ? next.round.number : 0) < lastHistoryRound())) {
        history = null;  // another run (or a fresh history) behind the same address: start over
      }
      const newRound = !state || !history || (next.round && next.round.number !== lastHistoryRound());
      state = next;
      clampWindow();
      autoSelect();
      if (newRound || historyKey !== `${ui.windowRounds}|${[...ui.selected.keys()].join(",")}`) {
        await refreshHistory();
      }
      lastOk = Date.now();
      lastError = "";
      failures = 0;
      render();
    } catch (err) {
      lastError = err.message || String(err);
      failures += 1;
      renderLive();
    }
  }
  schedule();
}

function clampWindow() {
  // the coordinator serves at most max_history_rounds per request: offer no larger window
  const cap = state.coordinator.max_history_rounds;
  const select = $("window");
  for (const option of select.options) option.disabled = Number(option.value) > cap;
  if (ui.windowRounds > cap) {
    ui.windowRounds = cap;
    const fits = [...select.options].filter((o) => !o.disabled);
    if (fits.length) select.value = fits[fits.length - 1].value;
  }
}

function lastHistoryRound() {
  const rounds = history ? history.rounds.round : [];
  return rounds.length ? rounds[rounds.length - 1] : 0;
}

function schedule() {
  if (timer !== null) clearTimeout(timer);
  // back off while the coordinator does not answer (2, 4, 8, ... up to 30 s), poll slowly when hidden
  const delay = failures ? Math.min(MAX_RETRY_MS, POLL_MS * 2 ** failures) : POLL_MS;
  timer = setTimeout(tick, document.hidden ? Math.max(delay, HIDDEN_POLL_MS) : delay);
}

function refreshSoon() {
  if (timer !== null) clearTimeout(timer);
  timer = setTimeout(tick, 0);
}

function autoSelect() {
  // a small swarm plots every live peer by default; a large one waits for the operator to pick
  if (ui.autoSelected || ui.selected.size || !state) return;
  ui.autoSelected = true;
  const live = state.peers.items.filter((p) => ["online", "behind", "joining"].includes(p.state));
  if (state.peers.total <= 6) {
    live.slice(0, MAX_SELECTED).forEach((p, i) => ui.selected.set(p.peer_id, PALETTE[i]));
  }
}

// ---------------------------------------------------------------- rendering: header, alerts, summary

function render() {
  renderLive();
  renderHeader();
  renderAlerts();
  renderKpis();
  renderLegend();
  if (history && drawnHistory !== `${lastHistoryRound()}|${historyKey}`) drawCharts();
  drawDistributions();
  renderTable();
  renderLogs();
}

function renderLive() {
  const dot = $("live-dot");
  const text = $("live-text");
  const round = state && state.round;
  if (ui.paused) {
    dot.className = "dot paused";
    text.textContent = "paused";
  } else if (lastError) {
    dot.className = "dot bad";
    text.textContent = lastOk ? `disconnected ${duration((Date.now() - lastOk) / 1000)} · retrying` : "cannot reach the coordinator";
    text.title = lastError;
  } else if (round && round.stale) {
    dot.className = "dot warn";
    text.textContent = "live · rounds stalled";
  } else {
    dot.className = "dot ok";
    text.textContent = "live";
    text.title = "";
  }
}

function renderHeader() {
  $("run").textContent = state.run;
  const round = state.round;
  $("round-number").textContent = round ? round.number : "–";
  $("round-age").textContent = round ? `· ${duration(round.age_s)} ago` : "· none yet";
  $("round-meta").classList.toggle("stale", Boolean(round && round.stale));
  $("coordinator-version").textContent = state.coordinator.version || "–";
  const key = $("coordinator-key");
  key.textContent = shortId(state.coordinator.key);
  key.title = `${state.coordinator.key} (click to copy; peers pin it as coordinator.trusted_key)`;
  const join = $("join-address");
  join.textContent = state.coordinator.visible_maddrs[0] || "–";
  join.title = "click to copy";
}

function renderAlerts() {
  const box = $("alerts");
  const active = state.alerts.active;
  box.replaceChildren();
  if (!active.length) {
    box.appendChild(el("div", "all-clear", "No active alerts"));
    return;
  }
  const order = { critical: 0, warning: 1, info: 2 };
  const sorted = [...active].sort((a, b) => order[a.severity] - order[b.severity] || a.started_at - b.started_at);
  for (const alert of sorted.slice(0, 6)) {
    const row = el("div", `alert ${alert.severity}`);
    row.append(el("span", "sev", alert.severity), el("span", "kind", alert.kind.replaceAll("_", " ")),
               el("span", "msg", alert.message),
               el("span", "since", `since ${clock(alert.started_at)} (${duration(state.generated_at - alert.started_at)}, round ${alert.started_round})`));
    box.appendChild(row);
  }
  if (sorted.length > 6) box.appendChild(el("div", "more", `and ${sorted.length - 6} more in the Health panel`));
}

function renderKpis() {
  const swarm = state.swarm;
  const live = swarm.by_state.online + swarm.by_state.joining + swarm.by_state.behind;
  $("peers-live").textContent = live;
  $("peers-total").textContent = swarm.num_peers;
  const bar = $("state-bar");
  const counts = $("peer-states");
  bar.replaceChildren();
  counts.replaceChildren();
  for (const name of STATES) {
    const n = swarm.by_state[name];
    if (!n) continue;
    const part = el("span", name);
    part.style.width = `${(100 * n) / swarm.num_peers}%`;
    part.title = `${n} ${name}`;
    bar.appendChild(part);
    const count = el("span", name);
    count.append(el("span", "n", n), ` ${name}`);
    counts.appendChild(count);
  }
  const versions = Object.keys(swarm.versions);
  if (versions.length > 1) counts.appendChild(el("span", "warn", `${versions.length} versions`));

  const round = state.round;
  $("kpi-round-value").textContent = round ? `#${round.number}` : "–";
  $("kpi-round-foot").textContent = round
    ? `${duration(round.age_s)} ago · ${round.num_contributions} signals from ${round.num_peers} peers`
    : "waiting for meta-signals";
  $("kpi-round").classList.toggle("stale", Boolean(round && round.stale));

  const reward = round ? round.merged.score.mean : null;
  $("kpi-reward-value").textContent = reward === null ? "–" : (reward >= 0 ? "+" : "") + fmt(reward, 3);
  $("kpi-reward-value").title = "mean reward of the latest round's rollouts";
  sparkline($("spark-reward"), history ? history.rounds.reward.slice(-60) : [], COLOR.mean);

  $("kpi-accuracy-value").textContent = pct(swarm.heldout_accuracy);
  $("kpi-accuracy-foot").textContent = `train accuracy ${pct(swarm.accuracy)} · ` +
    (swarm.kl === null ? "KL not measured" : `KL ${fmt(swarm.kl, 3)}`);

  const tokens = $("kpi-tokens-value");
  tokens.replaceChildren(swarm.tokens_per_s === null ? "–" : fmt(swarm.tokens_per_s));
  if (swarm.tokens_per_s !== null) tokens.appendChild(el("span", "kpi-sub", " tokens/s"));
  $("kpi-throughput-foot").textContent =
    `${fmt(swarm.rollouts_per_s)} rollouts/s since start · epoch ${swarm.epoch ?? "–"}`;

  const explore = round ? round.explore_share : null;
  const balance = $("balance-bar");
  balance.classList.toggle("unknown", explore === null);
  balance.children[0].style.width = explore === null ? "50%" : `${100 * explore}%`;
  balance.children[1].style.width = explore === null ? "50%" : `${100 * (1 - explore)}%`;
  balance.children[0].textContent = explore === null ? "" : pct(explore, 0);
  balance.children[1].textContent = explore === null ? "no gated responses" : pct(1 - explore, 0);
  balance.title = "share of the incentive on exploration (ER channel) vs exploitation (ERV channel)";
  $("kpi-balance-foot").textContent = round
    ? `λt ${fmt(round.lambda_t, 3)}${round.baselines.ready ? "" : " · baselines not ready"}`
    : "λt –";

  $("kpi-traffic-value").textContent = bytes(swarm.bytes_sent);
  $("kpi-traffic-foot").textContent = `sent · ${bytes(swarm.bytes_received)} received · ` +
    (swarm.compression_ratio ? `${fmt(swarm.compression_ratio, 3)}× smaller than dense` : "compression –");

  const alerts = state.alerts.active;
  const worst = alerts.some((a) => a.severity === "critical") ? "critical" : alerts.some((a) => a.severity === "warning") ? "warning" : alerts.length ? "info" : "ok";
  $("kpi-health-value").textContent = alerts.length ? `${alerts.length} alert${alerts.length > 1 ? "s" : ""}` : "healthy";
  $("kpi-health").dataset.level = worst;
  const byRule = Object.entries(state.coordinator.records_rejected_by_rule || {}).sort((a, b) => b[1] - a[1]);
  const rules = byRule.length ? ` (${byRule.slice(0, 3).map(([rule, n]) => `${rule} ${n}`).join(", ")})` : "";
  $("kpi-health-foot").textContent = `${swarm.averaging_failures ?? "–"} averaging failures · ` +
    `${state.coordinator.records_rejected} records rejected${rules}`;
}

function renderLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  const swarmKey = el("span", "key");
  const swatch = el("span", "swatch line");
  swatch.style.background = COLOR.swarm;
  swarmKey.append(swatch, el("span", null, "swarm"));
  legend.appendChild(swarmKey);
  for (const [id, color] of ui.selected) {
    const key = el("button", "key peer-key");
    key.type = "button";
    key.title = `${id}: click to remove from the charts`;
    const s = el("span", "swatch line");
    s.style.background = color;
    key.append(s, el("span", "mono", shortId(id)), el("span", "x", "×"));
    key.addEventListener("click", () => toggleSelected(id));
    legend.appendChild(key);
  }
  if (!ui.selected.size) legend.appendChild(el("span", "muted hint", "select peers in the table to compare them"));
}

// ---------------------------------------------------------------- rendering: charts

function roundTitle(i) {
  const r = history.rounds;
  return `round ${r.round[i]} · ${clock(r.issued_at[i])}`;
}

function peerSeries(column) {
  return [...ui.selected].filter(([id]) => history.peers[id]).map(([id, color]) => ({
    name: shortId(id), color, values: history.peers[id][column], width: 1.2,
  }));
}

function drawCharts() {
  drawnHistory = `${lastHistoryRound()}|${historyKey}`;
  const r = history.rounds;
  const common = { x: r.round, xLabel: "round", title: roundTitle };
  lineChart($("chart-reward"), { ...common, yLabel: "reward", series: [
    ...peerSeries("reward"), { name: "swarm", color: COLOR.swarm, values: r.reward, width: 2.2 }] });
  lineChart($("chart-heldout"), { ...common, yLabel: "accuracy", yFormat: (v) => pct(v, 0),
    valueFormat: (v) => pct(v, 1), emptyText: "no held-out evaluation reported yet",
    series: [...peerSeries("heldout_accuracy"), { name: "swarm", color: COLOR.swarm, values: r.heldout_accuracy, width: 2.2 }] });
  lineChart($("chart-kl"), { ...common, yLabel: "KL",
    emptyText: "KL not measured: no peer has a reference policy (loss.kl_coef = 0)",
    series: [...peerSeries("kl"), { name: "swarm", color: COLOR.swarm, values: r.kl, width: 2.2 }] });
  $("rate-window").textContent = history.windowRounds;
  lineChart($("chart-throughput"), { ...common, yLabel: "tokens / s", yMin: 0, series: [
    ...peerSeries("merged_tokens_per_s"),
    { name: "swarm", color: COLOR.swarm, values: r.merged_tokens_per_s, width: 2.2 }] });
  for (const name of ["er", "erv", "era"]) {
    lineChart($(`chart-${name}`), { ...common, yLabel: name.toUpperCase(), series: [
      ...peerSeries(name),
      { name: "round mean", color: COLOR.mean, values: r[name], width: 1.6 },
      { name: "baseline", color: COLOR.base, values: r[`baseline_${name}`], width: 2.2 }] });
  }
  shareChart($("chart-balance"), { ...common, yLabel: "share", explore: r.explore_share,
    exploreColor: COLOR.explore, exploitColor: COLOR.exploit, emptyText: "no gated responses yet" });
  lineChart($("chart-aux"), { ...common, yLabel: "r_aux", emptyText: "no auxiliary signal reported yet",
    series: [{ name: "mean r_aux", color: COLOR.explore, values: r.aux, width: 2, area: true }] });
  const lambdas = r.lambda_t.filter((v) => v !== null);
  $("aux-lambda").textContent = lambdas.length ? `λt ${fmt(lambdas[lambdas.length - 1], 3)}` : "λt –";
  lineChart($("chart-health"), { ...common, yLabel: "count", yMin: 0, height: 170, series: [
    { name: "peers merged", color: COLOR.ok, values: r.num_peers, width: 1.8 },
    { name: "peers behind", color: COLOR.warn, values: r.peers_behind, width: 1.8 },
    { name: "averaging failures", color: COLOR.bad, values: r.averaging_failures, width: 1.8 }] });
}

function drawDistributions() {
  const key = JSON.stringify([state.distributions, state.round && state.round.number]);
  if (key === drawnDistributions) return;
  drawnDistributions = key;
  for (const name of ["er", "erv", "era"]) {
    const dist = state.distributions[name];
    const round = state.round;
    $(`dist-${name}-note`).textContent = dist ? `${Math.round(dist.num_responses)} responses · ${dist.num_peers} peers` : "latest steps";
    histogram($(`dist-${name}`), {
      edges: dist ? dist.edges : [], counts: dist ? dist.counts : [], color: COLOR.bars, xLabel: name.toUpperCase(),
      yLabel: "responses", emptyText: "no peer has reported its distribution yet",
      markers: round ? [{ value: round.baselines[name], color: COLOR.base },
                        { value: round.merged[name].mean, color: COLOR.mean }] : [],
    });
  }
}

// ---------------------------------------------------------------- rendering: the peers table

const COLUMNS = [
  { key: "state", label: "State" },
  { key: "peer_id", label: "Peer" },
  { key: "version", label: "Version" },
  { key: "address", label: "Address", sortable: false, title: "where others reach it: directly or through a relay" },
  { key: "last_seen", label: "Seen", order: "desc" },
  { key: "step", label: "Step", num: true },
  { key: "epoch", label: "Epoch", num: true },
  { key: "staleness", label: "Stale", num: true,
    title: "policy versions between the weights that sampled the latest rollouts and those they trained" },
  { key: "rollouts_per_s", label: "Roll/s", num: true, title: "rollouts per second since the peer started" },
  { key: "tokens_per_s", label: "Tok/s", num: true, title: "response tokens per second, latest step" },
  { key: "bytes_sent", label: "Sent", num: true },
  { key: "bytes_received", label: "Recv", num: true },
  { key: "compression_ratio", label: "Compr.", num: true, title: "dense fp32 bytes / bytes sent" },
  { key: "reward", label: "Reward", num: true, title: "mean reward, latest step" },
  { key: "accuracy", label: "Acc", num: true, title: "training accuracy, latest step" },
  { key: "heldout_accuracy", label: "Held-out", num: true, title: "latest held-out greedy accuracy" },
  { key: "er", label: "ER", num: true },
  { key: "erv", label: "ERV", num: true },
  { key: "era", label: "ERA", num: true },
  { key: "averaging_failures", label: "Avg fail", num: true, title: "averaging failures / rounds since start" },
];

function cell(peer, key) {
  const td = el("td");
  switch (key) {
    case "state": {
      td.appendChild(el("span", `pill state-${peer.state}`, peer.state));
      if (peer.state === "unreachable") td.title = `silent for ${duration(peer.silent_s)}`;
      break;
    }
    case "peer_id": {
      const swatch = el("span", "swatch dot");
      if (ui.selected.has(peer.peer_id)) swatch.style.background = ui.selected.get(peer.peer_id);
      td.append(swatch, el("span", "mono", shortId(peer.peer_id)));
      td.title = `${peer.peer_id}\n${peer.address || "no address reported"}`;
      break;
    }
    case "version":
      td.textContent = peer.version || "–";
      if (peer.version_mismatch) {
        td.className = "mismatch";
        td.title = `differs from the coordinator's ${state.coordinator.version}`;
        td.prepend(el("span", "warn-icon", "⚠ "));
      }
      break;
    case "address":
      td.append(el("span", "addr", hostPort(peer.address)),
                el("span", `reach ${peer.reachability || "unknown"}`, peer.reachability || ""));
      td.title = peer.address || "no address reported";
      break;
    case "last_seen":
      td.textContent = duration(peer.silent_s);
      td.title = clock(peer.last_seen);
      td.className = "num";
      break;
    case "epoch":
      td.textContent = peer.epoch ?? "–";
      if (peer.epoch_lag) td.appendChild(el("span", "lag", ` −${peer.epoch_lag}`));
      td.className = "num";
      break;
    case "bytes_sent":
    case "bytes_received": {
      td.textContent = bytes(peer[key]);
      td.className = "num";
      const way = key === "bytes_sent" ? ["sent", "served"] : ["received", "downloaded"];
      if (peer[`gradient_bytes_${way[0]}`] !== null && peer[`gradient_bytes_${way[0]}`] !== undefined) {
        td.title = `gradients ${bytes(peer[`gradient_bytes_${way[0]}`])} · ` +
          `state averaging ${bytes(peer[`state_averaging_bytes_${way[0]}`])} · ` +
          `besides these, full state ${way[1]} ${bytes(peer[`state_bytes_${way[1]}`])}`;
      }
      break;
    }
    case "compression_ratio":
      td.textContent = peer[key] ? `${fmt(peer[key], 3)}×` : "–";
      td.className = "num";
      break;
    case "reward":
      td.textContent = peer.reward === null ? "–" : (peer.reward >= 0 ? "+" : "") + fmt(peer.reward, 3);
      td.className = "num";
      break;
    case "accuracy":
    case "heldout_accuracy":
      td.textContent = pct(peer[key]);
      td.className = "num";
      break;
    case "averaging_failures":
      td.textContent = peer.averaging_failures === null ? "–"
        : `${peer.averaging_failures} / ${peer.averaging_failures + peer.averaging_rounds}`;
      td.className = peer.averaging_failures ? "num bad-text" : "num";
      if (peer.last_averaging_error) td.title = peer.last_averaging_error;
      break;
    default:
      td.textContent = fmt(peer[key], 4);
      td.className = "num";
  }
  return td;
}

function renderTableHead() {
  const head = $("peer-head");
  head.replaceChildren();
  for (const column of COLUMNS) {
    const th = el("th", column.num ? "num" : null, column.label);
    if (column.title) th.title = column.title;
    if (column.sortable !== false) {
      th.classList.add("sortable");
      if (ui.table.sort === column.key) th.classList.add(ui.table.order === "asc" ? "asc" : "desc");
      th.addEventListener("click", () => {
        const t = ui.table;
        if (t.sort === column.key) t.order = t.order === "asc" ? "desc" : "asc";
        else {
          t.sort = column.key;
          t.order = column.order || (column.num ? "desc" : "asc");
        }
        t.offset = 0;
        renderTableHead();
        refreshSoon();
      });
    }
    head.appendChild(th);
  }
}

function renderTable() {
  const page = state.peers;
  const body = $("peer-rows");
  body.replaceChildren();
  for (const peer of page.items) {
    const tr = el("tr", `state-row state-${peer.state}`);
    tr.dataset.peer = peer.peer_id;
    if (ui.selected.has(peer.peer_id)) tr.classList.add("selected");
    for (const column of COLUMNS) tr.appendChild(cell(peer, column.key));
    tr.addEventListener("click", () => toggleSelected(peer.peer_id));
    body.appendChild(tr);
  }
  if (!page.items.length) {
    const tr = el("tr");
    const td = el("td", "empty-row", page.total ? "no peer matches the filter" : "no peer has been seen yet");
    td.colSpan = COLUMNS.length;
    tr.appendChild(td);
    body.appendChild(tr);
  }
  const first = page.matching ? page.offset + 1 : 0;
  const last = Math.min(page.offset + page.limit, page.matching);
  $("page-info").textContent = `${first}–${last} of ${page.matching}`;
  $("page-prev").disabled = page.offset === 0;
  $("page-next").disabled = last >= page.matching;
  $("peers-count").textContent = page.matching === page.total ? `${page.total}` : `${page.matching} of ${page.total}`;
  renderStateFilter();
}

function renderStateFilter() {
  const box = $("state-filter");
  box.replaceChildren();
  for (const name of STATES) {
    const button = el("button", `chip filter state-${name}`, `${name} ${state.swarm.by_state[name]}`);
    button.type = "button";
    button.setAttribute("aria-pressed", ui.table.states.includes(name) ? "true" : "false");
    button.addEventListener("click", () => {
      const states = ui.table.states;
      ui.table.states = states.includes(name) ? states.filter((s) => s !== name) : [...states, name];
      ui.table.offset = 0;
      refreshSoon();
    });
    box.appendChild(button);
  }
}

// ---------------------------------------------------------------- rendering: health and activity

function renderLogs() {
  const alertLog = $("alert-log");
  alertLog.replaceChildren();
  const entries = [...state.alerts.active, ...state.alerts.resolved];
  for (const alert of entries.slice(0, 40)) {
    const li = el("li", `log-row ${alert.severity}${alert.ended_at ? " resolved" : ""}`);
    const when = alert.ended_at
      ? `${clock(alert.started_at)} → ${clock(alert.ended_at)} (${duration(alert.ended_at - alert.started_at)}), rounds ${alert.started_round}–${alert.ended_round}`
      : `since ${clock(alert.started_at)} (${duration(state.generated_at - alert.started_at)}), round ${alert.started_round}`;
    li.append(el("span", "sev", alert.ended_at ? "resolved" : alert.severity), el("span", "msg", alert.message),
              el("span", "when", when));
    alertLog.appendChild(li);
  }
  if (!entries.length) alertLog.appendChild(el("li", "muted", "no alert so far"));

  const behindLog = $("behind-log");
  behindLog.replaceChildren();
  const spans = history ? history.behind : [];
  for (const span of spans.slice(0, 20)) {
    const li = el("li", "log-row");
    li.append(el("span", "mono", shortId(span.peer_id)),
              el("span", "msg", span.last_round ? `behind in rounds ${span.first_round}–${span.last_round}`
                                                : `behind since round ${span.first_round} (ongoing)`));
    behindLog.appendChild(li);
  }
  if (!spans.length) behindLog.appendChild(el("li", "muted", "no peer fell behind in this window"));

  const eventLog = $("event-log");
  eventLog.replaceChildren();
  for (const event of state.events) {
    const li = el("li", `log-row event ${event.kind}`);
    const what = {
      round_completed: `round ${event.round} committed: ${event.detail}`,
      round_skipped: `round skipped: ${event.detail}`,
      peer_joined: `peer ${shortId(event.peer_id)} joined`,
      peer_left: `peer ${shortId(event.peer_id)} left (${event.detail})`,
      record_rejected: `record from ${event.peer_id} rejected: ${event.detail}`,
    }[event.kind] || `${event.kind}: ${event.detail}`;
    li.append(el("span", "when", clock(event.at)), el("span", "dot-kind"), el("span", "msg", what));
    eventLog.appendChild(li);
  }
  if (!state.events.length) eventLog.appendChild(el("li", "muted", "nothing has happened since the coordinator started"));
}

// ---------------------------------------------------------------- wiring

function wire() {
  $("pause").addEventListener("click", () => {
    ui.paused = !ui.paused;
    $("pause").textContent = ui.paused ? "Resume" : "Pause";
    renderLive();
    if (!ui.paused) refreshSoon();
  });
  $("coordinator-key").addEventListener("click", (e) => state && copyText(state.coordinator.key, e.currentTarget));
  $("join-address").addEventListener("click", (e) => state && copyText(state.coordinator.visible_maddrs[0] || "",
                                                                         e.currentTarget));
  $("window").addEventListener("change", (e) => {
    ui.windowRounds = Number(e.target.value);
    refreshSoon();
  });
  $("page-size").addEventListener("change", (e) => {
    ui.table.limit = Number(e.target.value);
    ui.table.offset = 0;
    refreshSoon();
  });
  $("page-prev").addEventListener("click", () => {
    ui.table.offset = Math.max(0, ui.table.offset - ui.table.limit);
    refreshSoon();
  });
  $("page-next").addEventListener("click", () => {
    ui.table.offset += ui.table.limit;
    refreshSoon();
  });
  let typing = null;
  $("peer-search").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      ui.table.q = e.target.value.trim();
      ui.table.offset = 0;
      refreshSoon();
    }, 250);
  });
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      drawnHistory = "";
      drawnDistributions = "";
      if (state) render();
    }, 150);
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshSoon();
  });
  renderTableHead();
}

wire();
tick();
