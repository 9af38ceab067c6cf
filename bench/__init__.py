"""The benchmark suite: the registry side by side with raw Thespian and Redis, in one run.

    python -m bench            # the full run (under 15 minutes on 2 cores)
    python -m bench --quick    # while developing (under 2 minutes)
    python -m bench --help     # --only, --out, --plot, --update-docs, ...

Each module is one family of benchmarks (``round_trips``, ``pingpong``, ``fast_path``,
``redis_ref``, ``scale``, ``supervision``, ``cluster``); :mod:`bench.runner` runs them,
draws the progress bar, prints the table and writes ``bench/results/latest.json``.
BENCHMARKS.md explains every figure. Benchmarks are not tests: nothing here asserts
a timing; ``tests/integration/test_bench_smoke.py`` checks that the suite runs.
"""
