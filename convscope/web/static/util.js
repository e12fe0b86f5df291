// Shared helpers: JSON requests with readable errors, colour maps, drawing encoded maps on canvases.

let colormaps = null;

export class ApiError extends Error {}

// fetch + JSON; a 4xx/5xx answer throws an ApiError carrying the server's sentence.
export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new ApiError(`the server did not answer (${error.message}): is convscope serve still running?`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    const sentence = body && body.error ? body.error : `the server answered ${response.status}`;
    throw new ApiError(sentence);
  }
  return body;
}

export function postJSON(path, data) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(data),
  });
}

export async function loadColormaps() {
  if (!colormaps) colormaps = await api("/api/colormaps");
  return colormaps;
}

export function showError(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

// "1 epoch", "3 epochs"
export function plural(count, word) {
  return `${count.toLocaleString()} ${count === 1 ? word : `${word}s`}`;
}

export function shapeText(shape) {
  return shape.join("×");
}

export function formatNumber(value) {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1000 || magnitude < 0.001) return value.toExponential(2);
  return Number(value.toPrecision(3)).toString();
}

function decodeBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const decoded = new WeakMap();

function bytesOf(encoded) {
  if (!decoded.has(encoded)) decoded.set(encoded, decodeBase64(encoded.data));
  return decoded.get(encoded);
}

function lookup(name) {
  return colormaps[name] || colormaps.gray;
}

// Draw channel `channel` of an encoded block (see convscope/web/encoding.py) at one pixel per value;
// CSS scales the canvas up with crisp pixels.
export function drawMap(canvas, encoded, channel = 0) {
  const [height, width] = encoded.shape;
  const bytes = bytesOf(encoded);
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  const pixels = image.data;
  if (encoded.layout === "rgb") {
    for (let i = 0; i < width * height; i++) {
      pixels.set([bytes[3 * i], bytes[3 * i + 1], bytes[3 * i + 2], 255], 4 * i);
    }
  } else {
    const table = lookup(encoded.colormap);
    const offset = channel * width * height;
    for (let i = 0; i < width * height; i++) {
      const [r, g, b] = table[bytes[offset + i]];
      pixels[4 * i] = r;
      pixels[4 * i + 1] = g;
      pixels[4 * i + 2] = b;
      pixels[4 * i + 3] = 255;
    }
  }
  context.putImageData(image, 0, 0);
}

// The colour of `value` on a scale from low to high in colour map `name`, as a CSS colour.
export function colourOf(name, low, high, value) {
  const table = lookup(name);
  const fraction = high > low ? (value - low) / (high - low) : 0;
  const index = Math.max(0, Math.min(255, Math.round(fraction * 255)));
  const [r, g, b] = table[index];
  return `rgb(${r}, ${g}, ${b})`;
}

// A small horizontal colour bar with the numbers at both ends.
export function legend(name, low, high) {
  const bar = el("canvas", { class: "legend-bar", width: 128, height: 1 });
  const context = bar.getContext("2d");
  const table = lookup(name);
  for (let x = 0; x < 128; x++) {
    const [r, g, b] = table[Math.round((x / 127) * 255)];
    context.fillStyle = `rgb(${r}, ${g}, ${b})`;
    context.fillRect(x, 0, 1, 1);
  }
  return el(
    "span",
    { class: "legend", title: `${name}: ${formatNumber(low)} to ${formatNumber(high)}` },
    el("span", { text: formatNumber(low) }),
    bar,
    el("span", { text: formatNumber(high) }),
  );
}

// Values drawn as coloured cells, `perRow` per row (a flattened vector, a dense layer's output).
export function drawVector(canvas, vector, perRow = 64) {
  const count = vector.values.length;
  const columns = Math.min(count, perRow);
  const rows = Math.ceil(count / columns);
  canvas.width = columns;
  canvas.height = rows;
  const context = canvas.getContext("2d");
  context.fillStyle = "#f4f4f4";
  context.fillRect(0, 0, columns, rows);
  vector.values.forEach((value, i) => {
    context.fillStyle = colourOf(vector.colormap, vector.low, vector.high, value);
    context.fillRect(i % columns, Math.floor(i / columns), 1, 1);
  });
  return { columns, rows };
}
