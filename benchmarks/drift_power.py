"""Benchmark: how often the drift and quality checks raise a false alarm, and how often they
find drift that is there.

The fraud example's data (`data.synthetic`) against a hold-out-sized reference (10,000 rows,
every value kept, as `REFERENCE_SAMPLE_SIZE` keeps them), with the schema's min / max bounds
removed: the case of a schema that sets none, where the quality check has nothing to compare
with unless it takes the bounds from the reference. Drift comes from the project's injector
(`data.drift_injector`), whose unit is the current column's standard deviation (σ).

- `null`: undrifted windows of 500, 5,000 and 100,000 rows; the share of reports with a feature
  drifted, of feature tests drifted, and of windows where the quality check `out_of_range` is
  not ok.
- `independent`: the test suite's panel (LESSONS.md 7): 25 normal and 5 categorical
  independent features, a 500-row reference against 500-row windows.
- `power`: one feature at a time (`amount`, log-normal; `customer_age`, near-normal with 1%
  missing) gets 10% of its values 10-20σ beyond the observed maximum (out_of_range 0.1), a
  spread 1.2 times wider (variance_change 0.1), or a mean shift of 0.1σ or 0.5σ (mean_shift
  0.05, 0.25); the share of windows where that feature is drifted, critical, another feature is
  drifted, and `out_of_range` reports that feature.
- `million`: a trivial shift a large sample makes significant, 1,000,000 rows against a
  1,000,000-row reference: +0.02σ on every numerical feature of the fraud data, and on one
  standard normal column (LESSONS.md 7); the features drifted and critical.

- `multivariate`: the multivariate check (`monitoring.multivariate_drift`, a domain classifier)
  beside the univariate tests, on the fraud data and on penguins (`schemas/penguins.yaml`; the
  344 real penguins resampled with a little noise, `penguin_rows`, since they are too few for
  5,000-row windows): no drift, and every injector kind, at 500 and 5,000 rows (no drift also
  at 100,000); per case the share of windows the multivariate check flags, the share where a
  univariate test flags a feature, and the share PCA reconstruction error (NannyML's method,
  `PcaReconstruction`, the alternative measured against it) flags. Joint kinds: a correlation
  flip (correlation_flip 1.0: every column keeps its values) and a new cluster (new_cluster
  0.1: 10% of the rows in a corner of a correlated pair inside both ranges).

Seeds: the reference is `generate_transactions(10_000, seed=1)`; window k of a scenario is
`generate_transactions(n, seed=1_000 + k)`, drifted with `seed=k`; the independent panel's run k
draws reference and window from `default_rng(k)`; the 1M cases use seeds 2 (reference) and
3_000 + k. The same command gives the same figures.

    python -m benchmarks.drift_power                      # everything, about 20 minutes
    python -m benchmarks.drift_power --quick              # a fifth of the seeds
    python -m benchmarks.drift_power --parts null power --json var/drift_power.json

Only public names are read (`drifted`, `severity`, `psi`, `statistic`, and `wasserstein` when the
report has it), so the same script measures the code before and after a change.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from data.drift_injector import inject_drift
from data.ingest import coerce_frame
from data.schema import Feature, FeatureSchema, load_schema
from data.synthetic import generate_transactions
from monitoring.drift_report import DriftThresholds, compute_drift_report, profile_from_frame
from monitoring.quality_report import compute_quality_report

ROOT = Path(__file__).resolve().parent.parent

REFERENCE_ROWS = 10_000
NULL_SEEDS = {500: 2_000, 5_000: 1_000, 100_000: 100}
INDEPENDENT_SEEDS = 2_000
POWER_SIZES = {500: 200, 5_000: 200, 100_000: 20}
POWER_FEATURES = ("amount", "customer_age")
# (label, injector kind, intensity): the injector's unit is 2σ for a mean shift and a growth of
# 1 + 2 × intensity for the spread.
POWER_CASES = (
    ("outliers 10% at 10-20σ", "out_of_range", 0.1),
    ("spread ×1.2", "variance_change", 0.1),
    ("mean +0.1σ", "mean_shift", 0.05),
    ("mean +0.5σ", "mean_shift", 0.25),
)
MILLION = 1_000_000
MILLION_SEEDS = 3
TRIVIAL_SHIFT = 0.01  # mean_shift intensity: 0.02σ
PARTS = ("null", "independent", "power", "million", "multivariate")
# The multivariate part: (label, kind, intensity, feature per schema); None = no drift.
MULTIVARIATE_CASES = (
    ("no drift", None, 0.0, {}),
    ("correlation flip", "correlation_flip", 1.0, {"fraud": "avg_amount_30d"}),
    ("new cluster 10%", "new_cluster", 0.1, {"fraud": "avg_amount_30d"}),
    ("mean +0.5σ", "mean_shift", 0.25, {"fraud": "amount", "penguins": "bill_length_mm"}),
    ("spread ×1.2", "variance_change", 0.1, {"fraud": "customer_age"}),
    ("outliers 10%", "out_of_range", 0.1, {"fraud": "distance_from_home_km"}),
    ("category share +10%", "category_frequency_shift", 0.1, {"fraud": "entry_mode"}),
    ("new category 10%", "new_category", 0.1, {"fraud": "merchant_category"}),
    ("missing 10%", "missing_values", 0.1, {"fraud": "account_age_days"}),
)
PENGUIN_FEATURES = {
    "correlation_flip": "body_mass_g",
    "new_cluster": "body_mass_g",
    "variance_change": "flipper_length_mm",
    "out_of_range": "bill_depth_mm",
    "category_frequency_shift": "island",
    "new_category": "species",
    "missing_values": "bill_length_mm",
}
# Seeds per case: the joint kinds and no drift get more (the bar is 95% / 5%).
MULTIVARIATE_SEEDS = {"joint": 20, "other": 3, "null_100k": 5}


def unbounded_schema() -> FeatureSchema:
    schema = load_schema(ROOT / "schemas" / "fraud.yaml")
    features = tuple(replace(f, min=None, max=None) for f in schema.features)
    return replace(schema, features=features)


def check(profile, raw: pd.DataFrame, schema: FeatureSchema) -> dict:
    current = coerce_frame(raw, schema, require_target=False)
    report = compute_drift_report(profile, current, schema, thresholds=DriftThresholds())
    times = pd.to_datetime(current[schema.timestamp], utc=True)
    quality = compute_quality_report(
        current, schema, window_start=times.min(), window_end=times.max(), reference=profile
    )
    out_of_range = quality.check("out_of_range")
    return {
        "features": {
            name: {
                "drifted": f.drifted,
                "severity": f.severity,
                "psi": f.psi,
                "ks": f.statistic,
                "wasserstein": getattr(f, "wasserstein", None),
            }
            for name, f in report.features.items()
        },
        "out_of_range": {
            "level": out_of_range.level,
            "features": {
                name: detail.get("level") for name, detail in out_of_range.details.items()
            },
        },
    }


def null_scenario(profile, schema: FeatureSchema, n: int, seeds: int) -> dict:
    flagged_reports = flagged_tests = tests = quality_alarms = 0
    started = time.perf_counter()
    for k in range(seeds):
        result = check(profile, generate_transactions(n, seed=1_000 + k), schema)
        drifted = [f["drifted"] for f in result["features"].values()]
        flagged_reports += any(drifted)
        flagged_tests += sum(drifted)
        tests += len(drifted)
        quality_alarms += result["out_of_range"]["level"] != "ok"
    return {
        "rows": n,
        "runs": seeds,
        "reports_with_a_drifted_feature": flagged_reports / seeds,
        "feature_tests_drifted": flagged_tests / tests,
        "out_of_range_not_ok": quality_alarms / seeds,
        "seconds": round(time.perf_counter() - started, 1),
    }


def independent_null(seeds: int) -> dict:
    features = [Feature(f"x{i}", "numerical") for i in range(25)]
    features += [Feature(f"c{i}", "categorical") for i in range(5)]
    schema = FeatureSchema(name="independent", target="y", features=tuple(features))
    letters = np.array(list("abcde"), dtype=object)

    def frame(rng: np.random.Generator) -> pd.DataFrame:
        data = {f"x{i}": rng.normal(size=500) for i in range(25)}
        return pd.DataFrame(data | {f"c{i}": letters[rng.integers(0, 5, 500)] for i in range(5)})

    flagged = dataset = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        report = compute_drift_report(frame(rng), frame(rng), schema, thresholds=DriftThresholds())
        flagged += bool(report.drifted_features)
        dataset += report.dataset_drift
    return {
        "rows": 500,
        "runs": seeds,
        "reports_with_a_drifted_feature": flagged / seeds,
        "dataset_drift": dataset / seeds,
    }


def power_scenario(profile, schema, feature, kind, intensity, n, seeds) -> dict:
    found = critical = others = quality = 0
    effect: dict[str, list[float]] = {"psi": [], "ks": [], "wasserstein": []}
    for k in range(seeds):
        raw = inject_drift(
            generate_transactions(n, seed=1_000 + k),
            kind,
            schema=schema,
            feature=feature,
            intensity=intensity,
            seed=k,
        )
        result = check(profile, raw, schema)
        target = result["features"][feature]
        found += target["drifted"]
        critical += target["severity"] == "critical"
        others += any(f["drifted"] for name, f in result["features"].items() if name != feature)
        quality += result["out_of_range"]["features"].get(feature, "ok") != "ok"
        for key in effect:
            if target[key] is not None:
                effect[key].append(target[key])
    return {
        "feature": feature,
        "kind": kind,
        "intensity": intensity,
        "rows": n,
        "runs": seeds,
        "drifted": found / seeds,
        "critical": critical / seeds,
        "another_feature_drifted": others / seeds,
        "out_of_range_not_ok": quality / seeds,
        "median": {key: float(np.median(v)) if v else None for key, v in effect.items()},
    }


def _trivial_shift_run(report, names: list[str]) -> dict:
    features = {name: report.features[name] for name in names}
    return {
        "drifted": sorted(name for name, f in features.items() if f.drifted),
        "critical": sorted(name for name, f in features.items() if f.severity == "critical"),
        "psi": {name: f.psi for name, f in features.items()},
        "wasserstein": {name: getattr(f, "wasserstein", None) for name, f in features.items()},
    }


def million_scenario(schema: FeatureSchema, seeds: int) -> dict:
    reference = coerce_frame(generate_transactions(MILLION, seed=2), schema, require_target=False)
    profile = profile_from_frame(reference, schema)
    del reference
    numerical = [f.name for f in schema.numerical]
    fraud = []
    for k in range(seeds):
        raw = generate_transactions(MILLION, seed=3_000 + k)
        for name in numerical:
            raw = inject_drift(
                raw, "mean_shift", schema=schema, feature=name, intensity=TRIVIAL_SHIFT, seed=k
            )
        current = coerce_frame(raw, schema, require_target=False)
        report = compute_drift_report(profile, current, schema, thresholds=DriftThresholds())
        fraud.append(_trivial_shift_run(report, numerical))
    normal = FeatureSchema(name="normal", target="y", features=(Feature("x", "numerical"),))
    rng = np.random.default_rng(2)
    reference = pd.DataFrame({"x": rng.normal(0, 1, MILLION)})
    current = pd.DataFrame({"x": rng.normal(0.02, 1, MILLION)})
    report = compute_drift_report(reference, current, normal, thresholds=DriftThresholds())
    return {"rows": MILLION, "fraud": fraud, "normal": _trivial_shift_run(report, ["x"])}


def penguin_rows(n: int, seed: int) -> pd.DataFrame:
    """`n` penguins drawn with replacement from the 333 complete ones of the `palmerpenguins`
    data, each measurement moved by noise of 5% of its standard deviation (a smoothed
    bootstrap: the real joint distribution, as many rows as wanted, few exact repeats)."""
    from palmerpenguins import load_penguins

    penguins = load_penguins().dropna().reset_index(drop=True)
    rng = np.random.default_rng(seed)
    rows = penguins.iloc[rng.integers(0, len(penguins), n)].reset_index(drop=True)
    for name in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
        noise = rng.normal(0, 0.05 * penguins[name].std(), n)
        rows[name] = (rows[name] + noise).round(1)
    return rows


class PcaReconstruction:
    """NannyML's multivariate drift, for comparison: PCA keeping 65% of the variance of the
    standardized numerics and one-hot categories, fitted on half the reference's joint sample;
    a window drifted when its mean reconstruction error passes the 99th percentile of the mean
    error of 1,000 bootstrap chunks of its size from the other half."""

    def __init__(self, profile, schema: FeatureSchema) -> None:
        joint = pd.DataFrame(profile.joint_sample)
        self.schema = schema
        self.categories = {
            f.name: sorted(joint[f.name].dropna().unique())
            for f in schema.features
            if not (f.is_numerical or f.is_boolean)
        }
        numbers = [f.name for f in schema.features if f.is_numerical or f.is_boolean]
        self.numbers = numbers
        values = joint[numbers].astype(float)
        self.mean, self.scale = values.mean(), values.std().replace(0, 1)
        x = self.encode(joint)
        half = len(x) // 2
        _, singular, vt = np.linalg.svd(x[:half] - x[:half].mean(0), full_matrices=False)
        share = np.cumsum(singular**2) / np.sum(singular**2)
        self.center = x[:half].mean(0)
        self.components = vt[: int(np.searchsorted(share, 0.65)) + 1]
        self.errors = self.error(x[half:])
        self._thresholds: dict[int, float] = {}

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        numbers = (frame[self.numbers].astype(float) - self.mean) / self.scale
        parts = [numbers.fillna(0.0).to_numpy()]
        for name, categories in self.categories.items():
            labels = frame[name].astype("string")
            parts.append(np.column_stack([(labels == c).fillna(False) for c in categories]))
        return np.column_stack(parts).astype(float)

    def error(self, x: np.ndarray) -> np.ndarray:
        centred = x - self.center
        back = centred @ self.components.T @ self.components
        return np.sqrt(((centred - back) ** 2).sum(1))

    def drifted(self, window: pd.DataFrame) -> bool:
        n = min(len(window), 5_000)
        if n not in self._thresholds:
            rng = np.random.default_rng(n)
            means = [rng.choice(self.errors, n).mean() for _ in range(1_000)]
            self._thresholds[n] = float(np.quantile(means, 0.99))
        sample = window.sample(n, random_state=0) if len(window) > n else window
        return float(self.error(self.encode(sample)).mean()) > self._thresholds[n]


def multivariate_part(
    seeds: dict[str, int],
    schemas: tuple[str, ...] = ("fraud", "penguins"),
    kinds: tuple[str | None, ...] | None = None,
) -> list[dict]:
    """The multivariate part; `schemas` and `kinds` (None = no drift) pick a subset."""
    fraud = unbounded_schema()
    penguins = load_schema(ROOT / "schemas" / "penguins.yaml")
    penguins = replace(penguins, features=tuple(replace(f, min=None) for f in penguins.features))
    makers = {
        "fraud": (fraud, lambda n, seed: generate_transactions(n, seed=seed)),
        "penguins": (penguins, penguin_rows),
    }
    rows = []
    for name, (schema, make) in makers.items():
        if name not in schemas:
            continue
        reference = coerce_frame(make(REFERENCE_ROWS, 1), schema, require_target=False)
        profile = profile_from_frame(reference, schema)
        pca = PcaReconstruction(profile, schema)
        for label, kind, intensity, features in MULTIVARIATE_CASES:
            if kinds is not None and kind not in kinds:
                continue
            feature = features.get(name) or PENGUIN_FEATURES.get(kind)
            sizes = (500, 5_000, 100_000) if kind is None else (500, 5_000)
            for n in sizes:
                runs = seeds["null_100k"] if n == 100_000 else seeds["other"]
                if kind in (None, "correlation_flip", "new_cluster") and n < 100_000:
                    runs = seeds["joint"]
                found = univariate = by_pca = 0
                seconds = []
                drivers: dict[str, int] = {}
                for k in range(runs):
                    raw = make(n, 1_000 + k)
                    if kind is not None:
                        raw = inject_drift(
                            raw, kind, schema=schema, feature=feature, intensity=intensity, seed=k
                        )
                    current = coerce_frame(raw, schema, require_target=False)
                    started = time.perf_counter()
                    report = compute_drift_report(
                        profile, current, schema, thresholds=DriftThresholds(), workers=1
                    )
                    seconds.append(time.perf_counter() - started)
                    found += report.multivariate_drift
                    univariate += bool(report.drifted_features)
                    by_pca += pca.drifted(current)
                    for driver in (
                        report.multivariate.drivers[:2] if report.multivariate_drift else ()
                    ):
                        drivers[driver] = drivers.get(driver, 0) + 1
                rows.append(
                    {
                        "schema": name,
                        "label": label,
                        "kind": kind,
                        "feature": feature,
                        "intensity": intensity,
                        "rows": n,
                        "runs": runs,
                        "multivariate": found / runs,
                        "univariate": univariate / runs,
                        "pca": by_pca / runs,
                        "drivers": dict(sorted(drivers.items(), key=lambda d: -d[1])[:3]),
                        "seconds_per_report": round(float(np.median(seconds)), 2),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def _pct(share: float) -> str:
    return f"{share:.1%}"


def _w(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(results: dict) -> str:
    lines = []
    if results["null"]:
        lines += [
            "False alarms, fraud data, no drift:",
            "",
            "| rows | runs | reports with a drifted feature | feature tests drifted "
            "| `out_of_range` not ok |",
            "|---:|---:|---:|---:|---:|",
        ]
        for row in results["null"]:
            lines.append(
                f"| {row['rows']:,} | {row['runs']} "
                f"| {_pct(row['reports_with_a_drifted_feature'])} "
                f"| {_pct(row['feature_tests_drifted'])} | {_pct(row['out_of_range_not_ok'])} |"
            )
    independent = results.get("independent")
    if independent:
        lines += [
            "",
            f"25 normal + 5 categorical features, 500 vs 500 rows, {independent['runs']} runs: "
            f"a drifted feature in {_pct(independent['reports_with_a_drifted_feature'])} of "
            f"reports, dataset drift in {_pct(independent['dataset_drift'])}.",
        ]
    million = results.get("million")
    if million:
        lines += ["", "+0.02σ, 1M rows against a 1M-row reference:"]
        for run in million["fraud"]:
            known = [w for w in run["wasserstein"].values() if w is not None]
            lines.append(
                f"- fraud, all numerical features: drifted {run['drifted'] or 'none'}, "
                f"critical {run['critical'] or 'none'}; largest W {_w(max(known, default=None))}"
            )
        normal = million["normal"]
        lines.append(
            f"- one normal column: drifted {normal['drifted'] or 'none'}, PSI "
            f"{normal['psi']['x']:.4f}, W {_w(normal['wasserstein']['x'])}"
        )
    if results["power"]:
        lines += [
            "",
            "Power, the drifted feature:",
            "",
            "| feature | drift | rows | runs | drifted | critical | other feature drifted "
            "| `out_of_range` flags it | median PSI | median KS | median W |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["power"]:
            median = row["median"]
            lines.append(
                f"| {row['feature']} | {row['label']} | {row['rows']:,} | {row['runs']} "
                f"| {_pct(row['drifted'])} | {_pct(row['critical'])} "
                f"| {_pct(row['another_feature_drifted'])} | {_pct(row['out_of_range_not_ok'])} "
                f"| {median['psi']:.3f} | {median['ks']:.3f} | {_w(median['wasserstein'])} |"
            )
    if results.get("multivariate"):
        lines += [
            "",
            "Multivariate check beside the univariate tests and PCA reconstruction error:",
            "",
            "| schema | drift | feature | rows | runs | multivariate | univariate (any feature) "
            "| PCA reconstruction | drivers named (top 2, runs) | s / report |",
            "|---|---|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for row in results["multivariate"]:
            drivers = ", ".join(f"{k} {v}" for k, v in row["drivers"].items()) or "-"
            lines.append(
                f"| {row['schema']} | {row['label']} | {row['feature'] or '-'} | {row['rows']:,} "
                f"| {row['runs']} | {_pct(row['multivariate'])} | {_pct(row['univariate'])} "
                f"| {_pct(row['pca'])} | {drivers} | {row['seconds_per_report']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fifth of the seeds")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=PARTS, help="run only these (default: all)"
    )
    parser.add_argument("--json", dest="json_out", help="also write the figures here")
    args = parser.parse_args(argv)
    scale = 5 if args.quick else 1
    schema = unbounded_schema()
    reference = coerce_frame(
        generate_transactions(REFERENCE_ROWS, seed=1), schema, require_target=False
    )
    profile = profile_from_frame(reference, schema)
    started = time.perf_counter()
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}",
        "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "null": [],
        "power": [],
    }
    for n, seeds in NULL_SEEDS.items() if "null" in args.parts else ():
        results["null"].append(null_scenario(profile, schema, n, max(1, seeds // scale)))
        print(results["null"][-1], flush=True)
    if "independent" in args.parts:
        results["independent"] = independent_null(INDEPENDENT_SEEDS // scale)
        print(results["independent"], flush=True)
    for feature in POWER_FEATURES if "power" in args.parts else ():
        for label, kind, intensity in POWER_CASES:
            for n, seeds in POWER_SIZES.items():
                row = power_scenario(
                    profile, schema, feature, kind, intensity, n, max(2, seeds // scale)
                )
                results["power"].append({"label": label, **row})
                print(results["power"][-1], flush=True)
    if "multivariate" in args.parts:
        seeds = {key: max(2, value // scale) for key, value in MULTIVARIATE_SEEDS.items()}
        results["multivariate"] = multivariate_part(seeds)
    if "million" in args.parts:
        results["million"] = million_scenario(schema, max(1, MILLION_SEEDS // scale))
        print(results["million"], flush=True)
    results["seconds"] = round(time.perf_counter() - started)
    print()
    print(markdown(results))
    print(f"\n{results['seconds']} s")
    if args.json_out:
        path = Path(args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
