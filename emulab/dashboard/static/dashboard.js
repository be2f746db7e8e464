// The emulab dashboard's page: draws /api/stream's state and fractal events; the buttons POST /api/control.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
  "#469990", "#800000", "#808000", "#000075", "#bfef45", "#fabed4"];
const SVGNS = "http://www.w3.org/2000/svg";
const dash = { state: null, image: null, colours: {}, names: {}, events: 0 };
window.dashboard = dash; // for scripts and the browser test

const $ = (id) => document.getElementById(id);
function el(tag, attrs = {}, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmtRate(bps) {
  if (bps === null || bps === undefined) return "–";
  if (bps >= 1e6) return (bps / 1e6).toFixed(1) + " Mb/s";
  if (bps >= 1e3) return (bps / 1e3).toFixed(1) + " kb/s";
  return bps.toFixed(0) + " b/s";
}
function fmtParams(p) {
  if (!p) return "–";
  const parts = [];
  if (p.delay_ms) parts.push(p.delay_ms + " ms");
  if (p.jitter_ms) parts.push("±" + p.jitter_ms);
  if (p.loss_pct) parts.push(p.loss_pct + " % loss");
  if (p.rate_mbit) parts.push(p.rate_mbit + " Mb/s");
  return parts.join(" ") || "none";
}

// ---------------------------------------------------------------- controls
async function control(body) {
  const headers = { "Content-Type": "application/json" };
  if (TOKEN) headers["X-Dashboard-Token"] = TOKEN;
  const r = await fetch("/api/control", { method: "POST", headers, body: JSON.stringify(body) });
  const answer = await r.json();
  $("message").textContent = answer.error ? "error: " + answer.error : body.action + ": done";
  return answer;
}
document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-action]");
  if (!b) return;
  const body = { action: b.dataset.action };
  if (b.dataset.node) body.node = b.dataset.node;
  if (b.dataset.kind) body.kind = b.dataset.kind;
  if (b.dataset.link) {
    const row = b.closest("tr");
    body.link = b.dataset.link;
    body.delay_ms = row.querySelector("input.delay").value;
    body.loss_pct = row.querySelector("input.loss").value;
  }
  control(body);
});

// ---------------------------------------------------------------- colours of pool elements
function colourOf(peId) {
  const id = String(peId);
  if (!(id in dash.colours)) {
    // elements of known nodes get a colour by the node's place among all PE nodes (stable across reloads)
    const node = dash.names[id];
    const peNodes = (dash.state ? dash.state.nodes : []).filter((n) => n.services.some((s) => s.kind === "pe"))
      .map((n) => n.name);
    const idx = node && peNodes.includes(node) ? peNodes.indexOf(node) : Object.keys(dash.colours).length + 7;
    dash.colours[id] = PALETTE[idx % PALETTE.length];
  }
  return dash.colours[id];
}
function learnNames(state) {
  for (const pool of state.pools || []) for (const e of pool.elements) if (e.node) dash.names[e.identifier] = e.node;
  if (state.fractal) for (const [id, e] of Object.entries(state.fractal.elements)) if (e.node) dash.names[id] = e.node;
}
const peLabel = (id) => (dash.names[id] || "?") + " ($" + Number(id).toString(16).padStart(8, "0") + ")";

// ---------------------------------------------------------------- topology
function layout(state) {
  // sites in columns by hops from the UE's site; nodes stacked in their site's box
  const siteOf = {};
  for (const n of state.nodes) siteOf[n.name] = n.site;
  for (const s of state.switches) siteOf[s.name] = s.site;
  const adj = {};
  for (const l of state.links) {
    const [a, b] = l.ends.map((x) => siteOf[x]);
    if (a === b) continue;
    (adj[a] = adj[a] || new Set()).add(b);
    (adj[b] = adj[b] || new Set()).add(a);
  }
  const ue = state.nodes.find((n) => n.role === "ue");
  const start = ue ? ue.site : state.sites[0];
  const depth = { [start]: 0 };
  const queue = [start];
  while (queue.length) {
    const s = queue.shift();
    for (const t of adj[s] || []) if (!(t in depth)) { depth[t] = depth[s] + 1; queue.push(t); }
  }
  for (const s of state.sites) if (!(s in depth)) depth[s] = 0;
  const columns = {};
  for (const s of state.sites) (columns[depth[s]] = columns[depth[s]] || []).push(s);
  const members = {};
  for (const [name, site] of Object.entries(siteOf)) (members[site] = members[site] || []).push(name);
  const pos = {}, boxes = [];
  const colW = 150, nodeH = 24, gap = 10;
  let maxY = 0;
  for (const [c, sites] of Object.entries(columns)) {
    let y = 10;
    for (const site of sites) {
      const list = members[site] || [];
      const h = 22 + list.length * (nodeH + 6);
      boxes.push({ site, x: 10 + c * (colW + 40), y, w: colW, h });
      list.forEach((name, i) => { pos[name] = { x: 10 + c * (colW + 40) + 15, y: y + 20 + i * (nodeH + 6), w: colW - 30, h: nodeH }; });
      y += h + gap;
    }
    maxY = Math.max(maxY, y);
  }
  return { pos, boxes, width: 20 + Object.keys(columns).length * (colW + 40), height: maxY + 10 };
}

function drawTopology(state) {
  const svg = $("topo");
  const { pos, boxes, width, height } = layout(state);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  for (const b of boxes) {
    const g = el("svg:g", { class: "site", "data-site": b.site });
    g.append(el("svg:rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 6 }), el("svg:text", { x: b.x + 6, y: b.y + 13 }, b.site));
    svg.append(g);
  }
  const lost = state.radio && state.radio.state && (state.radio.state.coverage === "lost" ||
    String(state.radio.state.attach).toLowerCase() === "detached");
  const centre = (n) => ({ x: pos[n].x + pos[n].w / 2, y: pos[n].y + pos[n].h / 2 });
  for (const l of state.links) {
    const [a, b] = l.ends;
    if (!pos[a] || !pos[b]) continue;
    const p = centre(a), q = centre(b);
    const line = el("svg:line", { x1: p.x, y1: p.y, x2: q.x, y2: q.y, "data-link": l.name,
      class: "link" + (l.radio ? " radio" : "") + (l.radio && lost ? " lost" : "") });
    const tp = l.throughput_bps || {};
    const w = 1.5 + Math.min(6, Math.log10(1 + ((tp["1to2"] || 0) + (tp["2to1"] || 0)) / 1e4));
    line.style.strokeWidth = w;
    line.append(el("svg:title", {}, `${l.name} (${l.segment || "-"})\nconfigured: ${fmtParams(l.configured)}\n` +
      `applied →: ${fmtParams(l.applied["1to2"])}\napplied ←: ${fmtParams(l.applied["2to1"])}\n` +
      `now: → ${fmtRate(tp["1to2"])}  ← ${fmtRate(tp["2to1"])}`));
    svg.prepend(line);
    if ((tp["1to2"] || 0) + (tp["2to1"] || 0) > 800) {
      svg.append(el("svg:text", { class: "rate", x: (p.x + q.x) / 2, y: (p.y + q.y) / 2 - 2, "text-anchor": "middle" },
        `→${fmtRate(tp["1to2"])} ←${fmtRate(tp["2to1"])}`));
    }
  }
  // boxes behind lines, nodes in front
  for (const g of svg.querySelectorAll("g.site")) svg.prepend(g);
  const byName = Object.fromEntries(state.nodes.map((n) => [n.name, n]));
  for (const [name, p] of Object.entries(pos)) {
    const n = byName[name];
    const kinds = n ? n.services.map((s) => s.kind) : [];
    const down = n && n.services.some((s) => s.alive === false);
    const cls = ["node", n ? n.role : "switch", ...kinds, down ? "down" : ""].join(" ");
    const g = el("svg:g", { class: cls, "data-node": name });
    g.append(el("svg:rect", { x: p.x, y: p.y, width: p.w, height: p.h }));
    g.append(el("svg:text", { x: p.x + 5, y: p.y + 16 }, name + (kinds.length ? " [" + kinds.join(",") + "]" : "")));
    g.append(el("svg:title", {}, n ? `${name} (${n.role}) ${n.addresses.join(" ")}` : name));
    svg.append(g);
  }
}

function drawLinks(state) {
  const body = $("links").tBodies[0];
  const editing = body.contains(document.activeElement);
  if (editing) return; // do not overwrite what the user types
  body.replaceChildren();
  for (const l of state.links) {
    const tp = l.throughput_bps || {};
    const tr = el("tr", { "data-link": l.name });
    const cfg = l.configured || {};
    for (const t of [l.name, l.segment || "-", fmtParams(cfg), fmtParams(l.applied["1to2"]), fmtParams(l.applied["2to1"]),
      fmtRate(tp["1to2"]), fmtRate(tp["2to1"])]) tr.append(el("td", {}, t));
    const now = l.applied["1to2"] || cfg;
    const d = el("td"); d.append(el("input", { class: "delay", type: "number", min: 0, step: "any", value: now.delay_ms ?? 0 }));
    const lo = el("td"); lo.append(el("input", { class: "loss", type: "number", min: 0, max: 100, step: "any", value: now.loss_pct ?? 0 }));
    const bt = el("td"); bt.append(el("button", { "data-action": "link_set", "data-link": l.name }, "apply"));
    tr.append(d, lo, bt);
    body.append(tr);
  }
}

// ---------------------------------------------------------------- pools and registrars
function drawPools(state) {
  const div = $("pools");
  div.replaceChildren();
  const svcAlive = {};
  for (const n of state.nodes) for (const s of n.services) svcAlive[n.name + "/" + s.kind] = s.alive;
  for (const pool of state.pools) {
    const t = el("table", { class: "pool", "data-pool": pool.handle });
    t.append(el("caption", {}, `"${pool.handle}": ${pool.elements.length} element(s)`));
    const head = el("tr");
    for (const h of ["", "element", "identifier", "policy", "load", "home registrar", "known to", ""]) head.append(el("th", {}, h));
    t.append(head);
    for (const e of pool.elements) {
      const tr = el("tr", { class: "element", "data-node": e.node || "", "data-pe": e.identifier });
      const sw = el("td"); sw.append(el("span", { class: "swatch", style: `background:${colourOf(e.identifier)}` }));
      const load = el("td"); const bar = el("span", { class: "load", title: `${((e.load || 0) * 100).toFixed(1)} %` });
      const fill = el("span"); fill.style.width = Math.min(100, (e.load || 0) * 100) + "%"; bar.append(fill); load.append(bar);
      load.append(" " + ((e.load || 0) * 100).toFixed(0) + " %");
      tr.append(sw, el("td", {}, e.node || e.endpoint), el("td", {}, e.identifier_hex), el("td", {}, e.policy || "-"), load,
        el("td", {}, e.home_registrar), el("td", {}, e.known_to.join(", ")));
      tr.append(serviceButtons(e.node, "pe", svcAlive));
      t.append(tr);
    }
    div.append(t);
  }
  // elements configured but registered nowhere (killed): shown so they can be restarted
  const listed = new Set(state.pools.flatMap((p) => p.elements.map((e) => e.node)));
  const missing = state.nodes.filter((n) => n.services.some((s) => s.kind === "pe") && !listed.has(n.name));
  if (missing.length) {
    const t = el("table", { class: "pool missing" });
    t.append(el("caption", {}, "pool elements not registered"));
    for (const n of missing) {
      const tr = el("tr", { class: "element missing", "data-node": n.name });
      const alive = svcAlive[n.name + "/pe"];
      tr.append(el("td", {}, n.name), el("td", { class: alive ? "alive" : "dead" }, alive ? "running, not registered" : "dead"));
      tr.append(serviceButtons(n.name, "pe", svcAlive));
      t.append(tr);
    }
    div.append(t);
  }
  const body = $("registrars").tBodies[0];
  body.replaceChildren();
  for (const r of state.registrars) {
    const tr = el("tr", { class: "registrar", "data-node": r.node });
    const st = !r.service_alive ? ["dead", "dead"] : r.reachable ? ["alive", "answering"] : ["dead", r.error || "no answer"];
    tr.append(el("td", {}, r.node), el("td", {}, r.identifier_hex || "-"), el("td", {}, r.element_count ?? "-"),
      el("td", {}, r.peers.map((p) => p.node || p.identifier_hex).join(", ") || "-"), el("td", { class: st[0] }, st[1]));
    tr.append(serviceButtons(r.node, "registrar", svcAlive));
    body.append(tr);
  }
}
function serviceButtons(node, kind, alive) {
  const td = el("td");
  if (!node) return td;
  td.append(el("button", { "data-action": "service_kill", "data-node": node, "data-kind": kind }, "kill"),
    el("button", { "data-action": "service_restart", "data-node": node, "data-kind": kind }, "restart"));
  return td;
}

// ---------------------------------------------------------------- radio
function drawRadio(state) {
  const r = state.radio;
  if (!r) { $("radio-now").textContent = "no radio link in this topology"; return; }
  const s = r.state;
  $("radio-backend").textContent = `${s.backend || "?"} on ${s.link || "-"}`;
  const parts = [`<b class="${String(s.attach).toLowerCase() === "attached" ? "alive" : "dead"}" id="radio-attach">${String(s.attach || "?").toUpperCase()}</b>`];
  if (s.coverage) parts.push("coverage " + s.coverage);
  if (s.snr_db !== undefined) parts.push("SNR " + Number(s.snr_db).toFixed(1) + " dB");
  if (s.cqi !== undefined) parts.push("CQI " + s.cqi);
  if (s.rate_mbit !== undefined) parts.push("rate " + Number(s.rate_mbit).toFixed(1) + " Mbit/s");
  if (s.enb_mac) {  // OAI: the eNB's MAC statistics of the UE (radio/oai_mac.py)
    const m = s.enb_mac, f = (v, d) => (typeof v === "number" ? v.toFixed(d) : "-");
    parts.push(`eNB MAC: MCS DL ${m.dl_mcs ?? "-"} UL ${m.ul_mcs ?? "-"}, DL ${f(m.dl_mbit_s, 2)} UL ${f(m.ul_mbit_s, 2)} Mbit/s`);
  }
  if (s.state) parts.push("state " + s.state);
  $("radio-now").innerHTML = parts.join(" · ");
  const svg = $("radio-history");
  const hist = r.history;
  svg.replaceChildren();
  if (hist.length < 2) return;
  const W = 400, H = 100, t0 = hist[0].t, t1 = hist[hist.length - 1].t || t0 + 1;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * W;
  // attached: green band at the bottom; detached: red
  for (let i = 0; i < hist.length - 1; i++) {
    svg.append(el("svg:rect", { x: x(hist[i].t), y: H - 8, width: Math.max(0.5, x(hist[i + 1].t) - x(hist[i].t)), height: 8,
      fill: hist[i].attached ? "#16a34a" : "#dc2626" }));
  }
  const series = [["snr_db", "#2563eb", 40], ["rate_mbit", "#ea580c", 60], ["cqi", "#7c3aed", 15]];
  for (const [key, colour, max] of series) {
    const pts = hist.filter((h) => typeof h[key] === "number").map((h) => `${x(h.t)},${H - 10 - (h[key] / max) * (H - 20)}`);
    if (pts.length > 1) svg.append(el("svg:polyline", { points: pts.join(" "), fill: "none", stroke: colour, "stroke-width": 1.5 }));
  }
  svg.append(el("svg:text", { x: 4, y: 10, "font-size": 9, fill: "#2563eb" }, "SNR"),
    el("svg:text", { x: 30, y: 10, "font-size": 9, fill: "#ea580c" }, "rate"),
    el("svg:text", { x: 56, y: 10, "font-size": 9, fill: "#7c3aed" }, "CQI"),
    el("svg:text", { x: 82, y: 10, "font-size": 9, fill: "#555" }, `last ${Math.round(t1 - t0)} s; bar: attached`));
}

// ---------------------------------------------------------------- fractal
function newImage(img) {
  dash.image = { n: img.n, width: img.width, height: img.height, strips: img.strips, timeline: img.timeline || [],
    points: {}, owner: new Uint32Array(img.width * img.height), complete: img.complete, ok: img.ok, elapsed: img.elapsed };
  const c = $("fractal");
  c.width = img.width; c.height = img.height;
  const ctx = c.getContext("2d");
  ctx.fillStyle = "#c8c8c8"; ctx.fillRect(0, 0, img.width, img.height);
  $("timeline-log").replaceChildren();
  for (const r of img.regions || []) paintRegion(r);
  countPoints();
  for (const e of dash.image.timeline) logEvent(e);
  drawLegend(); drawTimeline();
}
function rgbOf(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}
function paintRegion([pe, x, y, points, shade]) {
  // each point in its element's colour; the fractal's own value (fractalpooluser's colour index,
  // 0-71, or 255 inside the set) sets the brightness, so the picture stays recognisable
  const img = dash.image;
  if (!img) return;
  const ctx = $("fractal").getContext("2d");
  const [r, g, b] = rgbOf(colourOf(pe));
  const bytes = shade ? atob(shade) : "";
  let left = points, cx = x, cy = y, k = 0;
  while (left > 0 && cy < img.height) {
    const n = Math.min(left, img.width - cx);
    const row = ctx.createImageData(n, 1);
    for (let i = 0; i < n; i++, k++) {
      const v = k < bytes.length ? bytes.charCodeAt(k) : 36;
      const f = v === 255 ? 0.25 : 0.55 + 0.45 * Math.abs(Math.cos((v / 72) * Math.PI));
      row.data.set([r * f, g * f, b * f, 255], 4 * i);
    }
    ctx.putImageData(row, cx, cy);
    left -= n; cx = 0; cy += 1;
  }
  // a point belongs to the element that sent it last (a new element may recompute what the old one sent)
  img.owner.fill(pe, y * img.width + x, Math.min(img.owner.length, y * img.width + x + points));
}
function countPoints() {
  const img = dash.image, counts = {};
  if (!img) return;
  for (const pe of img.owner) if (pe) counts[pe] = (counts[pe] || 0) + 1;
  img.points = counts;
}
function drawLegend() {
  const img = dash.image, div = $("legend");
  div.replaceChildren();
  if (!img) return;
  const total = img.width * img.height;
  for (const [pe, n] of Object.entries(img.points).sort((a, b) => b[1] - a[1])) {
    const row = el("div", { class: "legend-entry", "data-pe": pe, "data-node": dash.names[pe] || "" });
    row.append(el("span", { class: "swatch", style: `background:${colourOf(pe)}` }), el("span", {}, `${peLabel(pe)}: ${(100 * n / total).toFixed(1)} %`));
    div.append(row);
  }
  $("fractal-info").textContent = `image ${img.n}` + (img.complete ? ` complete in ${img.elapsed} s` + (img.ok ? "" : " (with failures)") : " computing…");
  $("fractal-info").dataset.complete = img.complete ? "1" : "0";
}
function logEvent(e) {
  const li = el("li", { class: "tl-" + e.kind.replace(/[^a-z]/g, "") },
    `${Number(e.t).toFixed(2)} s · session ${e.strip} · ${e.kind}` + (e.pe ? " → " + peLabel(e.pe) : "") +
    (e.from_pe ? " (from " + peLabel(e.from_pe) + (e.cookie ? ", cookie" : "") + ")" : "") + (e.error ? " " + e.error : ""));
  $("timeline-log").prepend(li);
}
function drawTimeline() {
  const img = dash.image, svg = $("timeline");
  svg.replaceChildren();
  if (!img) return;
  const rows = Math.max(1, img.strips.length), W = 560, rowH = 22;
  const tMax = Math.max(1, ...img.timeline.map((e) => e.t || 0)) * 1.05;
  svg.setAttribute("viewBox", `0 0 ${W} ${rows * rowH + 14}`);
  const x = (t) => 60 + (t / tMax) * (W - 70);
  for (let s = 0; s < rows; s++) {
    const y = s * rowH + 4;
    svg.append(el("svg:text", { x: 2, y: y + 14, "font-size": 10 }, "session " + s));
    const evs = img.timeline.filter((e) => e.strip === s);
    // a bar per element that served the session, in its colour
    let from = null;
    for (const e of evs) {
      if (from && (e.kind === "fail-over" || e.kind === "done" || e.kind === "fail")) {
        svg.append(el("svg:rect", { x: x(from.t), y: y + 4, width: Math.max(1, x(e.t) - x(from.t)), height: 12, fill: colourOf(from.pe), opacity: 0.5 }));
      }
      if (e.kind === "resolve" || e.kind === "fail-over") from = e;
      const cx = x(e.t), cy = y + 10;
      const shape = e.kind === "resolve" ? el("svg:circle", { cx, cy, r: 4 })
        : e.kind === "accept" ? el("svg:path", { d: `M${cx - 5},${cy + 4}L${cx},${cy - 5}L${cx + 5},${cy + 4}Z` })
        : e.kind === "fail-over" || e.kind === "fail" ? el("svg:path", { d: `M${cx - 5},${cy - 5}L${cx + 5},${cy + 5}M${cx - 5},${cy + 5}L${cx + 5},${cy - 5}`, stroke: "#b91c1c", "stroke-width": 2.5 })
        : el("svg:rect", { x: cx - 4, y: cy - 4, width: 8, height: 8 });
      shape.setAttribute("class", "tl-mark tl-" + e.kind.replace(/[^a-z]/g, ""));
      if (e.kind !== "fail-over" && e.kind !== "fail") shape.setAttribute("fill", e.pe ? colourOf(e.pe) : "#333");
      shape.append(el("svg:title", {}, `${e.kind} at ${e.t} s` + (e.pe ? " " + peLabel(e.pe) : "")));
      svg.append(shape);
    }
  }
  svg.append(el("svg:text", { x: W - 4, y: rows * rowH + 12, "font-size": 9, "text-anchor": "end" }, `${tMax.toFixed(1)} s`));
}

// ---------------------------------------------------------------- state
function drawState(state) {
  dash.state = state;
  learnNames(state);
  $("conn").textContent = state.running ? "live" : "not running";
  $("conn").className = "badge " + (state.running ? "ok" : "bad");
  $("notrunning").hidden = state.running && !state.message;
  $("notrunning").textContent = state.message || "";
  $("refresh").textContent = `refresh ${state.dashboard.refresh_ms} ms`;
  if (!state.running) return;
  $("topology").textContent = state.topology;
  $("summary").textContent = `up ${Math.round(state.uptime_s)} s · ${state.nodes.length} nodes · ${state.links.length} links · ` +
    `${state.link_backend} links · RSerPool over ${state.rserpool_transport}`;
  drawTopology(state); drawLinks(state); drawPools(state); drawRadio(state);
  const ex = state.experiment;
  $("experiment").hidden = !ex;
  if (ex) {
    $("experiment").textContent = `experiment ${ex.experiment}: ${ex.done_runs}/${ex.runs ?? "?"} runs done` +
      (ex.run ? `, ${ex.run} at ${Number(ex.run_elapsed || 0).toFixed(0)}/${ex.run_duration ?? "?"} s` : "") +
      (ex.ended ? " — ended" + (ex.results ? ": " + ex.results : "") : "");
  }
  const f = state.fractal;
  if (f && f.image && f.image.regions && (!dash.image || dash.image.n !== f.image.n)) newImage(f.image);
  if (f) $("fractal-start").disabled = f.running;
}

function connect() {
  const es = new EventSource("/api/stream");
  es.addEventListener("state", (m) => { dash.events++; drawState(JSON.parse(m.data)); });
  es.addEventListener("fractal_image", (m) => { newImage(JSON.parse(m.data)); });
  es.addEventListener("fractal_update", (m) => {
    const d = JSON.parse(m.data);
    if (dash.image && dash.image.n === d.image) { paintRegion(d.region); dash.dirty = true; }
  });
  es.addEventListener("fractal_event", (m) => {
    const d = JSON.parse(m.data);
    if (!dash.image || dash.image.n !== d.image) return;
    dash.image.timeline.push(d); logEvent(d); drawTimeline();
  });
  es.addEventListener("fractal_done", (m) => {
    const d = JSON.parse(m.data);
    if (!dash.image || dash.image.n !== d.image) return;
    countPoints();
    Object.assign(dash.image, { complete: true, ok: d.ok, elapsed: d.elapsed });
    dash.lastComplete = { n: d.image, ok: d.ok, points: d.points, timeline: dash.image.timeline.slice() };
    drawLegend(); drawTimeline();
  });
  es.onerror = () => { $("conn").textContent = "disconnected"; $("conn").className = "badge bad"; };
}
setInterval(() => { if (dash.dirty) { dash.dirty = false; countPoints(); drawLegend(); } }, 250);
connect();
