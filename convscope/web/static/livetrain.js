// Designer view, part 2: train the designed network live. Start, stop, resume and save a job on the server,
// follow it with server-sent events: loss and accuracy (train and validation), and after every epoch the
// first conv layer's kernels and one test image's feature maps, with a slider back through the epochs.
import { api, drawMap, el, plural, postJSON, showError } from "./util.js";
import { drawPanels } from "./charts.js";
import { refreshModels } from "./network.js";
import { refreshRuns } from "./compare.js";

const $ = (id) => document.getElementById(id);
const RUNNING = ["starting", "loading", "running"];
const state = {
  design: null, // the designer's last "design-change": {dataset, architecture, valid, error}
  source: null,
  events: 0, // events of the current job handled so far (where a stream picks up)
  jobId: null,
  start: null,
  epochs: 0, // the run's epochs in all (grows on resume)
  steps: [],
  epochEvents: [],
  snapshots: new Map(), // epoch -> snapshot event
  probe: null,
  status: "idle",
  follow: true, // the slider follows the newest epoch until moved back
};

// --- drawing ---------------------------------------------------------------------------------------------

function drawChart() {
  const perEpoch = state.start ? state.start.steps_per_epoch : 1;
  const at = (e) => e.step / perEpoch;
  const validation = state.epochEvents.filter((e) => e.val_loss !== undefined);
  drawPanels(
    $("lt-chart"),
    [
      {
        title: "loss (cross-entropy)",
        series: [
          { points: state.steps.map((e) => [at(e), e.smooth_loss]), colour: "#c0392b" },
          { points: validation.map((e) => [e.epoch, e.val_loss]), colour: "#2e6da4", dots: true },
        ],
      },
      {
        title: "accuracy",
        yMax: 1,
        series: [
          { points: state.steps.map((e) => [at(e), e.smooth_accuracy]), colour: "#c0392b" },
          { points: validation.map((e) => [e.epoch, e.val_accuracy]), colour: "#2e6da4", dots: true },
        ],
      },
    ],
    state.epochs || 1,
  );
  $("lt-chart").dataset.points = String(state.steps.length + state.epochEvents.length);
}

// Tiles of equal size on one canvas: each map drawn at one pixel per value, then scaled up crisply.
function montage(canvas, pictures, side, columns) {
  const gap = 4;
  const count = pictures.length;
  const cols = Math.max(1, Math.min(columns, count));
  const rows = Math.ceil(count / cols);
  canvas.width = cols * (side + gap);
  canvas.height = Math.max(1, rows * (side + gap));
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  const scratch = document.createElement("canvas");
  pictures.forEach(([encoded, channel], i) => {
    drawMap(scratch, encoded, channel);
    const scale = side / Math.max(scratch.width, scratch.height);
    context.drawImage(scratch, (i % cols) * (side + gap), Math.floor(i / cols) * (side + gap), scratch.width * scale, scratch.height * scale);
  });
}

function showSnapshot(epoch) {
  const shot = state.snapshots.get(epoch);
  if (!shot) return;
  $("ev-epoch").textContent = epoch === 0 ? "before training (epoch 0)" : `after epoch ${epoch}`;
  $("ev-kernels").dataset.epoch = String(epoch);
  if (!shot.kernels) {
    $("ev-kernel-note").textContent = shot.note || "";
    return;
  }
  const k = shot.kernels;
  const pictures = k.kind === "rgb" ? k.tiles.map((tile) => [tile, 0]) : Array.from({ length: k.shape[3] }, (_, c) => [k.block, c]);
  montage($("ev-kernels"), pictures, 40, 8);
  $("ev-kernel-note").textContent =
    `${shot.kernel_layer}: ${k.count} kernels of ${k.shape[0]}×${k.shape[1]}×${k.shape[2]}` +
    (k.count > k.shape[3] ? ` (the first ${k.shape[3]} drawn)` : "") +
    (k.note ? ` (${k.note})` : "") +
    (k.kind === "rgb"
      ? `; each weight's red, green and blue as 0.5 + w / ${(2 * k.bound).toPrecision(3)} (grey is 0)`
      : `; red positive, blue negative, ±${k.bound.toPrecision(3)}`);
  if (shot.maps) {
    const [h, , c] = shot.maps.shape;
    montage($("ev-maps"), Array.from({ length: c }, (_, i) => [shot.maps, i]), 48, 8);
    const shown = shot.channels > c ? ` (the first ${c} of ${shot.channels})` : "";
    $("ev-maps-note").textContent = `${shot.maps_layer}: ${c} maps of ${h}×${shot.maps.shape[1]}${shown}`;
  }
}

function addSnapshot(event) {
  state.snapshots.set(event.epoch, event);
  const slider = $("ev-slider");
  const last = Math.max(...state.snapshots.keys());
  slider.max = String(last);
  slider.disabled = state.snapshots.size < 2;
  if (state.follow) {
    slider.value = String(last);
    showSnapshot(last);
  }
}

// --- events --------------------------------------------------------------------------------------------

function setStatus(text) {
  $("lt-status").textContent = text;
}

function setRunning(running) {
  $("lt-stop").disabled = !running;
  $("lt-resume").disabled = running || !state.start || !["stopped", "finished"].includes(state.status);
  $("lt-save").disabled = running || !state.start || state.epochEvents.length === 0;
  updateTrainButton();
}

function updateTrainButton() {
  const button = $("lt-start");
  const running = RUNNING.includes(state.status);
  const design = state.design;
  button.disabled = running || !design || !design.valid;
  button.title = running ? "a job is running" : design && !design.valid ? design.error || "checking the design ..." : "";
}

function handle(event) {
  state.events += 1;
  if (event.type === "idle") return;
  if (event.type === "status") setStatus(event.message);
  if (event.type === "start") {
    state.start = event;
    state.epochs = event.epochs;
    setStatus(
      `training ${event.recipe} (${event.params.toLocaleString("en-US")} parameters) on ${event.train_images.toLocaleString("en-US")} ` +
        `${event.dataset} images, ${plural(event.epochs, "epoch")} of ${plural(event.steps_per_epoch, "step")}; ` +
        (event.test_images ? `validated on ${event.test_images.toLocaleString("en-US")} test images after each epoch` : "no test split"),
    );
    $("lt-save-name").value = `${event.recipe}-${event.dataset}`.replace(/[^A-Za-z0-9_.-]/g, "-");
  }
  if (event.type === "probe") {
    state.probe = event;
    const canvas = $("ev-probe");
    drawMap(canvas, event.image, 0);
    canvas.style.width = "84px";
    canvas.style.height = `${Math.round((84 * event.image.shape[0]) / event.image.shape[1])}px`;
    $("ev-probe-label").textContent = `${event.split} image ${event.index}: ${event.label}`;
  }
  if (event.type === "snapshot") addSnapshot(event);
  if (event.type === "step") {
    state.steps.push(event);
    $("lt-progress").textContent =
      `epoch ${event.epoch}, step ${event.epoch_step}: loss ${event.loss.toFixed(4)}, accuracy ${(100 * event.accuracy).toFixed(1)}%`;
  }
  if (event.type === "epoch") {
    state.epochEvents.push(event);
    const validation = event.val_accuracy !== undefined ? `, validation ${(100 * event.val_accuracy).toFixed(1)}%` : "";
    if (state.source) refreshRuns(); // live, not while replaying a reattached job's events
    $("lt-progress").textContent =
      `epoch ${event.epoch}: loss ${event.loss.toFixed(4)}, train ${(100 * event.accuracy).toFixed(1)}%${validation}`;
  }
  if (event.type === "resume") {
    // a stop rolled the run back to the end of epoch from_epoch: drop what came after it
    state.steps = state.steps.filter((e) => e.step <= event.step);
    state.epochEvents = state.epochEvents.filter((e) => e.epoch <= event.from_epoch);
    for (const epoch of [...state.snapshots.keys()]) if (epoch > event.from_epoch) state.snapshots.delete(epoch);
    state.epochs = event.epochs;
    state.status = "running";
    setStatus(`resumed after epoch ${event.from_epoch}, up to epoch ${event.epochs}`);
    setRunning(true);
  }
  if (event.type === "end") {
    state.status = event.status;
    setStatus(event.message);
    if (event.status === "failed") showError($("lt-error"), event.message);
    setRunning(false);
    stopListening();
    refreshRuns();
  }
  drawChart();
}

function stopListening() {
  if (state.source) state.source.close();
  state.source = null;
}

function listen(since) {
  stopListening();
  const source = new EventSource(`/api/training/events?since=${since}`);
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "idle") {
      stopListening();
      return;
    }
    handle(event);
  };
  state.source = source;
}

function reset(jobId) {
  Object.assign(state, { jobId, events: 0, start: null, epochs: 0, steps: [], epochEvents: [], probe: null, follow: true });
  state.snapshots = new Map();
  $("ev-slider").max = "0";
  $("ev-slider").value = "0";
  $("ev-slider").disabled = true;
  $("ev-epoch").textContent = "no snapshots yet";
  $("lt-progress").textContent = "";
  $("lt-saved").textContent = "";
  showError($("lt-error"), "");
  drawChart();
}

// --- the buttons --------------------------------------------------------------------------------------------

function optional(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

async function start() {
  showError($("lt-error"), "");
  setStatus("asking the server to start ...");
  const design = state.design;
  const settings = {
    dataset: design.dataset,
    architecture: design.architecture,
    optimizer: $("lt-optimizer").value,
    lr: optional("lt-lr"),
    schedule: $("lt-schedule").value,
    epochs: Number($("lt-epochs").value),
    batch_size: Number($("lt-batch").value),
    max_images: optional("lt-max-images"),
    probe_index: Number($("lt-probe").value) || 0,
    flip: $("lt-flip").checked,
    crop_padding: Number($("lt-crop").value),
    cutout: Number($("lt-cutout").value),
    client: "designer",
  };
  try {
    const started = await postJSON("/api/training", settings);
    reset(started.id);
    state.status = "starting";
    setRunning(true);
    setStatus("starting ...");
    listen(0);
    refreshRuns();
  } catch (error) {
    setStatus("not started (see why below)");
    showError($("lt-error"), error.message);
  }
}

async function stop() {
  try {
    await postJSON("/api/training/stop", {});
    setStatus("stopping after this step ...");
  } catch (error) {
    showError($("lt-error"), error.message);
  }
}

async function resume() {
  showError($("lt-error"), "");
  try {
    await postJSON("/api/training/resume", { epochs: Math.max(Number($("lt-epochs").value), 1) });
    state.status = "running";
    setRunning(true);
    listen(state.events);
  } catch (error) {
    showError($("lt-error"), error.message);
  }
}

async function save() {
  showError($("lt-error"), "");
  $("lt-saved").textContent = "";
  const name = $("lt-save-name").value.trim();
  try {
    const saved = await postJSON("/api/training/save", { name });
    $("lt-saved").textContent = `saved ${saved.file}: opening it in the Network view`;
    await refreshModels(name);
    document.querySelector("nav button[data-view=network]").click();
    window.scrollTo(0, 0); // the model's input canvas, at the top of the network view
  } catch (error) {
    showError($("lt-error"), error.message);
  }
}

// Attach to the server's current job (after a reload, a closed tab, or a job started elsewhere).
export async function refreshLiveTraining() {
  if (state.source) return; // already following it
  try {
    const current = await api("/api/training");
    if (current.status === "idle") return;
    const fresh = current.id !== state.jobId || current.events.length < state.events;
    if (!fresh && !RUNNING.includes(current.status) && current.events.length === state.events) return;
    reset(current.id);
    if (current.settings.architecture && fresh) {
      const detail = { dataset: current.settings.dataset, architecture: current.settings.architecture };
      document.dispatchEvent(new CustomEvent("design-load", { detail }));
    }
    current.events.forEach(handle);
    state.status = current.status;
    $("lt-epochs").value = String(current.epochs);
    const running = RUNNING.includes(current.status);
    setRunning(running);
    if (running) listen(state.events);
    drawChart();
  } catch (error) {
    showError($("lt-error"), error.message);
  }
}

export async function setupLiveTraining() {
  document.addEventListener("design-change", (event) => {
    state.design = event.detail;
    updateTrainButton();
  });
  $("lt-start").addEventListener("click", start);
  $("lt-stop").addEventListener("click", stop);
  $("lt-resume").addEventListener("click", resume);
  $("lt-save").addEventListener("click", save);
  $("ev-slider").addEventListener("input", () => {
    const value = Number($("ev-slider").value);
    state.follow = value === Number($("ev-slider").max);
    showSnapshot(value);
  });
  drawChart();
  await refreshLiveTraining();
}
