"""``tfshare.backoff``: the growing, jittered pause every long-running loop waits."""

from __future__ import annotations

import asyncio

import pytest

from tfshare.backoff import Backoff, sleep_or_stop


def test_the_pause_doubles_from_first_up_to_the_ceiling() -> None:
    backoff = Backoff(first=0.2, ceiling=5.0, jitter=0.0)
    assert backoff.current == 0
    assert [backoff.next() for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert backoff.current == 5.0


def test_reset_starts_again_from_first() -> None:
    backoff = Backoff(first=1.0, ceiling=8.0, jitter=0.0)
    backoff.next(), backoff.next(), backoff.next()
    backoff.reset()
    assert backoff.current == 0
    assert backoff.next() == 1.0


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999999])
def test_jitter_takes_a_fraction_of_the_pause_off_never_more(draw: float) -> None:
    backoff = Backoff(first=1.0, ceiling=4.0, jitter=0.2, rand=lambda: draw)
    pauses = [backoff.next() for _ in range(4)]
    for pause, nominal in zip(pauses, [1.0, 2.0, 4.0, 4.0], strict=True):
        assert pause == pytest.approx(nominal * (1 - 0.2 * draw))
        assert 0.8 * nominal < pause <= nominal


def test_jitter_spreads_agents_cut_off_together() -> None:
    draws = iter([0.0, 0.5, 0.9])
    pauses = {Backoff(first=1.0, jitter=0.2, rand=lambda: next(draws)).next() for _ in range(3)}
    assert len(pauses) == 3


def test_the_jitter_does_not_change_the_growth() -> None:
    backoff = Backoff(first=0.5, ceiling=2.0, jitter=0.5, rand=lambda: 0.999)
    for _ in range(5):
        backoff.next()
    assert backoff.current == 2.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first": 0.0},
        {"first": -1.0},
        {"first": 2.0, "ceiling": 1.0},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_sleep_or_stop_returns_at_once_when_stopped() -> None:
    async def main() -> bool:
        stop = asyncio.Event()
        stop.set()
        waited = asyncio.create_task(sleep_or_stop(stop, 3600))
        done, _ = await asyncio.wait({waited}, timeout=5)
        return waited in done

    assert asyncio.run(main())


def test_sleep_or_stop_is_cut_short_by_a_stop_request() -> None:
    async def main() -> bool:
        stop = asyncio.Event()
        waited = asyncio.create_task(sleep_or_stop(stop, 3600))
        await asyncio.sleep(0)
        assert not waited.done()
        stop.set()
        done, _ = await asyncio.wait({waited}, timeout=5)
        return waited in done

    assert asyncio.run(main())


def test_sleep_or_stop_waits_out_its_time_without_a_stop() -> None:
    async def main() -> bool:
        stop = asyncio.Event()
        await sleep_or_stop(stop, 0.01)
        return stop.is_set()

    assert asyncio.run(main()) is False
