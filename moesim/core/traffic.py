"""Who sends what to whom in dispatch and combine: per-token hit probabilities, byte sizes and
per-device send/receive volumes for each all-to-all kernel family.

Kernel families (how many copies of a token cross the links):

- ``per-expert``: one copy per (token, chosen expert) off the source device -- DeepEP's
  low-latency kernels and ``torch.distributed.all_to_all_single`` of permuted rows;
- ``all-to-all-v``: the same copies through ``torch.distributed.all_to_all_single`` with uneven
  splits: a count exchange (one more all-to-all latency) precedes the rows, and the receiving
  device regroups the rows by local expert and back (one more read + write pass each way);
- ``per-device``: one copy per destination device -- DeepEP's normal (throughput) kernels;
- ``hierarchical``: one copy per destination node over the network, then one per destination
  device over NVLink inside the node -- DeepEP's internode normal kernels;
- ``padded``: fixed buffers of ``capacity_factor * tokens * top_k / ep`` rows per device pair --
  NCCL all-to-all of capacity-padded buffers (GShard style).

Volumes are counted in token copies; bytes per copy come from :func:`token_bytes`.
"""
from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from moesim.config import dtypes
from moesim.core.placement import Placement
from moesim.core.routing import cap_inclusion, kept_group_counts

A2A_KERNELS = ("per-expert", "all-to-all-v", "per-device", "hierarchical", "padded")


def token_bytes(hidden, dtype: str) -> np.ndarray:
    """Bytes of one token's hidden vector in ``dtype`` including block scales.

    fp8 (DeepSeek-V3/DeepEP): ``hidden + hidden/128*4``; bf16: ``2*hidden``.
    """
    return dtypes.token_bytes(dtype, np.asarray(hidden, dtype=float))


def _log_none_chosen(n: np.ndarray, m: np.ndarray, k: np.ndarray) -> np.ndarray:
    """log P(no 'good' item among k drawn without replacement from n holding m good ones),
    i.e. log C(n-m, k) / C(n, k), continued to real arguments; -inf when n - m < k."""
    rest = n - m - k
    ok = rest > -1e-9
    safe = np.where(ok, rest, 0.0)
    val = gammaln(n - m + 1) + gammaln(n - k + 1) - gammaln(safe + 1) - gammaln(n + 1)
    return np.where(ok, val, -np.inf)


def hit_probability(owner: np.ndarray, num_owners: int, placement: Placement, q: np.ndarray,
                    top_k: int, num_groups: int = 1, topk_groups: int = 1) -> np.ndarray:
    """P(a token sends at least one of its ``top_k`` choices to owner o) ``[num_owners]``.

    ``owner[slot]`` maps each slot to a device or a node. Closed form: with group-limited
    routing a token keeps ``topk_groups`` of ``num_groups`` groups (group g with probability
    ``s_g``, capped-proportional to its load) and takes ``k`` experts inside a kept group with
    probability ``P(k)`` (:func:`moesim.core.routing.kept_group_counts`, mean
    ``top_k / topk_groups``); inside a kept group the owner holds ``m`` expert-equivalents of
    the ``n_g`` experts, so P(missed | g kept) = sum_k P(k) C(n_g - m, k) / C(n_g, k)
    (hypergeometric; exact for uniform routing). Without groups ``k = top_k``. Groups are
    treated as independent.
    """
    experts = q.size
    per_group = experts // num_groups
    group_of = np.arange(experts) // per_group
    group_load = np.bincount(group_of, weights=q, minlength=num_groups)
    if num_groups > 1:
        s = cap_inclusion(group_load, topk_groups)
        law = kept_group_counts(per_group, num_groups, topk_groups, top_k)
    else:
        s, law = np.ones(1), np.eye(top_k + 1)[top_k]
    k_mean = top_k / topk_groups
    # expert-equivalents per (owner, group): slot mass / mean per-expert mass inside the group
    mean_q_in_group = k_mean / per_group * s
    mass = q[placement.slot_expert] * placement.slot_share
    m = np.zeros((num_owners, num_groups))
    np.add.at(m, (owner, group_of[placement.slot_expert]),
              mass / mean_q_in_group[group_of[placement.slot_expert]])
    m = np.minimum(m, per_group)[..., None]
    k = np.flatnonzero(law)
    log_miss = _log_none_chosen(float(per_group), m, k.astype(float))
    p_miss_given = (np.exp(log_miss) * law[k]).sum(axis=-1)
    p_miss = np.prod((1.0 - s) + s * p_miss_given, axis=1)
    return 1.0 - p_miss


def node_of_device(num_devices: int, domain_size: int) -> np.ndarray:
    """Node index of each EP rank: ranks fill scale-up domains in order."""
    return np.arange(num_devices) // max(1, domain_size)


def copies_per_token(kernel: str, placement: Placement, q: np.ndarray, top_k: int,
                     num_groups: int, topk_groups: int, domain_size: int,
                     capacity_factor: float = 1.0) -> dict[str, np.ndarray]:
    """Token copies one source token sends to each destination, per kernel family.

    Returns ``to_device`` ``[D]`` (copies per source token to device d; the source itself
    excluded later), and for ``hierarchical`` also ``to_node`` ``[nodes]`` (network copies).
    """
    num_devices = placement.num_devices
    dev_mass = placement.device_load(q)  # expected (token, expert) pairs on each device
    out: dict[str, np.ndarray] = {}
    if kernel in ("per-expert", "all-to-all-v"):
        out["to_device"] = dev_mass
    elif kernel in ("per-device", "hierarchical"):
        out["to_device"] = hit_probability(placement.slot_device, num_devices, placement, q,
                                           top_k, num_groups, topk_groups)
        if kernel == "hierarchical":
            node = node_of_device(num_devices, domain_size)
            out["to_node"] = hit_probability(node[placement.slot_device], int(node.max()) + 1,
                                             placement, q, top_k, num_groups, topk_groups)
    elif kernel == "padded":
        out["to_device"] = np.full(num_devices, capacity_factor * top_k / num_devices)
    else:
        from moesim.config.errors import ConfigError, unknown

        raise ConfigError(unknown("a2a kernel", kernel, A2A_KERNELS), field="a2a_kernel")
    return out


def device_volumes(copies: dict[str, np.ndarray], tokens_per_device, domain_size: int,
                   kernel: str) -> dict[str, np.ndarray]:
    """Per-device token copies sent and received over each link class in one all-to-all.

    Every source device holds ``tokens_per_device`` tokens routed the same way, so source s
    sends ``T * to_device[d]`` copies to each d != s. Returns arrays ``[rows, D]`` named
    ``send_intra``, ``send_inter``, ``recv_intra``, ``recv_inter`` (dispatch direction; combine
    is the mirror image).
    """
    t = np.asarray(tokens_per_device, dtype=float)[:, None]
    to_dev = copies["to_device"]
    num_devices = to_dev.size
    node = node_of_device(num_devices, domain_size)
    same_node = node[:, None] == node[None, :]
    np.fill_diagonal(same_node, False)
    other_node = node[:, None] != node[None, :]
    node_sizes = np.bincount(node)
    if kernel != "hierarchical":
        send_intra = same_node.astype(float) @ to_dev
        send_inter = other_node.astype(float) @ to_dev
        recv_intra = to_dev * (node_sizes[node] - 1)
        recv_inter = to_dev * (num_devices - node_sizes[node])
    else:
        to_node = copies["to_node"]
        nodes = to_node.size
        remote = np.ones((nodes, nodes)) - np.eye(nodes)
        send_inter = (remote @ to_node)[node]  # one copy per remote node hit
        # arrivals at node n from remote sources, spread over its devices' NICs
        recv_inter = (to_node * (num_devices - node_sizes))[node] / node_sizes[node]
        # NVLink forwarding: every copy bound for d that is not already on d
        fwd = to_dev * (num_devices - 1) * (1.0 - 1.0 / node_sizes[node])
        recv_intra = fwd
        send_intra = np.full(num_devices, fwd.mean())
    return {"send_intra": t * send_intra, "send_inter": t * send_inter,
            "recv_intra": t * recv_intra, "recv_inter": t * recv_inter}
