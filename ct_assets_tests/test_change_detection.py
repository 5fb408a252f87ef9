"""The ADWIN cut test on the champion's error stream: false alarms, delay, change point."""

from __future__ import annotations

import numpy as np
import pytest

from ct_assets.triggers.change import ChangeConfig, detect_change


def monitored(errors: np.ndarray, config: ChangeConfig, every: int = 48) -> list[int]:  # type: ignore[type-arg]
    """Check after every ``every`` outcomes, as the sensor does; after an alarm the stream
    starts over (a new champion). The rows at which alarms were raised."""
    alarms, start = [], 0
    for end in range(every, errors.size + 1, every):
        if detect_change(errors[start:end], config).found:
            alarms.append(end)
            start = end
    return alarms


def test_false_alarms_on_stationary_streams_are_rare() -> None:
    """200 stationary streams of 10,000 outcomes, checked every 48: with delta 0.002 at
    most 2% of the streams ever raise an alarm (measured: none)."""
    config = ChangeConfig()
    streams_with_alarm = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        rate = rng.uniform(0.02, 0.45)
        errors = (rng.random(10_000) < rate).astype(int)
        streams_with_alarm += bool(monitored(errors, config))
    assert streams_with_alarm <= 4, streams_with_alarm


def test_a_rise_of_the_error_rate_is_found_soon_and_located() -> None:
    delays, offsets = [], []
    for seed in range(50):
        rng = np.random.default_rng(1000 + seed)
        errors = np.concatenate([rng.random(4000) < 0.15, rng.random(4000) < 0.30]).astype(int)
        alarms = monitored(errors, ChangeConfig())
        assert alarms, f"seed {seed}: no alarm"
        assert alarms[0] > 4000, f"seed {seed}: alarm before the change"
        delays.append(alarms[0] - 4000)
        point = detect_change(errors[: alarms[0]])
        offsets.append(point.index - 4000)
        assert point.after > point.before
        assert point.rows_since == alarms[0] - point.index
    assert np.median(delays) <= 600, delays
    # the change point is where the new concept starts, within a few hundred rows
    assert np.median(np.abs(offsets)) <= 150, offsets


def test_an_improvement_is_not_a_change() -> None:
    rng = np.random.default_rng(3)
    errors = np.concatenate([rng.random(3000) < 0.4, rng.random(3000) < 0.1]).astype(int)
    point = detect_change(errors)
    assert not point.found
    assert "no rise of the error rate in the last 6000 outcomes" in point.reason()


def test_short_streams_are_not_judged() -> None:
    point = detect_change([1] * 150 + [0] * 40, ChangeConfig(min_side=100))
    assert not point.found and point.n == 190
    assert detect_change([]).reason() == "no labeled outcomes of the champion yet"


def test_only_the_newest_errors_are_examined() -> None:
    errors = np.concatenate([np.zeros(5000), np.ones(300)]).astype(int)
    point = detect_change(errors, ChangeConfig(max_window=1000))
    assert point.found and point.n == 1000 and point.rows_since == pytest.approx(300, abs=16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta": 0.0}, "delta must be in"),
        ({"min_side": 2}, "min_side must be >= 5"),
        ({"stride": 0}, "stride must be >= 1"),
        ({"max_window": 50, "min_side": 100}, "max_window 50 < 2 \\* min_side 100"),
    ],
)
def test_invalid_configuration_is_named(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChangeConfig(**kwargs)  # type: ignore[arg-type]
