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
PARTS = ("null", "independent", "power", "million")


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
