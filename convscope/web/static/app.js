// The explorer's entry point: tabs, colour maps, then the three views.
import { loadColormaps, showError } from "./util.js";
import { refreshModels, setupNetwork } from "./network.js";
import { setupPlayground } from "./playground.js";
import { setupTraining } from "./training.js";
import { setupDesigner, showDesigner } from "./designer.js";
import { setupWhy } from "./why.js";

function showView(name) {
  document.querySelectorAll(".view").forEach((view) => {
    view.hidden = view.id !== `view-${name}`;
  });
  document.querySelectorAll("nav button").forEach((button) => {
    button.classList.toggle("active", button.dataset.view === name);
    button.setAttribute("aria-selected", String(button.dataset.view === name));
  });
  if (name === "network") refreshModels().catch(() => {});
  if (name === "designer") showDesigner();
  history.replaceState(null, "", `#${name}`);
}

async function main() {
  document.querySelectorAll("nav button").forEach((button) => {
    button.addEventListener("click", () => showView(button.dataset.view));
  });
  try {
    await loadColormaps();
  } catch (error) {
    showError(document.getElementById("network-error"), error.message);
    return;
  }
  const first = (location.hash || "#network").slice(1);
  showView(["network", "playground", "training", "designer"].includes(first) ? first : "network");
  setupWhy(); // listens before the network view announces its first model
  await Promise.all([setupNetwork(), setupPlayground(), setupTraining(), setupDesigner()]);
  document.body.dataset.ready = "true";
}

main();
