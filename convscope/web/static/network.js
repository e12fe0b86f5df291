// Network view: draw or upload an image, see every layer's output and the class probabilities.
import {
  api,
  colourOf,
  drawMap,
  drawVector,
  el,
  formatNumber,
  legend,
  shapeText,
  showError,
} from "./util.js";

const $ = (id) => document.getElementById(id);
const THROTTLE_MS = 120;
const state = {
  model: null, // detail of the selected model (GET /api/models/{name})
  source: null, // {blob, drawing}: what was last sent, to resend when the model or "invert" changes
  inFlight: false,
  pending: false,
  lastSent: 0,
  result: null,
  limits: null,
  canvasGeneration: 0, // counts the canvas's clearings: a drawing snapshot taken before one is dropped
};

// --- the model picker -------------------------------------------------------------------------------

export async function refreshModels(selectName) {
  const select = $("model-select");
  const { models } = await api("/api/models");
  const current = selectName || select.value;
  select.replaceChildren(
    ...models.map((m) =>
      el("option", {
        value: m.name,
        text: m.error ? `${m.name} (cannot load)` : `${m.name} — ${shapeText(m.input_shape)}, ${m.num_classes} classes`,
      }),
    ),
  );
  $("no-models").hidden = models.length > 0;
  if (!models.length) return;
  select.value = models.some((m) => m.name === current) ? current : models[0].name;
  if (!state.model || state.model.name !== select.value) await selectModel(select.value);
}

async function selectModel(name) {
  showError($("network-error"), "");
  try {
    state.model = await api(`/api/models/${encodeURIComponent(name)}`);
  } catch (error) {
    state.model = null;
    $("layers").replaceChildren();
    showError($("network-error"), error.message);
    return;
  }
  const m = state.model;
  $("model-meta").textContent =
    `${m.file}: input ${shapeText(m.input_shape)}, ${m.layers.length} layers, ` +
    `${m.params.toLocaleString()} parameters${m.standardized ? ", standardises its input" : ""}`;
  $("draw-area").hidden = !m.drawable;
  $("brush").value = m.input_shape[0] <= 12 ? 26 : 20; // strokes as thick as the training digits' after framing
  $("draw-unavailable").hidden = m.drawable;
  clearResult();
  announce("model", { model: m });
  if (state.source) predict();
}

// --- layer cards: built once per model from the output shapes, filled on each prediction --------------

function tileSize(height) {
  if (height <= 4) return 36;
  if (height <= 16) return 56;
  if (height <= 32) return 64;
  return 96;
}

function buildLayerCards(model) {
  const cards = model.layers.map((layer) => {
    const shape = layer.output_shape;
    const header = el(
      "header",
      {},
      el("span", { class: "layer-index", text: `${layer.index}` }),
      el("strong", { text: layer.name }),
      el("span", { class: "layer-type", text: layer.type }),
      el("span", { class: "layer-shape", text: shapeText(shape) }),
      el("span", { class: "layer-params", text: layer.params ? `${layer.params.toLocaleString()} params` : "" }),
      el("span", { class: "legend-slot" }),
    );
    const card = el("article", { class: "layer-card", "data-index": layer.index }, header);
    if (shape.length === 3) {
      const grid = el("div", { class: "fmap-grid" });
      const size = tileSize(shape[0]);
      for (let c = 0; c < shape[2]; c++) {
        const canvas = el("canvas", {
          class: "fmap",
          width: shape[1],
          height: shape[0],
          title: `${layer.name} channel ${c}: click to enlarge`,
          "data-channel": c,
        });
        canvas.style.width = `${size}px`;
        canvas.style.height = `${Math.round((size * shape[0]) / shape[1])}px`;
        canvas.addEventListener("click", () => openMap(layer, c));
        grid.append(el("figure", {}, canvas, el("figcaption", { text: `${c}` })));
      }
      card.append(grid);
      if (layer.inside) card.append(blockInside(layer));
    } else {
      const vector = el("canvas", { class: "vector", hidden: "" });
      const note = el("p", { class: "vector-note", text: `${shape[0]} values, shown once an image goes through` });
      card.append(el("div", { class: "vector-wrap" }, vector), note);
    }
    return card;
  });
  $("layers").replaceChildren(...cards);
}

// A residual block's card also shows the maps inside it: each body layer's output, then the shortcut's.
function blockInside(layer) {
  const details = el(
    "details",
    { class: "block-inside", open: "" },
    el("summary", { text: `inside ${layer.name}: body, shortcut, then add + ReLU = the maps above` }),
  );
  for (const inner of layer.inside) {
    const shape = inner.output_shape;
    const size = Math.round(tileSize(shape[0]) * 0.6);
    const grid = el("div", { class: "fmap-grid" });
    for (let c = 0; c < shape[2]; c++) {
      const canvas = el("canvas", { class: "imap", width: shape[1], height: shape[0], title: `${inner.name} channel ${c}` });
      canvas.style.width = `${size}px`;
      canvas.style.height = `${Math.round((size * shape[0]) / shape[1])}px`;
      grid.append(el("figure", {}, canvas));
    }
    const header = el(
      "header",
      {},
      el("span", { class: "layer-index", text: inner.path }),
      el("span", { class: "layer-type", text: inner.type }),
      el("span", { class: "layer-shape", text: shapeText(shape) }),
      el("span", { class: "legend-slot" }),
    );
    details.append(el("div", { class: "inside-layer", "data-path": inner.path }, header, grid));
  }
  return details;
}

function fillInside(card, inside) {
  for (const inner of inside) {
    const part = card.querySelector(`.inside-layer[data-path="${inner.path}"]`);
    if (!part) continue;
    part.querySelector(".legend-slot").replaceChildren(legend(inner.block.colormap, inner.block.low, inner.block.high));
    part.querySelectorAll("canvas.imap").forEach((canvas, c) => drawMap(canvas, inner.block, c));
  }
}

// Other modules (why.js) follow the view through these events on `document`.
function announce(name, detail = {}) {
  document.dispatchEvent(new CustomEvent(`convscope:${name}`, { detail }));
}

function clearResult() {
  state.result = null;
  announce("cleared");
  if (state.model && state.model.layers) buildLayerCards(state.model); // blank maps, no stale ones
  $("prediction").replaceChildren(el("p", { class: "hint", text: "Draw or upload an image." }));
  $("probabilities").replaceChildren();
  $("input-notes").replaceChildren();
  $("input-shape").textContent = "";
  $("model-input").hidden = true;
}

function fillLayers(result) {
  for (const layer of result.layers) {
    const card = $("layers").querySelector(`.layer-card[data-index="${layer.index}"]`);
    if (!card) continue;
    const slot = card.querySelector("header .legend-slot");
    const data = layer.block || layer.vector;
    slot.replaceChildren(legend(data.colormap, data.low, data.high));
    if (layer.block) {
      card.querySelectorAll("canvas.fmap").forEach((canvas, c) => drawMap(canvas, layer.block, c));
      if (layer.inside) fillInside(card, layer.inside);
    } else {
      const canvas = card.querySelector("canvas.vector");
      canvas.hidden = false;
      const { columns, rows } = drawVector(canvas, layer.vector);
      const cell = Math.max(4, Math.min(12, Math.floor(640 / columns)));
      canvas.style.width = `${columns * cell}px`;
      canvas.style.height = `${rows * cell}px`;
      card.querySelector(".vector-note").textContent =
        `${layer.vector.values.length} values, ${columns} per row, read left to right` +
        (layer.type === "Flatten" ? ": the last block unrolled in (h, w, c) order" : "");
    }
  }
}

function showPrediction(result) {
  const p = result.prediction;
  $("prediction").replaceChildren(
    el("div", { class: "predicted-class", text: p.name }),
    el("div", { class: "predicted-probability", text: `${(100 * p.probability).toFixed(1)}% sure` }),
  );
  const bars = result.probabilities.map((value, i) =>
    el(
      "div",
      { class: i === p.index ? "prob-row best" : "prob-row" },
      el("span", { class: "prob-name", text: result.class_names[i] }),
      el("span", { class: "prob-track" }, el("span", { class: "prob-bar", style: `width: ${(100 * value).toFixed(1)}%` })),
      el("span", { class: "prob-value", text: `${(100 * value).toFixed(1)}%` }),
    ),
  );
  $("probabilities").replaceChildren(...bars);
}

function showInput(result) {
  const image = result.input.image;
  const canvas = $("model-input");
  canvas.hidden = false;
  drawMap(canvas, image, 0);
  const side = 168;
  canvas.style.width = `${side}px`;
  canvas.style.height = `${Math.round((side * image.shape[0]) / image.shape[1])}px`;
  $("input-shape").textContent = `${shapeText(image.shape)}, values 0 (black) to 1 (white)`;
  const notes = [...result.input.notes];
  if (result.input.standardization) notes.push("the model then standardises it: (x − mean) / std per channel");
  $("input-notes").replaceChildren(...notes.map((n) => el("li", { text: n })));
}

// --- sending images -------------------------------------------------------------------------------------

async function predict() {
  if (!state.model || !state.source) return;
  if (state.inFlight) {
    state.pending = true;
    return;
  }
  state.inFlight = true;
  state.lastSent = performance.now();
  const form = new FormData();
  const sent = state.source.blob;
  form.append("image", state.source.blob, state.source.filename);
  form.append("drawing", state.source.drawing ? "true" : "false");
  form.append("invert", $("invert-input").checked ? "true" : "false");
  const name = state.model.name;
  try {
    const result = await api(`/api/models/${encodeURIComponent(name)}/predict`, { method: "POST", body: form });
    if (state.model && state.model.name === name) {
      state.result = result;
      showError($("network-error"), "");
      showInput(result);
      fillLayers(result);
      showPrediction(result);
      $("timing").textContent = `answered in ${result.elapsed_ms} ms on the server`;
      announce("prediction", { model: name, source: state.source, invert: $("invert-input").checked, result });
    }
  } catch (error) {
    // a rejected image leaves no prediction of an earlier one, and is not resent for another model
    if (!state.source || state.source.blob === sent) {
      state.source = null;
      state.pending = false;
    }
    clearResult();
    showError($("network-error"), error.message);
  } finally {
    state.inFlight = false;
    if (state.pending) {
      state.pending = false;
      predict();
    }
  }
}

function sendCanvas() {
  const generation = state.canvasGeneration;
  $("draw-canvas").toBlob((blob) => {
    if (generation !== state.canvasGeneration) return; // cleared or replaced by an upload meanwhile
    state.source = { blob, filename: "drawing.png", drawing: true };
    predict();
  }, "image/png");
}

function clearCanvas() {
  state.canvasGeneration += 1;
  const canvas = $("draw-canvas");
  const context = canvas.getContext("2d");
  context.fillStyle = "black";
  context.fillRect(0, 0, canvas.width, canvas.height);
}

function setupCanvas() {
  const canvas = $("draw-canvas");
  const context = canvas.getContext("2d");
  const clear = clearCanvas;
  clear();
  let drawing = false;
  let last = null;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [
      ((event.clientX - box.left) * canvas.width) / box.width,
      ((event.clientY - box.top) * canvas.height) / box.height,
    ];
  };
  const stroke = (from, to) => {
    context.strokeStyle = "white";
    context.lineCap = "round";
    context.lineJoin = "round";
    context.lineWidth = Number($("brush").value);
    context.beginPath();
    context.moveTo(...from);
    context.lineTo(...to);
    context.stroke();
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    last = point(event);
    stroke(last, last);
    canvas.setPointerCapture?.(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const next = point(event);
    stroke(last, next);
    last = next;
    if (performance.now() - state.lastSent > THROTTLE_MS && !state.inFlight) sendCanvas();
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    sendCanvas();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointerleave", finish);
  $("clear-canvas").addEventListener("click", () => {
    clear();
    state.source = null;
    clearResult();
  });
}

function setupUpload() {
  $("upload-input").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    if (!state.limits) state.limits = await api("/api/limits");
    if (file.size > state.limits.max_upload_bytes) {
      const mb = (n) => (n / (1024 * 1024)).toFixed(1);
      state.source = null;
      clearResult();
      showError(
        $("network-error"),
        `${file.name} is ${mb(file.size)} MB; the upload limit is ${mb(state.limits.max_upload_bytes)} MB: choose a smaller image`,
      );
      event.target.value = "";
      return;
    }
    clearCanvas(); // the drawing is no longer the input: do not leave it under the photo's prediction
    state.source = { blob: file, filename: file.name, drawing: false };
    event.target.value = "";
    predict();
  });
  $("invert-input").addEventListener("change", predict);
}

// --- one feature map, enlarged, with the kernel that made it -------------------------------------------

function kernelTable(values, shape, channelIndex, bound, withNumbers) {
  const [kh, kw] = shape;
  const table = el("table", { class: withNumbers ? "kernel-cells numbers" : "kernel-cells" });
  for (let r = 0; r < kh; r++) {
    const row = el("tr");
    for (let c = 0; c < kw; c++) {
      const value = values[channelIndex * kh * kw + r * kw + c];
      const cell = el("td", { title: formatNumber(value), text: withNumbers ? formatNumber(value) : "" });
      cell.style.background = colourOf("RdBu_r", -bound, bound, value);
      if (Math.abs(value) > 0.6 * bound) cell.classList.add("dark");
      row.append(cell);
    }
    table.append(row);
  }
  return table;
}

async function openMap(layer, channel) {
  const dialog = $("map-dialog");
  const result = state.result;
  $("map-title").textContent = `${layer.name} (${layer.type}), feature map ${channel}`;
  const big = $("map-large");
  if (result) {
    const block = result.layers[layer.index].block;
    drawMap(big, block, channel);
    const bytes = atob(block.data);
    const [h, w] = block.shape;
    let lo = 255;
    let hi = 0;
    for (let i = channel * h * w; i < (channel + 1) * h * w; i++) {
      lo = Math.min(lo, bytes.charCodeAt(i));
      hi = Math.max(hi, bytes.charCodeAt(i));
    }
    const value = (q) => block.low + ((block.high - block.low) * q) / 255;
    $("map-info").textContent =
      `${h}×${w} values from ${formatNumber(value(lo))} to ${formatNumber(value(hi))} ` +
      `(shared ${block.colormap} scale of the block: ${formatNumber(block.low)} to ${formatNumber(block.high)})`;
  } else {
    big.getContext("2d").clearRect(0, 0, big.width, big.height);
    $("map-info").textContent = "Draw or upload an image to fill the map.";
  }
  $("map-kernel").replaceChildren(el("p", { class: "hint", text: "loading the kernel ..." }));
  if (!dialog.open) dialog.showModal();
  announce("map-opened", { model: state.model.name, layer, channel });
  try {
    const kernel = await api(
      `/api/models/${encodeURIComponent(state.model.name)}/layers/${layer.index}/kernel?channel=${channel}`,
    );
    showKernel(kernel);
  } catch (error) {
    $("map-kernel").replaceChildren(el("p", { class: "hint", text: error.message }));
  }
}

function sliceName(kernel, c) {
  const depth = kernel.shape[2];
  if (depth === 1) return "weights";
  if (depth === 3 && kernel.conv_layer === 0) return ["on red", "on green", "on blue"][c];
  return `input channel ${c}`;
}

function showKernel(kernel) {
  const [kh, kw, depth] = kernel.shape;
  const via = kernel.through.length ? `, then ${kernel.through.join(", then ")}` : "";
  const slices = [];
  const shown = Math.min(depth, 64);
  for (let c = 0; c < shown; c++) {
    slices.push(
      el(
        "figure",
        { class: "kernel-slice" },
        kernelTable(kernel.values, kernel.shape, c, kernel.bound, depth <= 4),
        el("figcaption", { text: sliceName(kernel, c) }),
      ),
    );
  }
  $("map-kernel").replaceChildren(
    el(
      "p",
      {},
      `Made by kernel ${kernel.channel} of ${kernel.conv_name} (layer ${kernel.conv_layer})${via}: `,
      `a ${kh}×${kw}×${depth} kernel (${kh}×${kw} weights for each of the ${depth} input channel${depth > 1 ? "s" : ""}), `,
      `slid with stride ${kernel.stride} and padding '${kernel.padding}', `,
      `plus bias ${kernel.bias === null ? "none" : formatNumber(kernel.bias)}. Red is positive, blue negative.`,
    ),
    el("div", { class: "kernel-slices" }, ...slices),
  );
}

export function setupNetwork() {
  setupCanvas();
  setupUpload();
  $("model-select").addEventListener("change", (event) => selectModel(event.target.value));
  $("map-close").addEventListener("click", () => $("map-dialog").close());
  $("map-dialog").addEventListener("click", (event) => {
    if (event.target === $("map-dialog")) $("map-dialog").close();
  });
  return refreshModels().catch((error) => showError($("network-error"), error.message));
}
