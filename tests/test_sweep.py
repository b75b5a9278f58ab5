"""Sweep grids: products, zip groups, ranges, per-profile overrides, chunked evaluation."""
from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim import predict_many
from moesim.scenarios import evaluate, expand, scenario_from_text
from moesim.scenarios.sweep import Axis, grid_frame


def scenario(body: str):
    return scenario_from_text(textwrap.dedent(body), file="test.yaml")


def test_3x2_grid_gives_6_rows_per_profile():
    sc = scenario("""
        name: grid
        model: mixtral-8x7b
        hardware: [h100-sxm, b200]
        ep: 8
        sweep:
          tokens: [1, 16, 128]
          top_k: [1, 2]
    """)
    table = expand(sc)
    assert sc.points() == 12
    assert len(table) == 12
    for hw in ("h100-sxm", "b200"):
        sub = table[table["hardware"] == hw]
        assert sorted(zip(sub["tokens"], sub["top_k"])) == [
            (1, 1), (1, 2), (16, 1), (16, 2), (128, 1), (128, 2)]
    assert (table["ep"] == 8).all()
    assert (table["experts"] == 8).all()  # preset values resolved into the table
    assert (table["hidden"] == 4096).all()


def test_zip_group_varies_together():
    sc = scenario("""
        name: zipped
        model: mixtral-8x7b
        hardware: [h100-sxm]
        tokens: 64
        sweep:
          zip:
            - experts: [8, 16, 32]
              top_k: [2, 4, 8]
              expert_ffn: [14336, 7168, 3584]
          ep: [1, 8]
    """)
    table = expand(sc)
    assert len(table) == 6
    assert set(zip(table["experts"], table["top_k"], table["expert_ffn"])) == {
        (8, 2, 14336), (16, 4, 7168), (32, 8, 3584)}
    assert (table["top_k"] * table["expert_ffn"] == 28672).all()
    assert sorted(table.groupby("experts")["ep"].apply(sorted).tolist()) == [[1, 8]] * 3


def test_ranges_log_and_step():
    sc = scenario("""
        name: ranges
        model: mixtral-8x7b
        hardware: [h100-sxm]
        sweep:
          tokens: {start: 1, stop: 16, num: 5, scale: log}
          capacity_factor: {start: 1.0, stop: 2.0, step: 0.5}
    """)
    assert sc.axes[0].values == ((1,), (2,), (4,), (8,), (16,))
    assert sc.axes[1].values == ((1.0,), (1.5,), (2.0,))
    assert len(expand(sc)) == 15


def test_per_profile_overrides_apply_to_that_profile_only():
    sc = scenario("""
        name: overrides
        model: deepseek-v3
        hardware:
          - h100-sxm
          - profile: a100-sxm-80gb
            overrides: {compute_dtype: bf16, overlap: two-batch}
        ep: 64
        sweep:
          tokens: [1, 128]
    """)
    table = expand(sc)
    a100 = table["hardware"] == "a100-sxm-80gb"
    assert (table.loc[a100, "compute_dtype"] == "bf16").all()
    assert table.loc[~a100, "compute_dtype"].isna().all()
    assert (table.loc[a100, "overlap"] == "two-batch").all()
    assert (table.loc[~a100, "overlap"] == "none").all()
    out = predict_many(table)  # fp8 weights computed in bf16 on A100: no missing-peak error
    a100_time = out[a100].set_index("tokens")["time_s"]
    h100_time = out[~a100].set_index("tokens")["time_s"]
    assert (a100_time > h100_time).all()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_grid_is_the_full_product(sizes):
    axes = [Axis((f"f{i}",), tuple((v,) for v in range(n)), ("sweep", f"f{i}"))
            for i, n in enumerate(sizes)]
    grid = grid_frame(axes)
    assert len(grid) == int(np.prod(sizes))
    assert not grid.duplicated().any()
    for i, n in enumerate(sizes):
        assert (grid[f"f{i}"].value_counts() == len(grid) // n).all()


def test_chunked_evaluation_matches_one_call_and_keeps_order():
    sc = scenario("""
        name: chunks
        model: mixtral-8x7b
        hardware: [h100-sxm, b200]
        sweep:
          tokens: [1, 8, 64, 512]
          ep: [1, 2, 8]
          placement: [contiguous, round-robin]
    """)
    configs = expand(sc)
    chunked = evaluate(configs, chunk_rows=5, progress=False)
    whole = predict_many(configs)
    pd.testing.assert_frame_equal(chunked.reset_index(drop=True), whole)
    pd.testing.assert_frame_equal(chunked[configs.columns].reset_index(drop=True), configs)


def test_zip_columns_may_repeat_values_but_not_rows():
    """routing x shared experts paired inside one zip group: columns repeat, rows are distinct;
    a repeated row is an error naming the file, line and group."""
    import pytest

    from moesim.config import ConfigError

    body = """
        name: zipped
        model: mixtral-8x7b
        hardware: [h100-sxm]
        tokens: 64
        sweep:
          zip:
            - routing: [uniform, "zipf:1.2", uniform, "zipf:1.2"]
              shared_experts: [0, 0, 1, 1]
              shared_expert_ffn: [4096, 4096, 4096, 4096]
    """
    table = expand(scenario(body))
    assert sorted(zip(table["routing"], table["shared_experts"])) == [
        ("uniform", 0), ("uniform", 1), ("zipf:1.2", 0), ("zipf:1.2", 1)]
    with pytest.raises(ConfigError, match="repeated rows in zip group") as err:
        expand(scenario(body.replace("[0, 0, 1, 1]", "[0, 0, 0, 1]")))
    assert err.value.file == "test.yaml" and err.value.line is not None


def test_compare_table_columns_fit_long_profile_names():
    """A profile name longer than the default column still leaves a space before its kind."""
    import pandas as pd

    from moesim.cli.compare import format_table

    table = pd.DataFrame({"hardware": ["h100-sxm", "a-very-long-profile-name-x"], "tokens": [1, 1],
                          "ep": [8, 8], "time_s": [1e-4, 2e-4], "tokens_per_s": [1e4, 5e3],
                          "bottleneck": ["experts:memory"] * 2,
                          "moe_memory_bytes_per_device": [1e9, 1e9],
                          "memory_capacity_bytes": [8e10, 8e10], "moe_fits_in_memory": [True, True]})
    text = format_table(table, {"h100-sxm": "datasheet", "a-very-long-profile-name-x": "calibrated"})
    assert "a-very-long-profile-name-x  calibrated" in text
