"""The harness: microbenchmarks and timing on a real device (with ``moesim.measure``, the only
place torch and pynvml are imported, always lazily or below this package).

- ``timing.bench``: the one timing primitive (warm-up, rotated inputs, median and spread, CUDA
  events on GPUs), and ``timing.PhaseTimer`` for the phases inside one forward (the same clock,
  synchronised on GPUs); ``stats.Stats``: the pure statistics behind them;
- ``device``: ``--device`` parsing, thread count, device facts (pynvml / CPU model), and which
  backend, timer and facts a device implies (``plan_for``);
- ``launch``: the one torchrun launcher and rank skeleton (workers die with their parent);
  ``host``: cores, load and the CPU other processes take during a timing;
- ``microbench``: the suite (GEMMs, copy, op overhead, router, permute/unpermute);
- ``alltoall``: the torchrun all-to-all benchmark; ``records``: the JSON files they write.
"""
