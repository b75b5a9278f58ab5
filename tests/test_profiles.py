"""Hardware profiles: every shipped profile loads, cites a source per datasheet field, and obeys
the ratios the vendors publish; a broken profile fails naming its file and field."""
from __future__ import annotations

from pathlib import Path

import pytest

from moesim.config import ConfigError, HardwareProfile, available_profiles, load_profile
from moesim.config.hardware import PROFILE_DIR, Efficiencies

REQUIRED = {"h100-sxm", "a100-sxm-80gb", "h800-sxm", "h200-sxm", "b200", "gb200-nvl72", "mi300x",
            "l40s", "cpu"}
PROFILE_FILES = sorted(PROFILE_DIR.rglob("*.yaml"))
NAMES = sorted(available_profiles())

#: Parts whose datasheets give FP8 at exactly twice BF16 (Hopper, Blackwell, CDNA 3). The L40S
#: datasheet does not (BF16 362.05 vs FP8 733 dense; see the note in l40s.yaml), so it is checked loosely.
FP8_IS_2X_BF16 = {"h100-sxm", "h800-sxm", "h200-sxm", "b200", "gb200-nvl72", "mi300x",
                  "rtx-pro-6000-server"}
BLACKWELL = {"b200", "gb200-nvl72", "rtx-pro-6000-server"}
#: no native fp8 matrix engine: fp8 GEMMs run at the bf16 rate, int8 at twice it
#: (AIConfigurator systems/b60.yaml)
FP8_AT_BF16_RATE = {"arc-pro-b60"}
#: Fields that are never on a datasheet: their source must say it is an assumption.
ASSUMED_FIELDS = ("compute.gemm_tile_m", "compute.gemm_tile_n", "compute.launch_overhead_s",
                  "compute.comm_overlap_fraction", "compute.split_k_min_k",
                  "memory.reserved_bytes", "scale_up.latency_s", "scale_out.latency_s")


def _sourced_fields(profile: HardwareProfile) -> list[str]:
    """Dotted paths of every field that must carry a ``sources`` entry."""
    dump = profile.model_dump()
    paths = ["compute.units", "compute.gemm_tile_m", "compute.gemm_tile_n",
             "compute.launch_overhead_s", "compute.comm_overlap_fraction", "compute.split_k_min_k"]
    paths += [f"compute.peak_flops_per_s.{dtype}" for dtype in dump["compute"]["peak_flops_per_s"]]
    for section in ("memory", "scale_up", "scale_out", "host_link"):
        if dump.get(section) is not None:
            paths += [f"{section}.{name}" for name in dump[section]]
    return paths


def _source_for(profile: HardwareProfile, path: str) -> str | None:
    """The source of ``path``: an entry for the path itself or for its nearest parent."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in profile.sources:
            return profile.sources[key]
    return None


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_required_profiles_exist():
    assert REQUIRED <= set(NAMES), f"missing profiles: {sorted(REQUIRED - set(NAMES))}"


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_profile_loads_and_is_named_after_its_file(path):
    profile = load_profile(path)
    assert profile.name == path.stem
    assert len(profile.description) > 10


@pytest.mark.parametrize("name", NAMES)
def test_every_datasheet_field_has_a_source(name):
    profile = load_profile(name)
    missing = [p for p in _sourced_fields(profile) if not (_source_for(profile, p) or "").strip()]
    assert not missing, f"{name}: no sources entry for {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_source_keys_name_real_fields(name):
    """A typo in a sources key would leave the real field unsourced without anyone noticing."""
    profile = load_profile(name)
    dump = profile.model_dump()
    for key in profile.sources:
        node = dump
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{name}: sources key '{key}' names no field"
            node = node[part]


@pytest.mark.parametrize("name", NAMES)
def test_non_datasheet_fields_are_marked_as_assumptions(name):
    profile = load_profile(name)
    allowed = ("assumption", "measured") if profile.kind == "calibrated" else ("assumption",)
    for path in ASSUMED_FIELDS:
        source = _source_for(profile, path)
        ok = source and (source.startswith(allowed) or (profile.kind == "calibrated"
                                                         and "measured" in source))
        assert ok, f"{name}: {path} source is {source!r}"


@pytest.mark.parametrize("name", NAMES)
def test_every_efficiency_has_a_basis_and_a_note(name):
    profile = load_profile(name)
    for field in Efficiencies.model_fields:
        eff = getattr(profile.efficiency, field)
        if eff is None:  # optional efficiencies (host_link_bandwidth)
            continue
        assert eff.basis in ("measured", "assumption"), f"{name}: {field}"
        assert len(eff.note.strip()) >= 20, f"{name}: {field} note too short: {eff.note!r}"
        if profile.kind == "datasheet":
            assert eff.basis == "assumption", f"{name}: {field} claims a measurement"


@pytest.mark.parametrize("name", NAMES)
def test_model_assumptions_live_in_the_profile(name):
    """What the cost model and the offload planner assume about a device is profile data with a
    basis, not a constant in code: phase kernel counts for every phase, the host-link efficiency
    where there is a host link, and the fields above (checked by the assumption tests)."""
    from moesim.config.hardware import KERNEL_PHASES

    profile = load_profile(name)
    phases = profile.efficiency.phases
    assert set(KERNEL_PHASES) <= set(phases.kernels), name
    assert phases.basis in ("measured", "assumption") and len(phases.note) >= 20
    if profile.host_link is not None:
        host = profile.efficiency.host_link_bandwidth
        assert host is not None and len(host.note) >= 20, name
    for path in ("compute.comm_overlap_fraction", "compute.split_k_min_k", "memory.reserved_bytes"):
        source = _source_for(profile, path) or ""
        assert len(source) >= 40, f"{name}: {path} has no rationale: {source!r}"


def test_a_profile_without_phase_kernels_or_host_efficiency_is_refused(tmp_path):
    text = (PROFILE_DIR / "h100-sxm.yaml").read_text()
    no_host = text.replace("  host_link_bandwidth:\n", "  unused_host:\n", 1)
    assert no_host != text
    with pytest.raises(ConfigError, match="host_link_bandwidth|unused_host"):
        load_profile(_write(tmp_path, "h100-sxm", no_host))
    no_router = text.replace("{router: 3, permute: 2,", "{permute: 2,", 1)
    assert no_router != text
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="router"):
        load_profile(_write(tmp_path / "other", "h100-sxm", no_router))


def test_cpu_efficiencies_say_calibration_replaces_them():
    profile = load_profile("cpu")
    for field in Efficiencies.model_fields:
        eff = getattr(profile.efficiency, field)
        assert eff is None or "calibration" in eff.note


@pytest.mark.parametrize("name", NAMES)
def test_peak_ratios(name):
    profile = load_profile(name)
    peaks = profile.compute.peak_flops_per_s
    name = profile.base if profile.kind == "calibrated" and profile.base else name  # its device
    if "bf16" in peaks and "fp32" in peaks:
        assert peaks["bf16"] >= peaks["fp32"]
    if "fp16" in peaks and "bf16" in peaks:
        assert peaks["fp16"] == peaks["bf16"]
    if "tf32" in peaks:
        assert peaks["tf32"] == pytest.approx(peaks["bf16"] / 2, rel=0.03)
    if name in FP8_AT_BF16_RATE:
        assert peaks["fp8"] == peaks["bf16"]
        assert peaks["int8"] == pytest.approx(2 * peaks["bf16"], rel=0.01)
    elif name in FP8_IS_2X_BF16:
        assert peaks["fp8"] == pytest.approx(2 * peaks["bf16"], rel=1e-3)
    elif "fp8" in peaks:
        assert peaks["fp8"] == pytest.approx(2 * peaks["bf16"], rel=0.02)
    if "int8" in peaks and "fp8" in peaks and name not in FP8_AT_BF16_RATE:
        assert peaks["int8"] == peaks["fp8"]
    if name in BLACKWELL:
        assert peaks["fp4"] == pytest.approx(2 * peaks["fp8"], rel=1e-3)
    else:
        assert "fp4" not in peaks


@pytest.mark.parametrize("name", NAMES)
def test_link_ordering(name):
    profile = load_profile(name)
    if profile.scale_up.domain_size > 1:
        assert profile.scale_up.bandwidth_bytes_per_s >= profile.scale_out.bandwidth_bytes_per_s
    assert profile.memory.bandwidth_bytes_per_s > profile.scale_up.bandwidth_bytes_per_s


# Published per-GPU numbers (dense), with the document they come from; tolerance 1%.
PUBLISHED = [
    ("h100-sxm", "compute.peak_flops_per_s.bf16", 989.4e12, "H100 whitepaper Table 2"),
    ("h100-sxm", "memory.bandwidth_bytes_per_s", 3.35e12, "H100 datasheet, SXM"),
    ("h800-sxm", "scale_up.bandwidth_bytes_per_s", 200e9, "H800 datasheet: NVLink 400 GB/s bidir"),
    ("h200-sxm", "memory.capacity_bytes", 141e9, "H200 datasheet"),
    ("a100-sxm-80gb", "memory.bandwidth_bytes_per_s", 2.039e12, "A100 datasheet, 80GB SXM"),
    ("b200", "compute.peak_flops_per_s.fp4", 9e15, "HGX B200: 144 PF sparse / 8 / 2"),
    ("gb200-nvl72", "scale_up.domain_size", 72, "GB200 NVL72 datasheet"),
    ("gb200-nvl72", "memory.capacity_bytes", 186e9, "GB200 NVL72: 13.4 TB / 72"),
    ("mi300x", "compute.peak_flops_per_s.fp8", 2614.9e12, "MI300X datasheet"),
    ("mi300x", "scale_up.bandwidth_bytes_per_s", 7 * 64e9, "7 xGMI links x 64 GB/s"),
    ("l40s", "memory.bandwidth_bytes_per_s", 864e9, "L40S datasheet"),
]


@pytest.mark.parametrize("name,path,expected,document", PUBLISHED,
                         ids=[f"{n}:{p.rsplit('.', 1)[-1]}" for n, p, _, _ in PUBLISHED])
def test_published_numbers(name, path, expected, document):
    node = load_profile(name).model_dump()
    for part in path.split("."):
        node = node[part]
    assert node == pytest.approx(expected, rel=0.01), document


def test_base_override_keeps_parent_compute_and_replaces_memory():
    h100, h200, h800 = (load_profile(n) for n in ("h100-sxm", "h200-sxm", "h800-sxm"))
    assert h200.compute == h100.compute
    assert h200.memory.capacity_bytes == 141e9 and h200.memory.bandwidth_bytes_per_s == 4.8e12
    assert h200.memory.l2_bytes == h100.memory.l2_bytes
    assert h200.scale_up == h100.scale_up
    assert h800.compute == h100.compute and h800.memory == h100.memory
    assert h800.scale_up.bandwidth_bytes_per_s == 200e9
    assert h800.scale_up.domain_size == h100.scale_up.domain_size
    assert h800.efficiency.scale_up_bandwidth != h100.efficiency.scale_up_bandwidth
    assert h800.efficiency.gemm == h100.efficiency.gemm
    assert "H800" in h800.sources["scale_up.bandwidth_bytes_per_s"]
    assert h800.sources["memory.l2_bytes"] == h100.sources["memory.l2_bytes"]


def test_typo_in_a_field_names_file_field_and_suggestion(tmp_path):
    path = _write(tmp_path, "typo", "name: typo\ndescription: h100 with a typo\nbase: h100-sxm\n"
                  "memory:\n  bandwith_bytes_per_s: 1.0e+12\n")
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    err = info.value
    assert err.file == str(path) and err.field == "memory.bandwith_bytes_per_s"
    assert err.line == 5
    assert str(path) in str(err) and "memory.bandwith_bytes_per_s" in str(err)
    assert "did you mean 'bandwidth_bytes_per_s'" in str(err)


def test_typo_in_a_standalone_profile(tmp_path):
    text = (PROFILE_DIR / "h100-sxm.yaml").read_text(encoding="utf-8")
    assert "  gemm_tile_m:" in text
    path = _write(tmp_path, "h100-typo", text.replace("name: h100-sxm", "name: h100-typo")
                  .replace("  gemm_tile_m:", "  gemm_tile_mm:"))
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert info.value.field == "compute.gemm_tile_mm"
    assert str(path) in str(info.value)


def test_negative_bandwidth_names_file_and_field(tmp_path):
    path = _write(tmp_path, "negative", "name: negative\ndescription: h100 with a bad NIC\n"
                  "base: h100-sxm\nscale_out:\n  bandwidth_bytes_per_s: -5.0e+9\n")
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    err = info.value
    assert err.file == str(path) and err.field == "scale_out.bandwidth_bytes_per_s"
    assert str(path) in str(err) and "scale_out.bandwidth_bytes_per_s" in str(err)
    assert "greater than 0" in str(err)
