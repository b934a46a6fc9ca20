"""CosineDecay with warm-up (issue 18) against Keras 3's own schedule, where Keras is installed."""
import pytest

from deepgpu import optimizers, schedules


@pytest.mark.parametrize("kwargs", [
    dict(initial_learning_rate=0.0, decay_steps=10, warmup_target=1e-3, warmup_steps=5),
    dict(initial_learning_rate=1e-4, decay_steps=7, alpha=0.1, warmup_target=2e-3, warmup_steps=3),
    dict(initial_learning_rate=0.5, decay_steps=4, alpha=0.2),
])
def test_cosine_decay_matches_keras(kwargs):
    keras = pytest.importorskip("keras")
    ours, theirs = schedules.CosineDecay(**kwargs), keras.optimizers.schedules.CosineDecay(**kwargs)
    for step in range(0, 25):
        assert ours(step) == pytest.approx(float(theirs(step)), rel=1e-6, abs=1e-12), step
    assert schedules.deserialize(schedules.serialize(ours)).get_config() == ours.get_config()


def test_adamw_takes_the_warmup_schedule():
    s = schedules.CosineDecay(0.0, 10, warmup_target=1e-3, warmup_steps=5)
    opt = optimizers.AdamW(learning_rate=s, weight_decay=0.01)
    clone = optimizers.get(optimizers.serialize(opt))
    assert clone.get_config() == opt.get_config()
    assert s(0) == 0.0 and s(5) == pytest.approx(1e-3) and s(15) == pytest.approx(0.0, abs=1e-12)
