"""Hostile and broken input (issue 14): no hang, no runaway memory, no traceback, no silent NaN.

Each test feeds one input that used to hang, allocate without bound, return NaN/inf/negative
numbers or raise something other than a ConfigError, and checks the clean error it gets now.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moesim import predict, predict_many
from moesim.config import ConfigError, load_model, load_profile
from moesim.config.yamlio import load_yaml, load_yaml_text
from moesim.inputs import inclusion_probs
from moesim.scenarios import load_scenario, scenario_from_text

GOLDEN = Path(__file__).parent / "data" / "profiles" / "golden-gpu.yaml"
HEAD = "name: t\nmodel: mixtral-8x7b\nhardware: [h100-sxm]\n"


def alias_bomb(levels: int, width: int = 9) -> str:
    """A billion-laughs YAML: level i is a list of ``width`` aliases of level i-1."""
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    lines.append(f"description: *a{levels}")
    return "\n".join(lines) + "\n"


# --- YAML: aliases, duplicates, encodings, nesting ------------------------------------------------

def test_alias_bomb_walks_each_node_once():
    doc = load_yaml_text(alias_bomb(5))  # 9**5 paths if every alias were followed
    assert len(doc.lines) < 100


@pytest.mark.parametrize("loader", ["scenario", "profile", "model"])
def test_alias_bomb_file_is_refused_fast(tmp_path, loader):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(9) + HEAD.replace("name: t\n", "name: bomb\n"))
    load = {"scenario": load_scenario, "profile": load_profile, "model": load_model}[loader]
    with pytest.raises(ConfigError):
        load(path)


def test_duplicate_key_names_both_lines():
    with pytest.raises(ConfigError, match=r"'experts'.*line 2.*line 4") as info:
        load_yaml_text("hidden: 1\nexperts: 8\ntop_k: 2\nexperts: 16\n", file="m.yaml")
    assert info.value.line == 4 and info.value.file == "m.yaml"


def test_duplicate_block_in_profile(tmp_path):
    text = GOLDEN.read_text()
    block = text[text.index("memory:"):]
    block = block[:block.index("\n", block.index("\n") + 1) + 1]
    path = tmp_path / "dup.yaml"
    path.write_text(text + block)
    with pytest.raises(ConfigError, match="memory"):
        load_profile(path)


def test_merge_keys_are_not_duplicates():
    doc = load_yaml_text("base: &b {x: 1, y: 2}\nchild:\n  <<: *b\n  y: 3\n")
    assert doc.data["child"] == {"x": 1, "y": 3}


@pytest.mark.parametrize("loader", ["scenario", "profile", "model", "hf"])
def test_non_utf8_files(tmp_path, loader):
    path = tmp_path / ("config.json" if loader == "hf" else "x.yaml")
    path.write_bytes(b"name: caf\xe9\nhidden: 1\n")
    load = {"scenario": load_scenario, "profile": load_profile, "model": load_model,
            "hf": load_model}[loader]
    with pytest.raises(ConfigError, match="UTF-8"):
        load(path)


def test_deep_nesting_yaml_and_json(tmp_path):
    with pytest.raises(ConfigError, match="nest"):
        load_yaml_text("a: " + "[" * 20000 + "]" * 20000 + "\n")
    path = tmp_path / "config.json"
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ConfigError, match="nest"):
        load_model(path)


def test_special_files_and_huge_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="regular file"):
        load_yaml("/dev/zero")
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: no disk used
    with pytest.raises(ConfigError, match="limit"):
        load_yaml(big)


@pytest.mark.parametrize("spec", ["trace:/dev/zero", "trace:/dev/zero.npy"])
def test_trace_from_device_is_refused(spec):
    with pytest.raises(ConfigError):
        inclusion_probs(spec, 8, 2)


def test_huge_trace_file_is_refused_before_reading(tmp_path):
    for name in ("ids.npy", "ids.txt"):
        path = tmp_path / name
        with open(path, "wb") as f:
            f.truncate(4 << 30)
        with pytest.raises(ConfigError, match="limit"):
            inclusion_probs(f"trace:{path}", 8, 2)


def test_npz_bomb_is_refused_by_its_header(tmp_path):
    """An .npz member whose header announces 1 GiB (a 1 MB archive of zeros can): refused from
    the header, before anything is decompressed. The member here holds the header only."""
    import io
    import zipfile

    path = tmp_path / "bomb.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<i2", "fortran_order": False,
                                                  "shape": (1 << 28, 2)})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ids_0.npy", header.getvalue())
    with pytest.raises(ConfigError, match="limit"):
        inclusion_probs(f"trace:{path}", 8, 2)


def test_npy_announcing_too_many_ids_is_refused_by_its_header(tmp_path):
    path = tmp_path / "ids.npy"
    with open(path, "wb") as f:  # header only: 2 GiB of int64 ids announced
        np.lib.format.write_array_header_1_0(f, {"descr": "<i4", "fortran_order": False,
                                                 "shape": (1 << 27, 2)})
    with pytest.raises(ConfigError, match="MAX_TRACE_BYTES"):
        inclusion_probs(f"trace:{path}", 8, 2)


def test_malformed_placement_json(tmp_path):
    for i, text in enumerate(["{not json", "[" * 100000, "{\"devices\": 3}"]):
        path = tmp_path / f"p{i}.json"
        path.write_text(text)
        with pytest.raises(ConfigError):
            predict("mixtral-8x7b", "h100-sxm", 16, ep=2, placement=str(path))
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError):
        predict("mixtral-8x7b", "h100-sxm", 16, ep=2, placement=str(bad))


# --- sizes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, field", [
    ({"experts": 1_000_000_000}, "experts"), ({"hidden": 1 << 40}, "hidden"),
    ({"expert_ffn": 1 << 40}, "expert_ffn"), ({"top_k": 100_000}, "top_k"),
    ({"moe_layers": 1 << 40}, "moe_layers"), ({"shared_experts": 1 << 40}, "shared_experts"),
    ({"vocab": 1 << 40}, "vocab"), ({"heads": 1 << 20}, "heads"),
    ({"kv_lora_rank": 1 << 40}, "kv_lora_rank"), ({"sliding_window": 1 << 40}, "sliding_window"),
    ({"dense_ffn": 1 << 40}, "dense_ffn"),
])
def test_model_sizes_are_bounded(override, field):
    with pytest.raises(ConfigError, match="limit") as info:
        load_model("mixtral-8x7b", **override)
    assert info.value.field == field


@pytest.mark.parametrize("override", [
    {"tokens": 4611686018427387904}, {"ep": 1 << 40}, {"seed": -1}, {"seed": 1 << 63},
    {"routing": "probs:" + ",".join(["1"] * 20000)}, {"placement": "replicated:1000000000000"},
])
def test_run_sizes_are_bounded(override):
    kw = {"tokens": 16, **override}
    with pytest.raises(ConfigError):
        predict("mixtral-8x7b", "h100-sxm", **kw)


@pytest.mark.parametrize("override, field", [
    ({"context": 10 ** 18}, "context"), ({"prompt_len": 10 ** 15}, "prompt_len"),
    ({"batch": 1 << 40}, "batch"), ({"pp": 1 << 20}, "pp"), ({"batch": True}, "batch"),
])
def test_whole_model_run_sizes_are_bounded(override, field):
    from moesim import predict_many

    row = {"scope": "model", "model": "mixtral-8x7b", "hardware": "h100-sxm", **override}
    with pytest.raises(ConfigError) as info:
        predict_many(pd.DataFrame([row]))
    assert info.value.field == field


def test_seed_minus_one_with_zipf_is_clean():
    with pytest.raises(ConfigError, match="seed"):
        predict("mixtral-8x7b", "h100-sxm", 16, routing="zipf:1.2", seed=-1)


# --- NaN / inf / negative ------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["zipf:inf", "zipf:nan", "zipf:1e308", "lognormal:1e308",
                                  "lognormal:nan", "probs:1e308,1e308,1,1,1,1,1,1",
                                  "probs:nan,1,1,1,1,1,1,1", "probs:inf,1,1,1,1,1,1,1"])
def test_routing_extremes_are_rejected(spec):
    with pytest.raises(ConfigError, match="routing"):
        predict("mixtral-8x7b", "h100-sxm", 16, routing=spec)


def test_infinite_capacity_factor_is_rejected():
    with pytest.raises(ConfigError, match="capacity_factor"):
        predict("mixtral-8x7b", "h100-sxm", 16, capacity_factor=math.inf, drop_tokens=True)


@pytest.mark.parametrize("field, value", [
    ("  bandwidth_bytes_per_s: ", ".inf"), ("  latency_s: ", ".inf"), ("  latency_s: ", ".nan"),
    ("  bandwidth_bytes_per_s: ", "1.0e-300"), ("  latency_s: ", "1.0e+308"),
])
def test_profile_extremes_are_rejected(tmp_path, field, value):
    text = GOLDEN.read_text()
    start = text.index(field)
    end = text.index("\n", start)
    path = tmp_path / "p.yaml"
    path.write_text(text[:start] + field + value + text[end:])
    with pytest.raises(ConfigError):
        load_profile(path)


def test_profile_phases_without_kernels_is_rejected(tmp_path):
    """Fuzz seed 4351 (2026-12-03): a datasheet profile whose efficiency.phases lost its
    'kernels' table predicted NaN times with exit 0; it must name the missing counts."""
    text = (Path(__file__).parents[1] / "hardware_profiles" / "b200.yaml").read_text()
    start = text.index("    kernels: {router")
    path = tmp_path / "p.yaml"
    path.write_text(text[:start] + text[text.index("\n", start) + 1:])
    with pytest.raises(ConfigError, match="efficiency.phases.kernels.*missing"):
        load_profile(path)


def test_profile_with_base_and_bad_sources(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ndescription: d\nbase: h100-sxm\nsources: 3\n")
    with pytest.raises(ConfigError, match="sources"):
        load_profile(path)


@pytest.mark.parametrize("q", [[-1.0, 3.0] + [0.0] * 6, [np.nan, 2.0] + [0.0] * 6,
                               [2.0] + [0.0] * 7])
def test_bad_q_is_rejected(q):
    with pytest.raises(ConfigError, match="q"):
        predict("mixtral-8x7b", "h100-sxm", 16, q=np.array(q))


def test_outputs_finite_and_non_negative_at_the_limits():
    r = predict("mixtral-8x7b", "h100-sxm", 1 << 26, routing="zipf:20", capacity_factor=1024.0,
                drop_tokens=True)
    values = np.array([v for v in r.to_dict().values() if isinstance(v, float)])
    assert np.isfinite(values).all() and (values >= 0).all()


@pytest.mark.parametrize("samples", [10 ** 9, 2.5, True, "100"])
def test_montecarlo_samples_are_checked(samples):
    with pytest.raises(ConfigError, match="samples"):
        predict("mixtral-8x7b", "h100-sxm", 16, mode="montecarlo", samples=samples)


# --- predict_many --------------------------------------------------------------------------------

def test_predict_many_empty_frame_with_columns():
    out = predict_many(pd.DataFrame({"model": [], "hardware": [], "tokens": []}))
    assert len(out) == 0 and "time_s" in out.columns


@pytest.mark.parametrize("tokens", [[True, 16], [1, 2, True]])
def test_predict_many_bool_tokens_rejected(tokens):
    df = pd.DataFrame({"model": "mixtral-8x7b", "hardware": "h100-sxm", "tokens": tokens})
    with pytest.raises(ConfigError, match="tokens"):
        predict_many(df)


def test_predict_many_checks_every_value():
    df = pd.DataFrame({"model": "mixtral-8x7b", "hardware": "h100-sxm",
                       "tokens": [16, 32, 0, 64]})
    with pytest.raises(ConfigError, match="tokens"):
        predict_many(df)
    df = pd.DataFrame({"model": "mixtral-8x7b", "hardware": "h100-sxm", "tokens": [16, 32],
                       "capacity_factor": [1.0, np.nan]})
    with pytest.raises(ConfigError, match="capacity_factor"):
        predict_many(df)


def test_predict_many_refuses_what_would_not_fit():
    df = pd.DataFrame({"model": "mixtral-8x7b", "hardware": "h100-sxm", "experts": 16384,
                       "top_k": 2, "tokens": np.arange(1, 5001)})
    with pytest.raises(ConfigError, match="split"):
        predict_many(df)


# --- sweeps --------------------------------------------------------------------------------------

@pytest.mark.parametrize("sweep", [
    "{tokens: [true, 16]}", "{tokens: [1, 2, true]}", "{tokens: {start: 1, stop: 10, step: 'x'}}",
    "{tokens: {start: .nan, stop: 10, step: 1}}", "{tokens: {start: 1, stop: .inf, step: 1}}",
    "{tokens: {start: 1, stop: 10, num: .inf}}", "{tokens: {start: 1, stop: 10, num: 1.0e+12}}",
    "{tokens: {start: 1, stop: 1.0e+15, step: 1}}", "{tokens: {start: 1, stop: 10, num: 2.5}}",
    "{capacity_factor: {start: 1.0, stop: 2.0, step: 1.0e-300}}",
    "{tokens: {start: 1, stop: 10, num: 'many'}}", "{tokens: {start: 1, stop: 10, num: true}}",
    "{seed: [-1, 2]}", "{experts: [8, 1000000000]}",
])
def test_bad_sweeps_are_clean_errors(sweep):
    with pytest.raises(ConfigError, match="sweep"):
        scenario_from_text(HEAD + f"sweep: {sweep}\n", file="s.yaml")


def test_overlap_hidden_is_never_negative():
    """Fuzz seed 7831 (2026-12-03): with nothing hidden, the phases' sum rounded a few ulps
    below the layer time and overlap_hidden_s came out -3.5e-18."""
    from moesim import predict_many

    rows = [{"model": "mixtral-8x7b", "hardware": hw, "tokens": t, "ep": ep, "overlap": o}
            for hw in ("cpu-epyc-zen4-1t-shared2", "h100-sxm") for t in (7, 64, 333)
            for ep in (1, 2) for o in ("none", "shared", "two-batch")]
    out = predict_many(pd.DataFrame(rows))
    assert (out["overlap_hidden_s"] >= 0).all()
    assert (out.loc[out["overlap"] == "none", "overlap_hidden_s"] == 0).all()
