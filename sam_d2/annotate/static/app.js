// The annotation page: image list, SAM prompts on a canvas, brush/eraser, undo/redo, pre-fill,
// export. Talks to the JSON API of sam_d2/annotate/server.py; masks travel as COCO uncompressed
// RLE (column-major run lengths starting with background).
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

const app = {
  images: [], current: null, width: 0, height: 0, img: null,
  anns: [], selected: null, categories: [], tool: "prompt",
  annLayer: document.createElement("canvas"), editLayer: document.createElement("canvas"),
  undo: [], redo: [], busy: 0,
};
// The object being made: prompts, the model's candidates, the mask shown (Uint8Array, row-major).
let edit = null;
// Click -> mask drawn latencies in ms, and the server's time per prediction (read by
// tools/benchmark_annotate.py and the browser test).
window.samLatencies = [];
window.samServerMs = [];

// ------------------------------------------------------------------ masks
// COCO compressed RLE string -> run lengths (the format of pycocotools' rleToString: 5 bits per
// character plus a continuation bit, offset by 48; counts after the second are deltas).
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1, c = 0;
    while (more) {
      c = s.charCodeAt(p++) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      k++;
    }
    if (c & 0x10) x |= -1 << (5 * k);
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// COCO RLE (compressed or not) -> Uint8Array mask in row-major order.
function rleDecode(rle) {
  const [h, w] = rle.size;
  if (typeof rle.counts === "string") rle = { size: rle.size, counts: rleCounts(rle.counts) };
  const out = new Uint8Array(h * w);
  let pos = 0;
  rle.counts.forEach((n, i) => {
    if (i % 2 === 1) {
      for (let p = pos; p < pos + n; p++) out[(p % h) * w + Math.floor(p / h)] = 1;
    }
    pos += n;
  });
  return out;
}

function rleEncode(mask, h, w) {
  const counts = [];
  let run = 0, value = 0;
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      const v = mask[y * w + x];
      if (v !== value) { counts.push(run); run = 0; value = v; }
      run++;
    }
  }
  counts.push(run);
  return { size: [h, w], counts };
}

function colorOf(id) {
  const hue = (id * 137.508) % 360;  // golden angle: neighbours get distinct hues
  const c = (1 - Math.abs(2 * 0.5 - 1)) * 0.85, x = c * (1 - Math.abs(((hue / 60) % 2) - 1));
  const [r, g, b] = hue < 60 ? [c, x, 0] : hue < 120 ? [x, c, 0] : hue < 180 ? [0, c, x]
    : hue < 240 ? [0, x, c] : hue < 300 ? [x, 0, c] : [c, 0, x];
  const m = 0.5 - c / 2;
  return [r + m, g + m, b + m].map((v) => Math.round(v * 255));
}

// Paint an annotation straight from its runs: cost proportional to its area, not the image's.
function paintRuns(data, ann, rgb, alpha, striped) {
  const h = app.height, w = app.width;
  let pos = 0;
  ann.counts.forEach((n, i) => {
    if (i % 2 === 1) {
      for (let p = pos; p < pos + n; p++) {
        const y = p % h, x = (p - y) / h;
        if (striped && ((x + y) >> 3) % 2) continue;
        const o = 4 * (y * w + x);
        data[o] = rgb[0]; data[o + 1] = rgb[1]; data[o + 2] = rgb[2]; data[o + 3] = alpha;
      }
    }
    pos += n;
  });
}

function paint(data, mask, rgb, alpha, striped) {
  const w = app.width;
  for (let i = 0; i < mask.length; i++) {
    if (!mask[i]) continue;
    if (striped && (((i % w) + Math.floor(i / w)) >> 3) % 2) continue;
    const o = 4 * i;
    data[o] = rgb[0]; data[o + 1] = rgb[1]; data[o + 2] = rgb[2]; data[o + 3] = alpha;
  }
}

// ------------------------------------------------------------------ API
async function api(method, url, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  const r = await fetch(url, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const msg = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || data);
    status(`error ${r.status}: ${msg}`);
    throw new Error(msg);
  }
  return data;
}
const imageUrl = (name, suffix) => `/api/images/${name.split("/").map(encodeURIComponent).join("/")}${suffix}`;
function status(text) { $("status").textContent = text; }

// ------------------------------------------------------------------ drawing
function renderAnns() {
  const layer = app.annLayer, c = layer.getContext("2d");
  const img = c.createImageData(app.width, app.height);
  for (const a of app.anns) {
    if (edit && edit.annId === a.id) continue;  // being edited: drawn as the current mask
    paintRuns(img.data, a, colorOf(a.id), a.accepted ? 120 : 90, !a.accepted);
  }
  c.putImageData(img, 0, 0);
}

function renderEdit() {
  const c = app.editLayer.getContext("2d");
  c.clearRect(0, 0, app.width, app.height);
  if (edit && edit.mask) {
    const img = c.createImageData(app.width, app.height);
    paint(img.data, edit.mask, [30, 144, 255], 150, false);
    c.putImageData(img, 0, 0);
  }
}

function draw() {
  if (!app.img) return;
  ctx.drawImage(app.img, 0, 0);
  ctx.drawImage(app.annLayer, 0, 0);
  ctx.drawImage(app.editLayer, 0, 0);
  const r = 6 * app.width / canvas.getBoundingClientRect().width;  // 6 screen pixels
  if (app.selected !== null) {
    const a = app.anns.find((x) => x.id === app.selected);
    if (a) { ctx.strokeStyle = "#fff"; ctx.lineWidth = r / 2; ctx.strokeRect(...a.bbox); }
  }
  if (!edit) return;
  for (const p of edit.points) {
    ctx.beginPath(); ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
    ctx.fillStyle = p.label ? "#0c0" : "#e00"; ctx.fill();
    ctx.strokeStyle = "#fff"; ctx.lineWidth = r / 3; ctx.stroke();
  }
  const box = edit.box || edit.dragBox;
  if (box) {
    ctx.strokeStyle = "#ff0"; ctx.lineWidth = r / 2;
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
}

// ------------------------------------------------------------------ editing state and history
function newEdit() {
  return { points: [], box: null, candidates: [], scores: [], stability: [], idx: 0, mask: null,
    source: null, start: performance.now(), annId: null, session: Math.random().toString(36).slice(2),
    predictions: 0 };
}
function snapshot() {
  return edit && { ...edit, points: edit.points.slice(), mask: edit.mask && edit.mask.slice() };
}
function restore(snap) {
  edit = snap && { ...snap, points: snap.points.slice(), mask: snap.mask && snap.mask.slice() };
  renderAnns(); renderEdit(); draw(); updateObjects();
}
// Record an action; `undo` / `redo` are async functions.
function record(action) { app.undo.push(action); app.redo = []; }
function editAction(before) {
  const after = snapshot();
  record({ undo: async () => restore(before), redo: async () => restore(after) });
}
async function undo() { const a = app.undo.pop(); if (a) { await a.undo(); app.redo.push(a); } }
async function redo() { const a = app.redo.pop(); if (a) { await a.redo(); app.undo.push(a); } }

// ------------------------------------------------------------------ prompts
async function predict(t0) {
  if (!edit.points.length && !edit.box) { edit.mask = null; edit.candidates = []; renderEdit(); draw(); return; }
  const body = { points: edit.points, box: edit.box, session: edit.session };
  if (edit.predictions > 0 && edit.candidates.length) body.previous = edit.idx;  // feed logits back
  if (edit.points.length === 1 && !edit.box) { delete body.previous; }  // single click: 3 candidates
  app.busy++;
  try {
    const r = await api("POST", imageUrl(app.current, "/predict"), body);
    window.samServerMs.push(r.decode_ms);
    edit.candidates = r.masks.map(rleDecode);
    edit.scores = r.scores; edit.stability = r.stability; edit.idx = r.best;
    edit.mask = edit.candidates[edit.idx].slice();
    edit.source = edit.box ? "box" : "point"; edit.model = r.model; edit.predictions++;
    renderEdit(); draw();
    status(`mask ${edit.idx + 1}/${edit.candidates.length}, predicted IoU ${r.scores[r.best].toFixed(3)}`);
    requestAnimationFrame(() => {
      window.samLatencies.push(performance.now() - t0);
      document.body.dataset.predictions = String(window.samLatencies.length);
    });
  } finally { app.busy--; }
}

function cycle() {
  if (!edit || edit.candidates.length < 2) return;
  const before = snapshot();
  edit.idx = (edit.idx + 1) % edit.candidates.length;
  edit.mask = edit.candidates[edit.idx].slice();
  editAction(before); renderEdit(); draw();
  status(`mask ${edit.idx + 1}/${edit.candidates.length}, predicted IoU ${edit.scores[edit.idx].toFixed(3)}`);
}

function toImage(ev) {
  const r = canvas.getBoundingClientRect();
  return { x: (ev.clientX - r.left) * app.width / r.width, y: (ev.clientY - r.top) * app.height / r.height };
}

let drag = null;
canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
canvas.addEventListener("mousedown", (ev) => {
  if (!app.img) return;
  ev.preventDefault();
  const p = toImage(ev);
  if (!edit) edit = newEdit();
  drag = { start: p, t0: performance.now(), before: snapshot(), button: ev.button, shift: ev.shiftKey };
  if (app.tool !== "prompt") stroke(p);
});
canvas.addEventListener("mousemove", (ev) => {
  if (!drag) return;
  const p = toImage(ev);
  if (app.tool !== "prompt") { stroke(p); return; }
  const s = drag.start;
  if (Math.hypot(p.x - s.x, p.y - s.y) > 4 * app.width / canvas.getBoundingClientRect().width) {
    edit.dragBox = [Math.min(s.x, p.x), Math.min(s.y, p.y), Math.max(s.x, p.x), Math.max(s.y, p.y)];
    draw();
  }
});
window.addEventListener("mouseup", async (ev) => {
  if (!drag) return;
  const d = drag; drag = null;
  if (app.tool !== "prompt") { editAction(d.before); return; }
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  if (edit.dragBox) {
    const b = edit.dragBox; edit.dragBox = null;
    edit.box = [clamp(b[0], app.width), clamp(b[1], app.height), clamp(b[2], app.width), clamp(b[3], app.height)];
  } else {
    const p = d.start;
    const label = d.button === 2 || d.shift ? 0 : 1;
    edit.points.push({ x: clamp(p.x, app.width), y: clamp(p.y, app.height), label });
  }
  draw();
  try { await predict(d.t0); editAction(d.before); } catch (e) { restore(d.before); }
});

function stroke(p) {
  if (!edit.mask) edit.mask = new Uint8Array(app.width * app.height);
  const rad = Number($("brush-size").value) * app.width / canvas.getBoundingClientRect().width;
  const v = app.tool === "brush" ? 1 : 0, w = app.width, h = app.height;
  for (let y = Math.max(0, Math.floor(p.y - rad)); y < Math.min(h, Math.ceil(p.y + rad)); y++) {
    for (let x = Math.max(0, Math.floor(p.x - rad)); x < Math.min(w, Math.ceil(p.x + rad)); x++) {
      if ((x - p.x) ** 2 + (y - p.y) ** 2 <= rad * rad) edit.mask[y * w + x] = v;
    }
  }
  edit.source = edit.source && edit.source !== "brush" ? "edited" : "brush";
  edit.brushed = true;
  renderEdit(); draw();
}

// ------------------------------------------------------------------ objects
function category() { return $("category").value.trim() || app.defaultCategory; }

async function accept() {
  if (!edit || !edit.mask || !edit.mask.some((v) => v)) { status("nothing to accept"); return; }
  const before = snapshot();
  const seconds = (performance.now() - edit.start) / 1000;
  const mask = rleEncode(edit.mask, app.height, app.width);
  let saved;
  if (edit.annId !== null) {  // an existing object edited with brush / eraser, or a pre-fill accepted
    const a = app.anns.find((x) => x.id === edit.annId);
    const body = { accepted: true, add_time_s: seconds, category: category() };
    if (edit.brushed) body.mask = mask;
    const prev = { accepted: a.accepted, category: a.category };
    if (edit.brushed) prev.mask = uncompressed(a);
    saved = await api("PUT", imageUrl(app.current, `/annotations/${a.id}`), body);
    record({
      undo: async () => { replaceAnn(await api("PUT", imageUrl(app.current, `/annotations/${a.id}`), prev)); restore(before); },
      redo: async () => { replaceAnn(await api("PUT", imageUrl(app.current, `/annotations/${a.id}`), body)); edit = null; refreshAfterSave(); },
    });
    replaceAnn(saved);
  } else {
    const i = edit.idx;
    const body = { mask, source: edit.source, category: category(), time_s: seconds,
      prompts: { points: edit.points, box: edit.box }, model: edit.model,
      predicted_iou: edit.brushed && edit.source === "brush" ? null : edit.scores[i] ?? null,
      stability_score: edit.brushed && edit.source === "brush" ? null : edit.stability[i] ?? null };
    saved = await api("POST", imageUrl(app.current, "/annotations"), body);
    const ref = { id: saved.id };
    record({
      undo: async () => { await api("DELETE", imageUrl(app.current, `/annotations/${ref.id}`)); app.anns = app.anns.filter((x) => x.id !== ref.id); restore(before); },
      redo: async () => { const s = await api("POST", imageUrl(app.current, "/annotations"), body); ref.id = s.id; addAnn(s); edit = null; refreshAfterSave(); },
    });
    addAnn(saved);
  }
  edit = null;
  status(`saved object ${saved.id} (${seconds.toFixed(1)} s)`);
  refreshAfterSave();
}

// Annotations keep their run lengths (a.counts); dense masks are made only to edit one.
function withCounts(a) { a.counts = rleCounts(a.segmentation.counts); return a; }
function uncompressed(a) { return { size: [app.height, app.width], counts: a.counts }; }
function addAnn(a) { app.anns.push(withCounts(a)); }
function replaceAnn(a) { withCounts(a); app.anns = app.anns.map((x) => (x.id === a.id ? a : x)); }

async function deleteSelected() {
  const a = app.anns.find((x) => x.id === app.selected);
  if (!a) { status("select an object first"); return; }
  const ref = { id: a.id };
  const body = { mask: uncompressed(a), source: a.source === "prefill" ? "edited" : a.source, category: a.category,
    time_s: a.time_s, prompts: a.prompts, predicted_iou: a.predicted_iou, stability_score: a.stability_score,
    model: a.model && a.model.id };
  await api("DELETE", imageUrl(app.current, `/annotations/${a.id}`));
  app.anns = app.anns.filter((x) => x.id !== a.id);
  app.selected = null;
  record({
    undo: async () => { const s = await api("POST", imageUrl(app.current, "/annotations"), body); ref.id = s.id; addAnn(s); refreshAfterSave(); },
    redo: async () => { await api("DELETE", imageUrl(app.current, `/annotations/${ref.id}`)); app.anns = app.anns.filter((x) => x.id !== ref.id); refreshAfterSave(); },
  });
  refreshAfterSave();
}

function select(id) {
  app.selected = id;
  const a = app.anns.find((x) => x.id === id);
  if (a && (app.tool !== "prompt" || !a.accepted)) {  // load it for editing / accepting
    edit = newEdit(); edit.annId = a.id; edit.mask = rleDecode(uncompressed(a)); edit.source = a.source;
    $("category").value = a.category;
  }
  renderAnns(); renderEdit(); draw(); updateObjects();
}

async function acceptAllPrefilled() {
  const pending = app.anns.filter((a) => !a.accepted);
  for (const a of pending) replaceAnn(await api("PUT", imageUrl(app.current, `/annotations/${a.id}`), { accepted: true }));
  status(`accepted ${pending.length} pre-filled masks`);
  refreshAfterSave();
}

async function prefill() {
  status("pre-filling ..."); app.busy++;
  try {
    await api("POST", imageUrl(app.current, "/prefill"), {});
    await loadAnns();
    status(`pre-filled ${app.anns.filter((a) => !a.accepted).length} masks (pending until accepted)`);
    refreshState();
  } finally { app.busy--; }
}

function refreshAfterSave() { renderAnns(); renderEdit(); draw(); updateObjects(); refreshState(); }

function updateObjects() {
  const ul = $("objects"); ul.innerHTML = "";
  for (const a of app.anns) {
    const li = document.createElement("li");
    li.className = (a.accepted ? "" : "pending ") + (a.id === app.selected ? "selected" : "");
    li.dataset.id = a.id;
    const [r, g, b] = colorOf(a.id);
    li.innerHTML = `<span class="swatch" style="background:rgb(${r},${g},${b})"></span>` +
      `<span>#${a.id} ${escapeHtml(a.category)}</span>` +
      `<span class="meta">${a.accepted ? "" : "pre-filled, "}${a.source}${a.model ? ", " + escapeHtml(a.model.id) : ""}</span>`;
    li.onclick = () => select(a.id);
    ul.appendChild(li);
  }
}
function escapeHtml(s) { return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`); }

// ------------------------------------------------------------------ images
async function refreshState() {
  const s = await api("GET", "/api/state");
  app.images = s.images; app.categories = s.categories; app.defaultCategory = s.default_category;
  const done = s.images.filter((i) => i.done).length;
  $("progress").textContent = `${done} / ${s.images.length} images done, ${s.stats.masks} masks`;
  const ul = $("images"); ul.innerHTML = "";
  for (const im of s.images) {
    const li = document.createElement("li");
    li.className = (im.name === app.current ? "current " : "") + (im.done ? "done " : "") + (im.error ? "error" : "");
    li.dataset.name = im.name;
    li.title = im.error || `${im.width}x${im.height}`;
    li.innerHTML = `<span class="name">${escapeHtml(im.name)}</span><span class="count">${im.masks}${im.pending ? "+" + im.pending : ""}</span>`;
    li.onclick = () => openImage(im.name);
    ul.appendChild(li);
  }
  $("skipped-title").textContent = `skipped files (${s.skipped.length})`;
  $("skipped").innerHTML = s.skipped.map((k) => `<li>${escapeHtml(k.name)}: ${escapeHtml(k.reason)}</li>`).join("");
  $("problems").innerHTML = s.problems.map((p) => `<div>${escapeHtml(p.error)}</div>`).join("");
  $("category-list").innerHTML = (s.categories.length ? s.categories : [s.default_category]).map((c) => `<option value="${escapeHtml(c)}">`).join("");
  if (!$("category").value) $("category").value = s.default_category;
  const st = s.stats.stages;
  const fmt = (v) => (v === null ? "-" : v.toFixed(1));
  $("stats").innerHTML = `<tr><td>masks / image</td><td>${s.stats.masks_per_image.toFixed(1)}</td></tr>` +
    `<tr><td>stage 1 masks</td><td>${st["1"].masks}, ${fmt(st["1"].mean_s_per_mask)} s/mask</td></tr>` +
    `<tr><td>stage 2 masks</td><td>${st["2"].masks}, ${fmt(st["2"].mean_s_per_mask)} s/mask</td></tr>` +
    `<tr><td>pre-filled, accepted</td><td>${s.stats.prefilled_accepted}</td></tr>`;
  $("model").textContent = `current: ${s.model.id}`;
  $("checkpoints").innerHTML = s.checkpoints.map((c) => `<option>${escapeHtml(c)}</option>`).join("");
}

async function loadAnns() {
  const rec = await api("GET", imageUrl(app.current, ""));
  app.anns = rec.annotations.map(withCounts);
  renderAnns(); updateObjects(); draw();
}

async function openImage(name) {
  app.current = name; edit = null; app.selected = null; app.undo = []; app.redo = [];
  document.body.dataset.ready = "0";
  status(`loading ${name} ...`);
  const img = new Image();
  img.src = imageUrl(name, "/file");
  await img.decode();
  app.img = img; app.width = img.naturalWidth; app.height = img.naturalHeight;
  for (const c of [canvas, app.annLayer, app.editLayer]) { c.width = app.width; c.height = app.height; }
  await loadAnns();
  refreshState();
  status(`encoding ${name} ...`);
  const e = await api("POST", imageUrl(name, "/embed"));
  status(`${name}: ${e.width}x${e.height}, embedding ${e.encode_s > 0 ? "computed in " + e.encode_s.toFixed(2) + " s" : "from cache"}`);
  document.body.dataset.ready = "1";
}

function step(delta) {
  const i = app.images.findIndex((x) => x.name === app.current);
  const next = app.images[i + delta];
  if (next) openImage(next.name);
}

function setTool(tool) {
  app.tool = tool;
  document.querySelectorAll("#toolbar button[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
}

// ------------------------------------------------------------------ wiring
document.querySelectorAll("#toolbar button[data-tool]").forEach((b) => (b.onclick = () => setTool(b.dataset.tool)));
$("cycle").onclick = cycle;
$("accept").onclick = accept;
$("clear").onclick = () => { const before = snapshot(); edit = null; record({ undo: async () => restore(before), redo: async () => restore(null) }); restore(null); };
$("undo").onclick = undo;
$("redo").onclick = redo;
$("delete").onclick = deleteSelected;
$("prefill").onclick = prefill;
$("accept-all").onclick = acceptAllPrefilled;
$("export").onclick = async () => {
  const r = await api("POST", "/api/export");
  $("export-result").textContent = `${r.annotations} masks of ${r.images} images -> ${r.path}`;
};
$("category").addEventListener("change", async () => {  // relabel the selected object
  const a = app.anns.find((x) => x.id === app.selected);
  if (!a || (edit && edit.annId !== a.id) || category() === a.category) return;
  const prev = { category: a.category }, next = { category: category() };
  const put = async (body) => { replaceAnn(await api("PUT", imageUrl(app.current, `/annotations/${a.id}`), body)); refreshAfterSave(); };
  await put(next);
  record({ undo: () => put(prev), redo: () => put(next) });
});
$("switch").onclick = async () => {
  const r = await api("POST", "/api/model", { checkpoint: $("checkpoints").value });
  status(`model: ${r.current.id}`); refreshState();
};

document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
  const k = ev.key.toLowerCase();
  if ((ev.ctrlKey || ev.metaKey) && k === "z") { ev.preventDefault(); ev.shiftKey ? redo() : undo(); }
  else if ((ev.ctrlKey || ev.metaKey) && k === "y") { ev.preventDefault(); redo(); }
  else if (k === "enter") accept();
  else if (k === "escape") $("clear").onclick();
  else if (k === "c") cycle();
  else if (k === "p") setTool("prompt");
  else if (k === "b") setTool("brush");
  else if (k === "e") setTool("eraser");
  else if (k === "f") prefill();
  else if (k === "a" && ev.shiftKey) acceptAllPrefilled();
  else if (k === "delete" || k === "backspace") deleteSelected();
  else if (k === "n" || k === "arrowright") step(1);
  else if (k === "arrowleft") step(-1);
  else if (k === "[") $("brush-size").value = Math.max(1, $("brush-size").value - 2);
  else if (k === "]") $("brush-size").value = Number($("brush-size").value) + 2;
});

setTool("prompt");
refreshState().then(() => { if (app.images.length) openImage(app.images.find((i) => !i.error).name); });
