"""The moesim microbenchmark suite as pytest-benchmark tests (not collected by ``pytest tests/``).

Run and feed to calibration (see ``benchmarks/conftest.py`` for the options)::

    pytest benchmarks/test_microbench.py --moesim-quick --benchmark-json=mb.json
    moesim calibrate --from-json mb.json --out hardware_profiles/calibrated/NAME.yaml
"""
from __future__ import annotations

import tempfile
from pathlib import Path


def _run(benchmark, measure):
    """One round of a moesim measurement; its records go into ``extra_info``."""
    records = benchmark.pedantic(measure, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info["moesim_records"] = [r.to_dict() for r in records]
    assert records and all(r.stats.median_s > 0 for r in records)


def test_op_overhead(benchmark, suite):
    from moesim.harness.microbench.ops import measure_op_overhead

    _run(benchmark, lambda: measure_op_overhead(suite.ctx, suite.plan.ops_per_sample))


def test_layer_ops(benchmark, suite, ops_case):
    from moesim.harness.microbench.ops import measure_layer_ops

    dtype, tokens = ops_case
    hidden, ffn, experts, top_k = suite.plan.op_model
    _run(benchmark, lambda: measure_layer_ops(suite.ctx, dtype, tokens, hidden, ffn, experts,
                                              top_k))


def test_copy(benchmark, suite, copy_size):
    from moesim.harness.microbench.ops import measure_copy

    _run(benchmark, lambda: [measure_copy(suite.ctx, copy_size)])


def test_gemm(benchmark, suite, gemm_case):
    from moesim.harness.microbench.gemm import measure_dense

    dtype, shape = gemm_case
    tokens = [m for s, m in suite.plan.gemm_points(dtype) if s == shape]
    _run(benchmark, lambda: measure_dense(suite.ctx, dtype, shape, tokens))


def test_grouped_gemm(benchmark, suite, grouped_case):
    from moesim.harness.microbench.gemm import measure_grouped

    dtype, experts, m, shape = grouped_case
    _run(benchmark, lambda: measure_grouped(suite.ctx, dtype, experts, m, shape))


def test_alltoall(benchmark, suite, a2a_world):
    from moesim.harness.alltoall import launch_local

    plan = suite.plan

    def measure():
        with tempfile.TemporaryDirectory() as tmp:
            return launch_local(a2a_world, Path(tmp) / "a2a.json", sizes=plan.a2a_bytes,
                                uneven_sizes=plan.a2a_uneven_bytes, hidden=plan.a2a_hidden,
                                dtype=plan.a2a_dtype, quick=suite.quick).records
    _run(benchmark, measure)
