"""The harness: microbenchmarks and timing on a real device (with ``moesim.measure``, the only
place torch and pynvml are imported, always lazily or below this package).

- ``timing.bench``: the one timing primitive (warm-up, rotated inputs, median and spread, CUDA
  events on GPUs); ``stats.Stats``: the pure statistics behind it;
- ``device``: ``--device`` parsing, thread count, device facts (pynvml / CPU model);
- ``microbench``: the suite (GEMMs, copy, op overhead, router, permute/unpermute);
- ``alltoall``: the torchrun all-to-all benchmark; ``records``: the JSON files they write.
"""
