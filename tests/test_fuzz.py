"""A bounded slice of the mutation fuzzer (benchmarks/bench_fuzz.py runs any count), and the
issue's directed hostile inputs through the same forked, time- and memory-capped harness."""
from __future__ import annotations

import pytest

from moesim.fuzz import Mutant, corpus, mutant, run_one
from moesim.fuzz.mutate import TEXT_PAYLOADS

HEAD = "name: fz\nhardware: [h100-sxm]\n"
DIRECTED = {
    "experts": HEAD + "model: {preset: mixtral-8x7b, experts: 1000000000}\ntokens: 16\n",
    "tokens": HEAD + "model: mixtral-8x7b\ntokens: 4611686018427387904\n",
    "dev_zero": HEAD + "model: mixtral-8x7b\ntokens: 16\nrouting: trace:/dev/zero\n",
    "probs": HEAD + "model: mixtral-8x7b\ntokens: 16\nrouting: probs:" + ",".join(
        ["1"] * 1_000_000) + "\n",
    "zipf_inf": HEAD + "model: mixtral-8x7b\ntokens: 16\nrouting: zipf:.inf\n",
    "capacity": HEAD + "model: mixtral-8x7b\ntokens: 16\ncapacity_factor: .inf\n"
                       "drop_tokens: true\n",
    "bool_sweep": HEAD + "model: mixtral-8x7b\nsweep: {tokens: [true, 16]}\n",
    "huge_stop": HEAD + "model: mixtral-8x7b\nsweep: {tokens: {start: 1, stop: 1.0e+15, "
                        "step: 1}}\n",
    "seed": HEAD + "model: mixtral-8x7b\ntokens: 16\nrouting: zipf:1.2\nseed: -1\n",
    "alias_bomb": TEXT_PAYLOADS[0] + HEAD + "model: mixtral-8x7b\ntokens: 16\n",
}


@pytest.mark.parametrize("name", sorted(DIRECTED))
def test_directed_hostile_inputs_are_clean_errors(name):
    result = run_one(Mutant(0, "scenario", name, DIRECTED[name].encode(), ()), timeout_s=20)
    assert result["outcome"] == "clean", result
    assert result["note"].startswith("ConfigError"), result


def test_mutants_are_seeded():
    files = corpus()
    assert mutant(7, files) == mutant(7, files)
    assert len({mutant(s, files).text for s in range(20)}) == 20


def test_fuzz_slice_has_no_finding():
    files = corpus()
    results = [run_one(mutant(seed, files), timeout_s=20) for seed in range(16)]
    findings = [r for r in results if r["outcome"] != "clean"]
    assert not findings, findings


def test_harness_reports_a_valid_file_as_ran():
    """The slice above may be all clean errors; the harness must still tell a run from an error."""
    text = (HEAD + "model: mixtral-8x7b\ntokens: 16\n").encode()
    result = run_one(Mutant(0, "scenario", "valid", text, ()), timeout_s=20)
    assert result["outcome"] == "clean" and result["note"] == "ran", result
