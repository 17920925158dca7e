// nnscratch dashboard: polls the server's JSON (/api/runs, /api/run/ID) and draws it with plotly.js.
// Live updates are polling: the run's view every second (answered "unchanged" when its log has not
// grown), the list every three seconds. Nothing here reloads the page.
"use strict";

const COLORS = { numpy: "#1f77b4", torch: "#d62728" };
const OVERLAY_COLORS = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const state = {
  runs: [], selected: null, selectedName: null, version: null, view: null,
  overlay: new Set(), overlayViews: {}, smoothing: 0.6, lost: false,
};
window.nnscratchDashboard = state;  // for the browser tests

const $ = (id) => document.getElementById(id);

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  return { status: response.status, body };
}

function setConnection(ok, text) {
  const el = $("connection");
  el.textContent = text;
  el.classList.toggle("down", !ok);
}

function showMessage(text) {
  const el = $("message");
  el.hidden = !text;
  el.textContent = text || "";
}

function showWarnings(view) {
  const el = $("warnings");
  const warnings = (view && view.warnings) || [];
  el.hidden = warnings.length === 0;
  el.replaceChildren();
  if (!warnings.length) return;
  const title = document.createElement("strong");
  const more = view.warning_count > warnings.length ? ` (first ${warnings.length} shown)` : "";
  title.textContent = `Warning: ${view.warning_count} problem(s) in this run's metrics.jsonl${more}:`;
  const list = document.createElement("ul");
  for (const w of warnings) {
    const li = document.createElement("li");
    li.textContent = w;
    list.appendChild(li);
  }
  el.append(title, list);
}

// -- the list of runs --------------------------------------------------------------------------

function renderRuns() {
  const list = $("runs");
  list.replaceChildren();
  state.runs.forEach((run) => {
    const li = document.createElement("li");
    li.dataset.id = run.id;
    li.className = run.id === state.selected ? "selected" : "";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.title = "overlay on the charts";
    box.checked = state.overlay.has(run.id);
    box.addEventListener("click", (e) => {
      e.stopPropagation();
      if (box.checked) state.overlay.add(run.id); else { state.overlay.delete(run.id); delete state.overlayViews[run.id]; }
      refreshRun(true);
    });
    const text = document.createElement("div");
    const name = document.createElement("div");
    name.className = "run-name";
    name.textContent = run.name;
    const badge = document.createElement("span");
    badge.className = `status ${run.status}`;
    badge.textContent = run.status;
    name.appendChild(badge);
    const meta = document.createElement("div");
    meta.className = "run-meta";
    const best = run.best_accuracy == null ? "–" : `${(100 * run.best_accuracy).toFixed(2)} %`;
    meta.textContent = `${run.dataset} · best val acc ${best}` + (run.warnings ? ` · ${run.warnings} warning(s)` : "")
      + (run.summary ? ` · ${run.summary}` : "");
    text.append(name, meta);
    li.append(box, text);
    li.addEventListener("click", () => select(run.id));
    list.appendChild(li);
  });
}

async function refreshRuns() {
  let answer;
  try { answer = await getJSON("/api/runs"); } catch (e) { setConnection(false, "server unreachable (stopped?)"); return; }
  if (answer.status !== 200 || !answer.body) return;
  setConnection(true, "live");
  state.runs = answer.body.runs;
  $("runs-dir").textContent = `in ${answer.body.runs_dir}/`;
  const follow = new URLSearchParams(location.hash.slice(1)).get("name");
  const live = follow && state.runs.find((r) => r.name === follow && r.status === "running");
  if (live && live.id !== state.selected) {
    select(live.id);  // #name=NAME (--dashboard): the run of that name training now, once it has started
    return;
  }
  if (state.selected && !state.runs.some((r) => r.id === state.selected)) {
    // a run that finished was moved from its staging folder to its final one: follow it
    const moved = state.runs.find((r) => r.name === state.selectedName);
    if (moved) { select(moved.id); return; }
  }
  if (!state.selected) {
    const wanted = new URLSearchParams(location.hash.slice(1)).get("run");
    const first = follow ? live : (wanted ? findRun(wanted) : state.runs[0]);
    if (first) { showMessage(""); select(first.id); return; }
    if (follow || wanted) showMessage(`Waiting for the run ${follow || wanted} to start…`);
  }
  renderRuns();
}

// #run=ID names a run folder (a run still training is in its staging folder, .NAME.staging-XXXX);
// #name=NAME (what --dashboard prints) follows the run of that name that is training
function findRun(wanted) {
  if (!wanted) return null;
  return state.runs.find((r) => r.id === wanted) || state.runs.find((r) => r.name === wanted) || null;
}

function select(id) {
  state.selected = id;
  const run = state.runs.find((r) => r.id === id);
  state.selectedName = run ? run.name : id;
  state.version = null;
  state.view = null;
  state.lost = false;
  const follow = new URLSearchParams(location.hash.slice(1)).get("name");
  if (!follow || !run || run.name !== follow) history.replaceState(null, "", `#run=${encodeURIComponent(id)}`);
  renderRuns();
  refreshRun(true);
}

// -- one run -----------------------------------------------------------------------------------

function points() {
  const width = $("chart-main").clientWidth || 1000;
  return Math.max(500, Math.min(4000, 2 * width));
}

function viewURL(id, since) {
  const q = new URLSearchParams({ points: points(), smoothing: state.smoothing });
  if (since) q.set("since", since);
  return `/api/run/${encodeURIComponent(id)}?${q}`;
}

let busy = false;
async function refreshRun(force) {
  if (!state.selected || (busy && !force)) return;
  busy = true;
  try {
    const id = state.selected;
    const answer = await getJSON(viewURL(id, force ? null : state.version));
    if (id !== state.selected) return;
    if (answer.status === 404) {
      state.lost = true;
      showMessage(`This run is gone: ${(answer.body && answer.body.error) || "not found"}. `
        + "The charts show what was read before.");
      return;
    }
    if (answer.status !== 200 || !answer.body) { showMessage(`The server answered ${answer.status}.`); return; }
    setConnection(true, "live");
    let changed = !answer.body.unchanged;
    if (changed) { state.view = answer.body; state.version = answer.body.version; }
    for (const other of state.overlay) {
      if (other === id) continue;
      const old = state.overlayViews[other];
      try {
        const o = await getJSON(viewURL(other, force || !old ? null : old.version));
        if (o.status === 200 && o.body && !o.body.unchanged) { state.overlayViews[other] = o.body; changed = true; }
      } catch (e) { /* shown by the list's refresh */ }
    }
    if (changed || force) render();
    state.lost = false;
    showMessage(state.view && state.view.missing ? "This run's metrics.jsonl is gone (deleted?); the charts show what was read before." : "");
  } catch (e) {
    setConnection(false, "server unreachable (stopped?)");
    showMessage("The dashboard server does not answer: it stopped (a --dashboard server ends with its run). "
      + "The charts show what was read before; nnscratch dashboard shows the runs again.");
  } finally {
    busy = false;
  }
}

function baseLayout(title, extra) {
  return Object.assign({
    title: { text: title, font: { size: 14 }, x: 0.01, xanchor: "left" }, uirevision: state.selected, hovermode: "x unified",
    margin: { l: 60, r: 60, t: 40, b: 40 }, legend: { orientation: "h", y: -0.18 },
    xaxis: { title: { text: "step" } },
  }, extra || {});
}

const PLOT_CONFIG = { responsive: true, displaylogo: false };

function lossTraces(view, label, color, dash, withRaw) {
  const traces = [];
  for (const [engine, e] of Object.entries(view.engines)) {
    const c = color || COLORS[engine] || "#444";
    const name = label ? `${label} ${engine}` : engine;
    const group = `${label || ""}${engine}`;
    if (withRaw) {
      traces.push({ name: `${name} loss (raw)`, x: e.loss.x, y: e.loss.y, type: "scatter", mode: "lines",
        line: { color: c, width: 1 }, opacity: 0.3, legendgroup: group });
    }
    traces.push({ name: `${name} loss`, x: e.smoothed.x, y: e.smoothed.y, type: "scatter", mode: "lines",
      line: { color: c, width: 2, dash }, legendgroup: group });
    traces.push({ name: `${name} val accuracy`, x: e.val_accuracy.x, y: e.val_accuracy.y, customdata: e.val_accuracy.epoch,
      type: "scatter", mode: "lines+markers", yaxis: "y2", legendgroup: group,
      line: { color: c, width: 1.5, dash: dash || "dot" }, marker: { size: 7, symbol: engine === "torch" ? "diamond" : "circle" },
      hovertemplate: "epoch %{customdata}: %{y:.4f}" });
  }
  return traces;
}

function render() {
  const view = state.view;
  if (!view) return;
  $("run-title").textContent = `${view.name} — ${view.status}`;
  $("run-summary").textContent = `${view.dataset}${view.summary ? " · " + view.summary : ""}`;
  showWarnings(view);
  const overlays = Object.entries(state.overlayViews).filter(([id]) => state.overlay.has(id) && id !== state.selected);
  // loss and accuracy, both engines (and the overlaid runs) on one chart
  let main = lossTraces(view, "", null, undefined, true);
  overlays.forEach(([id, v], k) => { main = main.concat(lossTraces(v, v.name, OVERLAY_COLORS[k % OVERLAY_COLORS.length], "dash", false)); });
  Plotly.react("chart-main", main, baseLayout(`Loss per step (smoothing ${view.smoothing}) and validation accuracy per epoch`, {
    yaxis: { title: { text: "training loss" } },
    yaxis2: { title: { text: "val accuracy" }, overlaying: "y", side: "right", rangemode: "tozero", tickformat: ".0%", showgrid: false },
  }), PLOT_CONFIG);
  // the twin divergence
  const div = [];
  if (view.divergence) div.push({ name: "|loss numpy − loss torch|", x: view.divergence.x, y: view.divergence.y, type: "scatter", mode: "lines", line: { color: "#6a3d9a" } });
  overlays.forEach(([id, v], k) => { if (v.divergence) div.push({ name: `${v.name}`, x: v.divergence.x, y: v.divergence.y, type: "scatter", mode: "lines", line: { color: OVERLAY_COLORS[k % OVERLAY_COLORS.length], dash: "dash" } }); });
  Plotly.react("chart-divergence", div, baseLayout(view.divergence ? "Twin divergence" : "Twin divergence (a comparison only)", { yaxis: { title: { text: "|Δ loss|" }, exponentformat: "e", rangemode: "tozero" } }), PLOT_CONFIG);
  // the learning rate
  const lr = [];
  for (const [engine, e] of Object.entries(view.engines)) lr.push({ name: `${engine} lr`, x: e.lr.x, y: e.lr.y, type: "scatter", mode: "lines", line: { color: COLORS[engine], dash: engine === "torch" ? "dash" : undefined } });
  overlays.forEach(([id, v], k) => { for (const [engine, e] of Object.entries(v.engines)) lr.push({ name: `${v.name} ${engine} lr`, x: e.lr.x, y: e.lr.y, type: "scatter", mode: "lines", line: { color: OVERLAY_COLORS[k % OVERLAY_COLORS.length], dash: "dash" } }); });
  Plotly.react("chart-lr", lr, baseLayout("Learning rate", { yaxis: { title: { text: "lr" }, exponentformat: "e", rangemode: "tozero" } }), PLOT_CONFIG);
  // the gradient flow: each parameter's gradient norm per epoch
  const grad = [];
  const params = [];  // one colour per parameter, the same for both engines (torch dashed)
  for (const [engine, e] of Object.entries(view.engines)) {
    for (const [param, s] of Object.entries(e.gradient_norms)) {
      if (!params.includes(param)) params.push(param);
      const color = OVERLAY_COLORS.concat(Object.values(COLORS))[params.indexOf(param) % 10];
      grad.push({ name: `${engine} ${param}`, x: s.x, y: s.y, type: "scatter", mode: "lines+markers", legendgroup: engine,
        line: { color, dash: engine === "torch" ? "dash" : "solid" }, marker: { color, symbol: engine === "torch" ? "diamond" : "circle" } });
    }
  }
  Plotly.react("chart-grad", grad, baseLayout("Gradient flow: ‖gradient‖ per parameter per epoch (mean of the sampled steps)", {
    xaxis: { title: { text: "epoch" }, dtick: 1 }, yaxis: { type: "log", title: { text: "‖g‖" }, exponentformat: "e" },
  }), PLOT_CONFIG);
  renderFigures(view);
}

function renderFigures(view) {
  const box = $("figures");
  const have = Array.from(box.querySelectorAll("img")).map((i) => i.dataset.name).join("/");
  if (have === view.figures.join("/")) return;
  box.replaceChildren();
  $("figures-note").hidden = view.figures.length > 0;
  for (const name of view.figures) {
    const fig = document.createElement("figure");
    const link = document.createElement("a");
    link.href = `/run/${encodeURIComponent(view.id)}/${encodeURIComponent(name)}`;
    link.target = "_blank";
    const img = document.createElement("img");
    img.src = link.href;
    img.alt = name;
    img.loading = "lazy";
    img.dataset.name = name;
    const caption = document.createElement("figcaption");
    caption.textContent = name;
    link.appendChild(img);
    fig.append(link, caption);
    box.appendChild(fig);
  }
}

// -- start -------------------------------------------------------------------------------------

$("smoothing").addEventListener("input", (e) => {
  state.smoothing = Number(e.target.value);
  $("smoothing-value").textContent = state.smoothing.toFixed(2);
});
$("smoothing").addEventListener("change", () => { state.overlayViews = {}; refreshRun(true); });

window.addEventListener("hashchange", () => {
  const wanted = new URLSearchParams(location.hash.slice(1)).get("run");
  const run = findRun(wanted);
  if (run && run.id !== state.selected) select(run.id); else if (wanted && !run) select(wanted);
});

refreshRuns();
setInterval(refreshRuns, 3000);
setInterval(() => refreshRun(false), 1000);
