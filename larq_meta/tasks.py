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

from larq_meta._utils import check_int

__all__ = [
    "SCENARIOS",
    "Task",
    "TaskSequence",
    "make_dataset",
    "scale_images",
    "steps_per_epoch",
    "mnist_permutations",
    "permuted_mnist",
    "mnist_fashion",
    "SPLIT_MNIST_PAIRS",
    "split_mnist",
    "stream_indices",
    "stream",
    "stream_fashion_mnist",
    "from_arrays",
]

#: Continual-learning scenarios (van de Ven & Tolias): the task identity is given at test
#: time ("task"), not needed ("domain", one output space), or to be inferred ("class").
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


def _check_classes(classes: Any) -> tuple[int, ...] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, np.ndarray)):
        raise TypeError(f"`classes` must be a sequence of ints or None, got {classes!r}.")
    values = []
    for c in classes:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or c < 0:
            raise ValueError(f"`classes` must hold ints >= 0, got {c!r} in {classes!r}.")
        values.append(int(c))
    if not values:
        raise ValueError("`classes` is empty: give the task's labels, or None for all.")
    if len(set(values)) != len(values):
        raise ValueError(f"`classes` has repeated labels: {classes!r}.")
    return tuple(values)


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: a name, training data, test data and, optionally, its classes.

    # Arguments
        name: Task name, used in logs and tables.
        train: Training data, an `(x, y)` pair of arrays or a `tf.data.Dataset` of `(x, y)`
            (unbatched or batched; see `make_dataset`).
        test: Test data, same forms.
        classes: The labels this task uses, for the task-incremental scenario: in a
            `TaskSequence` with `scenario="task"`, evaluation predicts the arg-max over these
            output units only (the task identity is known at test time). None (default):
            all output units compete. Labels keep their global values (e.g. split MNIST's
            task `(2, 3)` keeps labels 2 and 3 on a 10-unit output).
    """

    name: str
    train: Data
    test: Data
    classes: tuple[int, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "train", _check_data(self.train, "train"))
        object.__setattr__(self, "test", _check_data(self.test, "test"))
        object.__setattr__(self, "classes", _check_classes(self.classes))

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


def scale_images(x: tf.Tensor) -> tf.Tensor:
    """Integer images -> float32 in [0, 1] (torchvision's `ToTensor`), the scaling every
    pipeline of the package applies; float64 -> float32; float32 passes unchanged."""
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
            # One dataset per epoch, each shuffled with a Python seed of its own (a tensor
            # seed clashes with a global seed), chained in order.
            epochs_data = [
                (data.shuffle(10_000, seed=seed * 1_000_003 + epoch) if shuffle else data).batch(
                    batch_size
                )
                for epoch in range(initial_epoch, epochs)
            ]
            dataset = epochs_data[0]
            for epoch_data in epochs_data[1:]:
                dataset = dataset.concatenate(epoch_data)
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
    dataset = dataset.map(lambda x, y: (scale_images(x), y), num_parallel_calls=tf.data.AUTOTUNE)
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
        tasks, scenario="domain", name="permuted_mnist", info={"seed": seed, "num_tasks": num_tasks, "train_size": train_size, "test_size": test_size}
    )


# -- more sequences ------------------------------------------------------------------------------

DataPair = tuple[Arrays, Arrays]


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(len(x), -1)


def _cut(data: DataPair, train_size: int | None, test_size: int | None) -> DataPair:
    (x_train, y_train), (x_test, y_test) = data
    return (
        (_flat(x_train)[:train_size], np.asarray(y_train)[:train_size]),
        (_flat(x_test)[:test_size], np.asarray(y_test)[:test_size]),
    )


def mnist_fashion(
    order: str = "mnist_first",
    *,
    mnist: DataPair | None = None,
    fashion: DataPair | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
) -> TaskSequence:
    """MNIST then Fashion-MNIST, or the reverse (the paper's Fig. 1a / Supp. Fig. 6).

    Domain scenario: both data sets use the same 10 output units (digit `k` and clothing
    class `k` share output `k`). Images are flattened to `(N, 784)` `uint8` arrays, scaled to
    `[0, 1]` when batched.

    !!! example
        ```python
        tasks = larq_meta.tasks.mnist_fashion(order="fashion_first")
        tasks.names        # ['fashion_mnist', 'mnist']
        ```

    # Arguments
        order: `"mnist_first"` or `"fashion_first"`.
        mnist: `((x_train, y_train), (x_test, y_test))` to use instead of `load_mnist()`.
        fashion: The same for Fashion-MNIST instead of `load_fashion_mnist()`.
        train_size: Use only the first `train_size` training images of each data set.
        test_size: Use only the first `test_size` test images of each data set.

    # Returns
        A two-task `TaskSequence` (scenario `"domain"`).
    """
    if order not in ("mnist_first", "fashion_first"):
        raise ValueError(f'`order` must be "mnist_first" or "fashion_first", got {order!r}.')
    if mnist is None or fashion is None:
        from larq_meta.datasets import load_fashion_mnist, load_mnist

        mnist = load_mnist() if mnist is None else mnist
        fashion = load_fashion_mnist() if fashion is None else fashion
    made = {}
    for name, data in (("mnist", mnist), ("fashion_mnist", fashion)):
        (x_train, y_train), (x_test, y_test) = _cut(data, train_size, test_size)
        if x_train.shape[1] != 784:
            raise ValueError(f"{name}: expected 28x28 images, got {x_train.shape[1]} pixels.")
        made[name] = Task(name, train=(x_train, y_train), test=(x_test, y_test))
    names = ["mnist", "fashion_mnist"] if order == "mnist_first" else ["fashion_mnist", "mnist"]
    return TaskSequence(
        tuple(made[n] for n in names), scenario="domain", name="mnist_fashion",
        info={"order": order, "train_size": train_size, "test_size": test_size},
    )


#: The five digit pairs of split MNIST, in task order.
SPLIT_MNIST_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


def split_mnist(
    scenario: str = "task",
    *,
    data: DataPair | None = None,
    pairs: Sequence[Sequence[int]] = SPLIT_MNIST_PAIRS,
    train_size: int | None = None,
    test_size: int | None = None,
) -> TaskSequence:
    """Split MNIST: five two-class tasks (digits 0/1, 2/3, 4/5, 6/7, 8/9).

    Labels keep their digit values (0..9), so the model has 10 output units in both
    scenarios:

    - `"task"` (task-incremental): each task carries `classes=(a, b)`, and evaluation of that
      task picks the larger of the two logits `a`, `b` (the task identity is known at test
      time; see `TaskEvaluation`). Training still uses the full 10-way softmax.
    - `"class"` (class-incremental): no `classes`; evaluation takes the arg-max over all 10
      outputs, so the model must also tell tasks apart.

    Each task's test set is the test images of its two digits. Images are flattened to
    `(N, 784)` `uint8`.

    !!! example
        ```python
        tasks = larq_meta.tasks.split_mnist(scenario="task")
        tasks[1].name, tasks[1].classes      # ('split_mnist_2_3', (2, 3))
        ```

    # Arguments
        scenario: `"task"` or `"class"`.
        data: `((x_train, y_train), (x_test, y_test))` to use instead of `load_mnist()`.
        pairs: The class groups, one task each (default `SPLIT_MNIST_PAIRS`).
        train_size: Cut MNIST's training set to its first `train_size` images before
            splitting (quick runs).
        test_size: The same for the test set.

    # Returns
        A `TaskSequence` of `len(pairs)` tasks.
    """
    if scenario not in ("task", "class"):
        raise ValueError(f'`scenario` must be "task" or "class", got {scenario!r}.')
    if data is None:
        from larq_meta.datasets import load_mnist

        data = load_mnist()
    (x_train, y_train), (x_test, y_test) = _cut(data, train_size, test_size)
    tasks = []
    for group in pairs:
        group = _check_classes(tuple(group))
        in_train = np.isin(y_train, group)
        in_test = np.isin(y_test, group)
        if not in_train.any() or not in_test.any():
            raise ValueError(f"split MNIST: no training or test image of classes {group}.")
        tasks.append(
            Task(
                name="split_mnist_" + "_".join(str(c) for c in group),
                train=(x_train[in_train], y_train[in_train]),
                test=(x_test[in_test], y_test[in_test]),
                classes=group if scenario == "task" else None,
            )
        )
    return TaskSequence(
        tuple(tasks), scenario=scenario, name=f"split_mnist_{scenario}",
        info={"pairs": [list(g) for g in pairs], "train_size": train_size, "test_size": test_size},
    )


def stream_indices(num_samples: int, num_subsets: int, seed: int | None = 1) -> list[np.ndarray]:
    """The index sets `stream` cuts a training set into.

    The indices `0..num_samples-1` are shuffled with `np.random.default_rng(seed)` and cut into
    `num_subsets` consecutive, disjoint slices of `num_samples // num_subsets` indices; the
    last `num_samples % num_subsets` shuffled indices are dropped.

    # Returns
        A list of `num_subsets` integer arrays.
    """
    check_int(num_samples, "num_samples")
    check_int(num_subsets, "num_subsets")
    if num_subsets > num_samples:
        raise ValueError(f"Cannot cut {num_samples} samples into {num_subsets} non-empty subsets.")
    order = np.random.default_rng(seed).permutation(num_samples)
    size = num_samples // num_subsets
    return [order[k * size : (k + 1) * size] for k in range(num_subsets)]


def stream(
    data: DataPair,
    num_subsets: int,
    seed: int | None = 1,
    *,
    name: str = "stream",
) -> TaskSequence:
    """Stream learning: one data set's training set learned as a sequence of disjoint subsets.

    The training set is shuffled (`seed`) and cut into `num_subsets` equal, disjoint subsets
    (`stream_indices`); the remainder `N % num_subsets` is dropped (recorded in
    `info["dropped"]`). Subset `k` is task `k`, trained after subsets `1..k-1`, with no
    revisiting. The data never changes distribution: the point is to learn a whole data set
    from pieces seen once each, without forgetting the early pieces.

    **Every task's test set is the full test set** (the paper evaluates on the full test set),
    so `acc_task_<k>` is the same number for every k at a given moment; `acc_task_1` is the
    curve to look at. Inputs keep their shape (`stream_fashion_mnist` flattens).

    Train streams with `train_sequence(..., reset_optimizer_per_task=False)`: there is no
    task boundary signal to give the optimizer, so its state (Adam moments, step count)
    carries on from one subset to the next (the reference script builds one optimizer for
    the whole stream). The paper's setting (Fig. 4a): Fashion-MNIST, 60 subsets of 1000
    images, a 784-1024-1024-10 BNN, `m = 2.5`; the reference script's default is 5 epochs
    per subset (`--epochs-per-task`).

    !!! example
        ```python
        from larq_meta.datasets import load_fashion_mnist

        tasks = larq_meta.tasks.stream(load_fashion_mnist(), num_subsets=60, seed=1)
        result = larq_meta.training.train_sequence(
            model, tasks, epochs_per_task=20, reset_optimizer_per_task=False)
        ```

    # Arguments
        data: `((x_train, y_train), (x_test, y_test))` arrays.
        num_subsets: Number of subsets (tasks).
        seed: Seed of the shuffle before cutting.
        name: Sequence name; tasks are named `<name>_1 .. <name>_N`.

    # Returns
        A `TaskSequence` (scenario `"domain"`) of `num_subsets` tasks.
    """
    (x_train, y_train), (x_test, y_test) = data
    x_train, y_train = np.asarray(x_train), np.asarray(y_train)
    x_test, y_test = np.asarray(x_test), np.asarray(y_test)
    if len(x_train) != len(y_train):
        raise ValueError(f"stream: {len(x_train)} training inputs but {len(y_train)} labels.")
    subsets = stream_indices(len(x_train), num_subsets, seed)
    test = (x_test, y_test)
    tasks = tuple(
        Task(f"{name}_{k + 1}", train=(x_train[idx], y_train[idx]), test=test)
        for k, idx in enumerate(subsets)
    )
    size = len(subsets[0])
    return TaskSequence(
        tasks, scenario="domain", name=name,
        info={
            "seed": seed,
            "num_subsets": num_subsets,
            "subset_size": size,
            "dropped": len(x_train) - size * num_subsets,
            "test": "full test set for every subset",
        },
    )


def stream_fashion_mnist(
    num_subsets: int = 60,
    seed: int | None = 1,
    *,
    data: DataPair | None = None,
) -> TaskSequence:
    """The paper's stream-learning benchmark (Fig. 4a): Fashion-MNIST's 60000 training
    images in `num_subsets` subsets (60 of 1000 by default), each evaluated on the full
    10000-image test set. Images are flattened to `(N, 784)` `uint8`. See `stream` (train with
    `reset_optimizer_per_task=False`; the paper uses a 1024-1024 BNN with `m = 2.5`).

    !!! example
        ```python
        tasks = larq_meta.tasks.stream_fashion_mnist(num_subsets=60, seed=1)
        len(tasks), tasks[0].x_train.shape     # (60, (1000, 784))
        ```

    # Arguments
        num_subsets: Number of subsets (the paper: 60).
        seed: Seed of the shuffle before cutting.
        data: `((x_train, y_train), (x_test, y_test))` instead of `load_fashion_mnist()`.
    """
    if data is None:
        from larq_meta.datasets import load_fashion_mnist

        data = load_fashion_mnist()
    return stream(_cut(data, None, None), num_subsets, seed, name="stream_fashion_mnist")


def from_arrays(
    tasks: Sequence,
    *,
    names: Sequence[str] | None = None,
    classes: Sequence[Sequence[int] | None] | None = None,
    scenario: str = "domain",
    name: str = "tasks",
    info: dict | None = None,
) -> TaskSequence:
    """A `TaskSequence` from your own data: any data set works with the trainer and callback.

    Each entry of `tasks` is one task, given as any of:

    - `(x_train, y_train, x_test, y_test)` arrays;
    - `((x_train, y_train), (x_test, y_test))`, the Keras `load_data()` layout;
    - `(train_dataset, test_dataset)`: two `tf.data.Dataset`s of unbatched `(x, y)` samples
      (or a mix of a dataset and an `(x, y)` pair).

    Labels are integer class indices (`sparse_categorical_crossentropy`). Integer inputs are
    treated as 8-bit images and scaled to `[0, 1]` when batched; float inputs pass unchanged.

    !!! example
        ```python
        import tensorflow as tf

        def subset(x, y, keep):
            return tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda _, t: keep(t))

        tasks = larq_meta.tasks.from_arrays(
            [(subset(x, y, lambda t: t < 5), subset(xt, yt, lambda t: t < 5)),
             (subset(x, y, lambda t: t >= 5), subset(xt, yt, lambda t: t >= 5))],
            names=["low", "high"], scenario="class",
        )
        larq_meta.training.train_sequence(model, tasks, epochs_per_task=2)
        ```

    # Arguments
        tasks: The tasks' data, in training order (see above).
        names: Task names (default `task_1 .. task_T`).
        classes: Per task, its labels (or None); for `scenario="task"`.
        scenario: `"domain"`, `"task"` or `"class"` (see `TaskSequence`).
        name: Sequence name.
        info: Free-form metadata for results files.

    # Returns
        A `TaskSequence`.
    """
    entries = list(tasks)
    if not entries:
        raise ValueError("`tasks` is empty: a sequence needs at least one task.")
    names = list(names) if names is not None else [f"task_{k + 1}" for k in range(len(entries))]
    classes = list(classes) if classes is not None else [None] * len(entries)
    if len(names) != len(entries) or len(classes) != len(entries):
        raise ValueError(
            f"{len(entries)} tasks but {len(names)} names and {len(classes)} `classes` entries."
        )
    made = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 4):
            length = len(entry) if hasattr(entry, "__len__") else "?"
            raise TypeError(
                f"Task {k + 1}: expected (x_train, y_train, x_test, y_test), "
                "((x_train, y_train), (x_test, y_test)) or (train_dataset, test_dataset), "
                f"got {type(entry).__name__} of length {length}."
            )
        train, test = (entry[:2], entry[2:]) if len(entry) == 4 else entry
        made.append(Task(names[k], train=train, test=test, classes=classes[k]))
    return TaskSequence(tuple(made), scenario=scenario, name=name, info=dict(info or {}))
