import numpy as np
import pytest

from convscope import SGD, Dense, Dropout, Flatten, Sequential
from convscope.models import seed_cnn
from convscope.parallel import shard_slices


def test_shard_slices_cover_the_batch_in_order():
    assert shard_slices(64, 2) == [slice(0, 32), slice(32, 64)]
    assert shard_slices(20, 2) == [slice(0, 20)]  # shards below 16 images are not worth a thread
    assert shard_slices(1000, 3) == [slice(0, 333), slice(333, 667), slice(667, 1000)]


def batch(n, shape=(12, 12, 3), seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, 10, n)


@pytest.mark.parametrize("workers", [2, 3])
def test_sharded_step_matches_one_thread(workers):
    x, y = batch(96)
    single = seed_cnn((12, 12, 3), 10, seed=1).compile(SGD(0.1, momentum=0.9))
    single.workers = 1
    sharded = seed_cnn((12, 12, 3), 10, seed=1).compile(SGD(0.1, momentum=0.9))
    sharded.workers = workers
    for _ in range(2):
        loss_single, logits_single = single.train_step(x, y)
        loss_sharded, logits_sharded = sharded.train_step(x, y)
        assert loss_sharded == pytest.approx(loss_single, rel=1e-5)
        np.testing.assert_allclose(logits_sharded, logits_single, rtol=1e-5, atol=1e-6)
    for key, value in single.state_dict().items():
        np.testing.assert_allclose(sharded.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sharded.predict_proba(x), single.predict_proba(x), rtol=1e-5, atol=1e-6)


def test_replicas_share_parameters_but_not_gradients():
    model = seed_cnn((12, 12, 3), 10)
    twin = model.replica()
    assert twin.layers[0].params["weight"] is model.layers[0].params["weight"]
    twin.loss_and_gradients(*batch(4))
    assert model.gradients() == {} and set(twin.gradients()) == set(model.state_dict())


def test_dropout_shards_draw_from_the_fit_generator():
    model = Sequential([Flatten(), Dropout(0.5), Dense(10)], input_shape=(8, 8, 1), workers=2)
    runner = model._parallel()
    x, y = np.ones((64, 8, 8, 1), dtype=np.float32), np.zeros(64, dtype=np.int64)
    first = runner.loss_and_gradients(x, y, rng=np.random.default_rng(3))[1]
    again = runner.loss_and_gradients(x, y, rng=np.random.default_rng(3))[1]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[:32], first[32:])  # the two shards got different masks


def test_an_error_in_a_helper_thread_reaches_the_caller_and_the_runner_goes_on():
    from convscope.parallel import ShardedRunner

    runner = ShardedRunner(seed_cnn((12, 12, 3), 10), workers=2)

    def fail_in_second_shard(index, shard):
        if index == 1:
            raise RuntimeError(f"shard {index} failed")
        return shard

    with pytest.raises(RuntimeError, match="shard 1 failed"):
        runner._map(fail_in_second_shard, [slice(0, 16), slice(16, 32)])
    assert runner._map(lambda i, s: (i, s.start), [slice(0, 16), slice(16, 32)]) == [(0, 0), (1, 16)]
    runner.close()


def test_concurrent_predictions_on_one_model_agree_with_one_at_a_time():
    """Batches from several threads share the runner's pool thread: each gets its own numbers."""
    import threading

    model = seed_cnn((12, 12, 3), 10)
    model.workers = 2
    images = [batch(64, seed=s)[0] for s in range(6)]
    expected = [model.predict_proba(x) for x in images]
    results = [None] * len(images)

    def predict(i):
        for _ in range(5):
            results[i] = model.predict_proba(images[i])

    threads = [threading.Thread(target=predict, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)
