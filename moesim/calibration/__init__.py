"""Calibration: fit a hardware profile's efficiencies, latencies and overheads to measurements.

Pure numpy/scipy (no torch): ``fit`` holds generic fits, ``gemm_fit``/``comm_fit``/``stream_fit``
the per-parameter ones, ``calibrate`` puts them together, ``profile_writer`` writes the YAML.
"""
