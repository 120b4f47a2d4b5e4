"""Learning-rate schedules in optimizer steps, with the authors' boundaries int(E·f·steps_per_epoch)."""
import math

import pytest

from samscale.spec.run import ScheduleSpec
from samscale.train.schedule import lr_multiplier, step_boundaries


def test_step_boundaries_match_the_authors_formula():
    # MNIST: 100 epochs, ceil(60000/128) = 469 steps per epoch
    assert step_boundaries([0.25, 0.5, 0.75], 100, 469) == [11725, 23450, 35175]
    assert step_boundaries([0.5, 0.75], 3, 7) == [10, 15]  # int(10.5) = 10, int(15.75) = 15


def test_step_schedule_decays_at_boundaries():
    multiplier = lr_multiplier(ScheduleSpec(kind="step", milestones=[0.5, 0.75], gamma=0.1), 4, 10)
    values = [multiplier(step) for step in range(40)]
    assert values[:20] == [1.0] * 20
    assert values[20:30] == pytest.approx([0.1] * 10)
    assert values[30:] == pytest.approx([0.01] * 10)


def test_cosine_and_constant():
    cosine = lr_multiplier(ScheduleSpec(kind="cosine"), 2, 50)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0, abs=1e-12)
    assert cosine(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    constant = lr_multiplier(ScheduleSpec(kind="constant", warmup_epochs=1), 3, 4)
    assert [constant(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
