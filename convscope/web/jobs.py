"""One training job at a time, in its own thread, publishing its progress as a list of events.

Events (dicts with a "type"): "status" (a sentence), "start" (sizes), "step" (running loss and
accuracy of the epoch, a few times a second), "epoch" (the epoch's numbers and the test split's),
"end" (final status: finished, stopped or failed, with a sentence).
"""

import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from convscope.train import batch_indices
from convscope.web.datasets import RECIPES, build_recipe, load_source
from convscope.web.errors import WebError

STEP_EVENT_SECONDS = 0.25  # a step event at least this often ...
STEP_EVENTS_PER_EPOCH = 25  # ... and about this many per epoch however fast the steps are
SMOOTHING = 0.1  # weight of the newest batch in the smoothed loss and accuracy the chart draws
MAX_VALIDATION_IMAGES = 2000
DEFAULT_LR = {"adam": 3e-3, "sgd": 0.05}


@dataclass(frozen=True)
class TrainingSettings:
    recipe: str = "seed_cnn"
    dataset: str = "digits"
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float | None = None
    schedule: str = "onecycle"
    standardize: bool = True
    max_images: int | None = None
    seed: int = 0


def _optimizer(settings: TrainingSettings):
    from convscope.optim import SGD, Adam

    lr = settings.lr if settings.lr is not None else DEFAULT_LR[settings.optimizer]
    return (SGD(lr=lr, momentum=0.9) if settings.optimizer == "sgd" else Adam(lr=lr)), lr


def _schedule(settings: TrainingSettings, lr: float):
    from convscope.optim import OneCycle

    return OneCycle(lr) if settings.schedule == "onecycle" else None


class TrainingJob:
    """Trains a recipe on a data source in a daemon thread; `stop()` ends it between two steps."""

    def __init__(self, settings: TrainingSettings, source, job_id: int):
        self.settings = settings
        self.source = source
        self.id = job_id
        self.status = "starting"
        self.model = None
        self.steps_done = 0
        self._epoch_loss = (float("nan"), float("nan"))
        self._smooth = np.zeros(
            2
        )  # exponential moving average of (batch loss, batch accuracy), bias-corrected
        self._events: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"convscope-training-{job_id}", daemon=True)

    # the thread

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()

    def join(self, timeout=None):
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self.status in ("starting", "loading", "running")

    def _publish(self, **event):
        with self._lock:
            self._events.append(event)

    def events_since(self, index: int) -> tuple[list[dict], bool]:
        """The events from `index` on, and whether the job has ended (no more will come)."""
        with self._lock:
            return self._events[index:], not self.running

    def _finish(self, status: str, message: str):
        """Set the final status and publish the "end" event together, so no reader sees one alone."""
        with self._lock:
            self.status = status
            self._events.append({"type": "end", "status": status, "message": message})

    def _run(self):
        try:
            self._train()
            status = "stopped" if self._stop.is_set() else "finished"
            self._finish(status, f"training {status} after {self.steps_done} steps")
        except Exception as error:  # the job reports every failure in the page instead of dying silently
            self._finish("failed", f"training failed: {type(error).__name__}: {error}")

    def _prepare(self):
        """Load the data and build the model: (train images, labels, validation pair or None)."""
        s = self.settings
        self.status = "loading"
        self._publish(type="status", message=f"loading {self.source.name} ...")
        train, test = load_source(self.source)
        images, labels = train.images, train.labels
        if s.max_images is not None:
            images, labels = images[: s.max_images], labels[: s.max_images]
        model = build_recipe(s.recipe, images.shape[1:], len(train.class_names), s.seed, train.class_names)
        if s.standardize:
            model.adapt(images)
        validation = None
        if test is not None:
            validation = (test.images[:MAX_VALIDATION_IMAGES], test.labels[:MAX_VALIDATION_IMAGES])
        self.model = model
        return images, labels, validation

    def _train(self):
        s = self.settings
        images, labels, validation = self._prepare()
        model = self.model
        optimizer, lr = _optimizer(s)
        model.compile(optimizer)
        schedule = _schedule(s, lr)
        steps_per_epoch = -(-len(labels) // s.batch_size)
        total_steps = s.epochs * steps_per_epoch
        self.status = "running"
        self._publish(
            type="start",
            recipe=s.recipe,
            dataset=self.source.name,
            epochs=s.epochs,
            steps_per_epoch=steps_per_epoch,
            train_images=int(len(labels)),
            test_images=0 if validation is None else int(len(validation[1])),
            input_shape=list(model.input_shape),
            class_names=list(model.class_names),
            params=int(model.count_params()),
            lr=lr,
        )
        rng = np.random.default_rng(s.seed)
        for epoch in range(1, s.epochs + 1):
            if not self._epoch(epoch, images, labels, rng, schedule, total_steps):
                return
            self._epoch_event(epoch, validation)

    def _smoothed(self, loss: float, accuracy: float) -> tuple[float, float]:
        """Batch loss and accuracy averaged over recent steps (across epochs), for a steady chart."""
        self._smooth = (1 - SMOOTHING) * self._smooth + SMOOTHING * np.array([loss, accuracy])
        correction = 1 - (1 - SMOOTHING) ** self.steps_done
        return float(self._smooth[0] / correction), float(self._smooth[1] / correction)

    def _epoch(self, epoch, images, labels, rng, schedule, total_steps) -> bool:
        """One pass over the data, publishing step events; False if stopped part way."""
        model = self.model
        loss_sum, correct, seen = 0.0, 0, 0
        last_event = time.monotonic()
        batches = batch_indices(len(labels), self.settings.batch_size, rng)
        every = max(1, len(batches) // STEP_EVENTS_PER_EPOCH)
        for number, idx in enumerate(batches, start=1):
            if self._stop.is_set():
                return False
            if schedule is not None:
                model.optimizer.lr = schedule(self.steps_done, total_steps)
            loss, logits = model.train_step(model.standardize(images[idx]), labels[idx], rng=rng)
            self.steps_done += 1
            hits = int((logits.argmax(axis=1) == labels[idx]).sum())
            loss_sum, correct, seen = loss_sum + float(loss) * len(idx), correct + hits, seen + len(idx)
            smooth_loss, smooth_accuracy = self._smoothed(float(loss), hits / len(idx))
            now = time.monotonic()
            if number % every == 0 or now - last_event >= STEP_EVENT_SECONDS or number == len(batches):
                last_event = now
                self._publish(
                    type="step",
                    epoch=epoch,
                    step=self.steps_done,
                    epoch_step=number,
                    loss=loss_sum / seen,
                    accuracy=correct / seen,
                    smooth_loss=smooth_loss,
                    smooth_accuracy=smooth_accuracy,
                    lr=float(model.optimizer.lr),
                )
        self._epoch_loss = (loss_sum / seen, correct / seen)
        return True

    def _epoch_event(self, epoch: int, validation):
        loss, accuracy = self._epoch_loss
        event = {"type": "epoch", "epoch": epoch, "step": self.steps_done, "loss": loss, "accuracy": accuracy}
        if validation is not None:
            event["val_loss"], event["val_accuracy"] = self.model.evaluate(*validation)
        self._publish(**event)

    def describe(self) -> dict:
        with self._lock:
            events = list(self._events)
        return {
            "id": self.id,
            "status": self.status,
            "settings": asdict(self.settings),
            "steps_done": self.steps_done,
            "events": events,
        }


class TrainingManager:
    """The server's single training slot: start a job, stop it, save its model into the models folder."""

    def __init__(self, registry, sources: dict):
        self.registry = registry
        self.sources = sources
        self.job: TrainingJob | None = None
        self._lock = threading.Lock()
        self._next_id = 1

    def start(self, settings: TrainingSettings) -> TrainingJob:
        if settings.recipe not in RECIPES:
            raise WebError(
                422, f"there is no recipe called {settings.recipe!r}; choose one of: {', '.join(RECIPES)}"
            )
        if settings.dataset not in self.sources:
            raise WebError(
                422,
                f"there is no data set called {settings.dataset!r}; choose one of: {', '.join(self.sources)}",
            )
        with self._lock:
            if self.job is not None and self.job.running:
                raise WebError(409, "a training job is already running: stop it before starting another")
            self.job = TrainingJob(settings, self.sources[settings.dataset], self._next_id)
            self._next_id += 1
            return self.job.start()

    def stop(self) -> TrainingJob:
        job = self._require_job()
        job.stop()
        return job

    def _require_job(self) -> TrainingJob:
        if self.job is None:
            raise WebError(409, "no training job has been started yet")
        return self.job

    def save(self, name: str) -> dict:
        """Write the last job's model to <models folder>/<name>.convscope; it then shows in the model list."""
        job = self._require_job()
        if job.running:
            raise WebError(409, "training is still running: stop it or wait for it to finish, then save")
        if job.model is None or job.steps_done == 0:
            raise WebError(409, "the last training job made no model to save (it failed or stopped at once)")
        with self._lock:
            path = self.registry.save_path(name)
            job.model.save(path)
        return {"name": name, "file": path.rsplit("/", 1)[-1], "steps": job.steps_done}

    def shutdown(self, timeout: float = 5.0):
        if self.job is not None:
            self.job.stop()
            self.job.join(timeout)
