// tunelab console: hash-routed views over the JSON API under /api. Plain JS, no build step.
"use strict";

const view = document.getElementById("view");
const keyInput = document.getElementById("console-key");
keyInput.value = sessionStorage.getItem("tunelab-key") || "";
keyInput.addEventListener("change", () => { sessionStorage.setItem("tunelab-key", keyInput.value); route(); });
const COLORS = ["#2f6fde", "#e4572e", "#29a36a", "#8e44ad"];
const FIELDS = ["train.lr", "train.num_train_epochs", "train.batch_size", "data.max_train_samples",
  "train.logging_steps", "train.eval_steps"];
let stopStream = () => {};

// Build an element; children are nodes or text (never parsed as HTML: names come from the filesystem).
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v); else el.setAttribute(k, v);
  }
  el.append(...flat(children));
  return el;
}
const flat = (children) => children.flat(Infinity).filter((c) => c !== null && c !== undefined);
const show = (...children) => view.replaceChildren(...flat(children));

function headers() {
  const key = keyInput.value;
  return key ? { Authorization: `Bearer ${key}`, "Content-Type": "application/json" }
    : { "Content-Type": "application/json" };
}

async function api(path, body) {
  const init = body === undefined ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) };
  const resp = await fetch(`/api${path}`, init);
  if (resp.status === 401) document.getElementById("key-box").hidden = false;
  return { status: resp.status, data: await resp.json() };
}

const fmt = (v) => (typeof v === "number" ? (Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : v.toPrecision(4)) : String(v));

const tick = (v) => (v !== 0 && Math.abs(v) < 0.01 ? v.toExponential(1) : String(parseFloat(v.toPrecision(3))));

// One uPlot chart: x = steps, one series per label; missing points are null and gaps are bridged.
function chart(title, steps, series) {
  const box = h("div", { class: "chart", "data-title": title, "data-points": String(steps.length) });
  const opts = {
    title, width: 540, height: 220, scales: { x: { time: false } },
    axes: [{}, { size: 60, values: (u, ticks) => ticks.map(tick) }],
    series: [{ label: "step" }, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % 4], spanGaps: true }))],
  };
  box.plot = new uPlot(opts, [steps, ...series.map((s) => s.values)], box);
  return box;
}

// Curves of one history: what each chart plots, by metric key.
function curves(records) {
  const keys = new Set(records.flatMap((r) => Object.keys(r)));
  const evalKeys = [...keys].filter((k) => k.startsWith("eval/") && k !== "eval/loss" && k !== "eval/n_examples"
    && !k.includes("baseline"));
  return [
    ["loss", ["train/loss", "eval/loss"]], ["learning rate", ["train/lr"]],
    ["throughput (samples/s)", ["train/samples_per_s"]], ["eval metrics", evalKeys],
  ].map(([title, ks]) => [title, ks.filter((k) => keys.has(k))]).filter(([, ks]) => ks.length);
}

function series(records, key) {
  const byStep = new Map();
  for (const r of records) if (key in r) byStep.set(r.step, r[key]);
  return byStep;
}

function drawCurves(box, records) {
  const steps = [...new Set(records.map((r) => r.step))].sort((a, b) => a - b);
  box.replaceChildren(...curves(records).map(([title, ks]) => chart(title, steps,
    ks.map((k) => { const m = series(records, k); return { label: k, values: steps.map((s) => m.get(s) ?? null) }; }))));
  box.dataset.records = String(records.length);
}

// Server-sent events read with fetch (EventSource cannot send the API key header).
async function follow(name, onRecords, onEnd) {
  const ctrl = new AbortController();
  stopStream = () => ctrl.abort();
  const resp = await fetch(`/api/runs/${encodeURI(name)}/events`, { headers: headers(), signal: ctrl.signal });
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read().catch(() => ({ done: true }));
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const msg = buf.slice(0, cut); buf = buf.slice(cut + 2);
      const data = JSON.parse(msg.split("\n").find((l) => l.startsWith("data: ")).slice(6));
      if (msg.startsWith("event: end")) onEnd(data); else onRecords(data);
    }
  }
}

async function runsView(params) {
  const query = new URLSearchParams(params);
  const { status, data: rows } = await api(`/runs?${query}`);
  if (status !== 200) { show(h("p", { class: "error" }, "enter the console's API key")); return; }
  const all = (await api("/runs")).data;
  const metricKeys = [...new Set(all.flatMap((r) => Object.keys(r.metrics)))].sort();
  const choose = (name, values, label) => h("label", {}, `${label} `, h("select", {
    id: `f-${name}`, onchange: (e) => { const p = new URLSearchParams(params); if (e.target.value) p.set(name, e.target.value); else p.delete(name); location.hash = `#/?${p}`; },
  }, h("option", { value: "" }, "all"), values.map((v) => {
    const o = h("option", { value: v }, v); if (params.get(name) === v) o.selected = true; return o;
  })));
  const shown = params.get("sort") ? [params.get("sort")] : metricKeys.filter((k) => k.startsWith("dev/")).slice(0, 3);
  const sortLink = (k) => h("a", { href: `#/?${new URLSearchParams({ ...Object.fromEntries(params), sort: k })}` }, k);
  const compare = h("button", { id: "compare", disabled: "", onclick: () => {
    const picked = [...view.querySelectorAll("input.pick:checked")].map((c) => `run=${encodeURIComponent(c.value)}`);
    location.hash = `#/compare?${picked.join("&")}`;
  } }, "Compare selected");
  const onPick = () => { const n = view.querySelectorAll("input.pick:checked").length; compare.disabled = n < 2 || n > 4; };
  show(
    h("h2", {}, `Runs (${rows.length})`),
    h("div", { class: "toolbar" },
      choose("task", [...new Set(all.map((r) => r.task))].sort(), "task"),
      choose("method", [...new Set(all.flatMap((r) => r.methods))].sort(), "method"),
      choose("sort", metricKeys, "sort by"), compare),
    h("table", { id: "runs" },
      h("tr", {}, h("th"), h("th", {}, "run"), h("th", {}, "task"), h("th", {}, "methods"), h("th", {}, "status"),
        h("th", {}, "step"), shown.map((k) => h("th", {}, sortLink(k)))),
      rows.map((r) => h("tr", { "data-run": r.name },
        h("td", {}, h("input", { type: "checkbox", class: "pick", value: r.name, onchange: onPick })),
        h("td", {}, h("a", { href: `#/run/${encodeURIComponent(r.name)}` }, r.name)), h("td", {}, r.task),
        h("td", {}, r.methods.join(", ")), h("td", {}, h("span", { class: `status ${r.status}` }, r.status)),
        h("td", { class: "num" }, String(r.step)),
        shown.map((k) => h("td", { class: "num" }, k in r.metrics ? fmt(r.metrics[k]) : "")))),
    ),
  );
}

function heatmap(load) {
  const max = Math.max(...load.flat());
  return h("table", { class: "heat", id: "expert-load" },
    h("tr", {}, h("th", {}, "layer"), load[0].map((_, e) => h("th", {}, `e${e}`))),
    load.map((row, i) => h("tr", {}, h("th", {}, String(i)), row.map((v) => h("td", {
      style: `background: rgba(47, 111, 222, ${(v / max).toFixed(2)}); color: ${v / max > 0.6 ? "#fff" : "#000"}`,
    }, String(Math.round(v)))))));
}

async function runView(name) {
  const { status, data: run } = await api(`/runs/${encodeURI(name)}`);
  if (status !== 200) { show(h("p", { class: "error" }, run.error || "not found")); return; }
  if (run.status === "starting" || run.status === "failed") {  // started here; train has not written its config yet
    show(h("h2", {}, `${name} `, h("span", { class: "status", id: "run-status" }, run.status)),
      h("pre", {}, run.job.log.join("\n")));
    const here = location.hash;
    if (run.status === "starting") setTimeout(() => { if (location.hash === here) runView(name); }, 1000);
    return;
  }
  const badge = h("span", { class: `status ${run.status}`, id: "run-status" }, run.status);
  const box = h("div", { class: "charts", id: "curves", "data-records": "0" });
  const reports = Object.entries(run.reports).map(([split, rep]) => h("p", {}, `${split}: `,
    Object.entries(rep).filter(([, v]) => typeof v === "number").map(([k, v]) => `${k} ${fmt(v)}`).join(" · ")));
  show(
    h("h2", {}, `${name} `, badge), h("p", {}, `${run.task} · ${run.methods.join(", ")}`), reports, box,
    run.expert_load.length ? [h("h3", {}, "MoE expert load (dev tokens per routed expert)"), heatmap(run.expert_load)] : null,
    run.job && run.job.returncode ? [h("h3", {}, "training log"), h("pre", {}, run.job.log.join("\n"))] : null,
    h("h3", {}, "config"), h("pre", {}, JSON.stringify(run.config, null, 2)),
  );
  const records = [];
  follow(name, (more) => { records.push(...more); drawCurves(box, records); }, (final) => {
    badge.textContent = final; badge.className = `status ${final}`;
  });
}

async function compareView(params) {
  const { status, data } = await api(`/compare?${params}`);
  if (status !== 200) { show(h("p", { class: "error" }, JSON.stringify(data))); return; }
  const names = data.runs.map((r) => r.name);
  const keys = [...new Set(Object.values(data.histories).flat().flatMap((r) => Object.keys(r)))]
    .filter((k) => k === "train/loss" || (k.startsWith("eval/") && k !== "eval/n_examples"));
  const steps = [...new Set(Object.values(data.histories).flat().map((r) => r.step))].sort((a, b) => a - b);
  const charts = keys.map((k) => chart(k, steps, names.map((n) => {
    const m = series(data.histories[n], k); return { label: n, values: steps.map((s) => m.get(s) ?? null) };
  })));
  show(
    h("h2", {}, `Compare ${names.join(" · ")}`),
    h("h3", {}, "config differences"),
    h("table", { id: "config-diff" }, h("tr", {}, h("th", {}, "key"), names.map((n) => h("th", {}, n))),
      data.config_diff.map((row) => h("tr", {}, h("td", {}, row.key), row.values.map((v) => h("td", {}, JSON.stringify(v)))))),
    h("div", { class: "charts" }, charts),
  );
}

async function newRunView() {
  const examples = (await api("/examples")).data;
  const text = h("pre", { id: "example-text" });
  const select = h("select", { id: "example", onchange: async () => { text.textContent = (await api(`/examples/${select.value}`)).data.text; } },
    examples.map((e) => h("option", { value: e }, e)));
  const row = (field, value = "") => h("div", { class: "form-row", "data-field": field },
    h("label", { for: `in-${field}` }, field), h("input", { id: `in-${field}`, value }), h("span", { class: "error" }));
  const rows = h("div", {}, row("name"), FIELDS.map((f) => row(f)));
  const extraKey = h("input", { id: "extra-key", placeholder: "key.path, e.g. task.params.max_length" });
  const general = h("ul", { class: "error", id: "general-errors" });
  const submit = async () => {
    for (const el of view.querySelectorAll(".form-row .error")) el.textContent = "";
    for (const el of view.querySelectorAll("input.invalid")) el.classList.remove("invalid");
    general.replaceChildren();
    const fields = {};
    for (const r of rows.querySelectorAll(".form-row")) {
      const v = r.querySelector("input").value.trim();
      if (r.dataset.field !== "name" && v) fields[r.dataset.field] = v;
    }
    const name = document.getElementById("in-name").value.trim();
    const { status, data } = await api("/start", { example: select.value, name, fields });
    if (status === 202) { location.hash = `#/run/${encodeURIComponent(data.name)}`; return; }
    for (const { field, message } of data.fields || [{ field: "", message: data.error }]) {
      const target = [...rows.querySelectorAll(".form-row")].find((r) => r.dataset.field === field);
      if (target) { target.querySelector(".error").textContent = message; target.querySelector("input").classList.add("invalid"); }
      else general.append(h("li", {}, field ? `${field}: ${message}` : message));
    }
  };
  show(h("h2", {}, "New run"), h("div", { class: "split" }, h("div", {},
    h("div", { class: "form-row" }, h("label", {}, "example config"), select), rows,
    h("div", { class: "toolbar" }, extraKey, h("button", { onclick: () => { if (extraKey.value) rows.append(row(extraKey.value.trim())); extraKey.value = ""; } }, "add field")),
    general, h("button", { id: "start", onclick: submit }, "Validate and start")), text));
  if (examples.length) select.dispatchEvent(new Event("change"));
}

function playgroundView() {
  const input = (id, value, type = "text") => h("input", { id, value, type, size: "50" });
  const url = input("pg-url", "http://127.0.0.1:8000");
  const key = input("pg-key", "", "password");
  const path = h("select", { id: "pg-path" }, ["/v1/predict", "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/health"]
    .map((p) => h("option", { value: p }, p)));
  const body = h("textarea", { id: "pg-body", rows: "6", cols: "70" }, '{"inputs": ["a gripping, beautifully acted film"]}');
  const out = h("pre", { id: "pg-out" });
  const send = async () => {
    const payload = path.value === "/health" ? null : JSON.parse(body.value);
    const { data } = await api("/playground", { url: url.value, api_key: key.value, path: path.value, payload });
    out.textContent = JSON.stringify(data, null, 2);
  };
  show(h("h2", {}, "Playground: query a served model (tunelab serve)"),
    h("div", { class: "form-row" }, h("label", {}, "server URL"), url), h("div", { class: "form-row" }, h("label", {}, "API key"), key),
    h("div", { class: "form-row" }, h("label", {}, "endpoint"), path), body, h("div", {}, h("button", { id: "pg-send", onclick: send }, "Send")), out);
}

function route() {
  stopStream();
  const [path, query] = location.hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  if (path.startsWith("/run/")) runView(decodeURIComponent(path.slice(5)));
  else if (path === "/compare") compareView(params);
  else if (path === "/new") newRunView();
  else if (path === "/playground") playgroundView();
  else runsView(params);
}
window.addEventListener("hashchange", route);
route();
