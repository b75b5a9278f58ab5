"""Re-predict the quiet held-out EP-1 rows (results/heldout-cpu-quiet) with another profile.

Run: ``python benchmarks/heldout_fresh_profile.py PROFILE`` (a name or a path, e.g.
results/calibration-cpu/1t-fresh-2026-12-03/profile.yaml). Prints layer and expert MAPE and bias
with the committed ``cpu-epyc-zen4-1t`` and with PROFILE. Measures nothing.
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from moesim.predict import predict_many
from moesim.config.model import MODEL_FIELDS
from moesim.config.run import RUN_FIELDS

prof = sys.argv[1]
df = pd.read_csv('results/heldout-cpu-quiet/results.csv')
df = df[df.ep == 1].copy()
cols = [c for c in list(MODEL_FIELDS) + list(RUN_FIELDS) if c in df.columns and c != 'hardware']
for name, hw in (('committed', 'cpu-epyc-zen4-1t'), ('fresh', prof)):
    inp = df[cols].copy(); inp['hardware'] = hw; inp['model'] = 'custom' if 'model' not in inp else inp['model']
    out = predict_many(inp)
    err = out.time_s.to_numpy() / df.measured_time_s.to_numpy() - 1
    exp_err = out.experts_s.to_numpy() / df.measured_experts_s.to_numpy() - 1
    print(f"{name:10s} layer MAPE {np.mean(np.abs(err))*100:5.1f} %  bias {np.mean(err)*100:+5.1f} %  experts MAPE {np.mean(np.abs(exp_err))*100:5.1f} % bias {np.mean(exp_err)*100:+5.1f} %")
