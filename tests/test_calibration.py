"""Calibration: fits recover known parameters from noisy synthetic measurements; a calibrated
profile round-trips through YAML and drives `moesim predict`; the CLI fails clearly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from moesim.calibration import comm_fit, gemm_fit, stream_fit
from moesim.calibration.calibrate import Options, calibrate
from moesim.calibration.fit import (
    curve_table,
    error_summary,
    fit_alpha_beta,
    fit_rate,
    holdout_mask,
    interp_log,
)
from moesim.calibration.profile_writer import write_profile
from moesim.cli import main
from moesim.config import ConfigError, load_profile
from moesim.harness.alltoall import split_rows, traffic_bytes
from moesim.harness.records import FORMAT, Measurements, Record
from moesim.harness.stats import Stats

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(7)
NOISE = 0.03  # multiplicative, uniform +-3 %


def noisy(t: float) -> Stats:
    return Stats.from_samples(t * (1 + RNG.uniform(-NOISE, NOISE, size=9)))


# --- generic fits ----------------------------------------------------------------------------

def test_alpha_beta_recovered_from_noisy_points():
    x = np.geomspace(1e3, 3e8, 12)
    t = (250e-6 + x / 0.9e9) * (1 + RNG.uniform(-NOISE, NOISE, x.size))
    fit = fit_alpha_beta(x, t)
    assert fit.alpha_s == pytest.approx(250e-6, rel=0.05)
    assert fit.rate == pytest.approx(0.9e9, rel=0.05)
    with pytest.raises(ValueError):
        fit_alpha_beta([1.0, 1.0], [1.0, 2.0])


def test_rate_fit_tables_and_holdout():
    x = np.geomspace(1e5, 1e9, 9)
    assert fit_rate(x, 4e-6 + x / 3e10, fixed_s=4e-6) == pytest.approx(3e10, rel=1e-9)
    table = curve_table([1, 1, 2, 4], [0.1, 0.3, 2.0, 0.5])
    assert table == [(1.0, 0.2), (2.0, 1.0), (4.0, 0.5)]
    assert interp_log(table, [np.sqrt(2) * 2, 100])[1] == 0.5
    assert holdout_mask(["a", "b", "c", "d", "e", "d"]).tolist() == [0, 0, 0, 1, 0, 1]
    assert error_summary([1.1, 0.9], [1.0, 1.0])["mean_abs_pct"] == 10.0


# --- synthetic device and its records ---------------------------------------------------------

TRUE_EFF = [(1, 0.04), (4, 0.12), (16, 0.3), (64, 0.55), (256, 0.75), (1024, 0.8)]
LAUNCH = 2e-6
MEM = 30e9  # effective bytes/s of streaming kernels (the 'stream' source)
DEV = gemm_fit.GemmDevice({"fp32": 2 * 100e9}, units=2, tile_m=1, tile_n=32,
                          mem_bytes_per_s=1e15, launch_s=LAUNCH)
SHAPES = [(512, 2048), (1024, 512), (768, 2048), (2048, 1536), (1024, 4096), (2048, 2048),
          (4096, 1024), (2048, 7168)]
MS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


def gemm_records(dev=DEV) -> list[Record]:
    out = []
    for k, n in SHAPES:
        t = gemm_fit.predict(dev, "fp32", TRUE_EFF, MS, k, n)
        out += [Record("gemm", {"dtype": "fp32", "m": m, "k": k, "n": n}, noisy(ti))
                for m, ti in zip(MS, t)]
    return out


def test_gemm_efficiency_curve_recovered():
    fit = gemm_fit.fit_gemm(DEV, gemm_records())
    got = dict(fit.tables["fp32"])
    for m in MS:
        assert got[m] == pytest.approx(float(interp_log(TRUE_EFF, m)), rel=0.04)
    q = fit.quality["fp32"]
    assert q["holdout"]["mean_abs_pct"] < 3 and q["in_sample"]["mean_abs_pct"] < 3
    assert q["holdout_shapes"] == ["1024x4096", "4096x1024"] and q["clipped_at_1"] == 0


def test_gemm_table_is_keyed_where_the_model_reads_it():
    dev = gemm_fit.GemmDevice({"fp32": 1e11}, 2, tile_m=8, tile_n=32, mem_bytes_per_s=1e15,
                              launch_s=0.0)
    recs = [Record("gemm", {"dtype": "fp32", "m": m, "k": 512, "n": 512}, noisy(1e-3 * m))
            for m in (1, 4, 8, 16)]
    fit = gemm_fit.fit_gemm(dev, recs)
    assert [x for x, _ in fit.tables["fp32"]] == [8.0, 16.0]  # M = 1..8 share one tile


def test_memory_bound_points_are_counted_and_the_weight_rate_found():
    slow_mem = gemm_fit.GemmDevice(DEV.peaks, 2, 1, 32, mem_bytes_per_s=5e9, launch_s=LAUNCH)
    recs = gemm_records(slow_mem)
    assert gemm_fit.max_stream_rate(recs, LAUNCH) == pytest.approx(5e9, rel=0.05)
    fast = gemm_fit.fit_gemm(gemm_fit.GemmDevice(DEV.peaks, 2, 1, 32, 1e10, LAUNCH), recs)
    assert fast.quality["fp32"]["memory_overpredicted"] == 0
    too_slow = gemm_fit.fit_gemm(gemm_fit.GemmDevice(DEV.peaks, 2, 1, 32, 2e9, LAUNCH), recs)
    assert too_slow.quality["fp32"]["memory_overpredicted"] > 0


def stream_records() -> list[Record]:
    out = [Record("op_overhead", {"op": op, "ops_per_sample": 100}, noisy(LAUNCH * f))
           for op, f in (("add", 0.8), ("mul", 1.0), ("topk", 1.2))]
    for size in (64 << 20, 256 << 20):
        out.append(Record("copy", {"dtype": "fp32", "bytes": 2.0 * size, "size_bytes": size},
                          noisy(LAUNCH + 2.0 * size / 40e9)))
    for kind in stream_fit.STREAM_KINDS:
        for tokens in (16, 256, 4096):
            nbytes = tokens * 2 * 1024 * 4.0
            t = stream_fit.MODEL_LAUNCHES[kind] * LAUNCH + nbytes / MEM
            params = {"dtype": "fp32", "tokens": tokens, "hidden": 1024, "experts": 8,
                      "top_k": 2, "ffn": 1024, "bytes": nbytes}
            out.append(Record(kind, params, noisy(t)))
    return out


def test_launch_overhead_and_bandwidths_recovered():
    recs = stream_records()
    launch, per_op = stream_fit.launch_overhead([r for r in recs if r.kind == "op_overhead"])
    assert launch == pytest.approx(LAUNCH, rel=0.05) and set(per_op) == {"add", "mul", "topk"}
    assert stream_fit.copy_rate([r for r in recs if r.kind == "copy"], LAUNCH) == \
        pytest.approx(40e9, rel=0.05)
    assert stream_fit.stream_rate(recs, LAUNCH) == pytest.approx(MEM, rel=0.05)


def alltoall_records(alpha=300e-6, rate=0.9e9, alpha4=2e-3) -> list[Record]:
    out = []
    for world, a in ((2, alpha), (4, alpha4)):
        for pattern, sizes in (("even", [1 << (10 + 2 * i) for i in range(8)]),
                               ("uneven", [1 << 16, 1 << 20])):
            for size in sizes:
                rows = split_rows(pattern, world, size, 512.0)
                params = {"pattern": pattern, "world_size": world, "nodes": 1,
                          "target_bytes": size, "rows": rows.tolist(),
                          **traffic_bytes(rows, 512.0, np.zeros(world, dtype=int))}
                rec = Record("alltoall", params, Stats.from_samples([1.0]))
                t = a + comm_fit.critical_bytes(rec, "intra") / rate
                out.append(Record("alltoall", params, noisy(t)))
    return out


def test_alltoall_alpha_beta_per_world_size():
    link = comm_fit.fit_link(alltoall_records(), "intra")
    assert link.world_size == 2
    assert link.fit.alpha_s == pytest.approx(300e-6, rel=0.05)
    assert link.fit.rate == pytest.approx(0.9e9, rel=0.05)
    four = link.quality["per_world_size"]["4"]
    assert four["alpha_s"] == pytest.approx(2e-3, rel=0.05)
    assert link.quality["holdout"]["mean_abs_pct"] < 5 and link.quality["uneven"]["n"] == 2
    assert comm_fit.fit_link(alltoall_records(), "inter") is None
    assert comm_fit.fit_link(alltoall_records(), "intra", world_size=4).world_size == 4


def test_split_rows_even_and_uneven_bytes():
    even = split_rows("even", 4, 3 * 1024, 256.0)
    assert (even == 4).all()
    t = traffic_bytes(even, 256.0, np.zeros(4, dtype=int))
    assert t["send_intra"] == [3072.0] * 4 and t["send_inter"] == [0.0] * 4
    t2 = traffic_bytes(even, 256.0, np.array([0, 0, 1, 1]))
    assert t2["send_inter"] == [2048.0] * 4 and t2["recv_intra"] == [1024.0] * 4
    uneven = split_rows("uneven", 4, 1 << 20, 256.0, seed=1)
    assert len(set(uneven[0].tolist())) > 1 and (uneven >= 1).all()


# --- whole calibration: synthetic measurements -> profile -> YAML -> load -> predict -----------

def synthetic_measurements() -> Measurements:
    cpu = load_profile("cpu")
    dev = gemm_fit.GemmDevice({d: p for d, p in cpu.compute.peak_flops_per_s.items()}, 2, 1,
                              cpu.compute.gemm_tile_n, 1e15, LAUNCH)
    recs = gemm_records(dev) + stream_records() + alltoall_records()
    recs += [Record("grouped_gemm", {"dtype": "fp32", "impl": impl, "experts": 8, "m": 4,
                                     "k": 512, "n": 2048}, noisy(t))
             for impl, t in (("grouped", 1e-3), ("loop", 1.1e-3))]
    facts = {"device_type": "cpu", "torch_threads": 2, "cpu_model": "Test CPU", "torch": "x"}
    return Measurements(recs, {"device_facts": facts, "date": "2026-01-01T00:00:00+00:00"},
                        "synthetic.json")


@pytest.fixture
def cpu_doc():
    return calibrate(synthetic_measurements(), load_profile("cpu"),
                     Options(name="cpu-test", base_ref="cpu", command="pytest"))


def test_calibrated_cpu_profile_round_trips_through_yaml(tmp_path, cpu_doc):
    out = tmp_path / "calibrated" / "cpu-test.yaml"
    profile = write_profile(cpu_doc, out, ["test header"])
    assert out.read_text().startswith("# test header\n")
    again = load_profile(out)
    assert again == profile and again.kind == "calibrated" and again.name == "cpu-test"
    base = load_profile("cpu")
    assert again.compute.peak_flops_per_s == base.compute.peak_flops_per_s  # base peaks kept
    assert again.compute.launch_overhead_s == pytest.approx(LAUNCH, rel=0.05)
    assert again.compute.units == 2 and again.compute.gemm_tile_m == 1
    assert again.compute.grouped_gemm is True
    assert again.scale_up.domain_size == 4
    assert again.scale_up.latency_s == pytest.approx(300e-6 - LAUNCH, rel=0.06)
    assert again.efficiency.gemm.basis == "measured"
    table = cpu_doc["efficiency"]["gemm"]["by_dtype"]["fp32"]
    assert again.efficiency.gemm.by_dtype["fp32"] == [tuple(p) for p in table]
    mem = again.memory.bandwidth_bytes_per_s * again.efficiency.memory_bandwidth.value
    assert mem == pytest.approx(MEM, rel=0.05)
    assert again.provenance["device_facts"]["cpu_model"] == "Test CPU"
    assert again.provenance["command"] == "pytest" and "moesim" in again.provenance
    assert again.fit_quality["gemm"]["fp32"]["holdout"]["mean_abs_pct"] < 5
    assert set(again.fit_quality["scale_up"]["per_world_size"]) == {"2", "4"}
    assert again.fit_quality["scale_out"]["copied_from_scale_up"] is True


def test_calibrated_profile_drives_predict(tmp_path, cpu_doc, capsys):
    out = tmp_path / "cpu-test.yaml"
    write_profile(cpu_doc, out, [])
    args = ["predict", "-m", "qwen3-30b-a3b", "--hardware", str(out), "--tokens", "64",
            "--weight-dtype", "fp32", "--ep", "2", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["time_s"] > 0


def test_threads_change_units_and_scale_peaks(cpu_doc):
    meas = synthetic_measurements()
    meas.provenance["device_facts"]["torch_threads"] = 1
    doc = calibrate(meas, load_profile("cpu"), Options(name="x", base_ref="cpu"))
    base = load_profile("cpu").compute.peak_flops_per_s
    assert doc["compute"]["units"] == 1
    assert doc["compute"]["peak_flops_per_s"]["fp32"] == pytest.approx(base["fp32"] / 2)


def test_writer_refuses_self_base_and_removes_invalid_files(tmp_path, cpu_doc):
    with pytest.raises(ConfigError, match="may not share its base's name"):
        write_profile(cpu_doc, tmp_path / "cpu.yaml", [])
    bad = {**cpu_doc, "compute": {**cpu_doc["compute"], "units": 0}}
    with pytest.raises(ConfigError, match="compute.units"):
        write_profile(bad, tmp_path / "bad.yaml", [])
    assert not (tmp_path / "bad.yaml").exists()


# --- CLI -------------------------------------------------------------------------------------

def test_cli_calibrate_from_json(tmp_path, capsys):
    src = synthetic_measurements().write(tmp_path / "m.json")
    out = tmp_path / "cal" / "cpu-x.yaml"
    assert main(["calibrate", "--from-json", str(src), "--out", str(out),
                 "--raw-out", str(tmp_path / "raw")]) == 0
    printed = capsys.readouterr().out
    assert "wrote cpu-x (base cpu)" in printed
    assert json.loads(printed.strip().splitlines()[-1])["profile"] == "cpu-x"
    assert load_profile(out).kind == "calibrated"
    assert (tmp_path / "raw" / "gemm.csv").exists() and (tmp_path / "raw" / "fit.json").exists()
    assert yaml.safe_load(out.read_text())["provenance"]["command"].startswith("moesim ")


def test_cli_malformed_json_fails_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": FORMAT, "records": [{"kind": "gemm", "params": {},
                                                              "stats": {}}]}))
    assert main(["calibrate", "--from-json", str(bad), "--out", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "records[0].params.dtype" in err and "expected" in err


def test_cli_missing_cuda_fails_clearly(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("checks the no-CUDA error")
    assert main(["calibrate", "--device", "cuda:0", "--out", str(tmp_path / "g.yaml")]) == 2
    err = capsys.readouterr().err
    assert "'--device'" in err and "cuda:0" in err and "no CUDA" in err


def test_cli_help_and_bad_out(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--help"])
    assert exc.value.code == 0
    assert main(["calibrate", "--from-json", "x.json", "--out", str(tmp_path / "p.txt")]) == 2
    assert "expected a .yaml path" in capsys.readouterr().err


@pytest.mark.slow
def test_pytest_benchmark_suite_feeds_calibration(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("pytest_benchmark")
    out = tmp_path / "pb.json"
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "benchmarks" / "test_microbench.py"),
           "-q", "-p", "no:cacheprovider", "--moesim-quick", "-k", "op_overhead",
           f"--benchmark-json={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    prof = tmp_path / "cpu-pb.yaml"
    assert main(["calibrate", "--from-json", str(out), "--out", str(prof)]) == 0
    p = load_profile(prof)
    assert 0 < p.compute.launch_overhead_s < 1e-4
    assert p.provenance["device_facts"]["device_type"] == "cpu"
