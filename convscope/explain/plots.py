"""Pictures of training and evaluation: loss/accuracy curves, confusion matrix, confident mistakes,
and the softmax probabilities of one prediction."""

import numpy as np

from convscope.explain.figures import grid_shape, matplotlib_figure, panel_grid, show_image

MISTAKES_SHOWN = 16


def history_figure(history, held_out: str = "validation"):
    """Loss and accuracy per epoch from a convscope.train.History (`.history` dict of lists):
    training curves, and the curves of the held-out images (fit's validation_data) when it had them,
    labelled `held_out` ("validation", or "test" when they are the test split)."""
    metrics = history.history if hasattr(history, "history") else dict(history)
    epochs = np.arange(1, len(metrics.get("loss", [])) + 1)
    if epochs.size == 0:
        raise ValueError("the training history has no epochs to draw")
    fig = matplotlib_figure(11, 3.8)
    for ax, name in zip(fig.subplots(1, 2, gridspec_kw={"wspace": 0.25}), ("loss", "accuracy"), strict=True):
        ax.plot(epochs, metrics[name], marker="o", markersize=3, label=f"training {name}")
        validation = metrics.get(f"val_{name}") or []
        if len(validation) == len(epochs):
            ax.plot(epochs, validation, marker="o", markersize=3, label=f"{held_out} {name}")
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=11)
        if name == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def confusion_figure(matrix: np.ndarray, class_names):
    """The confusion matrix with class names on both axes and the count in every non-empty cell."""
    size = matrix.shape[0]
    fig = matplotlib_figure(0.42 * size + 2.6, 0.42 * size + 1.9)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    names = [str(name) for name in class_names]
    ax.set_xticks(range(size), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right")
    ax.set_yticks(range(size), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"confusion matrix: {matrix.sum()} images, accuracy {accuracy:.4f}", fontsize=11)
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if count > 0.5 * matrix.max() else "black"
            ax.text(column, row, str(count), ha="center", va="center", fontsize=8, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig


def most_confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, k: int = MISTAKES_SHOWN):
    """Indices of up to k misclassified images, the most confident (highest predicted probability) first."""
    predictions = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    confidence = probabilities[wrong, predictions[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:k]


def mistakes_figure(images, labels, probabilities, indices, class_names):
    """A gallery of mistakes: each image with its true class, the predicted class and its probability."""
    if len(indices) == 0:
        fig = matplotlib_figure(6, 1.2)
        fig.text(0.5, 0.5, "no mistakes: every image was classified correctly", ha="center", va="center")
        return fig
    rows, columns = grid_shape(len(indices))
    fig = matplotlib_figure(1.6 * columns + 0.4, 1.9 * rows + 0.6)
    panels = panel_grid(fig, len(indices), top=1 - 0.5 / (1.9 * rows + 0.6))
    for ax, index in zip(panels, indices, strict=True):
        predicted = int(probabilities[index].argmax())
        show_image(ax, images[index])
        ax.set_title(
            f"true {class_names[labels[index]]}\npredicted {class_names[predicted]} "
            f"{probabilities[index, predicted]:.2f}",
            fontsize=8,
            pad=2,
        )
    fig.suptitle("most confident mistakes", fontsize=12, x=0.02, ha="left")
    return fig


def probabilities_figure(probabilities: np.ndarray, class_names):
    """Softmax output (K,) as labelled bars, the predicted class highlighted, values printed."""
    size = probabilities.shape[0]
    fig = matplotlib_figure(7.5, 0.34 * size + 1.0)
    ax = fig.add_subplot()
    best = int(probabilities.argmax())
    colours = ["#d35400" if i == best else "#7f8c8d" for i in range(size)]
    ax.barh(np.arange(size), probabilities, color=colours)
    ax.set_yticks(np.arange(size), [str(name) for name in class_names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    for i, p in enumerate(probabilities):
        ax.text(p + 0.01, i, f"{p:.3f}", va="center", fontsize=8)
    ax.set_xlabel("probability")
    ax.set_title(
        f"softmax: predicted {class_names[best]} with probability {probabilities[best]:.3f}", loc="left"
    )
    ax.spines[["top", "right"]].set_visible(False)
    return fig
