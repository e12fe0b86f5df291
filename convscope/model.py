"""Sequential: layers stacked in order, built lazily from the first input shape."""

import copy

import numpy as np

from convscope import layers as layers_module
from convscope.checks import (
    check_images,
    check_labels,
    checked_augmentation,
    checked_standardization,
)
from convscope.kernels import backend as kernels_backend
from convscope.kernels.plan import describe, infer
from convscope.losses import (
    checked_label_smoothing,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)
from convscope.ops import softmax
from convscope.optim import get_optimizer
from convscope.parallel import ShardedRunner, default_workers, replicate_layer


class Sequential:
    """A stack of layers. Images in are (N, H, W, C) float32; the output is (N, num_classes).

    The model's output may end with a softmax (a `Softmax()` layer or `activation="softmax"`);
    training always uses the logits before it with a fused softmax cross-entropy.

    `workers` threads share each large batch (see convscope.parallel); 1 runs everything in the
    calling thread. The default is the number of CPU cores.
    """

    def __init__(
        self,
        layers=None,
        input_shape=None,
        seed=0,
        class_names=None,
        name="sequential",
        workers=None,
        standardization=None,
    ):
        self.layers = []
        self.standardization = standardization
        self.workers = default_workers() if workers is None else int(workers)
        self._runner = None
        self._plan = None  # (kernel backend, stages), built by plan()
        self.seed = int(seed)
        self.name = name
        self.class_names = list(class_names) if class_names is not None else None
        self.input_shape = None
        self.optimizer = None
        self.label_smoothing = 0.0
        self.augmentation = None  # how fit last augmented the training images, e.g. {"flip": True, ...}
        self.snapshots = None  # how the first layer's kernels grew in fit (convscope.snapshots), if recorded
        for layer in layers or []:
            self.add(layer)
        if input_shape is not None:
            self.build(input_shape)

    def add(self, layer):
        if not isinstance(layer, layers_module.Layer):
            raise TypeError(f"Sequential takes layers, got {type(layer).__name__}")
        if self.built:
            raise ValueError("cannot add layers to a model that is already built")
        self.layers.append(layer)

    # building and introspection

    @property
    def built(self) -> bool:
        return self.input_shape is not None

    def build(self, input_shape):
        """Create every layer's parameters for inputs of shape (H, W, C), seeded by `self.seed`."""
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError(f"input_shape must be (H, W, C) with positive sizes, got {input_shape}")
        if not self.layers:
            raise ValueError("the model has no layers")
        rng = np.random.default_rng(self.seed)
        counts: dict[str, int] = {}
        shape = input_shape
        for index, layer in enumerate(self.layers):
            kind = type(layer).__name__.lower()
            layer.name = kind if kind not in counts else f"{kind}_{counts[kind]}"
            counts[kind] = counts.get(kind, 0) + 1
            try:
                shape = layer.build(shape, rng)
            except ValueError as error:
                raise ValueError(f"layer {index} ({layer.name}): {error}") from None
        if len(shape) != 1:
            raise ValueError(f"the model must end with a flat (num_classes,) output, got {shape}")
        self.input_shape = input_shape
        return self

    @property
    def output_shape(self):
        return self.layers[-1].output_shape if self.built else None

    @property
    def num_classes(self) -> int:
        return self.output_shape[0]

    def _require_built(self):
        if not self.built:
            raise ValueError("the model is not built yet: call build((H, W, C)) or fit it first")

    def count_params(self) -> int:
        self._require_built()
        return sum(layer.count_params() for layer in self.layers)

    def summary(self, print_fn=print) -> str:
        """A Keras-style table: layer (type), output shape, parameter count; then the totals."""
        self._require_built()
        rows = [("Layer (type)", "Output Shape", "Param #")]

        def add_rows(layer, indent=""):  # a block's layers follow it, indented (convscope.blocks)
            shape = "(None, " + ", ".join(str(d) for d in layer.output_shape) + ")"
            name = f"{indent}{layer.name} ({type(layer).__name__})"
            rows.append((name, shape, f"{layer.count_params():,}"))
            for _, inner in getattr(layer, "named_layers", list)():
                add_rows(inner, indent + "  ")

        for layer in self.layers:
            add_rows(layer)
        widths = [max(len(r[i]) for r in rows) + 3 for i in range(3)]
        line = "=" * sum(widths)

        def fmt(row):
            return row[0].ljust(widths[0]) + row[1].ljust(widths[1]) + row[2]

        trainable = sum(layer.count_params(trainable=True) for layer in self.layers)
        fixed = sum(layer.count_params(trainable=False) for layer in self.layers)
        text = "\n".join(
            [f'Model: "{self.name}"', line, fmt(rows[0]), line]
            + [fmt(r) for r in rows[1:]]
            + [
                line,
                f"Total params: {trainable + fixed:,}",
                f"Trainable params: {trainable:,}",
                f"Non-trainable params: {fixed:,}",
                line,
                f"Kernels ({kernels_backend()}):",
            ]
            + [f"  {text}" for text in describe(self.plan())]
        )
        if print_fn is not None:
            print_fn(text)
        return text

    def state_dict(self) -> dict:
        """Parameters, then buffers, of each layer by PyTorch-style name ('0.weight', '0.bias',
        '1.running_mean', '1.running_var', '3.weight', ...), not copies. Unlike torch, there is no
        'num_batches_tracked' (convscope's BatchNorm2D always uses its momentum)."""
        self._require_built()
        return {
            f"{index}.{name}": array
            for index, layer in enumerate(self.layers)
            for name, array in (*layer.params.items(), *layer.buffers.items())
        }

    def parameters(self) -> dict:
        """Only the trainable arrays of `state_dict()` (no buffers), by the same names: the optimiser's."""
        self._require_built()
        return {
            f"{index}.{name}": param
            for index, layer in enumerate(self.layers)
            for name, param in layer.params.items()
        }

    def gradients(self) -> dict:
        """The gradients of the last backward pass, named like `parameters()`."""
        return {
            f"{index}.{name}": grad
            for index, layer in enumerate(self.layers)
            for name, grad in layer.grads.items()
        }

    def load_state_dict(self, state: dict):
        """Copy parameters and buffers in by name; names, shapes and the set of keys must match exactly."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(f"state_dict mismatch: missing {missing}, unexpected {extra}")
        for key, param in own.items():
            value = np.asarray(state[key])
            if value.shape != param.shape:
                raise ValueError(f"state_dict[{key!r}] has shape {value.shape}, expected {param.shape}")
            param[...] = value
        return self

    def get_config(self) -> dict:
        self._require_built()
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "seed": self.seed,
            "class_names": self.class_names,
            "standardization": self.standardization,
            "augmentation": self.augmentation,
            "layers": [{"type": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
        }

    @classmethod
    def from_config(cls, config: dict) -> "Sequential":
        layers = [layers_module.layer_from_config(entry) for entry in config["layers"]]
        model = cls(
            layers,
            input_shape=config["input_shape"],
            seed=config.get("seed", 0),
            class_names=config.get("class_names"),
            name=config.get("name", "sequential"),
            standardization=checked_standardization(config.get("standardization"), config["input_shape"]),
        )
        model.augmentation = checked_augmentation(config.get("augmentation"))
        return model

    # forward and backward

    def _softmax_head(self) -> str | None:
        """'layer' if the model ends in a Softmax layer, 'activation' if in activation='softmax'."""
        last = self.layers[-1]
        if isinstance(last, layers_module.Softmax):
            return "layer"
        if getattr(last, "activation", None) == "softmax":
            return "activation"
        return None

    def plan(self) -> list:
        """The stages that run the model's layers (all but a final softmax) on the current kernel
        backend (convscope.kernels): built once per model and backend, printed by summary()."""
        from convscope.kernels.plan import build_plan

        self._require_built()
        backend = kernels_backend()
        if self._plan is None or self._plan[0] != backend:
            head = self._softmax_head()
            body = self.layers[:-1] if head == "layer" else self.layers
            self._plan = (backend, build_plan(body, backend, logits_only=head == "activation"))
        return self._plan[1]

    def forward_logits(self, x, training=False, rng=None):
        """(N, H, W, C) -> logits (N, num_classes): every layer but a final softmax. On the fast path,
        inference runs a few images at a time (convscope.kernels.plan.infer)."""
        stages = self.plan()
        if not training and self._plan[0] == "numba":
            return infer(stages, x)
        for stage in stages:
            x = stage.forward(x, training=training, rng=rng)
        return np.array(x) if self._plan[0] == "numba" else x  # the fast path's stages reuse their arrays

    def backward_logits(self, dlogits):
        """Backpropagate d(loss)/d(logits) through every layer, filling each layer's grads."""
        stages = self.plan()
        dy = dlogits
        for index in range(len(stages) - 1, -1, -1):
            dy = stages[index].backward(dy, need_dx=index > 0)

    def loss_and_gradients(self, x, y, rng=None, loss_weight=1.0):
        """One forward and backward pass in training mode, in this thread: (loss, logits).

        Fills every layer's grads with the gradient of `loss_weight * loss`, and records the batch
        statistics of layers with buffers without moving the buffers (train_step does that).
        """
        logits = self.forward_logits(x, training=True, rng=rng)
        loss, cache = softmax_cross_entropy_forward(logits, y, self.label_smoothing)
        self.backward_logits(softmax_cross_entropy_backward(cache, loss_weight))
        return loss, logits

    def replica(self) -> "Sequential":
        """A model sharing this one's parameter arrays, with its own caches and gradients."""
        twin = copy.copy(self)
        twin.layers = [replicate_layer(layer) for layer in self.layers]
        twin._runner = None
        twin._plan = None
        return twin

    def _parallel(self) -> ShardedRunner:
        if self._runner is None or self._runner.workers != self.workers:
            self._runner = ShardedRunner(self, self.workers)
        return self._runner

    def batch_statistics(self) -> dict:
        """{layer index: the batch statistics its last training forward pass recorded}, for the
        layers with buffers (BatchNorm2D)."""
        return {
            index: layer.batch_statistics
            for index, layer in enumerate(self.layers)
            if layer.batch_statistics is not None
        }

    def update_buffers(self, shard_statistics: list[dict]):
        """Move every layer's buffers once, with the `batch_statistics()` of each shard of one step."""
        for index in shard_statistics[0] if shard_statistics else ():
            self.layers[index].update_buffers([shard[index] for shard in shard_statistics])

    def train_step(self, x, y, rng=None):
        """One optimiser step on a prepared batch, shared across `workers` threads: (loss, logits).

        The optimiser updates the parameters; the runner moves the buffers (BatchNorm2D's running
        statistics) once, with the whole batch's statistics."""
        loss, logits, grads = self._parallel().loss_and_gradients(x, y, rng=rng)
        self.optimizer.step(self.parameters(), grads)
        return loss, logits

    def feature_maps(self, x):
        """Every layer's output for a batch (inference mode): a list of arrays, one per layer."""
        x = self.standardize(self._prepare(x))
        outputs = []
        for layer in self.layers:
            x = layer.forward(x)
            outputs.append(x)
        return outputs

    # training and inference

    def _prepare(self, x):
        if not self.built:
            x = check_images(x)
            self.build(x.shape[1:])
        return check_images(x, self.input_shape)

    def adapt(self, x):
        """Compute per-channel mean and standard deviation of training images (N, H, W, C) and keep
        them: from then on every input is standardised as (x - mean) / std inside the model, so
        predict, evaluate and saved models take raw [0, 1] images."""
        x = self._prepare(x)
        mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
        std = np.maximum(x.std(axis=(0, 1, 2), dtype=np.float64), 1e-6)
        self.standardization = {"mean": mean.tolist(), "std": std.tolist()}
        return self

    def standardize(self, x):
        """(x - mean) / std per channel if the model was adapted, else x unchanged."""
        if self.standardization is None:
            return x
        mean = np.asarray(self.standardization["mean"], dtype=np.float32)
        std = np.asarray(self.standardization["std"], dtype=np.float32)
        return (x - mean) / std

    def compile(self, optimizer="adam", label_smoothing=0.0):
        """Choose the optimiser used by `fit` (an Optimizer, or 'adam' / 'sgd' with defaults) and the
        training loss's label smoothing (0: plain cross-entropy; `evaluate` always reports plain)."""
        self.optimizer = get_optimizer(optimizer)
        self.label_smoothing = checked_label_smoothing(label_smoothing)
        return self

    def fit(
        self, x, y, epochs=1, batch_size=32, validation_data=None, shuffle=True, seed=0, verbose=1, **options
    ):
        """Train on (x, y) for `epochs` passes; returns a History. Uses Adam(1e-3) unless compiled.
        `options` (augment, lr_schedule) are described in convscope.train.fit."""
        from convscope.train import fit

        return fit(
            self,
            x,
            y,
            epochs=epochs,
            batch_size=batch_size,
            validation_data=validation_data,
            shuffle=shuffle,
            seed=seed,
            verbose=verbose,
            **options,
        )

    def _batched_logits(self, x, batch_size):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        x = self._prepare(x)
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        runner = self._parallel()
        return np.concatenate(
            [
                runner.forward_logits(self.standardize(x[i : i + batch_size]))
                for i in range(0, x.shape[0], batch_size)
            ]
        )

    def predict_proba(self, x, batch_size=256, tta=False) -> np.ndarray:
        """(N, H, W, C) -> class probabilities (N, num_classes).

        tta=True (test-time augmentation) averages them with the probabilities of each image mirrored
        left-right; it suits models trained with horizontal flips (see `augmentation`), not digits."""
        probabilities = softmax(self._batched_logits(x, batch_size))
        if tta:
            mirrored = self._prepare(x)[:, :, ::-1]
            probabilities = (probabilities + softmax(self._batched_logits(mirrored, batch_size))) / 2
        return probabilities

    def predict(self, x, batch_size=256, tta=False) -> np.ndarray:
        """(N, H, W, C) -> predicted class ids (N,); tta as in predict_proba."""
        if tta:
            return self.predict_proba(x, batch_size, tta=True).argmax(axis=1)
        return self._batched_logits(x, batch_size).argmax(axis=1)

    def evaluate(self, x, y, batch_size=256, tta=False):
        """Mean cross-entropy loss and accuracy on (x, y): a (loss, accuracy) tuple of floats.
        With tta (see predict_proba) both come from the averaged probabilities."""
        scores = self.predict_proba(x, batch_size, tta=True) if tta else self._batched_logits(x, batch_size)
        y = check_labels(y, scores.shape[0], self.num_classes)
        if scores.shape[0] == 0:
            raise ValueError("evaluate needs at least one image")
        if tta:
            chosen = scores[np.arange(len(y)), y].astype(np.float64)
            loss = -np.log(np.maximum(chosen, np.finfo(np.float64).tiny)).mean()
        else:
            loss, _ = softmax_cross_entropy_forward(scores, y)
        return float(loss), float((scores.argmax(axis=1) == y).mean())

    def save(self, path):
        """Write the model (config + weights) to one file; see convscope.model_file."""
        from convscope.model_file import save_model

        save_model(self, path)

    def __call__(self, x):
        """Model output for a batch: probabilities if the model ends in softmax, else logits."""
        x = self.standardize(self._prepare(x))
        for layer in self.layers:
            x = layer.forward(x)
        return x
