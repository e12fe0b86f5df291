// Network view, "why": an attribution heat map over the input (method, class and layer chosen), and,
// beside an enlarged feature map, the input its kernel wants to see (activation maximisation).
import { api, drawMap, el, formatNumber, legend, showError } from "./util.js";

const $ = (id) => document.getElementById(id);
const state = {
  model: null, // the selected model's name
  options: null, // GET /api/models/{name}/attribution
  last: null, // the last prediction's {model, source, invert}
  inFlight: false,
  pending: false,
};

function fillSelect(select, entries, chosen) {
  select.replaceChildren(...entries.map(([value, text]) => el("option", { value, text })));
  if (entries.some(([value]) => value === chosen)) select.value = chosen;
}

async function loadOptions(name) {
  state.model = name;
  state.options = null;
  try {
    const options = await api(`/api/models/${encodeURIComponent(name)}/attribution`);
    if (state.model !== name) return;
    state.options = options;
    fillSelect($("why-method"), options.methods.map((m) => [m, m]), $("why-method").value || "gradcam");
    fillSelect(
      $("why-class"),
      [["", "the predicted one"], ...options.class_names.map((c, i) => [String(i), c])],
      "",
    );
    fillSelect($("why-layer"), options.layers.map((l) => [l, l]), options.default_layer);
    showLayerChoice();
  } catch (error) {
    $("why-info").textContent = error.message;
  }
}

function showLayerChoice() {
  $("why-layer-label").hidden = $("why-method").value !== "gradcam";
}

function hideOverlay() {
  $("why-overlay").hidden = true;
  $("why-info").textContent = "";
  $("why-scale").replaceChildren();
}

async function explain() {
  if (!$("why-toggle").checked || !state.last || !state.options) return;
  if (state.inFlight) {
    state.pending = true;
    return;
  }
  state.inFlight = true;
  const { model, source, invert } = state.last;
  const form = new FormData();
  form.append("image", source.blob, source.filename);
  form.append("drawing", source.drawing ? "true" : "false");
  form.append("invert", invert ? "true" : "false");
  form.append("method", $("why-method").value);
  form.append("target", $("why-class").value);
  if ($("why-method").value === "gradcam") form.append("layer", $("why-layer").value);
  const started = performance.now();
  try {
    const answer = await api(`/api/models/${encodeURIComponent(model)}/attribution`, { method: "POST", body: form });
    if (state.model !== model || !$("why-toggle").checked) return;
    drawOverlay(answer, performance.now() - started);
  } catch (error) {
    hideOverlay();
    showError($("network-error"), error.message);
  } finally {
    state.inFlight = false;
    if (state.pending) {
      state.pending = false;
      explain();
    }
  }
}

function drawOverlay(answer, roundTripMs) {
  const overlay = $("why-overlay");
  const input = $("model-input");
  drawMap(overlay, answer.map, 0);
  overlay.style.width = input.style.width;
  overlay.style.height = input.style.height;
  overlay.hidden = false;
  overlay.dataset.method = answer.method;
  const where = answer.layer ? ` on ${answer.layer}` : "";
  $("why-info").textContent =
    `${answer.method}${where} for class ${answer.class_name} (probability ${(100 * answer.probability).toFixed(1)}%), ` +
    `peak at row ${answer.peak[0]}, column ${answer.peak[1]}; answered in ${Math.round(roundTripMs)} ms ` +
    `(${answer.elapsed_ms} ms on the server)`;
  $("why-scale").replaceChildren(
    legend(answer.map.colormap, answer.map.low, answer.map.high),
    el("span", { text: ` ${answer.scale}` }),
  );
}

async function showMaximized({ model, layer, channel }) {
  const slot = $("map-maximized");
  if (layer.output_shape.length !== 3) {
    slot.replaceChildren();
    return;
  }
  slot.replaceChildren(el("p", { class: "hint", text: "growing the input this kernel wants to see ..." }));
  try {
    const answer = await api(
      `/api/models/${encodeURIComponent(model)}/layers/${layer.index}/maximized?channel=${channel}`,
    );
    const canvas = el("canvas", { class: "maximized" });
    drawMap(canvas, answer.image, 0);
    const [height, width] = answer.field.size;
    slot.replaceChildren(
      el("h4", { text: "What this kernel wants to see" }),
      canvas,
      el("p", {
        class: "meta",
        text:
          `The input that excites kernel ${answer.channel} of ${answer.conv_name} most: ${formatNumber(answer.value)} ` +
          `at position (${answer.position.join(", ")}), which sees the ${height}×${width} input pixels from ` +
          `(${answer.field.top}, ${answer.field.left}); ${answer.steps} steps of gradient ascent from seeded noise, ` +
          `pixels 0 (black) to 1 (white)${answer.cached ? "" : `, ${answer.elapsed_ms} ms`}.`,
      }),
    );
  } catch (error) {
    slot.replaceChildren(el("p", { class: "hint", text: error.message }));
  }
}

export function setupWhy() {
  document.addEventListener("convscope:model", (event) => {
    hideOverlay();
    state.last = null;
    loadOptions(event.detail.model.name);
  });
  document.addEventListener("convscope:cleared", () => {
    state.last = null;
    hideOverlay();
  });
  document.addEventListener("convscope:prediction", (event) => {
    state.last = event.detail;
    explain();
  });
  document.addEventListener("convscope:map-opened", (event) => showMaximized(event.detail));
  $("why-toggle").addEventListener("change", () => {
    $("why-options").hidden = !$("why-toggle").checked;
    if ($("why-toggle").checked) explain();
    else hideOverlay();
  });
  for (const id of ["why-method", "why-class", "why-layer"]) {
    $(id).addEventListener("change", () => {
      showLayerChoice();
      explain();
    });
  }
}
