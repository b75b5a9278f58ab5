"""The all-to-all benchmark with 2 gloo ranks under torchrun (small sizes, one launch)."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("torch.distributed")

from moesim.calibration.comm_fit import critical_bytes, fit_link
from moesim.core.traffic import token_bytes
from moesim.harness.alltoall import HarnessError, launch_local

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("a2a") / "a2a.json"
    return launch_local(2, out, sizes=[1024, 16 * 1024, 256 * 1024], uneven_sizes=[64 * 1024],
                        hidden=128, dtype="bf16", quick=True, timeout_s=120)


def test_two_gloo_ranks_measure_even_and_uneven_splits(two_ranks):
    recs = two_ranks.records
    assert [r.params["pattern"] for r in recs] == ["even", "even", "even", "uneven"]
    row = float(token_bytes(128, "bf16"))
    for r in recs:
        p = r.params
        assert p["world_size"] == 2 and p["nodes"] == 1 and p["backend"] == "gloo"
        assert p["row_bytes"] == row
        rows = p["rows"]
        # off-rank bytes only: rank 0 sends rows[0][1] rows, receives rows[1][0]
        assert p["send_intra"] == [rows[0][1] * row, rows[1][0] * row]
        assert p["recv_intra"] == [rows[1][0] * row, rows[0][1] * row]
        assert p["send_inter"] == [0.0, 0.0]
        assert 0 < r.stats.min_s <= r.stats.median_s < 1.0 and r.stats.n >= 5
    assert [critical_bytes(r, "intra") for r in recs[:3]] == [1024.0, 16384.0, 262144.0]
    facts = two_ranks.provenance["alltoall"]
    assert facts["world_size"] == 2 and facts["backend"] == "gloo"
    assert facts["torch_threads"] == 1  # OMP_NUM_THREADS=1 per rank


def test_alltoall_records_fit(two_ranks):
    link = fit_link(two_ranks.records, "intra")
    assert link is not None and link.world_size == 2
    assert link.fit.alpha_s > 0 and link.quality["uneven"]["n"] == 1


def test_failed_launch_is_reported_with_its_output(tmp_path):
    with pytest.raises(HarnessError, match="failed .exit"):
        launch_local(2, tmp_path / "x.json", sizes=[1024], dtype="int7", timeout_s=60)
