// perflib for ComfyUI: a small floating panel listing this browser's queued prompts with their
// estimate, e.g. "≈ 42 s (35–50 s), starts in ~2 min", and the top two edits that would make
// each faster; hovering a line shows its slowest nodes, clicking it lists them under it. Fed by
// the server's "perflib.estimate" websocket message; queued entries are refreshed from
// GET /perflib/estimate/{prompt_id}.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const REFRESH_MS = 10000;
const DONE_SHOWN_MS = 8000;
const prompts = new Map(); // prompt_id → {estimate, receivedAt, state, doneAt, tookSeconds}
let panel = null;

export function formatSeconds(seconds) {
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function describe(estimate, elapsedSeconds) {
  const [low, high] = estimate.uncertainty_range || [];
  const unit = (s) => formatSeconds(s).split(" ").pop();
  let text = `≈ ${formatSeconds(estimate.predicted_time_seconds)}`;
  if (low != null && high != null) {
    const sameUnit = unit(low) === unit(high);
    const lowText = sameUnit ? formatSeconds(low).replace(/ [a-z]+$/, "") : formatSeconds(low);
    text += ` (${lowText}–${formatSeconds(high)})`;
  }
  const queue = estimate.queue || {};
  if (queue.state === "queued") {
    const start = Math.max(0, (queue.expected_start_seconds || 0) - elapsedSeconds);
    text += start < 1 ? ", starts next" : `, starts in ~${formatSeconds(start)}`;
    if (queue.unestimated_ahead) text += ` (+${queue.unestimated_ahead} unestimated ahead)`;
  }
  return text;
}

function formatPart(seconds) {  // a node's share: tenths under 10 s
  return seconds < 10 ? `${seconds.toFixed(1)} s` : formatSeconds(seconds);
}

export function slowestNodes(estimate) {
  return (estimate.slowest_nodes || []).map(
    (node) => `${node.class_type} ${node.id}: ${formatPart(node.seconds)}`);
}

export function recommendationLines(estimate) {
  return (estimate.recommendations || []).map(
    (edit) => `save ${formatPart(edit.seconds_saved)}: ${edit.description}`);
}

function ensurePanel() {
  if (panel) return panel;
  panel = document.createElement("div");
  panel.id = "perflib-estimates";
  Object.assign(panel.style, {
    position: "fixed", right: "12px", bottom: "12px", zIndex: 1000, maxWidth: "360px",
    padding: "6px 10px", borderRadius: "6px", font: "12px sans-serif",
    background: "rgba(20, 20, 20, 0.85)", color: "#eee", pointerEvents: "auto",
    display: "none",
  });
  document.body.appendChild(panel);
  return panel;
}

function render() {
  const now = Date.now();
  for (const [id, entry] of prompts) {
    if (entry.doneAt && now - entry.doneAt > DONE_SHOWN_MS) prompts.delete(id);
  }
  const box = ensurePanel();
  box.replaceChildren();
  for (const [id, entry] of prompts) {
    const line = document.createElement("div");
    const label = entry.estimate.number != null ? `#${entry.estimate.number}` : id.slice(0, 8);
    const elapsed = (now - entry.receivedAt) / 1000;
    let text = describe(entry.estimate, elapsed);
    if (entry.state === "running") text += " — running";
    if (entry.doneAt) text += entry.tookSeconds != null
      ? ` — took ${formatSeconds(entry.tookSeconds)}` : ` — ${entry.state}`;
    line.textContent = `perflib ${label}: ${text}`;
    const slowest = slowestNodes(entry.estimate);
    line.title = slowest.length ? `slowest nodes:\n${slowest.join("\n")}` : "";
    line.style.cursor = slowest.length ? "pointer" : "default";
    line.onclick = () => { entry.expanded = !entry.expanded; render(); };
    box.appendChild(line);
    const extra = [...(entry.expanded ? slowest : []), ...recommendationLines(entry.estimate)];
    for (const more of extra) {
      const sub = document.createElement("div");
      sub.textContent = `  ${more}`;
      sub.style.paddingLeft = "12px";
      sub.style.opacity = "0.8";
      box.appendChild(sub);
    }
  }
  box.style.display = prompts.size ? "block" : "none";
}

async function refresh() {
  for (const [id, entry] of prompts) {
    if (entry.state !== "queued") continue;
    try {
      const response = await api.fetchApi(`/perflib/estimate/${encodeURIComponent(id)}`);
      if (response.ok) {
        Object.assign(entry, { estimate: await response.json(), receivedAt: Date.now() });
      }
    } catch (error) {
      console.debug("perflib: refresh failed", error);
    }
  }
}

function finish(detail, state) {
  const entry = detail && prompts.get(detail.prompt_id);
  if (!entry || entry.doneAt) return;
  entry.state = state;
  entry.doneAt = Date.now();
  if (state === "done" && entry.startedAt) {
    entry.tookSeconds = (entry.doneAt - entry.startedAt) / 1000;
  }
  render();
}

app.registerExtension({
  name: "perflib.estimate",
  setup() {
    api.addEventListener("perflib.estimate", ({ detail }) => {
      if (!detail || !detail.prompt_id) return;
      const known = prompts.get(detail.prompt_id);
      const running = (known && known.state === "running")
        || (detail.queue && detail.queue.state === "running");
      prompts.set(detail.prompt_id, { ...known, estimate: detail, receivedAt: Date.now(),
                                      state: running ? "running" : "queued" });
      render();
    });
    api.addEventListener("execution_start", ({ detail }) => {
      const entry = detail && prompts.get(detail.prompt_id);
      if (entry) Object.assign(entry, { state: "running", startedAt: Date.now() });
      render();
    });
    api.addEventListener("execution_success", ({ detail }) => finish(detail, "done"));
    api.addEventListener("execution_error", ({ detail }) => finish(detail, "failed"));
    api.addEventListener("execution_interrupted", ({ detail }) => finish(detail, "interrupted"));
    setInterval(render, 1000);
    setInterval(refresh, REFRESH_MS);
  },
});
