"""The public API and CLI of prediction: names, JSON shape, and clear errors."""
import json
import subprocess
import sys

import pandas as pd
import pytest

import moesim
from moesim import ConfigError, predict, predict_many
from moesim.cli import main

JSON_KEYS = {"time_s", "tokens_per_s", "breakdown_s", "bottleneck", "flops", "hbm_bytes",
             "comm_bytes", "moe_memory_bytes_per_device", "moe_fits_in_memory", "load_imbalance"}


def test_predict_result_to_dict():
    r = predict(model="qwen3-30b-a3b", hardware="h200-sxm", tokens=64, ep=8, top_k=4)
    d = r.to_dict()
    assert JSON_KEYS <= d.keys()
    assert {"router", "dispatch", "experts", "shared_experts", "combine"} <= d["breakdown_s"].keys()
    assert {"intra_node", "inter_node"} == d["comm_bytes"].keys()
    assert d["config"]["top_k"] == 4 and d["config"]["ep"] == 8
    assert r.tokens_per_s == pytest.approx(64 * 8 / r.time_s)


def test_predict_many_matches_predict():
    df = pd.DataFrame({"model": ["mixtral-8x7b", "deepseek-v3"], "hardware": ["h100-sxm", "b200"],
                       "tokens": [16, 256], "ep": [2, 32], "routing": ["uniform", "zipf:1.0"]})
    out = predict_many(df)
    for _, row in out.iterrows():
        single = predict(row["model"], row["hardware"], int(row["tokens"]), ep=int(row["ep"]),
                         routing=row["routing"])
        assert row["time_s"] == pytest.approx(single.time_s, rel=1e-12)
        assert row["bottleneck"] == single.bottleneck
    assert list(out.columns[:5]) == list(df.columns)


def test_overrides_are_validated_and_applied():
    base = predict("mixtral-8x7b", "h100-sxm", tokens=1)
    fp8 = predict("mixtral-8x7b", "h100-sxm", tokens=1, weight_dtype="fp8")
    # fp8 weights: 1 B + 4 B per 128-element block scale, vs 2 B: ratio 0.516 plus launches
    assert fp8.breakdown_s["experts"] == pytest.approx(base.breakdown_s["experts"] / 2, rel=0.1)
    assert fp8.breakdown_s["experts"] < base.breakdown_s["experts"] * 0.6


@pytest.mark.parametrize("kwargs,field,expected", [
    (dict(model="mixtrl-8x7b"), "model", "did you mean 'mixtral-8x7b'"),
    (dict(hardware="h100-sxn"), "hardware", "did you mean 'h100-sxm'"),
    (dict(topk=2), "topk", "did you mean 'top_k'"),
    (dict(hardware="a100-sxm-80gb", weight_dtype="fp8"), "compute_dtype", "no fp8 peak"),
    (dict(ep=3), "ep", "must divide"),
    (dict(weight_dtype="fp7"), "weight_dtype", "did you mean 'fp8'"),
    (dict(overlap="both"), "overlap", "'none', 'shared' or 'two-batch'"),
    (dict(tokens=0), "tokens", "greater than 0"),
    (dict(routing="zipf"), "routing", "zipf:S"),
])
def test_bad_input_names_field_and_expectation(kwargs, field, expected):
    args = dict(model="mixtral-8x7b", hardware="h100-sxm", tokens=8) | kwargs
    with pytest.raises(ConfigError) as err:
        predict(**args)
    assert err.value.field == field
    assert expected in str(err.value)


def test_predict_many_rejects_unknown_column():
    with pytest.raises(ConfigError, match="did you mean 'top_k'"):
        predict_many(pd.DataFrame({"model": ["mixtral-8x7b"], "hardware": ["h100-sxm"],
                                   "tokens": [1], "topk": [2]}))


def test_model_from_hf_config_predicts():
    r = predict("tests/data/hf_configs/mixtral-8x7b.json", "h100-sxm", tokens=1)
    assert r.time_s == pytest.approx(predict("mixtral-8x7b", "h100-sxm", tokens=1).time_s)


def test_predict_works_without_torch():
    code = ("import sys; import moesim; "
            "r = moesim.predict('deepseek-v3', 'h100-sxm', tokens=32, ep=16); "
            "from moesim.cli import main; main(['predict', '-m', 'olmoe-1b-7b', '-H', 'b200', '-t', '4']); "
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_cli_predict_json(capsys):
    assert main(["predict", "--model", "deepseek-v3", "--hardware", "h100-sxm", "--tokens",
                 "128", "--ep", "64", "--a2a-kernel", "hierarchical", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert JSON_KEYS <= data.keys()
    assert data["comm_bytes"]["inter_node"] > 0


def test_cli_predict_table_and_montecarlo(capsys):
    assert main(["predict", "-m", "mixtral-8x7b", "-H", "h100-sxm", "-t", "512", "--ep", "8",
                 "--routing", "zipf:1.0", "--mode", "montecarlo", "--samples", "50"]) == 0
    out = capsys.readouterr().out
    assert "bottleneck:" in out and "p99 (MC)" in out and "experts" in out


def test_cli_error_exit_code_and_message(capsys):
    assert main(["predict", "-m", "mixtral-8x7b", "-H", "a100-sxm-80gb", "-t", "1",
                 "--weight-dtype", "fp8"]) == 2
    err = capsys.readouterr().err
    assert "no fp8 peak" in err and "compute_dtype" in err


@pytest.mark.parametrize("command", ["profiles", "models"])
def test_cli_listings(capsys, command):
    assert main([command]) == 0
    out = capsys.readouterr().out
    assert ("h100-sxm" in out) if command == "profiles" else ("deepseek-v3" in out)


def test_every_subcommand_has_help():
    from moesim.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        proc = subprocess.run([sys.executable, "-m", "moesim", name, "--help"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, (name, proc.stderr)
        assert "usage" in proc.stdout


def test_version():
    assert moesim.__version__


def test_predict_with_placement_object_and_q_matches_spec_strings():
    import numpy as np
    from moesim.core import placement, routing

    q = routing.inclusion_probs("zipf:1.2", 256, 8)
    obj = placement.replicated(q, 64, 64)
    a = predict("deepseek-v3", "h100-sxm", tokens=512, placement=obj, q=q)
    b = predict("deepseek-v3", "h100-sxm", tokens=512, ep=64, placement="replicated:64",
                routing="zipf:1.2")
    assert a.time_s == pytest.approx(b.time_s, rel=1e-12)
    assert a.config["placement"] == "explicit"
    with pytest.raises(ConfigError, match="summing to top_k"):
        predict("deepseek-v3", "h100-sxm", tokens=8, placement=obj, q=np.ones(256))


def test_predict_with_q_alone_builds_the_placement_from_it():
    from moesim.core import routing

    q = routing.inclusion_probs("zipf:1.0", 64, 8)
    a = predict("olmoe-1b-7b", "h100-sxm", tokens=64, ep=8, placement="balanced", q=q)
    b = predict("olmoe-1b-7b", "h100-sxm", tokens=64, ep=8, placement="balanced",
                routing="zipf:1.0")
    assert a.time_s == pytest.approx(b.time_s, rel=1e-12)


def test_predict_many_repeated_and_shuffled_rows_match_distinct_rows():
    """Rows that repeat a config are evaluated once and rows out of group order are put back:
    the outputs equal those of the distinct configs, row for row."""
    import numpy as np

    distinct = pd.DataFrame({"model": ["mixtral-8x7b", "deepseek-v3", "mixtral-8x7b"] * 2,
                             "hardware": ["h100-sxm", "b200", "b200"] * 2,
                             "tokens": [16, 256, 16, 4096, 1, 64], "ep": [2, 32, 8, 2, 32, 8],
                             "overlap": ["none", "two-batch", "none", "shared", "none", "none"]})
    one = predict_many(distinct)
    order = np.random.default_rng(0).integers(0, len(distinct), 40)
    many = predict_many(distinct.iloc[order])
    for col in ("time_s", "bottleneck", "hbm_bytes", "load_imbalance"):
        assert many[col].tolist() == one[col].iloc[order].tolist()


def test_threaded_large_groups_give_the_sequential_values(monkeypatch):
    """Large groups are split over threads; every value equals the one-thread evaluation."""
    import sys

    import numpy as np

    module = sys.modules["moesim.groups"]
    df = pd.DataFrame({"model": "qwen3-30b-a3b", "hardware": np.repeat(["h100-sxm", "b200"], 9000),
                       "tokens": np.tile(np.arange(1, 9001), 2), "ep": 8,
                       "routing": np.repeat(["uniform", "zipf:1.0"], 9000)})
    monkeypatch.setattr(module, "PARALLEL_MIN_ROWS", 2000)
    monkeypatch.setattr(module, "WORKERS", 1)
    one = predict_many(df)
    monkeypatch.setattr(module, "WORKERS", 2)
    assert len(module.split_tasks(np.array([0, 9000, 18000]), 2)) == 4
    two = predict_many(df)
    pd.testing.assert_frame_equal(one, two)
