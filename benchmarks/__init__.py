"""The hot paths' benchmarks (`make bench`), run as modules: `python -m benchmarks.bench_api`.
Figures and the machine they were measured on are in BENCHMARKS.md."""
