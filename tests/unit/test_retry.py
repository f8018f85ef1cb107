from __future__ import annotations

import random

import pytest

from conveyor import Retry


def seconds(policy: Retry, attempt: int) -> float:
    return policy.delay(attempt, rng=random.Random(1)).total_seconds()


def test_backoff_kinds_without_jitter() -> None:
    exp = Retry(attempts=9, backoff="exponential", base=2, jitter=0)
    assert [seconds(exp, n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    lin = Retry(attempts=9, backoff="linear", base=3, jitter=0)
    assert [seconds(lin, n) for n in (1, 2, 3)] == [3, 6, 9]
    fixed = Retry(attempts=9, backoff="fixed", base=5, jitter=0)
    assert [seconds(fixed, n) for n in (1, 7)] == [5, 5]
    custom = Retry(attempts=9, backoff=lambda n: n * 10)
    assert seconds(custom, 3) == 30


def test_delay_is_capped_and_jitter_stays_within_its_fraction() -> None:
    capped = Retry(attempts=99, base=1, max=60, jitter=0)
    assert seconds(capped, 50) == 60
    jittery = Retry(attempts=9, backoff="fixed", base=10, jitter=0.5)
    samples = {jittery.delay(1).total_seconds() for _ in range(200)}
    assert min(samples) >= 10 and max(samples) <= 15 and len(samples) > 1


def test_attempts_count_the_first_one() -> None:
    policy = Retry(attempts=3)
    assert policy.should_retry(RuntimeError(), 1)
    assert policy.should_retry(RuntimeError(), 2)
    assert not policy.should_retry(RuntimeError(), 3)
    assert policy.should_retry(RuntimeError(), 3, limit=4), "a hand-granted extra attempt"


def test_retry_on_and_discard_on_choose_by_exception_class() -> None:
    policy = Retry(attempts=5, retry_on=(ConnectionError,), discard_on=(ValueError,))
    assert policy.should_retry(ConnectionResetError(), 1)
    assert not policy.should_retry(KeyError(), 1), "not listed in retry_on"
    assert not policy.should_retry(ValueError(), 1)
    assert policy.is_discarded(ValueError())


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"backoff": "sometimes"}, {"jitter": 2}, {"base": -1}]
)
def test_invalid_policies_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Retry(**kwargs)


def test_the_default_policy_retries_for_about_half_a_day_before_dead() -> None:
    policy = Retry()
    assert policy.attempts == 20 and policy.should_retry(ConnectionError(), 19)
    assert not policy.should_retry(ConnectionError(), 20)
    calm = Retry(jitter=0)
    total = sum(seconds(calm, n) for n in range(1, 20))
    assert seconds(calm, 1) == 15 and 10 * 3600 < total < 14 * 3600
