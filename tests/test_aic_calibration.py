"""Shape-aware efficiency and the AIConfigurator fits, on synthetic tables from a known law."""
from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from moesim.calibration.aic import comm_fit, gemm_fit, moe
from moesim.config import ConfigError, load_profile
from moesim.config.hardware import Efficiency, ShapeGrid
from moesim.config.shape_grid import gemm_grid_efficiency, interp_log_grid

AXES = ([16.0, 256.0, 4096.0], [512.0, 4096.0], [1024.0, 8192.0])


def law(m, n, k):
    """A power law in each dimension: exactly multilinear in log space."""
    return 0.05 * (m / 16.0) ** 0.3 * (n / 512.0) ** 0.1 * (k / 1024.0) ** 0.05


def _grid_values():
    m, n, k = np.meshgrid(*AXES, indexing="ij")
    return law(m, n, k)


def test_grid_interpolation_is_exact_for_a_power_law_and_flat_outside():
    values = _grid_values()
    m = np.array([16.0, 50.0, 300.0, 4096.0])
    got = gemm_grid_efficiency(*AXES, values, m, 2000.0, 3000.0)
    np.testing.assert_allclose(got, law(m, 2000.0, 3000.0), rtol=1e-12)
    beyond = gemm_grid_efficiency(*AXES, values, 1e6, 1e6, 1.0)
    assert beyond == pytest.approx(law(4096.0, 4096.0, 1024.0))


def test_grid_interpolation_broadcasts_rows_by_devices():
    values = np.log(_grid_values())
    m = np.full((3, 4), 100.0)
    n = np.array([[512.0], [1000.0], [4096.0]])
    out = interp_log_grid(tuple(np.asarray(a) for a in AXES), values, (m, n, 1024.0))
    assert out.shape == (3, 4)
    assert (np.diff(out[:, 0]) > 0).all()  # wider N is more efficient under this law


def test_profile_grid_schema_checks_shape_and_reads_aliases():
    grid = {"m": AXES[0], "n": AXES[1], "k": AXES[2], "values": _grid_values().tolist()}
    eff = Efficiency(grid={"bf16": grid}, grid_alias={"fp16": "bf16"}, basis="measured",
                     note="synthetic")
    assert float(eff.at(256.0, "fp16", n=512.0, k=1024.0)) == pytest.approx(law(256, 512, 1024))
    with pytest.raises(ValueError, match=r"expected \(3, 2, 2\)"):
        ShapeGrid(m=AXES[0], n=AXES[1], k=AXES[2], values=[[[0.5]]])
    with pytest.raises(ConfigError, match="no efficiency grid for dtype 'fp8'"):
        eff.at(1.0, "fp8", n=1.0, k=1.0)


def _synthetic_gemm_table(profile, launch_s: float) -> pd.DataFrame:
    """gemm_perf-like rows timed by moesim's own model with efficiency = ``law``."""
    shapes = [(m, n, k) for m in (1, 16, 100, 256, 1000, 4096) for n in (512, 2000, 4096)
              for k in (1024, 3000, 8192)]
    m, n, k = (np.array(v, dtype=float) for v in zip(*shapes))
    compute_s, memory_s = gemm_fit.ideal_times(profile, "bfloat16", m, n, k)
    m_pad = np.ceil(m / profile.compute.gemm_tile_m) * profile.compute.gemm_tile_m
    t = np.maximum(compute_s / law(m_pad, n, k), memory_s) + launch_s
    return pd.DataFrame({"gemm_dtype": "bfloat16", "kernel_source": "synthetic", "m": m.astype(int),
                         "n": n.astype(int), "k": k.astype(int), "latency": t * 1e3})


def test_gemm_fit_recovers_the_law_at_nodes_and_predicts_left_out_shapes():
    profile = load_profile("h100-sxm")
    profile = profile.model_copy(update={"compute": profile.compute.model_copy(
        update={"gemm_tile_m": 16})})
    table = _synthetic_gemm_table(profile, 3e-6)
    grids, quality = gemm_fit.fit_gemm(profile, table, 3e-6)
    grid = ShapeGrid.model_validate(grids["bf16"])
    # compute-bound nodes (the largest M) carry the law itself; memory-bound ones the lower
    # efficiency that reproduces the measured time
    np.testing.assert_allclose(grid.values[-1], law(grid.m[-1], *np.meshgrid(
        grid.n, grid.k, indexing="ij")), rtol=2e-3)
    assert quality["bf16"]["in_sample"]["mape_pct"] < 0.5
    assert quality["bf16"]["holdout"]["rows"] > 0
    assert quality["bf16"]["holdout"]["mape_pct"] < 5.0


def test_alpha_beta_fit_recovers_latency_and_bandwidth():
    nbytes = np.geomspace(1e3, 1e9, 25)
    t = 12e-6 + nbytes / 300e9
    lat, bw = comm_fit.fit_alpha_beta(nbytes, t)
    assert lat == pytest.approx(12e-6, rel=1e-4)
    assert bw == pytest.approx(300e9, rel=1e-4)


def test_balanced_routing_counts_sum_to_the_rank_share():
    counts = moe.balanced_counts(tokens=4096, experts=128, top_k=8, local=16)
    assert counts.sum() == 4096 * 8 * 16 / 128
    assert (counts == counts[0]).all()
    few = moe.balanced_counts(tokens=2, experts=128, top_k=8, local=128)
    assert few.sum() == 16 and few.max() == 1


def test_power_law_counts_take_the_most_loaded_rank():
    rng = np.random.default_rng(0)
    counts = moe.power_law_counts(1024, 64, 4, 8, 1.2, rng)
    assert counts.shape == (8,)
    assert counts.sum() >= 1024 * 4 / 8  # the busiest rank has at least the mean share
    assert counts.max() <= 1024


@pytest.mark.skipif(importlib.util.find_spec("aiconfigurator_core") is None,
                    reason="aiconfigurator-core not installed (pip install 'moesim[aic]')")
def test_real_data_slice_fits_gemm_and_deepep():
    from moesim.calibration.aic import reader

    ref = reader.locate("h200_sxm", "gemm_perf", "trtllm")
    df = reader.load(ref)
    small = df[(df.gemm_dtype == "bfloat16") & (df.n <= 4096) & (df.k <= 4096)]
    profile = load_profile("h200-sxm")
    grids, quality = gemm_fit.fit_gemm(profile, small, gemm_fit.launch_floor_s(small))
    ShapeGrid.model_validate(grids["bf16"])
    assert quality["bf16"]["holdout"]["rows"] > 1000
    assert quality["bf16"]["holdout"]["mape_pct"] < 40.0  # loose: a smoke check of the pipeline
    kernels, prov = comm_fit.fit_comm("h200_sxm", "sglang")
    assert 1e-6 < kernels["deepep_normal/dispatch"]["latency_s"] < 1e-3
    assert prov["deepep_normal/dispatch"]["rows"] > 0
    with pytest.raises(ConfigError, match="unknown backend"):
        reader.locate("h200_sxm", "moe_perf", "tensorrt")


def test_weight_only_grid_is_faster_where_weights_bound_the_time():
    profile = load_profile("h100-sxm")
    grid = {"m": [16.0, 4096.0], "n": [4096.0], "k": [4096.0], "values": [[[0.1]], [[0.8]]]}
    w4 = gemm_fit.transfer_grid(profile, grid, "bfloat16", "w4a16_mxfp4")
    assert w4["values"][0][0][0] > 0.1  # memory-bound node: 4-bit weights read 4x fewer bytes
    assert w4["values"][1][0][0] == pytest.approx(0.8, rel=1e-3)  # compute-bound node unchanged


def test_calibrate_from_aic_needs_backend_and_base(capsys):
    from moesim.cli import main

    code = main(["calibrate", "--from-aic", "h200_sxm", "--out", "/tmp/never.yaml"])
    assert code == 2
    assert "--from-aic needs --backend and --base" in capsys.readouterr().err


def test_fused_kernel_fixed_cost_and_factor_reach_the_experts_phase(tmp_path):
    import yaml

    from moesim import predict

    def profile(factor: float, fixed_s: float):
        path = tmp_path / f"h100-fused-{factor}-{fixed_s}.yaml"
        path.write_text(yaml.safe_dump({
            "name": path.stem, "description": "test", "kind": "calibrated", "base": "h100-sxm",
            "efficiency": {"grouped_gemm": {"basis": "measured", "note": "synthetic",
                                            "by_dtype": {"default": [[1.0, factor]]},
                                            "fixed_s": {"default": fixed_s}}}}))
        return str(path)

    plain = predict("mixtral-8x7b", "h100-sxm", tokens=4096)
    same = predict("mixtral-8x7b", profile(1.0, 0.0), tokens=4096)
    slow = predict("mixtral-8x7b", profile(1.0, 1e-3), tokens=4096)
    half = predict("mixtral-8x7b", profile(0.5, 0.0), tokens=4096)
    e = "experts"
    assert same.breakdown_s[e] == pytest.approx(plain.breakdown_s[e])
    assert slow.breakdown_s[e] == pytest.approx(plain.breakdown_s[e] + 1e-3)
    assert half.breakdown_s[e] > 1.5 * plain.breakdown_s[e]  # compute-bound at 4096 tokens
    assert half.breakdown_s["shared_experts"] == plain.breakdown_s["shared_experts"]


def test_moe_perf_row_prediction_composes_the_timed_region():
    """One synthetic ``moe_perf`` row per case through the same path as the validation bench:
    the four phases are positive and sum to the total; doubling the tokens of a
    compute-bound row roughly doubles the expert time; ep 2 halves the local work."""
    rows = pd.DataFrame({
        "num_tokens": [4096, 8192, 8192], "hidden_size": [4096] * 3, "inter_size": [14336] * 3,
        "topk": [2] * 3, "num_experts": [8] * 3, "moe_tp_size": [1] * 3,
        "moe_ep_size": [1, 1, 2], "moe_dtype": ["bfloat16"] * 3,
        "distribution": ["balanced"] * 3, "kernel_source": ["moe_torch_flow"] * 3})
    out = moe.predict_rows(rows, load_profile("h100-sxm"))
    phases = out[["topk_s", "permute_s", "experts_s", "finalize_s"]]
    assert (phases.to_numpy() > 0).all()
    assert out.predicted_s.to_numpy() == pytest.approx(phases.sum(axis=1).to_numpy())
    e = out.experts_s.to_numpy()
    assert 1.7 < e[1] / e[0] < 2.1
    assert 0.4 < e[2] / e[1] < 0.6


def test_alpha_beta_fit_of_a_flat_table_stays_physical():
    """A latency-bound kernel (times that do not grow with bytes: GB200 DeepEP LL on trtllm)
    drove the unbounded fit to 1.9e26 B/s, beyond the profile schema; the bound keeps the
    bandwidth at comm_fit.MAX_FIT_BYTES_PER_S and the latency at the flat time."""
    nbytes = np.array([1e3, 1e4, 1e5, 1e6])
    lat, bw = comm_fit.fit_alpha_beta(nbytes, np.full(4, 2e-5))
    assert bw <= comm_fit.MAX_FIT_BYTES_PER_S * (1 + 1e-9)
    assert lat == pytest.approx(2e-5, rel=1e-3)
    lat, bw = comm_fit.fit_alpha_beta(nbytes, 5e-6 + nbytes / 1e11)
    assert lat == pytest.approx(5e-6, rel=1e-6) and bw == pytest.approx(1e11, rel=1e-6)


def test_unmapped_table_dtypes_are_left_out_and_named():
    from moesim.calibration.aic.dtypes import mapped

    df = pd.DataFrame({"gemm_dtype": ["bfloat16", "sq", "fp8", "sq", "int8_wo"], "m": range(5)})
    kept, left = mapped(df, "gemm_dtype")
    assert kept.gemm_dtype.tolist() == ["bfloat16", "fp8", "int8_wo"] and left == ["sq"]


def test_moe_dtypes_without_a_gemm_table_are_left_out_and_named():
    """An engine whose gemm_perf never timed a format (SGLang's fp8-block GEMMs on the RTX PRO
    6000 Server) has no GEMM cost to compose its fused-MoE rows from: those rows leave the fit,
    counted by dtype, and the others (weight-only formats read the bf16 grid) stay."""
    import pandas as pd

    from moesim.calibration.aic.fit import _with_gemm_table

    moe = pd.DataFrame({"moe_dtype": ["bfloat16", "fp8_block", "fp8_block", "int4_wo", "nvfp4"]})
    kept, left = _with_gemm_table(moe, {"grid": {"bf16": {}, "fp8": {}, "nvfp4": {}}})
    assert kept.moe_dtype.tolist() == ["bfloat16", "int4_wo", "nvfp4"]
    assert left == {"fp8_block": 2}
    same, none = _with_gemm_table(moe, {"grid": {"default": {}}})
    assert len(same) == len(moe) and none == {}
