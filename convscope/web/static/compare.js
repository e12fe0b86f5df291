// Designer view, part 3: the runs of this server session side by side. Tick runs to overlay their
// per-epoch curves (solid: validation, dashed: training).
import { api, el } from "./util.js";
import { drawPanels, RUN_COLOURS } from "./charts.js";

const $ = (id) => document.getElementById(id);
const state = { runs: [], ticked: new Set(), asked: 0 }; // asked: numbers the requests, newest wins

const percent = (value) => (value === null || value === undefined ? "" : `${(100 * value).toFixed(1)}%`);
const number = (value) => (value === null || value === undefined ? "" : value.toFixed(4));

function colourOf(run) {
  return RUN_COLOURS[(run.id - 1) % RUN_COLOURS.length];
}

function describeOptimiser(run) {
  const s = run.settings;
  const lr = run.lr !== null ? `lr ${Number(run.lr.toPrecision(3))}` : "lr default";
  return `${s.optimizer}, ${lr}, ${s.schedule}`;
}

function describeAugment(s) {
  const parts = [];
  if (s.flip) parts.push("flip");
  if (s.crop_padding) parts.push(`shift ${s.crop_padding}`);
  if (s.cutout) parts.push(`cutout ${s.cutout}`);
  return parts.join(" + ") || "none";
}

function renderTable() {
  const rows = state.runs.map((run) => {
    const box = el("input", { type: "checkbox", "data-run": run.id, "aria-label": `compare run ${run.id}` });
    box.checked = state.ticked.has(run.id);
    box.addEventListener("change", () => {
      if (box.checked) state.ticked.add(run.id);
      else state.ticked.delete(run.id);
      drawOverlay();
    });
    const final = run.final || {};
    const s = run.settings;
    const images = s.max_images ? ` (first ${s.max_images.toLocaleString("en-US")})` : "";
    const swatch = el("span", { class: "run-swatch" });
    swatch.style.background = colourOf(run);
    return el(
      "tr",
      { "data-run": run.id },
      el("td", {}, box),
      el("td", {}, swatch, `${run.id}`),
      el("td", { title: s.layers || s.network }, el("strong", { text: s.network }), el("div", { class: "meta", text: s.layers || "built-in recipe" })),
      el("td", { text: run.params === null ? "" : run.params.toLocaleString("en-US") }),
      el("td", { text: `${s.dataset}${images}` }),
      el("td", { text: describeOptimiser(run) }),
      el("td", { text: `${run.epochs_done}/${run.epochs} × ${s.batch_size}` }),
      el("td", { text: describeAugment(s) }),
      el("td", { text: run.status }),
      el("td", { text: number(final.loss) }),
      el("td", { text: percent(final.accuracy) }),
      el("td", { text: number(final.val_loss) }),
      el("td", { text: percent(final.val_accuracy) }),
    );
  });
  $("cmp-rows").replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 13, class: "meta", text: "No runs yet in this session." }))]),
  );
}

function drawOverlay() {
  const chosen = state.runs.filter((run) => state.ticked.has(run.id));
  const loss = [];
  const accuracy = [];
  const legend = [];
  for (const run of chosen) {
    const colour = colourOf(run);
    const c = run.curves;
    const points = (values) => c.epoch.map((epoch, i) => [epoch, values[i]]).filter((p) => p[1] !== null && p[1] !== undefined);
    loss.push({ points: points(c.val_loss), colour, dots: true }, { points: points(c.loss), colour, dashed: true });
    accuracy.push({ points: points(c.val_accuracy), colour, dots: true }, { points: points(c.accuracy), colour, dashed: true });
    const swatch = el("span", { class: "run-swatch" });
    swatch.style.background = colour;
    legend.push(el("span", { class: "run-legend" }, swatch, `run ${run.id}: ${run.settings.network}`));
  }
  const xMax = Math.max(1, ...chosen.map((run) => run.epochs_done));
  drawPanels(
    $("cmp-chart"),
    [
      { title: "loss per epoch (solid: validation, dashed: training)", series: loss },
      { title: "accuracy per epoch (solid: validation, dashed: training)", series: accuracy, yMax: 1 },
    ],
    xMax,
  );
  $("cmp-chart").dataset.series = String(chosen.length);
  $("cmp-legend").replaceChildren(
    ...(chosen.length >= 2 ? legend : [...legend, el("span", { class: "meta", text: " tick two or more runs to overlay them" })]),
  );
}

export async function refreshRuns() {
  const asked = ++state.asked;
  try {
    const answer = await api("/api/training/runs");
    if (asked !== state.asked) return; // a later request's answer is (or will be) shown
    state.runs = answer.runs;
    const known = new Set(state.runs.map((run) => run.id));
    for (const id of [...state.ticked]) if (!known.has(id)) state.ticked.delete(id);
    renderTable();
    drawOverlay();
  } catch (error) {
    $("cmp-legend").textContent = error.message;
  }
}

export function setupCompare() {
  renderTable();
  drawOverlay();
}
