"""One training job at a time, in its own thread, publishing its progress as a list of events.

Events (dicts with a "type"): "status" (a sentence), "start" (sizes), "probe" (the test image whose feature
maps are drawn), "snapshot" (the first conv layer's kernels and the probe's feature maps, before training
and after every epoch), "step" (running loss and accuracy of the epoch, a few times a second), "epoch" (the
epoch's numbers and the test split's), "resume" (training goes on from the end of an epoch), "end" (final
status: finished, stopped or failed, with a sentence).

A stopped job rolls back to the end of its last finished epoch (weights, optimiser state and random
generator), so what the page shows, what is saved and where `resume` continues are the same model.
The manager keeps every run of this server session for comparison (curves and settings; only the last
run keeps its model).
"""

import copy
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from convscope.parallel import default_workers
from convscope.train import batch_indices
from convscope.web.datasets import RECIPES, build_recipe, load_source
from convscope.web.errors import WebError
from convscope.web.evolution import probe_event, snapshot

STEP_EVENT_SECONDS = 0.25  # a step event at least this often ...
STEP_EVENTS_PER_EPOCH = 25  # ... and about this many per epoch however fast the steps are
SMOOTHING = 0.1  # weight of the newest batch in the smoothed loss and accuracy the chart draws
MAX_VALIDATION_IMAGES = 2000
MAX_RUNS = 50  # runs of this session kept for comparison
DEFAULT_LR = {"adam": 3e-3, "sgd": 0.05}
SCHEDULES = ("onecycle", "cosine", "none")
# Training leaves one core to the server, so predictions and pages still answer while a job runs.
TRAINING_WORKERS = max(1, default_workers() - 1)


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
    architecture: dict | None = None  # a designed network, {"name", "layers"}; replaces the recipe
    flip: bool = False  # augmentation: random left-right mirroring ...
    crop_padding: int = 0  # ... random shifts by up to this many pixels (padded random crops) ...
    cutout: int = 0  # ... and a random square this many pixels wide set to zero (Cutout)
    probe_index: int = 0  # the test image whose feature maps the snapshots hold

    @property
    def network(self) -> str:
        return self.architecture["name"] if self.architecture else self.recipe


def _optimizer(settings: TrainingSettings):
    from convscope.optim import SGD, Adam

    lr = settings.lr if settings.lr is not None else DEFAULT_LR[settings.optimizer]
    return (SGD(lr=lr, momentum=0.9) if settings.optimizer == "sgd" else Adam(lr=lr)), lr


def _schedule(settings: TrainingSettings, lr: float):
    from convscope.optim import Cosine, OneCycle

    return {"onecycle": OneCycle, "cosine": Cosine}.get(settings.schedule, lambda lr: None)(lr)


def _augmentation(settings: TrainingSettings):
    from convscope.data.augment import Augmentation

    if not settings.flip and settings.crop_padding == 0 and settings.cutout == 0:
        return None
    return Augmentation(flip=settings.flip, crop_padding=settings.crop_padding, cutout=settings.cutout)


def _build_model(settings: TrainingSettings, input_shape, class_names):
    """The recipe's model, or the designed architecture built by Sequential.from_config, as a model file's."""
    from convscope.model import Sequential

    if settings.architecture is None:
        return build_recipe(settings.recipe, input_shape, len(class_names), settings.seed, class_names)
    config = {
        "name": settings.architecture["name"],
        "input_shape": list(input_shape),
        "seed": settings.seed,
        "class_names": list(class_names),
        "layers": settings.architecture["layers"],
    }
    return Sequential.from_config(config)


@dataclass
class _EpochEnd:
    """All that training needs to go on from the end of an epoch (kept after each one, for stop/resume)."""

    epoch: int
    weights: dict
    optimizer: dict
    rng: dict
    smooth: np.ndarray
    smooth_steps: int


class Diverged(RuntimeError):
    """A step whose loss or gradient was NaN or infinite: the job rolls back to its last epoch's end."""


class TrainingJob:
    """Trains a recipe or a designed network on a data source in a daemon thread; `stop()` ends it between
    two steps (rolling back to the last epoch's end), `resume()` goes on from there."""

    def __init__(self, settings: TrainingSettings, source, job_id: int, owner: str = "a client"):
        self.settings = settings
        self.source = source
        self.id = job_id
        self.owner = owner
        self.started_at = time.time()
        self.status = "starting"
        self.model = None
        self.steps_done = 0  # every step run, rolled-back ones included
        self.epochs_done = 0
        self.target_epochs = settings.epochs
        self.steps_per_epoch = None
        self._data = None  # (images, labels, validation, probe) once loaded
        self._saved: _EpochEnd | None = None
        self._epoch_loss = (float("nan"), float("nan"))
        self._smooth = np.zeros(2)  # moving average of (batch loss, batch accuracy), bias-corrected
        self._smooth_steps = 0
        self._events: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = self._new_thread()

    def _new_thread(self):
        return threading.Thread(target=self._run, name=f"convscope-training-{self.id}", daemon=True)

    # the thread

    def start(self):
        if self._data is None:  # published before the thread starts: a page following the job sees it at once
            self._publish(type="status", message=f"loading {self.source.name} ...")
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
            self._events.append(
                {"type": "end", "status": status, "message": message, "epoch": self.epochs_done}
            )

    def _run(self):
        from threadpoolctl import threadpool_limits

        try:
            with threadpool_limits(limits=TRAINING_WORKERS, user_api="blas"):  # BLAS too leaves a core free
                self._train()
        except Diverged as error:
            self._roll_back()
            self._finish("failed", f"{error}; {self._kept()}")
            return
        except Exception as error:  # the job reports every failure in the page instead of dying silently
            self._finish("failed", f"training failed: {type(error).__name__}: {error}")
            return
        if self._stop.is_set() and self.epochs_done < self.target_epochs:
            self._finish("stopped", self._stopped_message())
        else:
            self._finish("finished", f"training finished after {self.steps_done} steps")

    def _kept(self) -> str:
        if self.epochs_done == 0:
            return "no epoch had finished, so there is no model to save"
        return f"the model is as it was after epoch {self.epochs_done} (it can be saved)"

    def _stopped_message(self) -> str:
        if self.epochs_done == 0:
            return f"training stopped after {self.steps_done} steps, before the first epoch ended"
        return (
            f"training stopped after {self.steps_done} steps; the model is as it was after epoch "
            f"{self.epochs_done} of {self.target_epochs} (resume goes on from there)"
        )

    def resume(self, epochs: int | None):
        """Go on from the end of the last finished epoch, up to `epochs` epochs (default: unchanged)."""
        target = self.target_epochs if epochs is None else epochs
        if self.running:
            raise WebError(409, "training is still running: there is nothing to resume")
        if self.model is None or self._data is None or self._saved is None:
            raise WebError(
                409, "the last training job made no model to go on with (it failed before training)"
            )
        if target <= self.epochs_done:
            raise WebError(
                409,
                f"the run has done {self.epochs_done} epochs already: ask for more than {self.epochs_done} "
                "epochs to go on",
            )
        self.target_epochs = target
        self._stop.clear()
        self.status = "running"
        self._thread = self._new_thread()
        return self.start()

    # training

    def _prepare(self):
        """Load the data and build the model: (train images, labels, validation pair or None, probe)."""
        s = self.settings
        self.status = "loading"
        train, test = load_source(self.source)
        images, labels = train.images, train.labels
        if s.max_images is not None:
            images, labels = images[: s.max_images], labels[: s.max_images]
        model = _build_model(s, images.shape[1:], train.class_names)
        model.workers = TRAINING_WORKERS
        if s.standardize:
            model.adapt(images)
        validation = None
        if test is not None:
            validation = (test.images[:MAX_VALIDATION_IMAGES], test.labels[:MAX_VALIDATION_IMAGES])
        pool, split = (validation, "test") if validation is not None else ((images, labels), "train")
        index = s.probe_index % len(pool[1])
        probe = pool[0][index]
        self._probe_event = probe_event(probe, str(train.class_names[pool[1][index]]), index, split)
        self.model = model
        return images, labels, validation, probe

    def _train(self):
        s = self.settings
        if self._data is None:
            self._data = self._prepare()
            optimizer, lr = _optimizer(s)
            self.model.compile(optimizer)
            self._lr = lr
            self._rng = np.random.default_rng(s.seed)
            self._augment = _augmentation(s)
            self.steps_per_epoch = -(-len(self._data[1]) // s.batch_size)
            self.status = "running"
            self._publish(**self._start_event(lr))
            self._publish(**self._probe_event)
            self._publish(**snapshot(self.model, 0, self._data[3]))
            self._keep_epoch_end()
        else:
            self.status = "running"
            self._publish(
                type="resume",
                from_epoch=self.epochs_done,
                epochs=self.target_epochs,
                step=self.epochs_done * self.steps_per_epoch,
            )
        images, labels, validation, probe = self._data
        schedule = _schedule(s, self._lr)
        for epoch in range(self.epochs_done + 1, self.target_epochs + 1):
            if not self._epoch(epoch, images, labels, schedule):
                self._roll_back()
                return
            self._epoch_event(epoch, validation)
            self.epochs_done = epoch
            self._publish(**snapshot(self.model, epoch, probe))
            self._keep_epoch_end()

    def _start_event(self, lr: float) -> dict:
        s, model, (_, labels, validation, _) = self.settings, self.model, self._data
        return {
            "type": "start",
            "recipe": s.network,
            "designed": s.architecture is not None,
            "dataset": self.source.name,
            "epochs": self.target_epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "train_images": int(len(labels)),
            "test_images": 0 if validation is None else int(len(validation[1])),
            "input_shape": list(model.input_shape),
            "class_names": list(model.class_names),
            "params": int(model.count_params()),
            "lr": lr,
            "augmentation": None if self._augment is None else self._augment.get_config(),
        }

    def _keep_epoch_end(self):
        model = self.model
        self._saved = _EpochEnd(
            epoch=self.epochs_done,
            weights={k: v.copy() for k, v in model.state_dict().items()},
            optimizer=copy.deepcopy(model.optimizer.state_dict()),
            rng=copy.deepcopy(self._rng.bit_generator.state),
            smooth=self._smooth.copy(),
            smooth_steps=self._smooth_steps,
        )

    def _roll_back(self):
        """Back to the end of the last finished epoch (a stop part way through an epoch)."""
        saved = self._saved
        self.model.load_state_dict(saved.weights)
        self.model.optimizer.load_state_dict(copy.deepcopy(saved.optimizer))
        self._rng.bit_generator.state = copy.deepcopy(saved.rng)
        self._smooth, self._smooth_steps = saved.smooth.copy(), saved.smooth_steps

    def _smoothed(self, loss: float, accuracy: float) -> tuple[float, float]:
        """Batch loss and accuracy averaged over recent steps (across epochs), for a steady chart."""
        self._smooth_steps += 1
        self._smooth = (1 - SMOOTHING) * self._smooth + SMOOTHING * np.array([loss, accuracy])
        correction = 1 - (1 - SMOOTHING) ** self._smooth_steps
        return float(self._smooth[0] / correction), float(self._smooth[1] / correction)

    def _epoch(self, epoch, images, labels, schedule) -> bool:
        """One pass over the data, publishing step events; False if stopped part way."""
        model, rng = self.model, self._rng
        loss_sum, correct, seen = 0.0, 0, 0
        last_event = time.monotonic()
        batches = batch_indices(len(labels), self.settings.batch_size, rng)
        every = max(1, len(batches) // STEP_EVENTS_PER_EPOCH)
        total_steps = self.target_epochs * self.steps_per_epoch
        for number, idx in enumerate(batches, start=1):
            if self._stop.is_set():
                return False
            position = (epoch - 1) * self.steps_per_epoch + number - 1
            if schedule is not None:
                model.optimizer.lr = schedule(position, total_steps)
            batch = images[idx] if self._augment is None else self._augment(images[idx], rng)
            loss, logits = self._step(model.standardize(batch), labels[idx], epoch, number)
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
                    step=position + 1,
                    epoch_step=number,
                    loss=loss_sum / seen,
                    accuracy=correct / seen,
                    smooth_loss=smooth_loss,
                    smooth_accuracy=smooth_accuracy,
                    lr=float(model.optimizer.lr),
                )
        self._epoch_loss = (loss_sum / seen, correct / seen)
        return True

    def _step(self, x, y, epoch: int, number: int):
        """One optimiser step: (loss, logits), or Diverged naming the step, the cause and a remedy."""
        from convscope.optim import NonFiniteGradient

        place = f"training diverged at step {number} of epoch {epoch}"
        lr = self.model.optimizer.lr
        hint = f"the learning rate {lr:.3g} is likely too high, try {lr / 10:.3g}"
        try:
            loss, logits = self.model.train_step(x, y, rng=self._rng)
        except NonFiniteGradient as error:
            raise Diverged(f"{place}: the gradient of {error.name} is NaN or infinite; {hint}") from None
        if not np.isfinite(loss):
            raise Diverged(f"{place}: the loss is {loss}; {hint}")
        return loss, logits

    def _epoch_event(self, epoch: int, validation):
        loss, accuracy = self._epoch_loss
        event = {
            "type": "epoch",
            "epoch": epoch,
            "step": epoch * self.steps_per_epoch,
            "loss": loss,
            "accuracy": accuracy,
        }
        if validation is not None:
            event["val_loss"], event["val_accuracy"] = self.model.evaluate(*validation)
        self._publish(**event)

    # what the page and the compare view read

    def describe(self) -> dict:
        with self._lock:
            events = list(self._events)
        return {
            "id": self.id,
            "status": self.status,
            "settings": asdict(self.settings),
            "steps_done": self.steps_done,
            "epochs_done": self.epochs_done,
            "epochs": self.target_epochs,
            "owner": self.owner,
            "events": events,
        }

    def holder(self) -> str:
        """Who holds the training slot, for the 409 of a second start."""
        started = time.strftime("%H:%M:%S", time.localtime(self.started_at))
        return (
            f"run {self.id} ({self.settings.network} on {self.source.name}, epoch {self.epochs_done + 1} of "
            f"{self.target_epochs}), started at {started} by {self.owner}"
        )

    def summary(self) -> dict:
        """Settings, final figures and per-epoch curves: a row of the compare view."""
        with self._lock:
            epochs = [e for e in self._events if e["type"] == "epoch"]
            start = next((e for e in self._events if e["type"] == "start"), None)
        # a stopped and resumed run publishes an epoch again: keep the last event of each epoch
        by_epoch = {e["epoch"]: e for e in epochs if e["epoch"] <= max(self.epochs_done, 0)}
        ordered = [by_epoch[k] for k in sorted(by_epoch)]
        curves = {
            key: [e.get(key) for e in ordered] for key in ("loss", "accuracy", "val_loss", "val_accuracy")
        }
        settings = asdict(self.settings)
        architecture = settings.pop("architecture")
        settings["network"] = self.settings.network
        settings["layers"] = None if architecture is None else layer_summary(architecture["layers"])
        return {
            "id": self.id,
            "status": self.status,
            "owner": self.owner,
            "started_at": self.started_at,
            "settings": settings,
            "params": None if start is None else start["params"],
            "lr": None if start is None else start["lr"],
            "epochs_done": self.epochs_done,
            "epochs": self.target_epochs,
            "curves": {"epoch": sorted(by_epoch), **curves},
            "final": ordered[-1] if ordered else None,
        }

    def release(self):
        """Drop the model, data and the kept epoch state (a newer run took the slot): the curves stay."""
        with self._lock:
            self._events = [e for e in self._events if e["type"] not in ("snapshot", "step", "probe")]
        self.model, self._data, self._saved = None, None, None


def layer_summary(layers: list) -> str:
    """conv16 relu pool flatten dense10: a designed network in one line, for the compare table."""
    words = []
    for entry in layers:
        kind, config = entry.get("type", "?"), entry.get("config", {})
        short = {
            "Conv2D": "conv",
            "MaxPool2D": "pool",
            "AvgPool2D": "avgpool",
            "Dense": "dense",
            "GlobalAvgPool2D": "gap",
            "BatchNorm2D": "bn",
            "Dropout": "drop",
        }.get(kind, kind.lower())
        number = config.get("filters", config.get("units", config.get("rate", "")))
        words.append(f"{short}{number}")
    return " ".join(words)


class TrainingManager:
    """The server's single training slot: start a job, stop or resume it, save its model into the models
    folder; and the runs of this session, for comparison."""

    def __init__(self, registry, sources: dict):
        self.registry = registry
        self.sources = sources
        self.job: TrainingJob | None = None
        self.runs: list[TrainingJob] = []
        self._lock = threading.Lock()
        self._next_id = 1

    def _source(self, name: str):
        if name not in self.sources:
            raise WebError(
                422, f"there is no data set called {name!r}; choose one of: {', '.join(self.sources)}"
            )
        return self.sources[name]

    def checked_settings(self, settings: TrainingSettings) -> TrainingSettings:
        """The settings with a designed architecture checked by the designer (422 with its sentence)."""
        from convscope.web.datasets import source_info
        from convscope.web.designer import check_batch, checked_architecture

        source = self._source(settings.dataset)
        if settings.architecture is None:
            if settings.recipe not in RECIPES:
                raise WebError(
                    422, f"there is no recipe called {settings.recipe!r}; choose one of: {', '.join(RECIPES)}"
                )
            return settings
        input_shape, class_names = source_info(source)
        architecture, check = checked_architecture(settings.architecture, input_shape, len(class_names))
        check_batch(check, settings.batch_size)
        return TrainingSettings(**{**asdict(settings), "architecture": architecture})

    def start(self, settings: TrainingSettings, owner: str = "a client") -> TrainingJob:
        if self.job is not None and self.job.running:  # before the checks, which may load a data set
            raise self._busy()
        settings = self.checked_settings(settings)
        with self._lock:
            if self.job is not None and self.job.running:
                raise self._busy()
            if self.job is not None:
                self.job.release()
            self.job = TrainingJob(settings, self.sources[settings.dataset], self._next_id, owner)
            self._next_id += 1
            self.runs = [*self.runs, self.job][-MAX_RUNS:]
            return self.job.start()

    def _busy(self) -> WebError:
        return WebError(
            409, f"a training job is already running: {self.job.holder()}: stop it before starting another"
        )

    def stop(self) -> TrainingJob:
        job = self._require_job()
        job.stop()
        return job

    def resume(self, epochs: int | None) -> TrainingJob:
        job = self._require_job()
        with self._lock:
            return job.resume(epochs)

    def _require_job(self) -> TrainingJob:
        if self.job is None:
            raise WebError(409, "no training job has been started yet")
        return self.job

    def save(self, name: str) -> dict:
        """Write the last job's model to <models folder>/<name>.convscope; it then shows in the model list.
        The file is written atomically (a temporary file renamed into place): a server killed part way
        leaves no half-written model."""
        job = self._require_job()
        if job.running:
            raise WebError(409, "training is still running: stop it or wait for it to finish, then save")
        if job.model is None or job.steps_done == 0:
            raise WebError(409, "the last training job made no model to save (it failed or stopped at once)")
        if job.epochs_done == 0:
            raise WebError(409, "no epoch has finished yet: resume the run for at least one epoch, then save")
        with self._lock:
            path = self.registry.save_path(name)
            job.model.save(path)
        return {"name": name, "file": path.rsplit("/", 1)[-1], "steps": job.steps_done}

    def shutdown(self, timeout: float = 5.0):
        if self.job is not None:
            self.job.stop()
            self.job.join(timeout)
