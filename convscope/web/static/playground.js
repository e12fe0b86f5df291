// Convolution playground: a kernel of editable cells slid over an image, with the size rule worked out.
import { api, drawMap, el, formatNumber, postJSON, shapeText, showError } from "./util.js";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 60;
const DISPLAY_SIDE = 340; // screen pixels for the input's longer side
const state = { kernels: [], timer: null, sequence: 0, ready: false };

function kernelSize() {
  return Number($("pg-size").value);
}

function buildCells(values) {
  const size = values.length;
  $("pg-size").value = String(size);
  const grid = $("kernel-grid");
  grid.style.gridTemplateColumns = `repeat(${size}, 1fr)`;
  grid.replaceChildren(
    ...values.flat().map((value, i) =>
      el("input", {
        type: "number",
        step: "any",
        class: "kernel-cell",
        value: String(Number(value.toPrecision(4))),
        "aria-label": `kernel row ${Math.floor(i / size) + 1} column ${(i % size) + 1}`,
        oninput: edited,
      }),
    ),
  );
}

function readCells() {
  const size = kernelSize();
  const cells = [...document.querySelectorAll("#kernel-grid .kernel-cell")];
  const rows = [];
  for (let r = 0; r < size; r++) {
    rows.push(
      cells.slice(r * size, (r + 1) * size).map((cell) => {
        const text = cell.value.trim();
        const value = Number(text);
        if (text === "" || !Number.isFinite(value)) {
          throw new Error(`row ${r + 1} has a cell that is not a number: type a number in every cell`);
        }
        return value;
      }),
    );
  }
  return rows;
}

// A cell was typed in: the kernel is now the user's own.
function edited() {
  const active = document.querySelector("#presets button.active");
  if (active) {
    active.classList.remove("active");
    $("kernel-description").textContent = `your own kernel (edited from ${active.textContent})`;
  }
  schedule();
}

function choosePreset(kernel) {
  buildCells(kernel.values);
  $("kernel-description").textContent = `${kernel.name}: ${kernel.description}`;
  document.querySelectorAll("#presets button").forEach((b) => b.classList.toggle("active", b.textContent === kernel.name));
  schedule();
}

function resize() {
  const size = kernelSize();
  const values = Array.from({ length: size }, (_, r) =>
    Array.from({ length: size }, (_, c) => (r === (size - 1) / 2 && c === (size - 1) / 2 ? 1 : 0)),
  );
  buildCells(values);
  $("kernel-description").textContent = `identity ${size}×${size}: edit the cells`;
  document.querySelectorAll("#presets button").forEach((b) => b.classList.remove("active"));
  schedule();
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(convolve, DEBOUNCE_MS);
}

function paddingValue() {
  const value = $("pg-padding").value;
  return value === "same" || value === "valid" ? value : Number(value);
}

// Input and maps share one screen scale, so a stride-2 map looks half as big as its input.
function show(canvas, encoded, scale) {
  drawMap(canvas, encoded, 0);
  const [h, w] = encoded.shape;
  canvas.style.width = `${Math.round(w * scale)}px`;
  canvas.style.height = `${Math.round(h * scale)}px`;
}

async function convolve() {
  if (!state.ready) return;
  let kernel;
  try {
    kernel = readCells();
  } catch (error) {
    showFailure(error.message);
    return;
  }
  const sequence = ++state.sequence;
  try {
    const result = await postJSON("/api/playground/convolve", {
      image: $("pg-image").value,
      kernel,
      padding: paddingValue(),
      stride: Number($("pg-stride").value),
      per_channel: $("pg-per-channel").checked,
      gray: $("pg-gray").checked,
    });
    if (sequence !== state.sequence) return; // a newer edit is on its way
    showError($("pg-error"), "");
    $("pg-output").hidden = false;
    const scale = DISPLAY_SIDE / Math.max(...result.input.shape.slice(0, 2));
    show($("pg-input"), result.input, scale);
    show($("pg-output"), result.output, scale);
    $("pg-input-shape").textContent = shapeText(result.input.shape);
    $("pg-output-shape").textContent = shapeText(result.output_shape);
    $("pg-output-note").textContent = result.output_note;
    const [[top, bottom], [left, right]] = result.padding;
    const [kh, kw] = result.kernel_shape;
    $("formula").replaceChildren(
      el("p", { class: "rule", text: "output size = floor((size + 2·padding − kernel) / stride) + 1" }),
      el("p", { text: `height: ${result.formula.height}` }),
      el("p", { text: `width: ${result.formula.width}` }),
      el(
        "p",
        { class: "hint" },
        `padding '${$("pg-padding").value}' adds ${top}+${bottom} rows and ${left}+${right} columns of zeros; `,
        `the ${kh}×${kw} kernel moves ${$("pg-stride").value} pixel(s) at a time. `,
        `Values from ${formatNumber(result.value_range[0])} to ${formatNumber(result.value_range[1])}.`,
      ),
    );
    $("pg-relu-wrap").hidden = !result.relu;
    if (result.relu) show($("pg-relu"), result.relu, scale / 2);
  } catch (error) {
    if (sequence === state.sequence) showFailure(error.message);
  }
}

// An error replaces the result: no feature map, size or formula of the previous settings stays beside it.
function showFailure(message) {
  showError($("pg-error"), message);
  $("pg-output").hidden = true;
  $("pg-relu-wrap").hidden = true;
  $("pg-output-shape").textContent = "";
  $("pg-output-note").textContent = "";
  $("formula").replaceChildren();
}

async function upload(event) {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const result = await api("/api/playground/images", { method: "POST", body: form });
    const option = el("option", { value: result.id, text: `${file.name} (${shapeText(result.shape)})` });
    $("pg-image").append(option);
    $("pg-image").value = result.id;
    showError($("pg-error"), "");
    schedule();
  } catch (error) {
    showError($("pg-error"), error.message);
  }
}

export async function setupPlayground() {
  try {
    const [{ kernels }, { samples }] = await Promise.all([
      api("/api/playground/kernels"),
      api("/api/playground/samples"),
    ]);
    state.kernels = kernels;
    $("pg-image").replaceChildren(
      ...samples.map((s) => el("option", { value: s.name, text: `${s.name} (${shapeText(s.shape)})`, title: s.description })),
    );
    $("presets").replaceChildren(
      ...kernels.map((k) => el("button", { type: "button", text: k.name, title: k.description, onclick: () => choosePreset(k) })),
    );
    for (const id of ["pg-image", "pg-padding", "pg-stride", "pg-gray", "pg-per-channel"]) {
      $(id).addEventListener("change", schedule);
    }
    $("pg-stride").addEventListener("input", schedule);
    $("pg-size").addEventListener("change", resize);
    $("pg-upload").addEventListener("change", upload);
    state.ready = true;
    choosePreset(kernels.find((k) => k.name === "vertical_line") || kernels[0]);
  } catch (error) {
    showError($("pg-error"), error.message);
  }
}
