import numpy as np
import pytest
import tensorflow as tf

from larq_meta.tasks import Task, TaskSequence, make_dataset, mnist_permutations, permuted_mnist


def fake_mnist(n_train=50, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    return (
        (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train).astype(np.uint8)),
        (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test).astype(np.uint8)),
    )


def test_permutations_follow_the_reference_recipe():
    state = np.random.get_state()
    perms = mnist_permutations(3, seed=7)
    np.random.seed(7)
    expected = [np.random.permutation(784) for _ in range(3)]
    np.random.set_state(state)
    np.testing.assert_array_equal(perms, np.stack(expected))
    # the caller's global numpy state is untouched
    np.random.set_state(state)
    a = np.random.rand()
    np.random.set_state(state)
    mnist_permutations(3, seed=7)
    assert np.random.rand() == a


def test_permuted_mnist_tasks_apply_their_permutation():
    data = fake_mnist()
    tasks = permuted_mnist(3, seed=1, data=data)
    perms = mnist_permutations(3, seed=1)
    assert len(tasks) == 3 and tasks.scenario == "domain" and tasks.info["seed"] == 1
    for task, perm in zip(tasks, perms):
        assert task.x_train.shape == (50, 784) and task.x_train.dtype == np.uint8
        np.testing.assert_array_equal(task.x_train, data[0][0].reshape(50, -1)[:, perm])
        np.testing.assert_array_equal(task.x_test, data[1][0].reshape(20, -1)[:, perm])
        np.testing.assert_array_equal(task.y_train, data[0][1])
    assert tasks.names == ["permuted_mnist_1", "permuted_mnist_2", "permuted_mnist_3"]


def test_sizes_can_be_cut():
    tasks = permuted_mnist(2, data=fake_mnist(), train_size=10, test_size=5)
    assert tasks[1].x_train.shape == (10, 784) and tasks[1].y_test.shape == (5,)


def test_make_dataset_scales_integer_images_and_batches():
    x = np.full((5, 784), 255, np.uint8)
    y = np.arange(5)
    batches = list(make_dataset((x, y), batch_size=2))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    assert batches[0][0].dtype == tf.float32 and float(tf.reduce_max(batches[0][0])) == 1.0
    # a tf.data.Dataset of samples works the same way
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    assert [len(b[0]) for b in make_dataset(ds, batch_size=4)] == [4, 1]


def test_shuffle_with_seed_is_reproducible():
    x = np.arange(100, dtype=np.float32)[:, None]
    y = np.arange(100)
    order = lambda: np.concatenate([b[1].numpy() for b in make_dataset((x, y), 10, shuffle=True, seed=3)])
    first = order()
    assert not np.array_equal(first, y)
    np.testing.assert_array_equal(first, order())


def test_bad_tasks():
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        Task("t", train=(np.zeros((3, 2)), np.zeros(2)), test=(np.zeros((1, 2)), np.zeros(1)))
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        Task("t", train=np.zeros(3), test=(np.zeros((1, 2)), np.zeros(1)))
    with pytest.raises(ValueError, match="at least one task"):
        TaskSequence(())
    with pytest.raises(ValueError, match="scenario"):
        TaskSequence((Task("t", (np.zeros((1, 2)), np.zeros(1)), (np.zeros((1, 2)), np.zeros(1))),), scenario="x")
    with pytest.raises(ValueError, match="num_tasks"):
        mnist_permutations(0, seed=1)
