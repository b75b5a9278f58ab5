"""Routing traces: the .npz format, trace/lognormal routing specs, statistics, recording, CLI."""
import hashlib
import io as io_module
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import moesim
from moesim import inputs
from moesim.config import ConfigError
from moesim.core import routing
from moesim.traces import io, stats

HF = Path(__file__).parent / "data" / "hf_configs"
TINY_TRACE = Path(__file__).parent / "data" / "traces" / "tiny-mixtral.npz"

try:
    import torch
    import transformers
    HAVE_HF = True
except ImportError:
    HAVE_HF = False
needs_hf = pytest.mark.skipif(not HAVE_HF, reason="recording needs torch and transformers "
                                                   "(pip install 'moesim[trace]')")


def synthetic(spec: str, experts: int, top_k: int, tokens: int, seed: int = 0) -> np.ndarray:
    """``[tokens, top_k]`` distinct ids drawn with inclusion probabilities from ``spec``."""
    q = routing.inclusion_probs(spec, experts, top_k, seed)
    rng = np.random.default_rng(seed)
    if top_k == 1:
        return rng.choice(experts, size=(tokens, 1), p=q)
    keys = np.log(q) - np.log(-np.log(rng.random((tokens, experts))))  # Gumbel top-k
    return np.argsort(-keys, axis=1)[:, :top_k]


def write(tmp_path, ids_by_layer, experts, name="t.npz"):
    return io.save_trace(tmp_path / name, ids_by_layer, experts, metadata={"model": "synthetic"})


# --- lognormal:SIGMA --------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(experts=st.integers(2, 256), data=st.data(), sigma=st.floats(0, 3), seed=st.integers(0, 9))
def test_lognormal_probabilities_are_valid(experts, data, sigma, seed):
    top_k = data.draw(st.integers(1, min(experts, 8)))
    q = routing.inclusion_probs(f"lognormal:{sigma}", experts, top_k, seed)
    assert q.sum() == pytest.approx(top_k)
    assert (q >= 0).all() and (q <= 1 + 1e-12).all()


def test_lognormal_is_seeded_and_sigma_sets_the_skew():
    a = routing.inclusion_probs("lognormal:0.8", 64, 4, seed=3)
    assert np.array_equal(a, routing.inclusion_probs("lognormal:0.8", 64, 4, seed=3))
    assert not np.allclose(a, routing.inclusion_probs("lognormal:0.8", 64, 4, seed=4))
    assert routing.inclusion_probs("lognormal:0", 64, 4) == pytest.approx(np.full(64, 1 / 16))
    for seed in range(5):
        imbalance = [q.max() / q.mean() for q in
                     (routing.inclusion_probs(f"lognormal:{s}", 256, 8, seed)
                      for s in (0.25, 0.5, 1.0, 1.5))]
        assert np.all(np.diff(imbalance) > 0)
    assert routing.parse_routing("lognormal:0.5").label == "lognormal:0.5"


@pytest.mark.parametrize("spec,match", [("lognormal:x", "bad log-normal sigma"),
                                        ("lognormal:-1", ">= 0"), ("lognormal:inf", "finite")])
def test_bad_lognormal_spec(spec, match):
    with pytest.raises(ConfigError, match=match):
        routing.parse_routing(spec)


def test_fitted_lognormal_sigma_recovers_the_spec():
    ids = synthetic("lognormal:0.6", 256, 1, 400_000, seed=1)
    drawn = np.log(routing.lognormal_shares(256, 0.6, seed=1)).std()  # this draw's sigma
    assert stats.popularity(ids, 256)["lognormal_sigma"] == pytest.approx(drawn, abs=0.02)
    assert drawn == pytest.approx(0.6, abs=0.1)


# --- the .npz format and trace: specs ---------------------------------------------------------

def test_trace_round_trip_and_layer_selection(tmp_path):
    ids = {1: synthetic("zipf:1", 16, 2, 300, 0), 3: synthetic("uniform", 16, 2, 300, 1)}
    path = write(tmp_path, ids, 16)
    trace = io.read_trace(path)
    assert trace.layers == [1, 3] and trace.num_tokens == 300 and trace.num_topk == 2
    assert trace.ids[1].dtype == np.int16 and trace.weights[3].dtype == np.float16
    assert trace.metadata["model"] == "synthetic"
    assert np.array_equal(io.load_trace(f"{path}@3"), ids[3])
    assert np.array_equal(io.load_trace(path), np.concatenate([ids[1], ids[3]]))
    q = inputs.inclusion_probs(f"trace:{path}@1", 16, 2)
    assert q == pytest.approx(np.bincount(ids[1].ravel(), minlength=16) / 300)
    assert inputs.inclusion_probs(f"trace:{path}", 16, 2).sum() == pytest.approx(2)


def test_montecarlo_predict_runs_on_a_trace_layer():
    r = moesim.predict("mixtral-8x7b", "h100-sxm", 64, ep=4, routing=f"trace:{TINY_TRACE}@1",
                       mode="montecarlo", samples=8)
    assert r.time_s > 0 and r.load_imbalance >= 1
    e = moesim.predict("mixtral-8x7b", "h100-sxm", 64, ep=4, routing=f"trace:{TINY_TRACE}")
    assert e.time_s > 0


def _npy_bytes(array) -> bytes:
    buffer = io_module.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


META = json.dumps({"num_experts": 8, "num_topk": 2, "num_tokens": 2, "layers": [0]})
GOOD = {"ids_0": np.array([[0, 1], [2, 3]]), "weights_0": np.ones((2, 2), np.float16)}


@pytest.mark.parametrize("name,make,match", [
    ("missing.npz", None, "cannot read trace"),
    ("text.npz", lambda p: p.write_text("0 1\n"), "cannot read trace"),
    ("array.npz", lambda p: p.write_bytes(_npy_bytes(np.zeros((2, 2)))), "not an .npz archive"),
    ("nometa.npz", lambda p: _npz(p, **GOOD), "no 'metadata'"),
    ("badmeta.npz", lambda p: _npz(p, metadata=np.array("{"), **GOOD), "not valid JSON"),
    ("lacks.npz", lambda p: _npz(p, metadata=np.array("{}"), **GOOD), "lacks num_experts"),
    ("nolayer.npz", lambda p: _npz(p, metadata=np.array(META)), "no 'ids_0'"),
    ("range.npz", lambda p: _npz(p, metadata=np.array(META), ids_0=np.array([[0, 8], [1, 2]]),
                                 weights_0=GOOD["weights_0"]), r"ids in \[0, 7\]"),
    ("dup.npz", lambda p: _npz(p, metadata=np.array(META), ids_0=np.array([[1, 1], [1, 2]]),
                               weights_0=GOOD["weights_0"]), "same expert twice"),
    ("shape.npz", lambda p: _npz(p, metadata=np.array(META), ids_0=np.array([[0, 1, 2]]),
                                 weights_0=GOOD["weights_0"]), "expected integers of shape"),
])
def test_bad_trace_files_name_the_file_and_the_expectation(tmp_path, name, make, match):
    path = tmp_path / name
    if make:
        make(path)
    with pytest.raises(ConfigError, match=match) as err:
        io.load_trace(path)
    assert str(path) in str(err.value) and err.value.field == "routing"


def test_bad_layer_selection(tmp_path):
    path = write(tmp_path, {0: synthetic("uniform", 8, 2, 10)}, 8)
    with pytest.raises(ConfigError, match=r"no layer 5 in the trace; expected one of \[0\]") as e:
        inputs.inclusion_probs(f"trace:{path}@5", 8, 2)
    assert str(path) in str(e.value)
    with pytest.raises(ConfigError, match="top_k=4"):
        inputs.inclusion_probs(f"trace:{path}", 8, 4)
    with pytest.raises(ConfigError, match="FILE.npz@LAYER"):
        io.load_trace(tmp_path / "t.csv@2")


# --- statistics -------------------------------------------------------------------------------

def test_zipf_fit_recovers_the_exponent():
    ids = synthetic("zipf:1.2", 64, 1, 200_000, seed=2)
    assert stats.popularity(ids, 64)["zipf_exponent"] == pytest.approx(1.2, abs=0.05)
    skewed = stats.layer_stats(synthetic("zipf:1.2", 64, 4, 20_000, seed=2), 64)
    flat = stats.layer_stats(synthetic("uniform", 64, 4, 20_000, seed=2), 64)
    assert skewed["zipf_exponent"] > 0.6 and flat["zipf_exponent"] < 0.1
    assert skewed["gini"] > 0.3 and flat["gini"] < 0.05
    assert skewed["imbalance"] > 5 and flat["imbalance"] < 1.2
    assert skewed["rank_loads"]["sigma"] > flat["rank_loads"]["sigma"]
    assert skewed["suggested_routing"][0].startswith("zipf:")


def test_gini_and_lognormal_fit_basics():
    assert stats.gini(np.ones(10)) == pytest.approx(0)
    assert stats.gini(np.r_[np.zeros(9), 1.0]) == pytest.approx(0.9)
    fit = stats.fit_lognormal(np.r_[0.0, np.exp([1.0, 3.0])])
    assert (fit["mu"], fit["sigma"], fit["zeros"]) == (pytest.approx(2), pytest.approx(1), 1)


def test_drift_small_for_iid_large_for_a_switch():
    iid = synthetic("zipf:1.0", 32, 2, 8192, seed=0)
    switched = np.concatenate([iid[:4096], 31 - iid[4096:]])  # popularity reversed halfway
    calm = stats.drift(iid, 32, 256)
    moved = stats.drift(switched, 32, 256)
    assert calm["batches"] == 32 and len(calm["tv"]) == 32
    assert calm["tv_excess"] < 1.5 and calm["spearman_mean"] > 0.7
    assert np.mean(calm["spearman_first"][16:]) > 0.6
    assert moved["tv_excess"] > 2.5 and moved["spearman_mean"] < calm["spearman_mean"] - 0.2
    assert np.mean(moved["spearman_first"][1:16]) > 0.6
    assert np.mean(moved["spearman_first"][16:]) < 0.2


def test_coactivation_counts_pairs_on_the_same_token():
    ids = np.array([[0, 1], [1, 0], [2, 3], [0, 2]])
    counts, lift = stats.coactivation(ids, 4)
    assert counts[0, 1] == counts[1, 0] == 2 and counts[2, 3] == 1 and counts[1, 2] == 0
    assert np.diag(counts).tolist() == [3, 2, 2, 1]
    chance = 4 * 2 * 1 * (3 * 2) / ((3 + 2 + 2 + 1) ** 2 - (9 + 4 + 4 + 1))
    assert lift[0, 1] == pytest.approx(2 / chance) and lift[0, 0] == 0
    _, uniform = stats.coactivation(synthetic("uniform", 16, 4, 20_000), 16)
    off = uniform[~np.eye(16, dtype=bool)]
    assert off.mean() == pytest.approx(1, abs=0.02) and off.min() > 0.8
    pairs = stats.top_pairs(counts, lift, 2)
    assert pairs[0]["experts"] == [0, 1] and pairs[0]["tokens"] == 2


def test_rank_loads_follow_contiguous_placement():
    ids = np.array([[0, 1], [2, 7], [6, 7], [0, 3]])
    assert stats.rank_loads(ids, 8, 4, 2).tolist() == [[2, 1, 0, 1], [1, 1, 0, 2]]
    with pytest.raises(ConfigError, match="must divide"):
        stats.rank_loads(ids, 8, 3, 2)


def test_stats_on_the_shipped_tiny_trace():
    trace = io.read_trace(TINY_TRACE)
    s = stats.trace_stats(trace, ep=4, batch_tokens=128, matrix=True)
    assert set(s["layers"]) == {str(layer) for layer in trace.layers}
    layer = s["layers"]["0"]
    assert layer["imbalance"] >= 1 and 0 <= layer["gini"] < 1
    assert sum(layer["shares_sorted"]) == pytest.approx(1)
    assert np.array(layer["coactivation_lift"]).shape == (8, 8)
    assert trace.metadata["model_type"] == "mixtral" and "moesim_version" in trace.metadata


# --- recording from transformers models ---------------------------------------------------------

@pytest.fixture(scope="module")
def one_thread():
    if HAVE_HF:
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(old)
    else:
        yield


def tiny_model(config_name: str, seed: int = 0):
    from moesim.traces import hfconfig, record

    source = hfconfig.resolve(str(HF / config_name), tiny=True)
    if source.model_type not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no {source.model_type}")
    return source, record.build_model(source, seed)


@needs_hf
@pytest.mark.parametrize("config_name", ["mixtral-8x7b.json", "qwen1.5-moe-a2.7b.json"])
def test_record_round_trip(tmp_path, one_thread, config_name):
    from moesim.traces.record import record

    path = record(str(HF / config_name), tmp_path / "t.npz", random_tokens=300, seq_len=100,
                  tiny=True, seed=1)
    trace = io.read_trace(path)
    experts, top_k = {"mixtral-8x7b.json": (8, 2), "qwen1.5-moe-a2.7b.json": (60, 4)}[config_name]
    assert (trace.num_experts, trace.num_topk, trace.num_tokens) == (experts, top_k, 300)
    assert trace.layers == [0, 1, 2]
    for layer in trace.layers:
        ids = trace.ids[layer]
        assert ids.shape == (300, top_k) and 0 <= ids.min() and ids.max() < experts
        assert all(len(set(row)) == top_k for row in ids.tolist())
        assert np.isfinite(trace.weights[layer]).all()
    meta = trace.metadata
    for key in ("model", "config", "moesim_version", "transformers_version", "date", "prompts"):
        assert key in meta
    assert meta["prompts"]["source"] == "random-tokens" and len(meta["prompts"]["sha256"]) == 64
    assert set(meta["capture"].values()) <= {"returned", "logits"}


def spy_on_experts(model) -> dict:
    """``{layer: {expert: set of token indices}}`` as the MoE blocks hand tokens to experts.

    transformers >= 5 passes ``top_k_index`` to one experts module; 4.x calls one module per
    expert on the rows of the block's input that chose it (matched back to token indices).
    """
    from moesim.traces.hooks import find_routers

    routed, rows = {}, {}
    for layer, (_, block) in find_routers(model).items():
        routed[layer] = {}
        if isinstance(block.experts, torch.nn.ModuleList):
            def block_in(module, args, layer=layer):
                x = args[0].reshape(-1, args[0].shape[-1])
                rows[layer] = {r.numpy().tobytes(): i for i, r in enumerate(x)}
            block.register_forward_pre_hook(block_in)
            for e, expert in enumerate(block.experts):
                def expert_in(module, args, layer=layer, e=e):
                    x = args[0].reshape(-1, args[0].shape[-1])
                    if x.shape[0]:  # some versions call every expert, even with no tokens
                        routed[layer][e] = {rows[layer][r.numpy().tobytes()] for r in x}
                expert.register_forward_pre_hook(expert_in)
        else:
            def experts_in(module, args, layer=layer):
                idx = next(a for a in args if torch.is_tensor(a) and not a.is_floating_point())
                for e in idx.unique().tolist():
                    routed[layer][e] = set((idx == e).any(dim=1).nonzero()[:, 0].tolist())
            block.experts.register_forward_pre_hook(experts_in)
    return routed


@needs_hf
@pytest.mark.parametrize("config_name", ["mixtral-8x7b.json", "qwen1.5-moe-a2.7b.json",
                                         "dbrx.json"])
def test_hooks_see_the_experts_the_model_uses(one_thread, config_name):
    """Per expert, the recorded tokens are the tokens the MoE block sends to that expert."""
    from moesim.traces.record import _moe_shape, run_hooks

    source, model = tiny_model(config_name)
    routed = spy_on_experts(model)
    top_k, experts = _moe_shape(model.config, source.model_type)
    hooks = run_hooks(model, [list(range(5, 69))], source.model_type, top_k, experts, None)
    assert sorted(routed) == hooks.layers
    for layer in hooks.layers:
        ids = hooks.ids[layer][0].numpy()
        recorded = {e: set(np.nonzero((ids == e).any(axis=1))[0].tolist())
                    for e in np.unique(ids).tolist()}
        assert recorded == routed[layer]
    assert set(hooks.how.values()) <= {"returned", "logits"}


@needs_hf
@pytest.mark.parametrize("config_name", ["mixtral-8x7b.json", "qwen3-30b-a3b.json",
                                         "olmoe-1b-7b.json", "deepseek-v2-lite.json",
                                         "deepseek-v3.json", "gpt-oss-120b.json"])
def test_logit_scoring_matches_the_routers_own_choice(one_thread, config_name):
    """Scoring the router logits (the transformers 4.x path) picks what the router returns."""
    from moesim.traces.hooks import choices, find_routers
    from moesim.traces.record import _moe_shape

    source, model = tiny_model(config_name)
    top_k, experts = _moe_shape(model.config, source.model_type)
    router, block = next(iter(find_routers(model).values()))
    if hasattr(router, "e_score_correction_bias"):
        router.e_score_correction_bias.normal_(0, 0.01)  # make the bias matter
    seen = {}
    router.register_forward_hook(lambda module, args, out: seen.update(out=out))
    with torch.no_grad():
        router.weight.normal_(0, 0.5)  # a skewed router, so the group limit bites
        model(input_ids=torch.tensor([list(range(5, 55))]), use_cache=False)
        out = seen["out"]
        args = (source.model_type, top_k, experts, model.config)
        ids, weights, how = choices(out, *args, module=router, block=block)
        if how != "returned" or not (isinstance(out, tuple) and len(out) == 3):
            pytest.skip(f"transformers {transformers.__version__}: this router does not return "
                        "both its logits and its choice")
        ids2, weights2, how2 = choices(out, *args, module=router, block=block, force_logits=True)
    assert how2 == "logits"
    assert torch.equal(ids.sort(dim=1).values, ids2.sort(dim=1).values)
    order, order2 = ids.argsort(dim=1), ids2.argsort(dim=1)
    assert torch.allclose(weights.float().gather(1, order), weights2.float().gather(1, order2),
                          atol=1e-3)


@needs_hf
def test_record_from_a_saved_model_with_tokenizer(tmp_path, one_thread):
    """A folder with weights and a tokenizer: text prompts, pretrained weights, same choices."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from moesim.traces.record import record

    _, model = tiny_model("mixtral-8x7b.json", seed=5)
    model.save_pretrained(tmp_path / "m")
    vocab = {w: i for i, w in enumerate(["[UNK]", "the", "expert", "routes", "a", "token"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "m")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the expert routes a token\n\na token routes the expert expert\n")
    trace = io.read_trace(record(str(tmp_path / "m"), tmp_path / "t.npz", prompts=prompts))
    assert trace.num_tokens == 11 and trace.metadata["weights"] == "pretrained"
    assert "tokenizer" in trace.metadata["prompts"]["tokens"]
    from moesim.traces.record import run_hooks

    hooks = run_hooks(model, [[1, 2, 3, 4, 5], [4, 5, 3, 1, 2, 2]], "mixtral", 2, 8, None)
    assert np.array_equal(trace.ids[0], torch.cat(hooks.ids[0]).numpy())


@needs_hf
def test_cli_record_from_token_id_prompts(cli, capsys, tmp_path, one_thread):
    prompts = tmp_path / "ids.txt"
    prompts.write_text("1 2 3 70000\n\n4,5,6\n")
    out = tmp_path / "ids.npz"
    assert cli(["trace", "record", "-m", str(HF / "olmoe-1b-7b.json"), "--tiny", "--prompts",
                str(prompts), "--layers", "1", "-o", str(out), "--seed", "3"]) == 0
    assert "7 tokens x 1 layers [1], 64 experts, top-8" in capsys.readouterr().out
    meta = io.read_trace(out).metadata
    assert meta["prompts"]["num_sequences"] == 2 and meta["prompts"]["ids_modulo_vocab"]
    assert meta["prompts"]["sha256"] == hashlib.sha256(prompts.read_bytes()).hexdigest()


@needs_hf
def test_record_errors(tmp_path, one_thread):
    from moesim.traces.record import record

    bad = tmp_path / "p.txt"
    bad.write_text("1 2 3\nhello world\n")
    with pytest.raises(ConfigError, match="expected token ids") as err:
        record(str(HF / "mixtral-8x7b.json"), tmp_path / "t.npz", prompts=bad, tiny=True)
    assert err.value.line == 2 and str(bad) in str(err.value)
    with pytest.raises(ConfigError, match="--tiny"):
        record(str(HF / "mixtral-8x7b.json"), tmp_path / "t.npz", random_tokens=10)
    with pytest.raises(ConfigError, match=r"layer 7 has no router; expected MoE layers among "
                                           r"\[0, 1, 2\]"):
        record(str(HF / "mixtral-8x7b.json"), tmp_path / "t.npz", random_tokens=10, tiny=True,
               layers="0,7")


# --- CLI --------------------------------------------------------------------------------------

@pytest.fixture
def cli(monkeypatch):
    import moesim.cli as cli_mod

    if "trace" not in cli_mod.COMMANDS:
        monkeypatch.setattr(cli_mod, "COMMANDS", cli_mod.COMMANDS + ("trace",))
    return cli_mod.main


@pytest.mark.parametrize("argv", [["trace"], ["trace", "record"], ["trace", "stats"]])
def test_cli_help(cli, capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        cli(argv + ["--help"])
    assert exit_.value.code == 0 and "usage" in capsys.readouterr().out


def test_cli_stats(cli, capsys, tmp_path):
    assert cli(["trace", "stats", str(TINY_TRACE), "--ep", "2", "--batch-tokens", "64"]) == 0
    out = capsys.readouterr().out
    assert "imbal" in out and "lognormal:" in out and "top co-activated pairs" in out
    assert cli(["trace", "stats", str(TINY_TRACE), "--json", "--matrix", "--layers", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["layers"]) == ["1"] and len(doc["layers"]["1"]["coactivation_lift"]) == 8
    (tmp_path / "x.npz").write_text("nope")
    assert cli(["trace", "stats", str(tmp_path / "x.npz")]) == 2
    assert str(tmp_path / "x.npz") in capsys.readouterr().err


@needs_hf
@pytest.mark.parametrize("preset,family,shape", [
    ("qwen1.5-moe-a2.7b", "qwen2_moe", "60 experts, top-4"),
    ("deepseek-v3", "deepseek_v3", "256 experts, top-8")])
def test_cli_record_from_a_preset(cli, capsys, tmp_path, one_thread, preset, family, shape):
    if family not in transformers.CONFIG_MAPPING:
        pytest.skip(f"transformers {transformers.__version__} has no {family}")
    out = tmp_path / "p.npz"
    assert cli(["trace", "record", "--model", preset, "--tiny", "--random-tokens", "64",
                "--seq-len", "32", "--layers", "1-2", "--out", str(out)]) == 0
    assert f"64 tokens x 2 layers [1, 2], {shape}" in capsys.readouterr().out
    trace = io.read_trace(out)
    assert trace.metadata["model"] == preset and trace.metadata["tiny"] is True
