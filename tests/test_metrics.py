import numpy as np
import pytest

from larq_meta import metrics

R = np.array(
    [
        [0.90, 0.10, 0.12],
        [0.70, 0.95, 0.11],
        [0.50, 0.80, 0.97],
    ]
)


def test_average_accuracy_is_mean_of_last_row():
    assert metrics.average_accuracy(R) == pytest.approx((0.50 + 0.80 + 0.97) / 3)


def test_backward_transfer_by_hand():
    # (0.50 - 0.90) and (0.80 - 0.95)
    assert metrics.backward_transfer(R) == pytest.approx(((0.50 - 0.90) + (0.80 - 0.95)) / 2)


def test_forgetting_uses_the_best_earlier_accuracy():
    R2 = R.copy()
    R2[1, 0] = 0.93  # task 1 got better after task 2: forgetting measures from 0.93
    assert metrics.forgetting(R2) == pytest.approx(((0.93 - 0.50) + (0.95 - 0.80)) / 2)
    assert metrics.backward_transfer(R2) == pytest.approx(metrics.backward_transfer(R))


def test_single_task_has_no_transfer():
    assert metrics.backward_transfer([[0.9]]) == 0.0
    assert metrics.forgetting([[0.9]]) == 0.0


def test_summarize_keys():
    summary = metrics.summarize(R)
    assert summary["last_task_accuracy"] == pytest.approx(0.97)
    assert set(summary) == {"average_accuracy", "backward_transfer", "forgetting", "last_task_accuracy"}


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros((0, 0)), [[np.nan, 1.0], [1.0, 1.0]]])
def test_bad_matrices(bad):
    with pytest.raises(ValueError, match="accuracy_matrix"):
        metrics.summarize(bad)
