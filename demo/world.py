"""The demo's simulated world: four weeks of card-fraud traffic in six-hour windows, in three
phases: a baseline, a covariate shift (card holders pay farther from home; the fraud rule is the
same) and concept drift (a fraud wave of skimmed cards used contactless: the relationship
changes, the inputs barely do). The same seed gives the same traffic and labels."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from data.schema import FeatureSchema
from data.synthetic import fraud_probability, generate_transactions

SLOT = timedelta(hours=6)
WINDOWS_PER_DAY = 4
LABEL_SHARE_IN_WINDOW = 0.6
SINGLE_REQUESTS = 40
SHIFT_FEATURE = "distance_from_home_km"
SHIFT_FACTOR = 2.5
FRAUD_WAVE = 1.0
BASELINE, SHIFT, CONCEPT = "baseline", "covariate shift", "concept drift"


@dataclass(frozen=True)
class Scenario:
    """How long each phase lasts, how much traffic, which seed."""

    days: tuple[int, int, int] = (7, 7, 14)  # baseline, covariate shift, concept drift
    rows_per_window: int = 300
    seed: int = 42
    base_rows: int = 20_000
    # 0: LABEL_SHARE_IN_WINDOW of a window's labels within it, the rest one window later. N > 0:
    # every label N days after its window (chargebacks), as `labelled_at` says.
    label_delay_days: float = 0.0

    @property
    def label_delay_windows(self) -> int:
        return round(self.label_delay_days * WINDOWS_PER_DAY)

    @property
    def windows(self) -> int:
        return sum(self.days) * WINDOWS_PER_DAY

    def phase(self, window: int) -> str:
        day = window // WINDOWS_PER_DAY
        if day < self.days[0]:
            return BASELINE
        return SHIFT if day < self.days[0] + self.days[1] else CONCEPT

    def phase_starts(self) -> list[dict[str, Any]]:
        starts = [0, self.days[0], self.days[0] + self.days[1]]
        return [
            {"name": name, "start_window": day * WINDOWS_PER_DAY}
            for name, day in zip((BASELINE, SHIFT, CONCEPT), starts, strict=True)
        ]

    def traffic(self, window: int, start: datetime, schema: FeatureSchema) -> pd.DataFrame:
        """The window's transactions, with the labels the world gives them."""
        phase = self.phase(window)
        seed = self.seed * 100_000 + window
        pattern = "contactless" if phase == CONCEPT else "card_not_present"
        frame = generate_transactions(
            self.rows_per_window,
            seed=seed,
            start=start.isoformat(),
            days=SLOT / timedelta(days=1),
            pattern=pattern,
        )
        if phase != BASELINE:
            # A covariate shift: card holders pay SHIFT_FACTOR times farther from home, the same
            # factor in every window (a stationary new world), and the labels follow the same
            # rule on the moved inputs (drawn again): only the concept phase changes the rule.
            frame[SHIFT_FEATURE] = (frame[SHIFT_FEATURE] * SHIFT_FACTOR).round(1)
            chance = fraud_probability(frame, pattern)
            if phase == CONCEPT:  # and a fraud wave: FRAUD_WAVE more log-odds of fraud
                chance = 1 / (1 + np.exp(-(np.log(chance / (1 - chance)) + FRAUD_WAVE)))
            draw = np.random.default_rng(seed).random(len(frame))
            frame[schema.target] = (draw < chance).astype(int)
        return frame


def simulated_start(days: int) -> datetime:
    """Midnight UTC `days` days before today: the replayed weeks end where today begins."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)
