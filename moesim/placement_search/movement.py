"""The cost of re-balancing: expert weights that must move from the old placement to the new.

Device ``d`` must fetch every expert of its new slots that it does not already hold. Each copy
comes from a device holding that expert in the old placement: one in ``d``'s node if any
(scale-up link), else any (scale-out link); among candidates the one with the fewest copies to
send so far, so senders share the work. The transfer is one all-to-all of whole experts, timed
like dispatch (``moesim.core.comm.alltoall``: per device ``max(send, receive)`` bytes over each
link class at bandwidth x efficiency plus latency, the slower link class sets the time). Bytes
and time are for one MoE layer; re-balancing every layer moves ``moe_layers`` times as much.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.config.dtypes import weight_bytes
from moesim.config.errors import ConfigError
from moesim.core import comm
from moesim.core.placement import Placement
from moesim.core.traffic import node_of_device


@dataclass(frozen=True)
class Movement:
    """Copies and bytes to move for one layer; ``time_s`` over the slowest device."""

    copies: int
    bytes: float
    intra_node_bytes: float
    inter_node_bytes: float
    time_s: float


def expert_bytes(model) -> float:
    """Weight bytes of one routed expert, block scales included."""
    return float(weight_bytes(model.weight_dtype, model.expert_params()))


def transfer_plan(old: Placement, new: Placement, domain_size: int) -> dict[str, np.ndarray]:
    """Copies each device sends/receives over each link class ``{send,recv}_{intra,inter}``."""
    if old.num_devices != new.num_devices or old.num_experts != new.num_experts:
        raise ConfigError(f"placements differ in shape: {old.num_experts} experts on "
                          f"{old.num_devices} devices vs {new.num_experts} on {new.num_devices}",
                          field="placement")
    num_devices = new.num_devices
    node = node_of_device(num_devices, domain_size)
    holders = [np.unique(old.slot_device[old.slot_expert == e]) for e in range(old.num_experts)]
    held = {(int(d), int(e)) for d, e in zip(old.slot_device, old.slot_expert)}
    vol = {k: np.zeros(num_devices) for k in ("send_intra", "send_inter", "recv_intra", "recv_inter")}
    sent = np.zeros(num_devices)
    for d, e in sorted(zip(new.slot_device.tolist(), new.slot_expert.tolist())):
        if (d, e) in held:
            continue
        local = holders[e][node[holders[e]] == node[d]]
        cands = local if local.size else holders[e]
        src = int(cands[np.argmin(sent[cands])])
        sent[src] += 1
        kind = "intra" if node[src] == node[d] else "inter"
        vol[f"send_{kind}"][src] += 1
        vol[f"recv_{kind}"][d] += 1
    return vol


def movement_cost(old: Placement, new: Placement, model, hw) -> Movement:
    """Bytes and time to go from ``old`` to ``new`` for ``model`` (MoEModel) on ``hw``."""
    vol = transfer_plan(old, new, hw.scale_up.domain_size)
    per = expert_bytes(model)
    copies = int(vol["recv_intra"].sum() + vol["recv_inter"].sum())
    if copies == 0:
        return Movement(0, 0.0, 0.0, 0.0, 0.0)
    eff = hw.efficiency
    cost = comm.alltoall({k: v[None, :] for k, v in vol.items()}, per,
                         up_bytes_per_s=hw.scale_up.bandwidth_bytes_per_s,
                         up_eff=float(eff.scale_up_bandwidth.at(1.0)),
                         up_latency_s=hw.scale_up.latency_s,
                         out_bytes_per_s=hw.scale_out.bandwidth_bytes_per_s,
                         out_eff=float(eff.scale_out_bandwidth.at(1.0)),
                         out_latency_s=hw.scale_out.latency_s,
                         launch_overhead_s=hw.compute.launch_overhead_s)
    return Movement(copies, copies * per, float(vol["recv_intra"].sum() * per),
                    float(vol["recv_inter"].sum() * per), float(cost.time_s.max()))
