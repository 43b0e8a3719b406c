// archscreen dashboard: plain JavaScript, no external assets, served by the API itself.
// The token is entered once and kept in sessionStorage; every request sends it as a Bearer header.
// Study pages follow the study's Server-Sent Events stream (read with fetch, so the header can be
// sent) and fall back to polling /summary with If-None-Match when the stream is unavailable.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "archscreen-token";
const COLORS = ["#3459d6", "#d6336c", "#1e8e4f", "#b7791f", "#7048e8", "#0c8599", "#e8590c", "#5c940d",
                "#862e9c", "#495057"];
const app = document.getElementById("app");
const live = document.getElementById("live");
const etagCache = new Map();   // url -> {etag, body}
let pageController = null;     // aborts the current page's stream/polling on navigation
window.__archscreenBoot = (window.__archscreenBoot || 0) + 1;

// ------------------------------------------------------------------ helpers

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function fmt(x, digits = 4) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (Math.abs(x) >= 1e4 || (Math.abs(x) > 0 && Math.abs(x) < 1e-3)) return x.toExponential(2);
  return Number(x).toFixed(digits);
}
function fmtLr(x) { return x ? Number(x).toPrecision(3) : "–"; }
// The extrapolated best-rate score and the fit's own uncertainty band (not a calibrated interval:
// docs/fidelity.md): "est. 95.1 [93.8, 96.0]" (accuracy in percent).
function fmtEst(e) {
  if (!e) return "–";
  const f = e.metric === "val_accuracy" ? (x) => (100 * x).toFixed(1) : (x) => fmt(x, 3);
  return `est. ${f(e.value)} [${f(e.low)}, ${f(e.high)}]`;
}
function fmtSecs(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}
function badge(state) { return `<span class="badge ${esc(state)}" data-state="${esc(state)}">${esc(state)}</span>`; }
// ASHA (a search study): where a paused or stopped run is, next to its state badge
function rungNote(c) {
  if (c.rung_epochs === null || c.rung_epochs === undefined) return "";
  const where = c.state === "paused" ? "paused at" : c.state === "stopped" ? "stopped at" : "rung";
  return ` <span class="rung" data-rung-epochs="${c.rung_epochs}">${where} ${c.rung_epochs} ep</span>`;
}
function progressBar(p, state) {
  const done = ["succeeded", "failed", "cancelled", "diverged", "stopped"].includes(state);
  const pct = Math.round(100 * (done ? 1 : p.fraction));
  const eta = state === "running" && p.eta_s !== null ? `, ETA ${fmtSecs(p.eta_s)}` : "";
  return `<span class="pbar ${done ? "done" : ""}" data-fraction="${p.fraction}"><span style="width:${pct}%"></span></span>` +
    `<span class="progress-label">epoch ${p.epoch} / ${p.max_epochs}${eta}</span>`;
}
function token() { return sessionStorage.getItem(TOKEN_KEY); }

class AuthError extends Error {}

async function api(path, { method = "GET", body, cache = method === "GET" } = {}) {
  const url = API + path;
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const hit = cache ? etagCache.get(url) : undefined;
  if (hit) headers["If-None-Match"] = hit.etag;
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) throw new AuthError((await r.json()).detail);
  if (r.status === 304 && hit) return hit.body;
  const data = r.status === 204 ? null : await r.json();
  if (!r.ok) {
    const d = data && data.detail;
    const msg = Array.isArray(d) ? d.map((e) => `${e.path}: ${e.msg}`).join("; ") : d || r.statusText;
    throw new Error(`HTTP ${r.status}: ${msg}`);
  }
  const etag = r.headers.get("ETag");
  if (cache && etag) etagCache.set(url, { etag, body: data });
  return data;
}

// ------------------------------------------------------------------ charts (SVG)

function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) { hi = lo + 1; }
  const span = hi - lo, step0 = span / n, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= n) || 10 * mag;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-12; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

// series: [{name, color, points: [[x, y], ...], step?}] (step: a staircase); options: {logY, xLabel, yLabel, hline: {y, label},
// bands: [{name, color, x0, x1, low, high, value}] (estimate intervals, shaded; linear charts only)}
function lineChart(series, { logY = false, xLabel = "", yLabel = "", hline = null, id = "", bands = [] } = {}) {
  const W = 560, H = 250, L = 56, R = 12, T = 10, B = 34;
  const pts = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]) && (!logY || p[1] > 0));
  if (!pts.length) return `<svg class="chart" data-chart="${esc(id)}" viewBox="0 0 ${W} ${H}"><text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data yet</text></svg>`;
  const fy = logY ? (v) => Math.log10(v) : (v) => v;
  let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  if (logY) bands = [];
  if (bands.length) x1 = Math.max(x1, ...bands.map((b) => b.x1));
  let ys = pts.map((p) => fy(p[1]));
  for (const b of bands) ys.push(b.low, b.high);
  if (hline) ys.push(fy(hline.y));
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (fy(y) - y0) / (y1 - y0)) * (H - T - B);
  let out = `<svg class="chart" data-chart="${esc(id)}" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">`;
  const yt = logY ? niceTicks(Math.floor(y0), Math.ceil(y1)).filter((t) => Number.isInteger(t)) : niceTicks(y0, y1);
  for (const t of yt) {
    const v = logY ? Math.pow(10, t) : t;
    if (fy(v) < y0 || fy(v) > y1) continue;
    out += `<line class="grid" x1="${L}" x2="${W - R}" y1="${sy(v)}" y2="${sy(v)}"/>` +
      `<text x="${L - 6}" y="${sy(v) + 4}" text-anchor="end">${logY ? "1e" + t : +t.toPrecision(4)}</text>`;
  }
  for (const t of niceTicks(x0, x1, 6)) {
    out += `<text x="${sx(t)}" y="${H - B + 16}" text-anchor="middle">${+t.toPrecision(6)}</text>`;
  }
  out += `<line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#c7ccd8"/>`;
  out += `<text x="${(L + W - R) / 2}" y="${H - 4}" text-anchor="middle">${esc(xLabel)}</text>`;
  out += `<text x="12" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 12 ${(T + H - B) / 2})">${esc(yLabel)}</text>`;
  if (hline) {
    out += `<line x1="${L}" x2="${W - R}" y1="${sy(hline.y)}" y2="${sy(hline.y)}" stroke="#1e8e4f" stroke-dasharray="5 4"/>` +
      `<text x="${W - R - 4}" y="${sy(hline.y) - 5}" text-anchor="end" fill="#1e8e4f">${esc(hline.label)}</text>`;
  }
  for (const b of bands) {
    // from the last epoch seen to the budget's end: where the estimate reads the fitted curve
    let xa = sx(b.x0), xb = Math.max(sx(b.x1), xa + 10);
    if (xb > W - R) { xa -= xb - (W - R); xb = W - R; }
    const ya = sy(b.high), h = Math.max(sy(b.low) - ya, 1.5);
    out += `<rect class="est-band" data-series="${esc(b.name)}" data-low="${b.low}" data-high="${b.high}" data-value="${b.value}" ` +
      `x="${xa.toFixed(1)}" y="${ya.toFixed(1)}" width="${(xb - xa).toFixed(1)}" height="${h.toFixed(1)}" fill="${b.color}" ` +
      `fill-opacity="0.16" stroke="${b.color}" stroke-opacity="0.45"><title>${esc(b.name)}: ${esc(b.label)}</title></rect>` +
      `<line class="est-line" x1="${xa.toFixed(1)}" x2="${xb.toFixed(1)}" y1="${sy(b.value).toFixed(1)}" y2="${sy(b.value).toFixed(1)}" ` +
      `stroke="${b.color}" stroke-dasharray="4 3"/>`;
  }
  for (const s of series) {
    const ok = s.points.filter((p) => Number.isFinite(p[1]) && (!logY || p[1] > 0));
    if (!ok.length) continue;
    // step: hold each value until the next point (a best-so-far curve changes only at points)
    const d = ok.map((p, i) => (i && s.step ? `L${sx(p[0]).toFixed(1)},${sy(ok[i - 1][1]).toFixed(1)}` : "") +
      `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    out += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.8"/>`;
    if (ok.length <= 400) {
      for (const p of ok) {
        out += `<circle class="pt" data-series="${esc(s.name)}" cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="2.6" fill="${s.color}"><title>${esc(s.name)}: ${p[0]}, ${fmt(p[1])}</title></circle>`;
      }
    }
  }
  return out + "</svg>";
}

function legend(series) {
  return `<div class="legend">${series.map((s) => `<span><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join("")}</div>`;
}

// bars: [{label, value}] (values are probabilities: the Switch posterior over copies' rates)
function barChart(bars, { id = "", xLabel = "", yLabel = "" } = {}) {
  const W = 560, H = 250, L = 46, R = 10, T = 10, B = 44;
  if (!bars.length) return `<svg class="chart" data-chart="${esc(id)}" viewBox="0 0 ${W} ${H}"><text x="${W / 2}" y="${H / 2}" text-anchor="middle">no posterior yet</text></svg>`;
  const vmax = Math.max(...bars.map((b) => b.value), 1e-9);
  const bw = (W - L - R) / bars.length;
  let out = `<svg class="chart" data-chart="${esc(id)}" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">`;
  for (const t of niceTicks(0, vmax, 4)) {
    const y = T + (1 - t / vmax) * (H - T - B);
    if (y < T - 1) continue;
    out += `<line class="grid" x1="${L}" x2="${W - R}" y1="${y}" y2="${y}"/><text x="${L - 6}" y="${y + 4}" text-anchor="end">${+t.toPrecision(3)}</text>`;
  }
  bars.forEach((b, i) => {
    const h = (b.value / vmax) * (H - T - B);
    const x = L + i * bw + bw * 0.15;
    out += `<rect class="bar" data-value="${b.value}" x="${x.toFixed(1)}" y="${(H - B - h).toFixed(1)}" width="${(bw * 0.7).toFixed(1)}" height="${h.toFixed(1)}" fill="#3459d6"><title>lr ${esc(b.label)}: ${fmt(b.value, 3)}</title></rect>` +
      `<text x="${(x + bw * 0.35).toFixed(1)}" y="${H - B + 14}" text-anchor="middle">${esc(b.label)}</text>`;
  });
  out += `<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">${esc(xLabel)}</text>`;
  out += `<text x="12" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 12 ${(T + H - B) / 2})">${esc(yLabel)}</text>`;
  return out + "</svg>";
}

// ------------------------------------------------------------------ pages

function showLogin(message, kind = "error") {
  stopPage();
  document.getElementById("logout").hidden = true;
  app.innerHTML = `
    <div class="card login">
      <h1>Sign in with an API token</h1>
      <p class="muted">Paste a token from <code>archscreen up</code> (it prints one) or
        <code>archscreen token create --tenant NAME</code>. It is kept for this browser session only.</p>
      ${message ? `<div class="message ${kind}" id="login-message" role="alert">${esc(message)}</div>` : ""}
      <form id="login" class="row">
        <input id="token" type="password" placeholder="as_…" autocomplete="off" size="44" required>
        <button type="submit">Open dashboard</button>
      </form>
    </div>`;
  document.getElementById("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    etagCache.clear();
    route();
  });
}

function stopPage() {
  if (pageController) pageController.abort();
  pageController = null;
  live.classList.remove("on");
  live.textContent = "";
}

async function studiesPage() {
  const page = await api("/studies?limit=200");
  const rows = page.data.map((s) => {
    const counts = Object.entries(s.jobs_by_state).map(([st, n]) => `${badge(st)} ${n}`).join(" ");
    return `<tr data-study="${s.id}"><td><a href="#/studies/${s.id}">${esc(s.name)}</a></td><td>${datasetLabel(s.dataset)}</td>
      <td class="num">${s.candidates}</td><td>${counts || '<span class="muted">no jobs</span>'}</td>
      <td>${s.policy.auto ? `auto top-${s.policy.top_k} → ${esc(s.policy.tuner)}` : `manual (${esc(s.policy.tuner)})`}</td>
      <td class="muted">${new Date(s.created_at).toLocaleString()}</td></tr>`;
  }).join("");
  app.innerHTML = `<div class="row"><h1>Studies <span class="muted">(${page.count})</span></h1><a href="#/datasets">datasets →</a></div>
    ${page.count ? `<table id="studies"><thead><tr><th>study</th><th>dataset</th><th class="num">candidates</th>
      <th>jobs by state</th><th>promotion</th><th>created</th></tr></thead><tbody>${rows}</tbody></table>`
      : `<div class="card muted">No studies yet. Submit one with <code>archscreen submit SPEC --study NAME --dataset mnist1d</code>
         or <code>POST /api/v1/studies</code>.</div>`}`;
}

function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function datasetLabel(name) {
  // a study's dataset: a built-in name, or ds_<id> linking to the uploaded dataset
  const m = /^ds_(\d+)$/.exec(name);
  return m ? `<a href="#/datasets" data-dataset-ref="${esc(name)}">${esc(name)}</a>` : esc(name);
}

async function datasetsPage() {
  const [page, studies] = await Promise.all([api("/datasets?limit=500"), api("/studies?limit=500")]);
  const usedBy = new Map();
  for (const s of studies.data) {
    if (!usedBy.has(s.dataset)) usedBy.set(s.dataset, []);
    usedBy.get(s.dataset).push(s);
  }
  const rows = page.data.map((d) => {
    const users = (usedBy.get(d.ref) || []).map((s) => `<a href="#/studies/${s.id}">${esc(s.name)}</a>`).join(", ");
    const target = d.task === "regression" ? `target dim ${d.target_dim}`
      : d.task === "language_model" ? `vocabulary ${d.vocab_size}` : `${d.num_classes} classes`;
    const splits = `${d.split_sizes.train} / ${d.split_sizes.val} / ${d.split_sizes.test}`;
    return `<tr data-dataset="${d.id}"><td><code>${esc(d.ref)}</code></td><td>${esc(d.name)}</td>
      <td>${esc(d.format)}${d.label_column ? ` (label <code>${esc(d.label_column)}</code>)` : ""}</td>
      <td>${esc(d.task)}</td><td>[${d.input_shape.join(", ")}]</td><td>${esc(target)}</td>
      <td class="num">${splits}</td><td class="num">${fmtBytes(d.size_bytes)}</td>
      <td>${users || '<span class="muted">none</span>'}</td>
      <td class="muted" title="${esc(d.sha256)}"><code>${esc(d.sha256.slice(0, 12))}…</code></td></tr>`;
  }).join("");
  app.innerHTML = `<div class="row"><h1>Datasets <span class="muted">(${page.count})</span></h1><a href="#/">← studies</a></div>
    ${page.count ? `<table id="datasets"><thead><tr><th>ref</th><th>name</th><th>format</th><th>task</th>
      <th>input shape</th><th>target</th><th class="num">train / val / test</th><th class="num">size</th>
      <th>used by</th><th>sha256</th></tr></thead><tbody>${rows}</tbody></table>`
      : `<div class="card muted">No datasets yet. Upload one with <code>archscreen dataset upload FILE</code>
         or <code>POST /api/v1/datasets</code>.</div>`}`;
}

const curveCache = new Map();  // candidate id -> {progressKey, detail}

async function candidateDetails(summary) {
  // Fetch (ETag-cached) details only for candidates whose progress changed since the last render.
  const out = [];
  for (const c of summary.candidates.slice(0, 30)) {
    const key = `${c.state}-${c.progress.epoch}`;
    const hit = curveCache.get(c.id);
    if (hit && hit.key === key) { out.push(hit.detail); continue; }
    const detail = await api(`/candidates/${c.id}`);
    curveCache.set(c.id, { key, detail });
    out.push(detail);
  }
  return out;
}

function curveSeries(details, field) {
  return details.map((d, i) => ({
    name: d.name,
    color: COLORS[i % COLORS.length],
    points: (d.runs[0] ? d.runs[0].curves : []).map((p) => [p.epoch, p[field]]).filter((p) => p[1] !== null),
  }));
}

// Each candidate's estimate interval as a band on the chart of the same quantity: validation accuracy
// (classification), or validation loss for a language model (bits per character × ln 2 = nats). A
// regression estimate (MSE) has no chart of its quantity here, so it draws none; no estimate, no band.
function estimateBands(details, field) {
  const scale = { val_accuracy: { val_accuracy: 1 }, val_loss: { val_bpc: Math.LN2 } }[field] || {};
  const bands = [];
  details.forEach((d, i) => {
    const e = d.estimate, run = d.runs[0];
    const k = e ? scale[e.metric] : undefined;
    if (k === undefined || !run || !run.curves.length) return;
    const x0 = run.curves[run.curves.length - 1].epoch;
    bands.push({ name: d.name, color: COLORS[i % COLORS.length], x0, x1: Math.max(run.progress.max_epochs, x0),
                 low: k * e.low, high: k * e.high, value: k * e.value, label: fmtEst(e) });
  });
  return bands;
}

async function renderStudy(studyId, summary, state) {
  const s = summary.study;
  const details = await candidateDetails(summary);
  const ranking = await rankingFor(studyId, summary, state);  // the metric chosen in the hash
  const [search, metricPicker] = [await searchView(studyId, s), await metricSelect(ranking)];
  const active = (st) => st === "queued" || st === "running";
  const rows = summary.candidates.map((c) => `
    <tr data-candidate="${c.id}" data-state="${c.state}">
      <td><a href="#/candidates/${c.id}">${esc(c.name)}</a></td><td>${badge(c.state)}${rungNote(c)}</td>
      <td>${progressBar(c.progress, c.state)}</td>
      <td class="num">${c.rank ?? "–"}</td><td class="num">${fmt(c.score)}${c.score_std ? ` ± ${fmt(c.score_std, 3)}` : ""}</td>
      <td class="num">${fmtLr(c.preferred_lr)}</td><td class="num">${c.num_params.toLocaleString()}</td>
      <td>${active(c.state) ? `<button class="danger" data-cancel="${c.id}">cancel</button>` : ""}</td>
    </tr>`).join("");
  const tuneRows = summary.tuning_jobs.map((j) => {
    const name = (summary.candidates.find((c) => c.id === j.candidate_id) || {}).name || j.candidate_id;
    return `<tr data-tuning-job="${j.id}" data-state="${j.state}"><td><a href="#/tuning-jobs/${j.id}">job ${j.id}</a></td>
      <td>${esc(name)}${j.start ? ` <span class="muted" data-start="${esc(j.start)}">start ${esc(j.start)}</span>` : ""}</td>
      <td>${badge(j.state)}</td><td>${progressBar(j.progress, j.state)}</td>
      <td class="num">${fmtLr(j.init_lr ?? (j.result && j.result.init_lr))}</td><td class="num">${fmtLr(j.result && j.result.recommended_lr)}</td>
      <td class="num">${fmt(j.result && j.result[summary.ranking.metric])}</td></tr>`;
  }).join("");
  const ranked = ranking.data.map((r) => `<tr><td class="num">${r.rank}</td><td>${esc(r.name)}</td>
      <td class="num">${fmt(r.score)}</td><td class="num est" data-estimate="${r.estimate ? r.estimate.value : ""}">${fmtEst(r.estimate)}</td>
      <td>${r.tied_with.length ? "tied" : ""}</td><td class="num">${fmtLr(r.preferred_lr)}</td>
      <td class="num">${fmt(r.tuned_score)}</td><td class="num">${fmtLr(r.recommended_lr)}</td></tr>`).join("");
  const withPosterior = details.filter((d) => d.switch_posterior && d.switch_posterior.length);
  if (!state.posteriorFor || !withPosterior.find((d) => d.id === state.posteriorFor)) {
    const best = summary.ranking.data[0];
    state.posteriorFor = best ? best.candidate_id : (withPosterior[0] || {}).id;
  }
  const post = withPosterior.find((d) => d.id === state.posteriorFor);
  const bars = post ? post.switch_posterior.map((e) => ({ label: Number(e.lr).toExponential(0), value: e.weight })) : [];
  const lossSeries = curveSeries(details, "val_loss");
  const accSeries = curveSeries(details, "val_accuracy");
  const counts = Object.entries(summary.candidate_states).map(([st, n]) => `${badge(st)} ${n}`).join(" ");
  app.innerHTML = `
    <div class="row"><h1>${esc(s.name)}</h1><span class="muted">study ${s.id} · ${datasetLabel(s.dataset)} · ${s.candidates} candidates</span></div>
    <div class="card row" id="study-progress">${counts} <span class="spacer"></span> ${progressBar(summary.progress, summary.progress.fraction >= 1 ? "succeeded" : "running")}</div>
    ${search}
    <h2>Candidates</h2>
    <table id="candidates"><thead><tr><th>candidate</th><th>state</th><th>progress</th><th class="num">rank</th>
      <th class="num">${esc(summary.ranking.metric)}</th><th class="num">preferred lr</th><th class="num">params</th><th></th></tr></thead>
      <tbody>${rows}</tbody></table>
    <div class="grid2">
      <div class="card"><h2>Validation loss per epoch</h2>${lineChart(lossSeries, { id: "val_loss", xLabel: "epoch", yLabel: "val loss", bands: estimateBands(details, "val_loss") })}${legend(lossSeries)}</div>
      <div class="card"><h2>Validation accuracy per epoch <span class="muted">(bands: estimates' fit uncertainty)</span></h2>${lineChart(accSeries, { id: "val_accuracy", xLabel: "epoch", yLabel: "val accuracy", bands: estimateBands(details, "val_accuracy") })}${legend(accSeries)}</div>
    </div>
    <div class="grid2">
      <div class="card"><h2>Where this architecture wants its rate: Switch posterior</h2>
        <div class="row"><label for="posterior-for" class="muted">candidate</label>
          <select id="posterior-for">${withPosterior.map((d) => `<option value="${d.id}" ${d.id === state.posteriorFor ? "selected" : ""}>${esc(d.name)}</option>`).join("")}</select></div>
        ${barChart(bars, { id: "posterior", xLabel: "learning rate of the output copy", yLabel: "posterior weight" })}</div>
      <div class="card"><h2>Ranking (${esc(ranking.metric)}, ${ranking.higher_is_better ? "higher" : "lower"} is better)</h2>
        <div class="row">${metricPicker}</div>
        <table id="ranking"><thead><tr><th class="num">#</th><th>candidate</th><th class="num">score</th><th class="num" title="extrapolated best-rate score [the fit's own uncertainty band, not a calibrated interval]">estimate</th><th></th><th class="num">preferred lr</th>
          <th class="num">tuned</th><th class="num">recommended lr</th></tr></thead><tbody>${ranked || '<tr><td colspan="8" class="muted">no candidate has finished yet</td></tr>'}</tbody></table>
        <div class="row" style="margin-top:10px"><label for="top-k" class="muted">promote the top</label>
          <input id="top-k" type="number" min="1" max="100" value="${s.policy.top_k}" style="width:64px">
          <button id="promote" ${summary.ranking.count ? "" : "disabled"}>Promote to ${esc(s.policy.tuner)} tuning</button>
          <span id="promote-message" class="muted"></span></div>
      </div>
    </div>
    <h2>Tuning jobs</h2>
    ${tuneRows ? `<table id="tuning-jobs"><thead><tr><th>job</th><th>candidate</th><th>state</th><th>progress</th><th class="num">initial lr</th>
      <th class="num">recommended lr</th><th class="num">${esc(summary.ranking.metric)}</th></tr></thead><tbody>${tuneRows}</tbody></table>`
      : `<p class="muted" id="no-tuning">No tuning jobs yet${s.policy.auto ? ` (the top ${s.policy.top_k} are promoted automatically when screening ends)` : ""}.</p>`}`;
  onMetricChange(studyId, summary, state);
  document.getElementById("posterior-for")?.addEventListener("change", (ev) => {
    state.posteriorFor = Number(ev.target.value);
    renderStudy(studyId, summary, state);
  });
  document.getElementById("promote").addEventListener("click", async () => {
    const k = Number(document.getElementById("top-k").value);
    const msg = document.getElementById("promote-message");
    try {
      const jobs = await api(`/studies/${studyId}/promote`, { method: "POST", body: { top_k: k } });
      msg.textContent = `${jobs.data.length} tuning job(s)`;
      state.refresh();
    } catch (e) { msg.textContent = e.message; }
  });
  for (const b of app.querySelectorAll("button[data-cancel]")) {
    b.addEventListener("click", async () => {
      b.disabled = true;
      await api(`/candidates/${b.dataset.cancel}/cancel`, { method: "POST" });
      state.refresh();
    });
  }
}

async function studyPage(studyId) {
  const controller = new AbortController();
  pageController = controller;
  const state = { posteriorFor: null, rendering: false, pending: null, metric: hashParams().get("metric") };
  const show = async (summary) => {
    if (controller.signal.aborted) return;
    if (state.rendering) { state.pending = summary; return; }
    state.rendering = true;
    try { await renderStudy(studyId, summary, state); } finally { state.rendering = false; }
    if (state.pending) { const next = state.pending; state.pending = null; show(next); }
  };
  state.refresh = async () => show(await api(`/studies/${studyId}/summary`));
  await state.refresh();
  followStudy(studyId, controller, show).catch(() => {});
}

async function followStudy(studyId, controller, show) {
  // Server-Sent Events through fetch (EventSource cannot send the Authorization header).
  try {
    const r = await fetch(`${API}/studies/${studyId}/events`, {
      headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" }, signal: controller.signal,
    });
    if (!r.ok || !r.body) throw new Error(`events: HTTP ${r.status}`);
    live.classList.add("on"); live.textContent = "live";
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i); buf = buf.slice(i + 2);
        const event = (block.match(/^event: (.*)$/m) || [])[1];
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (event === "summary" && data) show(JSON.parse(data));
      }
    }
  } catch (e) {
    if (controller.signal.aborted) return;
  }
  // Fallback: poll the summary (cheap: 304 while nothing changed).
  live.classList.remove("on"); live.textContent = "polling";
  while (!controller.signal.aborted) {
    await new Promise((res) => setTimeout(res, 2000));
    if (controller.signal.aborted) return;
    try { show(await api(`/studies/${studyId}/summary`)); } catch (e) { if (e instanceof AuthError) throw e; }
  }
}

async function candidatePage(id) {
  const d = await api(`/candidates/${id}`);
  const run = d.runs[0];
  const series = d.runs.map((r, i) => ({ name: `seed ${r.seed}`, color: COLORS[i % COLORS.length], points: r.curves.map((p) => [p.epoch, p.val_loss]) }));
  const layers = d.summary.map((r) => `<tr><td><code>${esc(r.path)}</code></td><td>${esc(r.kind)}</td><td>(${r.input_shape.join(", ")})</td>
    <td>(${r.output_shape.join(", ")})</td><td class="num">${r.params.toLocaleString()}</td></tr>`).join("");
  const bars = (d.switch_posterior || []).map((e) => ({ label: Number(e.lr).toExponential(0), value: e.weight }));
  app.innerHTML = `
    <div class="row"><h1>${esc(d.name)}</h1>${badge(d.state)}<a href="#/studies/${d.study_id}">← study ${d.study_id}</a></div>
    ${d.error ? `<div class="message error" id="candidate-error"><strong>Error</strong><pre>${esc(d.error)}</pre></div>` : ""}
    <div class="grid2">
      <div class="card"><dl class="kv">
        <dt>progress</dt><dd>${progressBar(d.progress, d.state)}</dd>
        <dt>parameters</dt><dd>${d.num_params.toLocaleString()}</dd>
        <dt>spec hash</dt><dd><code>${esc(d.spec_hash.slice(0, 16))}…</code></dd>
        <dt>preferred lr</dt><dd>${fmtLr(d.preferred_lr)}</dd>
        <dt>estimate (best-rate ${esc(d.estimate ? d.estimate.metric : "score")})</dt><dd id="estimate">${fmtEst(d.estimate)}</dd>
        ${Object.entries(d.metrics).map(([k, v]) => `<dt>${esc(k)}</dt><dd>${fmt(v)}</dd>`).join("")}
        <dt>stopped</dt><dd>${esc(run && run.result ? run.result.stopped_because : "–")}</dd>
      </dl></div>
      <div class="card"><h2>Spec</h2><pre id="spec">${esc(JSON.stringify(d.spec, null, 2))}</pre></div>
    </div>
    <h2>Layers, shapes and parameters</h2>
    <table id="layers"><thead><tr><th>path</th><th>kind</th><th>input</th><th>output</th><th class="num">params</th></tr></thead><tbody>${layers}</tbody></table>
    <div class="grid2">
      <div class="card"><h2>Validation loss</h2>${lineChart(series, { id: "candidate_val_loss", xLabel: "epoch", yLabel: "val loss" })}${legend(series)}</div>
      <div class="card"><h2>Switch posterior</h2>${barChart(bars, { id: "posterior", xLabel: "learning rate of the output copy", yLabel: "posterior weight" })}</div>
    </div>`;
}

async function tuningJobPage(id) {
  const j = await api(`/tuning-jobs/${id}`);
  const r = j.result || {};
  const traj = (r.trajectory || []).map((p) => [p[0], p[1]]);
  const hline = r.recommended_lr ? { y: r.recommended_lr, label: `recommended ${fmtLr(r.recommended_lr)}` } : null;
  const lrSeries = [{ name: "learning rate", color: COLORS[0], points: traj }];
  const curves = [
    { name: "train loss", color: COLORS[1], points: j.curves.map((p) => [p.epoch, p.train_loss]) },
    { name: "val loss", color: COLORS[0], points: j.curves.map((p) => [p.epoch, p.val_loss]) },
  ];
  app.innerHTML = `
    <div class="row"><h1>Tuning job ${j.id}</h1>${badge(j.state)}<a href="#/studies/${j.study_id}">← study ${j.study_id}</a>
      <a href="#/candidates/${j.candidate_id}">candidate ${j.candidate_id}</a></div>
    <div class="card"><dl class="kv">
      <dt>tuner</dt><dd>${esc(r.tuner || "–")}</dd>
      <dt>progress</dt><dd>${progressBar(j.progress, j.state)}</dd>
      <dt>initial lr (from the Alrao posterior)</dt><dd>${fmtLr(r.init_lr)}</dd>
      <dt>recommended lr</dt><dd id="recommended-lr"><strong>${fmtLr(r.recommended_lr)}</strong></dd>
      <dt>val loss / test accuracy</dt><dd>${fmt(r.val_loss)} / ${fmt(r.test_accuracy)}</dd>
      <dt>stopped</dt><dd>${esc(r.stopped_because || "–")}</dd>
      ${j.error ? `<dt>error</dt><dd class="message error">${esc(j.error)}</dd>` : ""}
    </dl></div>
    <div class="grid2">
      <div class="card"><h2>Learning-rate trajectory (log scale)</h2>${lineChart(lrSeries, { id: "trajectory", logY: true, xLabel: "step", yLabel: "learning rate", hline })}</div>
      <div class="card"><h2>Loss per epoch</h2>${lineChart(curves, { id: "tuning_loss", xLabel: "epoch", yLabel: "loss" })}${legend(curves)}</div>
    </div>`;
}

// ------------------------------------------------------------------ search studies (issue 29)
// A search study's page adds four plots from GET /studies/{id}/search: the trials in the order
// they were asked (pruned and failed ones marked on the axis), the best value so far against the
// compute spent, Optuna's fANOVA importances, and the Pareto front when there are two objectives.

function emptyChart(id, why) {
  return `<p class="muted empty-chart" data-empty="${esc(id)}">${esc(why)}</p>`;
}

// points: [{x, y, cls, color, title, cross}] (cross: an × marker); options as lineChart's, plus
// line: [[x, y], ...] drawn under the points (the Pareto front's staircase)
function scatterChart(points, { id = "", xLabel = "", yLabel = "", line = null } = {}) {
  const W = 560, H = 250, L = 56, R = 12, T = 10, B = 34;
  const ok = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  let x0 = Math.min(...ok.map((p) => p.x)), x1 = Math.max(...ok.map((p) => p.x));
  let y0 = Math.min(...ok.map((p) => p.y)), y1 = Math.max(...ok.map((p) => p.y));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const px = (x1 - x0) * 0.04, py = (y1 - y0) * 0.08; x0 -= px; x1 += px; y0 -= py; y1 += py;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  let out = `<svg class="chart" data-chart="${esc(id)}" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">`;
  for (const t of niceTicks(y0, y1)) {
    out += `<line class="grid" x1="${L}" x2="${W - R}" y1="${sy(t)}" y2="${sy(t)}"/>` +
      `<text x="${L - 6}" y="${sy(t) + 4}" text-anchor="end">${+t.toPrecision(4)}</text>`;
  }
  for (const t of niceTicks(x0, x1, 6)) {
    out += `<text x="${sx(t)}" y="${H - B + 16}" text-anchor="middle">${+t.toPrecision(6)}</text>`;
  }
  out += `<line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#c7ccd8"/>`;
  out += `<text x="${(L + W - R) / 2}" y="${H - 4}" text-anchor="middle">${esc(xLabel)}</text>`;
  out += `<text x="12" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 12 ${(T + H - B) / 2})">${esc(yLabel)}</text>`;
  if (line && line.length > 1) {
    const d = line.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    out += `<path d="${d}" fill="none" stroke="#1e8e4f" stroke-width="1.5" stroke-dasharray="5 3"/>`;
  }
  for (const p of ok) {
    const cx = sx(p.x).toFixed(1), cy = sy(p.y).toFixed(1), tip = `<title>${esc(p.title)}</title>`;
    out += p.cross
      ? `<path class="${esc(p.cls)}" data-number="${p.number}" d="M${cx - 4},${cy - 4}L${+cx + 4},${+cy + 4}M${cx - 4},${+cy + 4}L${+cx + 4},${cy - 4}" stroke="${p.color}" stroke-width="2">${tip}</path>`
      : `<circle class="${esc(p.cls)}" data-number="${p.number}" cx="${cx}" cy="${cy}" r="3.4" fill="${p.color}">${tip}</circle>`;
  }
  return out + "</svg>";
}

// bars: [{label, value}], horizontal, largest first (parameter importances sum to 1)
function hbarChart(bars, { id = "", xLabel = "" } = {}) {
  const W = 560, rowH = 22, L = 150, R = 40, T = 8, B = 30, H = T + B + rowH * bars.length;
  const vmax = Math.max(...bars.map((b) => b.value), 1e-9);
  let out = `<svg class="chart" data-chart="${esc(id)}" viewBox="0 0 ${W} ${H}" style="height:${H}px">`;
  bars.forEach((b, i) => {
    const y = T + i * rowH, w = (b.value / vmax) * (W - L - R);
    out += `<text x="${L - 6}" y="${y + 15}" text-anchor="end">${esc(b.label)}</text>` +
      `<rect class="imp-bar" data-param="${esc(b.label)}" data-value="${b.value}" x="${L}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="#3459d6"><title>${esc(b.label)}: ${fmt(b.value, 3)}</title></rect>` +
      `<text x="${(L + w + 4).toFixed(1)}" y="${y + 15}">${fmt(b.value, 2)}</text>`;
  });
  out += `<text x="${(L + W - R) / 2}" y="${H - 8}" text-anchor="middle">${esc(xLabel)}</text>`;
  return out + "</svg>";
}

const TRIAL_COLORS = { COMPLETE: "#3459d6", PRUNED: "#b7791f", FAIL: "#c23b3b" };

function trialsChart(view) {
  const done = view.trials.filter((t) => t.state === "COMPLETE" && t.values);
  if (!done.length) return emptyChart("trials", "no trial has completed yet");
  const ys = done.map((t) => t.values[0]);
  const floor = Math.min(...ys);  // pruned and failed trials have no value: marked on the lowest value's line
  const pts = view.trials.filter((t) => TRIAL_COLORS[t.state]).map((t) => {
    const complete = t.state === "COMPLETE" && t.values;
    return { x: t.number, y: complete ? t.values[0] : floor, number: t.number, cross: !complete,
             cls: complete ? "trial-pt" : "trial-mark", color: TRIAL_COLORS[t.state],
             title: `trial ${t.number}: ${complete ? fmt(t.values[0]) : t.state.toLowerCase()}${t.refused ? ` (${t.refused})` : ""}` };
  });
  return scatterChart(pts, { id: "trials", xLabel: "trial (in the order asked)", yLabel: view.objectives[0] });
}

function bestSoFarChart(view) {
  if (!view.best_so_far.length) return emptyChart("best_so_far", "no trial has completed yet");
  const series = [{ name: `best ${view.objectives[0]}`, color: COLORS[2], step: true, points: view.best_so_far.map((p) => [p.compute_s, p.value]) }];
  return lineChart(series, { id: "best_so_far", xLabel: "cumulative compute (s)", yLabel: `best ${view.objectives[0]}` });
}

function importanceCharts(view) {
  if (!view.importances) return emptyChart("importances", view.importances_reason || "no importances");
  return view.importances.map((imp) => {
    const bars = Object.entries(imp.values).map(([label, value]) => ({ label, value }));
    const title = view.importances.length > 1 ? `<h3 class="muted">for ${esc(view.objectives[imp.objective])}</h3>` : "";
    return title + hbarChart(bars, { id: view.importances.length > 1 ? `importances-${imp.objective}` : "importances", xLabel: "fANOVA importance (sums to 1)" });
  }).join("");
}

function paretoChart(view) {
  if (view.directions.length !== 2) return emptyChart("pareto", "the Pareto front needs two objectives; this search has one");
  const front = new Set(view.pareto_front || []);
  const done = view.trials.filter((t) => t.state === "COMPLETE" && t.values && t.values.length === 2);
  if (!done.length) return emptyChart("pareto", "no trial has completed yet");
  const pts = done.map((t) => ({ x: t.values[0], y: t.values[1], number: t.number, cls: front.has(t.number) ? "pareto-pt" : "dominated-pt",
    color: front.has(t.number) ? "#1e8e4f" : "#adb5bd", title: `trial ${t.number}: ${fmt(t.values[0])}, ${fmt(t.values[1])}` }));
  const line = pts.filter((p) => front.has(p.number)).map((p) => [p.x, p.y]).sort((a, b) => a[0] - b[0]);
  return scatterChart(pts, { id: "pareto", xLabel: view.objectives[0], yLabel: view.objectives[1], line });
}

function searchSection(view) {
  if (view.error) return `<div class="message error" id="search-error">${esc(view.error)}</div>`;
  const counts = ["COMPLETE", "PRUNED", "FAIL", "RUNNING"].map((st) => [st, view.trials.filter((t) => t.state === st).length]);
  return `<h2 id="search-view">Search: ${view.count} of ${view.planned_trials} trials (${esc(view.sampler)})</h2>
    <div class="legend">${counts.map(([st, n]) => `<span data-count="${st}"><i style="background:${TRIAL_COLORS[st] || "#6b7385"}"></i>${st.toLowerCase()} ${n}</span>`).join("")}
      <span class="muted">compute: ${fmtSecs(view.compute_total_s)} (${esc(view.compute_measure)})</span></div>
    <div class="grid2">
      <div class="card"><h2>Trials over time: ${esc(view.objectives[0])} per trial (× pruned or failed)</h2>${trialsChart(view)}</div>
      <div class="card"><h2>Best so far against compute</h2>${bestSoFarChart(view)}</div>
    </div>
    <div class="grid2">
      <div class="card"><h2>Parameter importances (Optuna fANOVA)</h2>${importanceCharts(view)}</div>
      <div class="card"><h2>Pareto front</h2>${paretoChart(view)}</div>
    </div>`;
}

async function searchView(studyId, study) {
  if (!study.search) return "";
  try { return searchSection(await api(`/studies/${studyId}/search`)); } catch (e) {
    if (e instanceof AuthError) throw e;
    return searchSection({ error: `search view: ${e.message}` });
  }
}

// ------------------------------------------------------------------ ranking metric (issue 28)
// The ranking card orders by any metric GET /ranking offers (read from the API's own OpenAPI
// document, so the list follows the server); the choice lives in the URL hash (?metric=...).

let rankMetricsPromise = null;
function rankMetrics() {
  rankMetricsPromise = rankMetricsPromise || fetch("/openapi.json").then((r) => r.json()).then((o) => {
    const p = o.paths[`${API}/studies/{study_id}/ranking`].get.parameters.find((x) => x.name === "metric");
    return p.schema.enum;
  }).catch(() => null);
  return rankMetricsPromise;
}

function hashParams() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}

async function rankingFor(studyId, summary, state) {
  const m = state.metric || summary.ranking.metric;
  if (m === summary.ranking.metric) return summary.ranking;
  try { return await api(`/studies/${studyId}/ranking?metric=${encodeURIComponent(m)}`); } catch (e) {
    if (e instanceof AuthError) throw e;
    state.metric = null;  // a metric the server does not offer (an old link): the study's own
    return summary.ranking;
  }
}

async function metricSelect(ranking) {
  const metrics = (await rankMetrics()) || [ranking.metric];
  return `<label for="rank-metric" class="muted">rank by</label> <select id="rank-metric">${metrics.map((m) =>
    `<option value="${esc(m)}" ${m === ranking.metric ? "selected" : ""}>${esc(m)}</option>`).join("")}</select>`;
}

function onMetricChange(studyId, summary, state) {
  document.getElementById("rank-metric")?.addEventListener("change", (ev) => {
    state.metric = ev.target.value;
    // replaceState: no hashchange, so the page (and its live stream) is not rebuilt
    history.replaceState(null, "", `#/studies/${studyId}?metric=${encodeURIComponent(state.metric)}`);
    renderStudy(studyId, summary, state);
  });
}

// ------------------------------------------------------------------ router

async function route() {
  stopPage();
  if (!token()) return showLogin("");
  document.getElementById("logout").hidden = false;
  const h = location.hash.replace(/^#/, "") || "/";
  let m;
  try {
    if ((m = h.match(/^\/studies\/(\d+)(\?.*)?$/))) await studyPage(Number(m[1]));
    else if ((m = h.match(/^\/candidates\/(\d+)$/))) await candidatePage(Number(m[1]));
    else if ((m = h.match(/^\/tuning-jobs\/(\d+)$/))) await tuningJobPage(Number(m[1]));
    else if (h === "/datasets") await datasetsPage();
    else await studiesPage();
  } catch (e) {
    if (e instanceof AuthError) {
      sessionStorage.removeItem(TOKEN_KEY);
      return showLogin(`That token was not accepted (${e.message}). Check it, or create one with "archscreen token create --tenant NAME".`);
    }
    app.innerHTML = `<div class="message error" role="alert">${esc(e.message)}</div>`;
  }
}

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  etagCache.clear();
  showLogin("Token forgotten.", "info");
});
window.addEventListener("hashchange", route);
route();
