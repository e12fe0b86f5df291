import numpy as np
import pytest

from convscope import SGD, Adam
from convscope.data import load
from convscope.models import seed_cnn


@pytest.fixture(scope="module")
def digits():
    return load("digits", split="train"), load("digits", split="test")


def test_seed_cnn_learns_the_bundled_digits(digits):
    train, test = digits
    model = seed_cnn((8, 8, 1), 10, seed=0).compile(SGD(lr=0.05, momentum=0.9))
    history = model.fit(
        train.images,
        train.labels,
        epochs=30,
        batch_size=32,
        seed=0,
        verbose=0,
        validation_data=(test.images, test.labels),
    )
    assert history.epochs == 30 and len(history["val_accuracy"]) == 30
    assert history["loss"][-1] < history["loss"][0] / 10
    _, accuracy = model.evaluate(test.images, test.labels)
    assert accuracy >= 0.95
    assert history["val_accuracy"][-1] == pytest.approx(accuracy)


def test_same_seed_gives_bit_identical_weights(digits):
    train, _ = digits
    runs = []
    for _ in range(2):
        model = seed_cnn((8, 8, 1), 10, seed=4).compile(Adam(1e-3))
        model.fit(train.images[:256], train.labels[:256], epochs=2, batch_size=32, seed=7, verbose=0)
        runs.append(model.state_dict())
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key])


def test_fit_without_compile_uses_adam(digits):
    train, _ = digits
    model = seed_cnn((8, 8, 1), 10)
    model.fit(train.images[:64], train.labels[:64], epochs=1, verbose=0)
    assert isinstance(model.optimizer, Adam)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs must be a positive int"),
        ({"batch_size": 2.5}, "batch_size must be a positive int"),
    ],
)
def test_fit_argument_errors(digits, kwargs, message):
    train, _ = digits
    with pytest.raises(ValueError, match=message):
        seed_cnn((8, 8, 1), 10).fit(train.images[:8], train.labels[:8], verbose=0, **kwargs)


def test_fit_rejects_mismatched_labels(digits):
    train, _ = digits
    with pytest.raises(ValueError, match=r"y must have shape \(8,\)"):
        seed_cnn((8, 8, 1), 10).fit(train.images[:8], train.labels[:7], verbose=0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SGD(lr=0), "lr must be a number > 0"),
        (lambda: SGD(momentum=1.5), r"momentum must be a number \[0.0, 1.0\)"),
        (lambda: SGD(nesterov=True), "nesterov=True needs momentum > 0"),
        (lambda: Adam(betas=(0.9,)), "betas must be a pair"),
    ],
)
def test_optimiser_argument_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_standardization_is_kept_in_the_model_and_its_file(digits, tmp_path):
    import convscope

    train, test = digits
    model = seed_cnn((8, 8, 1), 10).adapt(train.images)
    mean, std = model.standardization["mean"][0], model.standardization["std"][0]
    assert mean == pytest.approx(float(train.images.mean()), rel=1e-4)
    model.fit(train.images[:128], train.labels[:128], epochs=1, verbose=0)
    model.save(tmp_path / "m.convscope")
    loaded = convscope.load(tmp_path / "m.convscope")
    assert loaded.standardization == model.standardization
    np.testing.assert_array_equal(loaded.predict_proba(test.images), model.predict_proba(test.images))
    raw = model.feature_maps(test.images[:1])[0]
    manual = seed_cnn((8, 8, 1), 10).load_state_dict(model.state_dict())(
        (test.images[:1] - np.float32(mean)) / np.float32(std)
    )
    assert raw.shape == (1, 8, 8, 16) and manual.shape == (1, 10)
    np.testing.assert_allclose(model(test.images[:1]), manual, rtol=1e-5)


def test_fit_with_augmentation_and_one_cycle(digits):
    from convscope.data.augment import Augmentation
    from convscope.optim import OneCycle

    train, test = digits
    model = seed_cnn((8, 8, 1), 10, seed=0).compile(Adam(1e-3))
    model.fit(
        train.images,
        train.labels,
        epochs=8,
        batch_size=32,
        verbose=0,
        augment=Augmentation(flip=False, crop_padding=1),
        lr_schedule=OneCycle(3e-3),
    )
    assert model.optimizer.lr == pytest.approx(3e-3 / 25 / 1e4, rel=1e-3)  # annealed to the floor
    assert model.evaluate(test.images, test.labels)[1] > 0.9


def test_one_cycle_matches_torch():
    torch = pytest.importorskip("torch")
    from convscope.optim import OneCycle

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=50, cycle_momentum=False
    )
    schedule = OneCycle(3e-3)
    for step in range(50):
        assert schedule(step, 50) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        optimizer.step()
        scheduler.step()
