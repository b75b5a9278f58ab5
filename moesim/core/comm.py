"""All-to-all time per device: an alpha-beta model over two link classes.

A device sends and receives over NVLink/xGMI (intra-node) and over its NIC (inter-node) at the
same time; each direction of each link runs at ``bandwidth * efficiency`` (unidirectional).

    t_intra = max(send_intra, recv_intra) * bytes_per_copy / (bw_up  * eff_up)
    t_inter = max(send_inter, recv_inter) * bytes_per_copy / (bw_out * eff_out)
    time_s  = launch + [latency_up if intra traffic] max(...) [latency_out if inter traffic]
            = launch + max(t_intra + alpha_up, t_inter + alpha_out)

Source: the alpha-beta (Hockney) model; the per-direction, per-link-class form follows how
DeepEP reports NVLink and RDMA bandwidth separately.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CommCost:
    """Arrays ``[rows, devices]``: time and bytes moved over each link class."""

    time_s: np.ndarray
    intra_s: np.ndarray
    inter_s: np.ndarray
    intra_bytes: np.ndarray  # max(sent, received) over NVLink
    inter_bytes: np.ndarray  # max(sent, received) over the network
    sent_bytes: np.ndarray
    received_bytes: np.ndarray


@dataclass(frozen=True)
class KernelLaw:
    """A fitted all-to-all kernel family's law for one direction (a profile's
    ``alltoall_kernels['F/dispatch']``): ``t = latency_s + bytes / bandwidth_bytes_per_s`` over
    the ``link`` class (``scale_up`` or ``scale_out``), the bandwidth an effective rate
    (efficiency 1). ``fit_bytes_per_element``: the payload bytes per hidden element the fit
    counted (2.0: DeepEP's fits count the bf16 payload whatever the wire dtype); ``None``: the
    exchange's own bytes (NCCL's fit counts the message bytes)."""

    link: str
    latency_s: float
    bandwidth_bytes_per_s: float
    fit_bytes_per_element: float | None = None


def alltoall(volumes: dict[str, np.ndarray], bytes_per_copy, *, up_bytes_per_s: float,
             up_eff: float, up_latency_s: float, out_bytes_per_s: float, out_eff: float,
             out_latency_s: float, launch_overhead_s: float, reverse: bool = False) -> CommCost:
    """Time of one all-to-all given per-device copy volumes (see ``traffic.device_volumes``).

    ``reverse=True`` is the combine: what was received is sent back.
    """
    b = np.asarray(bytes_per_copy, dtype=float).reshape(-1, 1)
    s_in, s_out = ("recv", "send") if reverse else ("send", "recv")
    send_intra, recv_intra = volumes[f"{s_in}_intra"] * b, volumes[f"{s_out}_intra"] * b
    send_inter, recv_inter = volumes[f"{s_in}_inter"] * b, volumes[f"{s_out}_inter"] * b
    intra_bytes = np.maximum(send_intra, recv_intra)
    inter_bytes = np.maximum(send_inter, recv_inter)
    intra_s = _link_s(intra_bytes, up_bytes_per_s * up_eff, up_latency_s)
    inter_s = _link_s(inter_bytes, out_bytes_per_s * out_eff, out_latency_s)
    moved = (intra_bytes > 0) | (inter_bytes > 0)
    time_s = np.maximum(intra_s, inter_s) + moved * launch_overhead_s
    return CommCost(time_s, intra_s, inter_s, intra_bytes, inter_bytes,
                    send_intra + send_inter, recv_intra + recv_inter)


def _link_s(nbytes: np.ndarray, bytes_per_s, latency_s) -> np.ndarray:
    """``nbytes / bytes_per_s + latency_s`` where bytes move, else 0 (an idle link class)."""
    if not nbytes.any():
        return np.zeros_like(nbytes)
    return nbytes / bytes_per_s + (nbytes > 0) * latency_s


def allreduce(nbytes, group, domain_size, *, up_bytes_per_s: float, up_eff: float,
              up_latency_s: float, out_bytes_per_s: float, out_eff: float,
              out_latency_s: float, launch_overhead_s: float) -> np.ndarray:
    """Ring all-reduce of ``nbytes`` per device over ``group`` devices ``[rows]``.

    Reduce-scatter then all-gather: ``2 (g - 1)`` steps, each moving ``nbytes / g`` per device:

        time_s = launch + 2 (g - 1) (alpha + nbytes / g / (bw eff))

    over NVLink/xGMI when the group fits in one scale-up domain, else over the network (the
    ring's slowest hop). A reduce-scatter + all-gather pair (sequence parallel) costs the same.
    Source: Patarasuk and Yuan, Bandwidth optimal all-reduce algorithms, JPDC 2009.
    """
    nbytes, group = np.asarray(nbytes, float), np.asarray(group, float)
    intra = group <= domain_size
    bw = np.where(intra, up_bytes_per_s * up_eff, out_bytes_per_s * out_eff)
    alpha = np.where(intra, up_latency_s, out_latency_s)
    steps = 2.0 * (group - 1.0)
    time_s = steps * (alpha + nbytes / np.maximum(group, 1.0) / bw) + launch_overhead_s
    return np.where(group > 1, time_s, 0.0)
