"""Task sequences: MNIST/Fashion-MNIST, split MNIST, streams, user data (arrays and tf.data)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import larq_meta
from larq_meta.callbacks import TaskEvaluation
from larq_meta.tasks import (
    SPLIT_MNIST_PAIRS,
    Task,
    TaskSequence,
    from_arrays,
    mnist_fashion,
    permuted_mnist,
    split_mnist,
    stream,
    stream_fashion_mnist,
    stream_indices,
)
from larq_meta.training import train_sequence


def fake_images(n_train, n_test, seed, offset=0):
    """28x28 uint8 images whose first two pixels encode the sample's index (unique rows),
    labels cycling through 0..9."""
    rng = np.random.default_rng(seed)

    def make(n, start):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        ids = np.arange(start, start + n)
        x[:, 0, 0], x[:, 0, 1] = ids // 256, ids % 256
        return x, ((ids + offset) % 10).astype(np.uint8)

    return make(n_train, 0), make(n_test, 10_000)


def ids(x):
    x = np.asarray(x).reshape(len(x), -1)
    return x[:, 0].astype(int) * 256 + x[:, 1].astype(int)


def test_task_classes_are_validated():
    data = (np.zeros((2, 3)), np.zeros(2))
    assert Task("t", data, data).classes is None
    assert Task("t", data, data, classes=[3, 1]).classes == (3, 1)
    assert Task("t", data, data, classes=np.array([2, 5])).classes == (2, 5)
    bad_values = (([], ValueError), ([1, 1], ValueError), ([-1], ValueError), ([1.5], ValueError),
                  ([True], ValueError), ("01", TypeError), (3, TypeError))
    for bad, error in bad_values:
        with pytest.raises(error):
            Task("t", data, data, classes=bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Task("t", data, data).classes = (1,)


def test_permutation_recipe_of_the_reference():
    (x, y), test = fake_images(30, 10, seed=0)
    tasks = permuted_mnist(2, seed=5, data=((x, y), test))
    state = np.random.get_state()
    np.random.seed(5)
    perms = [np.random.permutation(784) for _ in range(2)]
    np.random.set_state(state)
    for task, perm in zip(tasks, perms):  # the first task is permuted too
        np.testing.assert_array_equal(task.x_train, x.reshape(30, 784)[:, perm])
        np.testing.assert_array_equal(task.y_train, y)


@pytest.mark.parametrize("order", ["mnist_first", "fashion_first"])
def test_mnist_fashion(order):
    mnist = fake_images(40, 20, seed=1)
    fashion = fake_images(50, 30, seed=2, offset=3)
    tasks = mnist_fashion(order, mnist=mnist, fashion=fashion, train_size=35)
    expected = ["mnist", "fashion_mnist"] if order == "mnist_first" else ["fashion_mnist", "mnist"]
    assert tasks.names == expected and tasks.scenario == "domain" and len(tasks) == 2
    source = {"mnist": mnist, "fashion_mnist": fashion}
    for task in tasks:
        (x, y), (xt, yt) = source[task.name]
        assert task.x_train.shape == (35, 784) and task.x_train.dtype == np.uint8
        assert task.x_test.shape == (len(xt), 784) and task.classes is None
        np.testing.assert_array_equal(task.x_train, x.reshape(len(x), -1)[:35])
        np.testing.assert_array_equal(task.y_train, y[:35])
        np.testing.assert_array_equal(task.y_test, yt)
    with pytest.raises(ValueError, match="order"):
        mnist_fashion("both", mnist=mnist, fashion=fashion)


@pytest.mark.parametrize("scenario", ["task", "class"])
def test_split_mnist_class_pairs(scenario):
    (x, y), (xt, yt) = fake_images(200, 100, seed=3)
    tasks = split_mnist(scenario, data=((x, y), (xt, yt)))
    assert tasks.scenario == scenario and len(tasks) == 5
    assert tasks.names == [f"split_mnist_{a}_{b}" for a, b in SPLIT_MNIST_PAIRS]
    for task, pair in zip(tasks, SPLIT_MNIST_PAIRS):
        assert task.classes == (pair if scenario == "task" else None)
        splits = ((task.x_train, task.y_train, x, y), (task.x_test, task.y_test, xt, yt))
        for xs, ys, xa, ya in splits:
            assert set(np.unique(ys)) == set(pair)  # labels stay digits, not 0/1
            keep = np.isin(ya, pair)
            np.testing.assert_array_equal(ids(xs), ids(xa[keep]))  # every image of the pair
            np.testing.assert_array_equal(ys, ya[keep])
            assert xs.shape[1] == 784
    with pytest.raises(ValueError, match="scenario"):
        split_mnist("domain", data=((x, y), (xt, yt)))


def constant_logits_model():
    """Logits 0, 1, ..., 9 for every input: class 9 wins overall, the larger digit of a pair."""
    inputs = tf.keras.Input((784,))
    outputs = tf.keras.layers.Dense(
        10, kernel_initializer="zeros",
        bias_initializer=tf.keras.initializers.Constant(np.arange(10.0)),
    )(inputs)
    return tf.keras.Model(inputs, outputs)


def test_task_scenario_evaluation_chooses_among_the_task_classes():
    (x, y), (xt, yt) = fake_images(100, 100, seed=4)
    model = constant_logits_model()
    accuracy = {}
    for scenario in ("task", "class"):
        tasks = split_mnist(scenario, data=((x, y), (xt, yt)))
        evaluation = TaskEvaluation(tasks, bn_protocol="shared")
        evaluation.set_model(model)
        accuracy[scenario] = evaluation.evaluate()
    for k, (a, b) in enumerate(SPLIT_MNIST_PAIRS):
        labels = yt[np.isin(yt, (a, b))]
        # task scenario: always the larger digit of the pair (b), never a digit outside it
        assert accuracy["task"][k] == pytest.approx(np.mean(labels == b))
        # class scenario: always 9
        assert accuracy["class"][k] == pytest.approx(np.mean(labels == 9))
    assert accuracy["class"][:4] == [0.0] * 4 and accuracy["task"][0] > 0.4


def test_stream_subsets_are_disjoint_and_cover_the_used_training_set():
    (x, y), (xt, yt) = fake_images(103, 20, seed=5)
    tasks = stream(((x, y), (xt, yt)), num_subsets=10, seed=7)
    assert len(tasks) == 10 and tasks.scenario == "domain"
    assert tasks.info["subset_size"] == 10 and tasks.info["dropped"] == 3
    seen = [ids(task.x_train) for task in tasks]
    union = np.concatenate(seen)
    assert len(union) == len(np.unique(union)) == 100  # disjoint
    expected = np.concatenate(stream_indices(103, 10, seed=7))
    np.testing.assert_array_equal(np.sort(union), np.sort(ids(x[expected])))
    for task, idx in zip(tasks, stream_indices(103, 10, seed=7)):
        np.testing.assert_array_equal(task.y_train, y[idx])  # labels follow their images
        assert task.x_test is xt and task.y_test is yt  # the full test set, shared
    # the shuffle depends on the seed only
    again = stream(((x, y), (xt, yt)), num_subsets=10, seed=7)
    other = stream(((x, y), (xt, yt)), num_subsets=10, seed=8)
    np.testing.assert_array_equal(ids(again[0].x_train), seen[0])
    assert not np.array_equal(ids(other[0].x_train), seen[0])
    with pytest.raises(ValueError):
        stream(((x, y), (xt, yt)), num_subsets=200)


def test_stream_fashion_mnist_flattens_and_names():
    data = fake_images(600, 50, seed=6)
    tasks = stream_fashion_mnist(60, seed=1, data=data)
    assert len(tasks) == 60 and tasks[0].x_train.shape == (10, 784)
    assert tasks.names[0] == "stream_fashion_mnist_1" and tasks.info["dropped"] == 0
    assert tasks[59].x_test.shape == (50, 784)


def test_from_arrays_accepts_every_layout():
    (x, y), (xt, yt) = fake_images(20, 10, seed=7)
    ds_train = tf.data.Dataset.from_tensor_slices((x, y))
    ds_test = tf.data.Dataset.from_tensor_slices((xt, yt))
    tasks = from_arrays(
        [(x, y, xt, yt), ((x, y), (xt, yt)), (ds_train, ds_test)],
        names=["a", "b", "c"], classes=[(0, 1), None, [2]], scenario="task", name="mine",
    )
    assert isinstance(tasks, TaskSequence) and tasks.names == ["a", "b", "c"]
    assert tasks.scenario == "task" and tasks.name == "mine"
    assert [t.classes for t in tasks] == [(0, 1), None, (2,)]
    np.testing.assert_array_equal(tasks[0].x_train, tasks[1].x_train)
    assert isinstance(tasks[2].train, tf.data.Dataset)
    assert from_arrays([(x, y, xt, yt)]).names == ["task_1"]
    with pytest.raises(ValueError, match="names"):
        from_arrays([(x, y, xt, yt)], names=["a", "b"])
    with pytest.raises(TypeError):
        from_arrays([(x, y, xt)])
    with pytest.raises(ValueError, match="empty"):
        from_arrays([])


def test_user_tf_data_sequence_runs_through_train_sequence():
    (x, y), (xt, yt) = fake_images(120, 40, seed=8)
    x, xt = x.reshape(-1, 784), xt.reshape(-1, 784)

    def split(xs, ys, low):
        dataset = tf.data.Dataset.from_tensor_slices((xs, ys))
        return dataset.filter(lambda _, t: t < 5 if low else t >= 5)

    tasks = from_arrays(
        [(split(x, y, True), split(xt, yt, True)), (split(x, y, False), split(xt, yt, False))],
        names=["low", "high"], scenario="class",
    )
    model = larq_meta.models.paper_mlp(hidden_units=(8,))
    model.compile(
        optimizer=larq_meta.MetaplasticAdam(m=1.0, learning_rate=0.01),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    result = train_sequence(model, tasks, epochs_per_task=[1, 2], batch_size=16,
                            shuffle_seed=3, progress=False, bn_protocol="shared")
    R = result.accuracy_matrix
    # the last row is the final model's accuracy on each filtered test set, computed here
    for j, low in enumerate((True, False)):
        keep = yt < 5 if low else yt >= 5
        logits = model.predict(xt[keep].astype(np.float32) / 255.0, verbose=0)
        assert R[1, j] == pytest.approx(np.mean(np.argmax(logits, 1) == yt[keep]))
    assert result.task_names == ["low", "high"]
    losses = result.fit_history[1]["loss"]
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert [r["task"] for r in result.history] == [0, 1, 1]


def test_tf_data_task_with_a_global_seed():
    from larq_meta.tasks import make_dataset

    tf.keras.utils.set_random_seed(0)
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((10, 4), np.uint8), np.arange(10)))
    try:
        batches = list(make_dataset(ds, 4, shuffle=True, seed=3, epochs=2))
    finally:
        tf.random.set_seed(None)
    assert sorted(np.concatenate([b[1].numpy() for b in batches])) == sorted(list(range(10)) * 2)
