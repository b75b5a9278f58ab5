"""A seeded mutation fuzzer of moesim's inputs (scenarios, hardware profiles, model files).

``benchmarks/bench_fuzz.py`` runs any number of mutants and prints the outcome counts;
``tests/test_fuzz.py`` runs a bounded slice. See :mod:`moesim.fuzz.mutate` (the mutants) and
:mod:`moesim.fuzz.harness` (one forked, time- and memory-capped process per mutant).
"""
from moesim.fuzz.harness import OUTCOMES, run_one, summarise
from moesim.fuzz.mutate import Mutant, corpus, mutant

__all__ = ["Mutant", "OUTCOMES", "corpus", "mutant", "run_one", "summarise"]
