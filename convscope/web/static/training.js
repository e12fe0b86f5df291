// Training view: start a job on the server, follow it live (server-sent events), stop it, save the model.
import { api, el, plural, postJSON, showError } from "./util.js";
import { axes } from "./charts.js";
import { refreshModels } from "./network.js";

const $ = (id) => document.getElementById(id);
const EPOCHS_SHOWN = 5;
const state = { source: null, start: null, steps: [], epochs: [], status: "idle" };

// --- the chart: loss and accuracy against epochs, train (running mean of the epoch) and test ------------

function line(context, box, points, yMax, xMax, colour, dots) {
  const { left, top, width, height } = box;
  const x = (p) => left + (p[0] / xMax) * width;
  const y = (p) => top + height - (Math.min(p[1], yMax) / yMax) * height;
  context.strokeStyle = colour;
  context.fillStyle = colour;
  context.lineWidth = 2;
  context.beginPath();
  points.forEach((p, i) => (i ? context.lineTo(x(p), y(p)) : context.moveTo(x(p), y(p))));
  context.stroke();
  if (dots) {
    for (const p of points) {
      context.beginPath();
      context.arc(x(p), y(p), 3.5, 0, 2 * Math.PI);
      context.fill();
    }
  }
}

function drawChart() {
  const canvas = $("train-chart");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  const perEpoch = state.start ? state.start.steps_per_epoch : 1;
  const xMax = state.start ? state.start.epochs : 1;
  const at = (e) => (e.step !== undefined ? e.step / perEpoch : e.epoch);
  const trainLoss = state.steps.map((e) => [at(e), e.smooth_loss]);
  const trainAccuracy = state.steps.map((e) => [at(e), e.smooth_accuracy]);
  const testLoss = state.epochs.filter((e) => e.val_loss !== undefined).map((e) => [e.epoch, e.val_loss]);
  const testAccuracy = state.epochs.filter((e) => e.val_accuracy !== undefined).map((e) => [e.epoch, e.val_accuracy]);
  const lossMax = Math.max(0.5, ...trainLoss.map((p) => p[1]), ...testLoss.map((p) => p[1])) * 1.05;
  const half = canvas.width / 2;
  const lossBox = { left: 48, top: 24, width: half - 72, height: canvas.height - 70 };
  const accuracyBox = { left: half + 40, top: 24, width: half - 64, height: canvas.height - 70 };
  axes(context, lossBox, lossMax, "loss (cross-entropy)", xMax);
  axes(context, accuracyBox, 1, "accuracy", xMax);
  line(context, lossBox, trainLoss, lossMax, xMax, "#c0392b", false);
  line(context, lossBox, testLoss, lossMax, xMax, "#2e6da4", true);
  line(context, accuracyBox, trainAccuracy, 1, xMax, "#c0392b", false);
  line(context, accuracyBox, testAccuracy, 1, xMax, "#2e6da4", true);
  canvas.dataset.points = String(state.steps.length + state.epochs.length);
}

// --- events --------------------------------------------------------------------------------------------

function setStatus(text) {
  $("train-status").textContent = text;
}

function setRunning(running) {
  $("train-start").disabled = running;
  $("train-stop").disabled = !running;
  $("train-save").disabled = running || !state.start;
}

function handle(event) {
  if (event.type === "idle") return;
  if (event.type === "status") setStatus(event.message);
  if (event.type === "start") {
    state.start = event;
    setStatus(
      `training ${event.recipe} (${event.params.toLocaleString()} parameters) on ${event.train_images.toLocaleString()} ` +
        `${event.dataset} images, ${plural(event.epochs, "epoch")} of ${plural(event.steps_per_epoch, "step")}; ` +
        (event.test_images ? `tested on ${event.test_images.toLocaleString()} images after each epoch` : "no test split"),
    );
    $("train-save-name").value = `${event.recipe}-${event.dataset}`.replace(/[^A-Za-z0-9_.-]/g, "-");
  }
  if (event.type === "step") {
    state.steps.push(event);
    $("train-progress").textContent =
      `epoch ${event.epoch}, step ${event.step}: loss ${event.loss.toFixed(4)}, accuracy ${(100 * event.accuracy).toFixed(1)}%`;
  }
  if (event.type === "epoch") {
    state.epochs.push(event);
    const test = event.val_accuracy !== undefined ? `, test ${(100 * event.val_accuracy).toFixed(1)}%` : "";
    $("train-epochs").append(
      el("li", { text: `epoch ${event.epoch}: loss ${event.loss.toFixed(4)}, train ${(100 * event.accuracy).toFixed(1)}%${test}` }),
    );
    collapseEpochs();
  }
  if (event.type === "end") {
    state.status = event.status;
    setStatus(event.message);
    if (event.status === "failed") showError($("train-error"), event.message);
    setRunning(false);
    stopListening();
  }
  drawChart();
}

// The list shows the last EPOCHS_SHOWN epochs; the earlier ones are counted (the chart has them all).
function collapseEpochs() {
  const list = $("train-epochs");
  while (list.children.length > EPOCHS_SHOWN) list.firstElementChild.remove();
  const earlier = state.epochs.length - list.children.length;
  $("train-epochs-earlier").hidden = earlier === 0;
  $("train-epochs-earlier").textContent =
    `${earlier} earlier ${earlier === 1 ? "epoch" : "epochs"} (in the chart above), then:`;
}

function stopListening() {
  if (state.source) state.source.close();
  state.source = null;
}

function listen(since = 0) {
  stopListening();
  const source = new EventSource(`/api/training/events?since=${since}`);
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    handle(event);
    if (event.type === "idle") stopListening();
  };
  state.source = source;
}

function reset() {
  state.start = null;
  state.steps = [];
  state.epochs = [];
  $("train-epochs").replaceChildren();
  collapseEpochs();
  $("train-progress").textContent = "";
  $("train-saved").textContent = "";
  drawChart();
}

function optional(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

async function start() {
  showError($("train-error"), "");
  const settings = {
    recipe: $("train-recipe").value,
    dataset: $("train-dataset").value,
    epochs: Number($("train-epochs-input").value),
    batch_size: Number($("train-batch").value),
    optimizer: $("train-optimizer").value,
    lr: optional("train-lr"),
    max_images: optional("train-max-images"),
    standardize: $("train-standardize").checked,
  };
  try {
    await postJSON("/api/training", settings);
    reset();
    setRunning(true);
    setStatus("starting ...");
    listen(0);
  } catch (error) {
    showError($("train-error"), error.message);
  }
}

async function stop() {
  try {
    await postJSON("/api/training/stop", {});
    setStatus("stopping after this step ...");
  } catch (error) {
    showError($("train-error"), error.message);
  }
}

async function save() {
  showError($("train-error"), "");
  $("train-saved").textContent = ""; // an earlier "saved" must not stand beside this attempt's error
  try {
    const saved = await postJSON("/api/training/save", { name: $("train-save-name").value.trim() });
    $("train-saved").textContent = `saved ${saved.file} after ${saved.steps} steps: it is now in the Network view's model list`;
    await refreshModels();
  } catch (error) {
    showError($("train-error"), error.message);
  }
}

export async function setupTraining() {
  $("train-start").addEventListener("click", start);
  $("train-stop").addEventListener("click", stop);
  $("train-save").addEventListener("click", save);
  try {
    const options = await api("/api/training/options");
    $("train-recipe").replaceChildren(
      ...options.recipes.map((r) => el("option", { value: r.name, text: r.name, title: r.description })),
    );
    $("train-dataset").replaceChildren(
      ...options.datasets.map((d) => el("option", { value: d.name, text: d.name, title: d.description })),
    );
    const recipeNote = () => {
      const recipe = options.recipes.find((r) => r.name === $("train-recipe").value);
      const dataset = options.datasets.find((d) => d.name === $("train-dataset").value);
      $("train-recipe-note").textContent = `${recipe ? recipe.description : ""}. Data: ${dataset ? dataset.description : ""}.`;
    };
    $("train-recipe").addEventListener("change", recipeNote);
    $("train-dataset").addEventListener("change", recipeNote);
    recipeNote();
    $("train-models-dir").textContent = options.models_dir || "(none configured)";
    const current = await api("/api/training");
    if (current.status !== "idle") {
      current.events.forEach(handle);
      const running = ["starting", "loading", "running"].includes(current.status);
      setRunning(running);
      if (running) listen(current.events.length);
    } else {
      setRunning(false);
    }
    drawChart();
  } catch (error) {
    showError($("train-error"), error.message);
  }
}
