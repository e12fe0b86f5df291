// Designer view, part 1: the network as a table of layers. Every edit sends the architecture (the model
// file's JSON config) to POST /api/designer/check; the server builds it with the library and answers with
// each row's output shape, parameter count and size rule, or the library's error sentence for the row.
// The page does no maths of its own. Training, kernels and comparison live in livetrain.js and compare.js.
import { api, el, postJSON, shapeText, showError } from "./util.js";
import { setupLiveTraining, refreshLiveTraining } from "./livetrain.js";
import { refreshRuns, setupCompare } from "./compare.js";

const $ = (id) => document.getElementById(id);
const CHECK_DELAY_MS = 80;

// The layers the "Add" buttons make, with their editable settings: [config key, label, kind].
// Other layer types (from a preset) are shown with their settings read-only and can be moved or removed.
export const LAYER_TYPES = {
  Conv2D: {
    config: { filters: 16, kernel_size: 3, stride: 1, padding: "same" },
    fields: [["filters", "filters", "int"], ["kernel_size", "kernel", "int"], ["stride", "stride", "int"], ["padding", "padding", "padding"]],
  },
  MaxPool2D: { config: { pool_size: 2, stride: 2 }, fields: [["pool_size", "pool", "int"], ["stride", "stride", "int"]] },
  Dense: { config: { units: 128 }, fields: [["units", "units", "int"]] },
  ReLU: { config: {}, fields: [] },
  Dropout: { config: { rate: 0.3 }, fields: [["rate", "rate", "float"]] },
  BatchNorm2D: { config: {}, fields: [] },
  GlobalAvgPool2D: { config: {}, fields: [] },
  Flatten: { config: {}, fields: [] },
  Softmax: { config: {}, fields: [] },
};

const state = {
  ready: false,
  dataset: "digits",
  inputShape: null,
  presets: [],
  layers: [], // [{type, config}] exactly as the model file's config.json lists them
  check: null,
  sequence: 0, // numbers the checks sent: an older answer never overwrites a newer one
  timer: null,
};

// --- values typed into the settings cells -> config values (the server judges them) ------------------

function parseValue(text, kind) {
  const value = text.trim();
  if (kind === "float") return value !== "" && Number.isFinite(Number(value)) ? Number(value) : value;
  if (/^\d+$/.test(value)) return Number(value);
  const pair = value.match(/^(\d+)\s*[,x×]\s*(\d+)$/);
  if (pair) return [Number(pair[1]), Number(pair[2])];
  return value; // 'same', 'valid', or a mistake the library will name
}

function showValue(value) {
  if (Array.isArray(value)) {
    const flat = value.flat(Infinity);
    return flat.every((v) => v === flat[0]) && value.length === 2 && !Array.isArray(value[0]) ? String(value[0]) : JSON.stringify(value);
  }
  return value === undefined || value === null ? "" : String(value);
}

// --- the table --------------------------------------------------------------------------------------------

function settingsCell(layer, index) {
  const spec = LAYER_TYPES[layer.type];
  const cell = el("td", { class: "settings" });
  if (!spec) {
    const text = Object.entries(layer.config || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
    cell.append(el("span", { class: "meta", text: text || "no settings" }));
  }
  for (const [key, label, kind] of spec ? spec.fields : []) {
    const input = el("input", {
      type: "text",
      class: `field field-${key}`,
      "data-key": key,
      size: kind === "padding" ? 5 : 4,
      value: showValue(layer.config[key] !== undefined ? layer.config[key] : key === "stride" ? layer.config.pool_size : ""),
      "aria-label": `${layer.type} ${label}`,
    });
    input.addEventListener("input", () => {
      state.layers[index].config[key] = parseValue(input.value, kind);
      scheduleCheck();
    });
    cell.append(el("label", { class: "field-label" }, `${label} `, input));
  }
  cell.append(el("div", { class: "row-error", hidden: "" }));
  return cell;
}

function move(index, delta) {
  const target = index + delta;
  if (target < 0 || target >= state.layers.length) return;
  const [layer] = state.layers.splice(index, 1);
  state.layers.splice(target, 0, layer);
  renderRows();
}

function renderRows() {
  const rows = state.layers.map((layer, index) => {
    const actions = el(
      "td",
      { class: "actions" },
      el("button", { type: "button", class: "up", title: "move up", text: "↑", onclick: () => move(index, -1) }),
      el("button", { type: "button", class: "down", title: "move down", text: "↓", onclick: () => move(index, 1) }),
      el("button", {
        type: "button",
        class: "remove",
        title: "remove",
        text: "✕",
        onclick: () => {
          state.layers.splice(index, 1);
          renderRows();
        },
      }),
    );
    return el(
      "tr",
      { class: "layer-row", "data-index": index },
      el("td", { class: "index", text: String(index) }),
      el("td", { class: "type" }, el("strong", { text: layer.type }), el("span", { class: "meta name" })),
      settingsCell(layer, index),
      el("td", { class: "shape" }),
      el("td", { class: "params" }),
      el("td", { class: "rule" }),
      actions,
    );
  });
  const input = el(
    "tr",
    { class: "input-row" },
    el("td", { text: "" }),
    el("td", {}, el("strong", { text: "input" })),
    el("td", { class: "meta", text: `${state.dataset} images` }),
    el("td", { class: "shape", text: state.inputShape ? shapeText(state.inputShape) : "" }),
    el("td", {}),
    el("td", {}),
    el("td", {}),
  );
  $("ds-rows").replaceChildren(input, ...rows);
  scheduleCheck(0);
}

function showCheck(check) {
  state.check = check;
  const rows = $("ds-rows").querySelectorAll("tr.layer-row");
  rows.forEach((tr, index) => {
    const row = check.rows[index];
    const error = tr.querySelector(".row-error");
    tr.classList.toggle("bad", Boolean(row && row.error));
    tr.querySelector(".name").textContent = row ? ` ${row.name}` : "";
    tr.querySelector(".shape").textContent = row && row.output_shape ? shapeText(row.output_shape) : "?";
    tr.querySelector(".params").textContent = row && row.params !== null ? row.params.toLocaleString("en-US") : "";
    tr.querySelector(".rule").replaceChildren(...(row && row.rule ? row.rule.map((r) => el("div", { text: r })) : []));
    error.textContent = row && row.error ? row.error : "";
    error.hidden = !(row && row.error);
  });
  const output = check.output_shape ? shapeText(check.output_shape) : "?";
  $("ds-totals").textContent =
    `${check.rows.length || state.layers.length} layers, ${check.params.toLocaleString("en-US")} parameters ` +
    `(${check.trainable.toLocaleString("en-US")} trainable, ${check.non_trainable.toLocaleString("en-US")} running statistics), ` +
    `output ${output}`;
  $("ds-totals").dataset.params = String(check.params);
  showError($("ds-error"), check.error || "");
  announce();
}

// --- checking with the server --------------------------------------------------------------------------

export function currentArchitecture() {
  return {
    name: $("ds-name").value.trim() || "designed",
    input_shape: state.inputShape,
    layers: state.layers.map((layer) => ({ type: layer.type, config: { ...layer.config } })),
  };
}

function announce() {
  const detail = {
    dataset: state.dataset,
    architecture: currentArchitecture(),
    valid: Boolean(state.check && state.check.valid) && !state.timer,
    error: state.check ? state.check.error : "checking ...",
  };
  document.dispatchEvent(new CustomEvent("design-change", { detail }));
}

function scheduleCheck(delay = CHECK_DELAY_MS) {
  clearTimeout(state.timer);
  state.timer = setTimeout(runCheck, delay);
  announce(); // Train waits for the answer
}

async function runCheck() {
  state.timer = null;
  const sequence = ++state.sequence;
  try {
    const check = await postJSON("/api/designer/check", { dataset: state.dataset, architecture: currentArchitecture() });
    if (sequence === state.sequence) showCheck(check);
  } catch (error) {
    if (sequence === state.sequence) {
      state.check = null;
      showError($("ds-error"), error.message);
      announce();
    }
  }
}

// --- presets and data sets ------------------------------------------------------------------------------

function loadLayers(layers) {
  state.layers = layers.map((layer) => ({ type: layer.type, config: JSON.parse(JSON.stringify(layer.config || {})) }));
  renderRows();
}

async function loadDataset(name) {
  $("ds-input").textContent = `reading ${name} (once per server) ...`;
  const answer = await api(`/api/designer/presets?dataset=${encodeURIComponent(name)}`);
  state.dataset = name;
  state.inputShape = answer.input_shape;
  state.presets = answer.presets;
  const select = $("ds-preset");
  const chosen = select.value;
  select.replaceChildren(...answer.presets.map((p) => el("option", { value: p.name, text: p.name === "seed" ? "seed CNN" : p.name })));
  if (answer.presets.some((p) => p.name === chosen)) select.value = chosen;
  $("ds-input").textContent =
    `input ${shapeText(answer.input_shape)}, ${answer.class_names.length} classes: the last layer must give ${answer.class_names.length} values`;
  $("ds-limits").textContent = `Limits (checked by the server): ${answer.limits_text}.`;
  presetNote();
}

function presetNote() {
  const preset = state.presets.find((p) => p.name === $("ds-preset").value);
  $("ds-preset-note").textContent = preset ? preset.description : "";
}

function addButtons() {
  $("ds-add").append(
    ...Object.entries(LAYER_TYPES).map(([type, spec]) =>
      el("button", {
        type: "button",
        "data-add": type,
        text: `+ ${type}`,
        onclick: () => {
          state.layers.push({ type, config: { ...spec.config } });
          renderRows();
        },
      }),
    ),
  );
}

// A job that is running (or was reattached) shows its own network in the table.
document.addEventListener("design-load", async (event) => {
  const { dataset, architecture } = event.detail;
  if ($("ds-dataset").querySelector(`option[value="${CSS.escape(dataset)}"]`)) {
    $("ds-dataset").value = dataset;
    await loadDataset(dataset);
  }
  $("ds-name").value = architecture.name;
  loadLayers(architecture.layers);
});

export function showDesigner() {
  if (!state.ready) return;
  refreshLiveTraining();
  refreshRuns();
}

export async function setupDesigner() {
  addButtons();
  $("ds-preset").addEventListener("change", presetNote);
  $("ds-load-preset").addEventListener("click", () => {
    const preset = state.presets.find((p) => p.name === $("ds-preset").value);
    if (preset) loadLayers(preset.layers);
  });
  $("ds-dataset").addEventListener("change", async () => {
    try {
      await loadDataset($("ds-dataset").value);
      renderRows();
    } catch (error) {
      showError($("ds-error"), error.message);
    }
  });
  $("ds-name").addEventListener("input", () => announce());
  try {
    const options = await api("/api/training/options");
    $("ds-dataset").replaceChildren(
      ...options.datasets.map((d) => el("option", { value: d.name, text: d.name, title: d.description })),
    );
    await loadDataset($("ds-dataset").value);
    $("ds-preset").value = "seed";
    presetNote();
    loadLayers(state.presets.find((p) => p.name === "seed")?.layers || []);
  } catch (error) {
    showError($("ds-error"), error.message);
  }
  setupCompare();
  await setupLiveTraining();
  state.ready = true;
  if (!$("view-designer").hidden) showDesigner();
}
