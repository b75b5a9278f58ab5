"""pytest-benchmark options for the moesim microbenchmark suite (``test_microbench.py``).

    pytest benchmarks/test_microbench.py --moesim-device cpu --moesim-quick \
        --benchmark-json results/microbench.json
    moesim calibrate --from-json results/microbench.json --out hardware_profiles/calibrated/X.yaml

Each benchmark stores its records (median, spread, shape) in ``extra_info["moesim_records"]``;
the device facts go into ``machine_info["moesim_provenance"]``. pytest-benchmark's own statistics
time one whole measurement (one round); the timing that counts is moesim's ``bench``.
"""
from __future__ import annotations

import shlex
import sys

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("moesim", "moesim microbenchmarks")
    group.addoption("--moesim-device", default="cpu", help="cpu | cuda | cuda:N")
    group.addoption("--moesim-quick", action="store_true", help="the --quick plan")
    group.addoption("--moesim-threads", type=int, default=None, help="CPU torch threads")
    group.addoption("--moesim-base", default=None, help="datasheet profile (cache size, dtypes)")


class Suite:
    """Device, plan and measurement context shared by the benchmarks of one session."""

    def __init__(self, config):
        from moesim.calibration.session import default_base
        from moesim.config import load_profile
        from moesim.harness.device import device_facts, parse_device, set_threads
        from moesim.harness.microbench.common import TORCH_DTYPES, Context, dtype_works
        from moesim.harness.microbench.plan import make_plan

        self.device = parse_device(config.getoption("--moesim-device"))
        self.threads = set_threads(self.device, config.getoption("--moesim-threads"))
        self.facts = device_facts(self.device)
        self.base = load_profile(config.getoption("--moesim-base") or default_base(self.facts))
        dtypes = tuple(d for d in ("bf16", "fp16", "fp32") if d in TORCH_DTYPES
                       and d in self.base.compute.peak_flops_per_s and dtype_works(d, self.device))
        self.quick = config.getoption("--moesim-quick")
        self.plan = make_plan(self.device.type, self.quick, dtypes)
        self.ctx = Context(self.device, self.plan.bench, self.base.memory.l2_bytes)

    def provenance(self) -> dict:
        return {"device_facts": self.facts, "quick": self.quick, "torch_threads": self.threads,
                "base_profile": self.base.name, "command": shlex.join(sys.argv)}


_SUITE: dict = {}


def suite_for(config) -> Suite:
    if "suite" not in _SUITE:
        _SUITE["suite"] = Suite(config)
    return _SUITE["suite"]


@pytest.fixture(scope="session")
def suite(request) -> Suite:
    return suite_for(request.config)


def pytest_generate_tests(metafunc):
    """Parametrise the benchmarks from the plan of the chosen device and mode."""
    names = set(metafunc.fixturenames)
    if not names & {"gemm_case", "grouped_case", "ops_case", "copy_size", "a2a_world"}:
        return
    plan = suite_for(metafunc.config).plan
    if "gemm_case" in names:
        cases = [(d, s) for d in plan.dtypes for s in plan.gemm_shapes]
        metafunc.parametrize("gemm_case", cases, ids=[f"{d}-{s.key}" for d, s in cases])
    if "grouped_case" in names:
        cases = [(d, e, m, s) for d in plan.dtypes for e, m, s in plan.grouped]
        metafunc.parametrize("grouped_case", cases,
                             ids=[f"{d}-e{e}-m{m}-{s.key}" for d, e, m, s in cases])
    if "ops_case" in names:
        cases = [(d, t) for d in plan.dtypes for t in plan.op_sizes]
        metafunc.parametrize("ops_case", cases, ids=[f"{d}-t{t}" for d, t in cases])
    if "copy_size" in names:
        metafunc.parametrize("copy_size", plan.copy_bytes,
                             ids=[f"{b // 2**20}MiB" for b in plan.copy_bytes])
    if "a2a_world" in names:
        metafunc.parametrize("a2a_world", plan.a2a_world_sizes,
                             ids=[f"ranks{w}" for w in plan.a2a_world_sizes])


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    if "suite" in _SUITE:
        machine_info["moesim_provenance"] = _SUITE["suite"].provenance()
