"""Task sequences for continual learning: what the learner sees, one task after another.

A `Task` is a named pair of training and test data; a `TaskSequence` is an ordered list
of tasks plus the continual-learning scenario it belongs to:

- `"domain"`: same label space, the input distribution changes (permuted MNIST).
- `"task"`: each task has its own label subset and the task identity is known at test time.
- `"class"`: the label space grows over tasks and the task identity is not given.

Data is held as numpy arrays (`uint8` images are scaled to `[0, 1]` when batched) or as
`tf.data.Dataset`s of `(x, y)` pairs, so a user's own data works with the same trainer and
callback.

!!! example
    ```python
    tasks = larq_meta.tasks.permuted_mnist(num_tasks=3, seed=1)
    tasks[0].name, tasks[0].x_train.shape    # ('permuted_mnist_1', (60000, 784))
    ```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Union

import numpy as np
import tensorflow as tf

__all__ = [
    "SCENARIOS",
    "Task",
    "TaskSequence",
    "make_dataset",
    "steps_per_epoch",
    "mnist_permutations",
    "permuted_mnist",
]

SCENARIOS = ("domain", "task", "class")
Arrays = tuple[np.ndarray, np.ndarray]
Data = Union[Arrays, tf.data.Dataset]


def _check_data(data: Any, argument: str) -> Data:
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) != len(y):
            raise ValueError(f"`{argument}`: {len(x)} inputs but {len(y)} labels.")
        if len(x) == 0:
            raise ValueError(f"`{argument}` is empty.")
        return x, y
    raise TypeError(
        f"`{argument}` must be an (x, y) pair of arrays or a tf.data.Dataset of (x, y), "
        f"got {type(data).__name__}."
    )


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: a name, training data and test data.

    # Arguments
        name: Task name, used in logs and tables.
        train: Training data, an `(x, y)` pair of arrays or a `tf.data.Dataset` of `(x, y)`
            (unbatched or batched; see `make_dataset`).
        test: Test data, same forms.
    """

    name: str
    train: Data
    test: Data

    def __post_init__(self):
        object.__setattr__(self, "train", _check_data(self.train, "train"))
        object.__setattr__(self, "test", _check_data(self.test, "test"))

    @property
    def x_train(self) -> np.ndarray:
        return self._arrays(self.train, "train")[0]

    @property
    def y_train(self) -> np.ndarray:
        return self._arrays(self.train, "train")[1]

    @property
    def x_test(self) -> np.ndarray:
        return self._arrays(self.test, "test")[0]

    @property
    def y_test(self) -> np.ndarray:
        return self._arrays(self.test, "test")[1]

    def _arrays(self, data: Data, split: str) -> Arrays:
        if isinstance(data, tf.data.Dataset):
            raise TypeError(f"Task {self.name!r} holds its {split} data as a tf.data.Dataset.")
        return data


@dataclasses.dataclass(frozen=True)
class TaskSequence(Sequence):
    """An ordered list of tasks and the scenario they form.

    # Arguments
        tasks: The tasks, in training order.
        scenario: One of `"domain"`, `"task"`, `"class"`.
        name: Name of the sequence (e.g. `"permuted_mnist"`).
        info: Free-form metadata (seed, permutations, ...) written to results files.
    """

    tasks: tuple[Task, ...]
    scenario: str = "domain"
    name: str = "tasks"
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise ValueError("`tasks` is empty: a sequence needs at least one task.")
        if not all(isinstance(t, Task) for t in self.tasks):
            raise TypeError("`tasks` must contain `larq_meta.tasks.Task` objects.")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"`scenario` must be one of {SCENARIOS}, got {self.scenario!r}.")

    def __getitem__(self, index):
        return self.tasks[index]

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]


def as_sequence(tasks: TaskSequence | Sequence[Task]) -> TaskSequence:
    """Accept a `TaskSequence` or a plain list of `Task`s."""
    if isinstance(tasks, TaskSequence):
        return tasks
    return TaskSequence(tuple(tasks))


def _scale_images(x: tf.Tensor) -> tf.Tensor:
    """Integer images -> float32 in [0, 1] (torchvision's `ToTensor`); floats pass unchanged."""
    if x.dtype.is_integer:
        return tf.cast(x, tf.float32) / 255.0
    return tf.cast(x, tf.float32) if x.dtype == tf.float64 else x


def make_dataset(
    data: Data,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    epochs: int | None = None,
    initial_epoch: int = 0,
    map_fn: Callable | None = None,
) -> tf.data.Dataset:
    """Batched, prefetched `tf.data` pipeline for arrays or an (unbatched) dataset.

    Data is batched first and converted per batch (integer images to float32 in `[0, 1]`),
    so no per-sample work runs in Python.

    With `epochs`, the dataset holds epochs `initial_epoch .. epochs-1` back to back, for one
    `model.fit(..., epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=...)`. Each
    epoch's order is then a function of `(seed, epoch)` alone, so a run resumed at epoch `e`
    sees exactly the batches an uninterrupted run would (for arrays, a stateless shuffle of
    the indices; for a `tf.data.Dataset`, `shuffle` seeded with `seed` and the epoch).

    # Arguments
        data: `(x, y)` arrays or a `tf.data.Dataset` of unbatched `(x, y)` samples.
        batch_size: Batch size.
        shuffle: Shuffle (every epoch differently).
        seed: Shuffle seed (reproducible order).
        epochs: Build a multi-epoch dataset ending at this epoch (see above).
        initial_epoch: First epoch of a multi-epoch dataset.
        map_fn: Optional `(x, y) -> (x, y)` applied per batch after scaling.
    """
    if epochs is None:
        if isinstance(data, tf.data.Dataset):
            dataset = data.shuffle(10_000, seed=seed) if shuffle else data
        else:
            dataset = tf.data.Dataset.from_tensor_slices(tuple(data))
            if shuffle:
                dataset = dataset.shuffle(len(data[0]), seed=seed)
        dataset = dataset.batch(batch_size)
    else:
        seed = 0 if seed is None else int(seed)
        if isinstance(data, tf.data.Dataset):

            def one_epoch(epoch):
                epoch_data = data
                if shuffle:
                    epoch_data = data.shuffle(10_000, seed=seed * 1_000_003 + epoch)
                return epoch_data.batch(batch_size)

        else:
            x, y = (tf.constant(a) for a in data)
            n = len(data[0])

            def one_epoch(epoch):
                indices = tf.range(n, dtype=tf.int64)
                if shuffle:
                    key = tf.stack([tf.constant(seed, tf.int64), epoch])
                    indices = tf.random.experimental.stateless_shuffle(indices, seed=key)
                batches = tf.data.Dataset.from_tensor_slices(indices).batch(batch_size)
                return batches.map(lambda i: (tf.gather(x, i), tf.gather(y, i)))

        dataset = tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)
    dataset = dataset.map(lambda x, y: (_scale_images(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    if map_fn is not None:
        dataset = dataset.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(data: Data, batch_size: int) -> int:
    """Number of batches in one epoch of `data` (counts a dataset of unknown size once)."""
    if isinstance(data, tf.data.Dataset):
        n = int(data.cardinality())
        if n < 0:
            n = int(data.reduce(tf.constant(0, tf.int64), lambda count, *_: count + 1))
    else:
        n = len(data[0])
    return -(-n // batch_size)


def mnist_permutations(num_tasks: int, seed: int) -> np.ndarray:
    """The reference implementation's permutations: `np.random.seed(seed)`, then one
    `np.random.permutation(784)` per task, in task order. Returns shape `(num_tasks, 784)`.

    The global numpy random state is saved and restored around this call.
    """
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"`num_tasks` must be a positive int, got {num_tasks!r}.")
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return np.stack([np.random.permutation(784) for _ in range(num_tasks)])
    finally:
        np.random.set_state(state)


def permuted_mnist(
    num_tasks: int = 3,
    seed: int = 1,
    *,
    data: tuple[Arrays, Arrays] | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
) -> TaskSequence:
    """Permuted MNIST (domain scenario): each task is MNIST with its pixels shuffled by a fixed
    permutation drawn with the reference recipe (`mnist_permutations`), the first task included.

    Images are kept as flattened `uint8` arrays of shape `(N, 784)` (scaled to `[0, 1]` when
    batched), so ten tasks take under 0.6 GB.

    # Arguments
        num_tasks: Number of tasks (the paper uses 6 to 10).
        seed: Seed of the permutations.
        data: `((x_train, y_train), (x_test, y_test))` to use instead of `load_mnist()`.
        train_size: Use only the first `train_size` training images (quick runs).
        test_size: Use only the first `test_size` test images.
    """
    if data is None:
        from larq_meta.datasets import load_mnist

        data = load_mnist()
    (x_train, y_train), (x_test, y_test) = data
    x_train = np.asarray(x_train).reshape(len(x_train), -1)[:train_size]
    x_test = np.asarray(x_test).reshape(len(x_test), -1)[:test_size]
    y_train, y_test = np.asarray(y_train)[:train_size], np.asarray(y_test)[:test_size]
    if x_train.shape[1] != 784:
        raise ValueError(f"permuted MNIST needs 784-pixel images, got {x_train.shape[1]}.")
    permutations = mnist_permutations(num_tasks, seed)
    tasks = tuple(
        Task(
            name=f"permuted_mnist_{k + 1}",
            train=(x_train[:, perm], y_train),
            test=(x_test[:, perm], y_test),
        )
        for k, perm in enumerate(permutations)
    )
    return TaskSequence(
        tasks, scenario="domain", name="permuted_mnist", info={"seed": seed, "num_tasks": num_tasks}
    )
