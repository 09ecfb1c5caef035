"""The time budget is a contract: one deadline for search, final training, test and writing.

`Budget` splits `time_budget` seconds, counted from the start of `tune()`
(minus what an interrupted run of the same search had already spent), into
phases:

    |-- search (search_share) --|-- final training --|-- test + results --|
    started                search_end            final_end              end

The search phase hands out no trial that its cost model says cannot finish
before `search_end`; a trial still running then stops at the end of its epoch.
The final training's schedule is sized to end at `final_end`; the reserve
after it covers loading, testing once and writing the results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from kerascnn.checks import format_duration

# share of the budget given to the search; the rest trains the winner
SEARCH_SHARE = 0.5
# seconds kept for the test evaluation and writing the results: this share of
# the budget, at least RESERVE_MIN_SECONDS
RESERVE_SHARE = 0.03
RESERVE_MIN_SECONDS = 4.0


@dataclass
class Budget:
    """The phases of one call's time budget.

    Attributes:
        total: float. The budget in seconds (the whole search, all runs).
        started: float. `time.time()` when this call started.
        spent_before: float. Seconds an interrupted run of the same search
            spent (resume).
        search_share: float. Share of `total` for the search.
        after_final: float. Predicted seconds of what follows the final
            training (testing, writing); the reserve is at least this.
    """

    total: float
    started: float
    spent_before: float = 0.0
    search_share: float = SEARCH_SHARE
    after_final: float = 0.0  # predicted seconds of the test and the writing

    @property
    def end(self) -> float:
        """When everything must be done."""
        return self.started + self.total - self.spent_before

    @property
    def reserve(self) -> float:
        """Seconds kept after the final training: for the test and the results."""
        return max(RESERVE_MIN_SECONDS, RESERVE_SHARE * self.total, self.after_final)

    @property
    def search_end(self) -> float:
        return self.started + self.search_share * self.total - self.spent_before

    @property
    def final_end(self) -> float:
        """When the final training must have ended."""
        return self.end - self.reserve

    def left(self, until: Optional[float] = None, now: Optional[float] = None) -> float:
        """Seconds from now to `until` (the end by default), never below 0."""
        now = time.time() if now is None else now
        return max(0.0, (self.end if until is None else until) - now)

    def spent(self, now: Optional[float] = None) -> float:
        """Seconds of the budget spent so far, this run and earlier ones."""
        now = time.time() if now is None else now
        return self.spent_before + now - self.started

    def progress(self, phase: str, phase_start: float, phase_end: float,
                 now: Optional[float] = None) -> str:
        """`search 1:40 of 2:00` (how far into a phase, of its length)."""
        now = time.time() if now is None else now
        return (f"{phase} {format_duration(now - phase_start)} of "
                f"{format_duration(phase_end - phase_start)}")
