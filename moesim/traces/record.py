"""Record a routing trace from a Hugging Face ``transformers`` MoE model (needs torch and
transformers: ``pip install 'moesim[trace]'``).

The model is built from its config (random weights, seeded; ``--tiny`` shrinks it, see
:mod:`moesim.traces.hfconfig`) or loaded from a local folder with weights; nothing is
downloaded. Each prompt (or each ``seq_len`` chunk of random token ids) runs as one sequence of
a batch of one through the model's forward pass (prefill, no cache, no padding), while
:class:`moesim.traces.hooks.RouterHooks` records every MoE layer's top-k. Token ``i`` of the
trace is token ``i`` of the concatenated sequences.

Prompts: a text file, one prompt per line, tokenised with the model's tokenizer when the model
folder has one; otherwise each line must hold token ids (integers separated by spaces or
commas). With ``--tiny`` the vocabulary is shrunk, so token ids are taken modulo its size.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import re
from pathlib import Path

import numpy as np

from moesim.config.errors import ConfigError
from moesim.traces import hfconfig
from moesim.traces.io import save_trace


def _require():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ConfigError(f"recording needs torch and transformers ({exc.name} is missing); "
                          "expected them installed: pip install 'moesim[trace]'",
                          field="model") from None
    return torch, transformers


def build_model(source: hfconfig.ModelSource, seed: int):
    """The model in eval mode: from the folder's weights, else random from the config."""
    torch, transformers = _require()
    from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM

    if source.model_type not in CONFIG_MAPPING:
        raise ConfigError(f"transformers {transformers.__version__} has no model_type "
                          f"'{source.model_type}'; expected a release that has it (upgrade "
                          "transformers)", field="model")
    if source.weights_dir is not None:
        model = AutoModelForCausalLM.from_pretrained(source.weights_dir, local_files_only=True)
    else:
        fields = {k: v for k, v in source.config.items() if k != "model_type"}
        try:
            config = AutoConfig.for_model(source.model_type, **fields)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"transformers {transformers.__version__} cannot build a "
                              f"'{source.model_type}' config: {str(exc)[:300]}",
                              field="model") from None
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model.eval()


def parse_layers(text: str | None) -> list[int] | None:
    """``'0,2,5-7'`` -> ``[0, 2, 5, 6, 7]``; None or '' -> None (all MoE layers)."""
    if not text:
        return None
    out = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ConfigError(f"bad layer list '{text}'; expected e.g. '0,2,5-7'", field="layers")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        out.extend(range(lo, hi + 1))
    return sorted(set(out))


def prompt_sequences(path: str | Path, tokenizer_dir: Path | None) -> tuple[list[list[int]], str]:
    """Token id lists, one per non-empty line, and how they were made."""
    path = Path(path)
    try:
        lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(),
                                                    1) if line.strip()]
    except OSError as exc:
        raise ConfigError(f"cannot read prompts: {exc.strerror}", file=str(path),
                          field="prompts") from None
    if not lines:
        raise ConfigError("no prompts; expected one prompt per line", file=str(path),
                          field="prompts")
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        return [tok(line)["input_ids"] for _, line in lines], f"tokenizer of {tokenizer_dir}"
    seqs = []
    for n, line in lines:
        fields = line.replace(",", " ").split()
        if not all(f.isdigit() for f in fields):
            raise ConfigError("the model has no tokenizer here; expected token ids (integers "
                              "separated by spaces or commas) on each line", file=str(path),
                              line=n, field="prompts")
        seqs.append([int(f) for f in fields])
    return seqs, "token ids from the file"


def random_sequences(num_tokens: int, seq_len: int, vocab: int, seed: int) -> list[list[int]]:
    """``num_tokens`` uniform random ids in ``[0, vocab)``, in sequences of ``seq_len``."""
    if num_tokens < 1 or seq_len < 1:
        raise ConfigError(f"need random tokens >= 1 and seq_len >= 1, got {num_tokens}, "
                          f"{seq_len}", field="random_tokens")
    ids = np.random.default_rng(seed).integers(0, vocab, size=num_tokens)
    return [ids[i:i + seq_len].tolist() for i in range(0, num_tokens, seq_len)]


def run_hooks(model, sequences: list[list[int]], model_type: str, top_k: int, num_experts: int,
              layers: list[int] | None):
    """Run every sequence through ``model`` with router hooks; the filled :class:`RouterHooks`."""
    torch, _ = _require()
    from moesim.traces.hooks import RouterHooks

    hooks = RouterHooks(model, model_type, top_k, num_experts, layers)
    if not hooks.routers:
        raise ConfigError(f"no router modules found in the {model_type} model; expected modules "
                          "named like 'layers.<L>.mlp.gate'", field="model")
    unknown = [layer for layer in hooks.layers if layer not in hooks.routers]
    if unknown:
        raise ConfigError(f"layer {unknown[0]} has no router; expected MoE layers among "
                          f"{sorted(hooks.routers)}", field="layers")
    seen = 0
    with hooks, torch.no_grad():
        for seq in sequences:
            model(input_ids=torch.tensor([seq], dtype=torch.long), use_cache=False)
            seen += len(seq)
            counts = hooks.tokens_seen()
            if any(c != seen for c in counts.values()):
                raise RuntimeError(f"routers saw {counts} tokens after {seen} input tokens; "
                                   "expected one router call per layer per forward")
    return hooks


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(model: str, out: str | Path, *, prompts: str | Path | None = None,
           random_tokens: int | None = None, seq_len: int = 128, layers: str | None = None,
           seed: int = 0, tiny: bool = False) -> Path:
    """Record a trace of ``model`` (see the module docstring) into ``out`` (``.npz``)."""
    torch, transformers = _require()
    if (prompts is None) == (random_tokens is None):
        raise ConfigError("expected exactly one of --prompts FILE and --random-tokens N",
                          field="prompts")
    source = hfconfig.resolve(model, tiny=tiny)
    net = build_model(source, seed)
    cfg = net.config
    vocab = int(cfg.vocab_size)
    if prompts is not None:
        seqs, how = prompt_sequences(prompts, source.tokenizer_dir)
        seqs = [[t % vocab for t in s] for s in seqs] if tiny else seqs
        origin = {"source": str(prompts), "sha256": _sha256(Path(prompts).read_bytes()),
                  "tokens": how, "ids_modulo_vocab": tiny}
    else:
        seqs = random_sequences(int(random_tokens), seq_len, vocab, seed)
        origin = {"source": "random-tokens", "seq_len": seq_len, "seed": seed,
                  "sha256": _sha256(np.concatenate(seqs).astype(np.int64).tobytes())}
    top_k, experts = _moe_shape(cfg, source.model_type)
    hooks = run_hooks(net, seqs, source.model_type, top_k, experts, parse_layers(layers))
    ids = {layer: torch.cat(hooks.ids[layer]).numpy() for layer in hooks.layers}
    weights = {layer: torch.cat(hooks.weights[layer]).numpy() for layer in hooks.layers}
    from moesim import __version__

    meta = {"model": source.name, "model_type": source.model_type, "config": cfg.to_dict(),
            "capture": {str(k): v for k, v in hooks.how.items()}, "tiny": tiny,
            "weights": "pretrained" if source.weights_dir else f"random (seed {seed})",
            "prompts": {**origin, "num_sequences": len(seqs)}, "moesim_version": __version__,
            "transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return save_trace(out, ids, experts, weights, meta)


def _moe_shape(cfg, model_type: str) -> tuple[int, int]:
    """(top_k, num_experts) from a transformers config of any supported family."""
    if model_type == "dbrx":
        return int(cfg.ffn_config.moe_top_k), int(cfg.ffn_config.moe_num_experts)
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        if getattr(cfg, key, None):
            return int(cfg.num_experts_per_tok), int(getattr(cfg, key))
    raise ConfigError(f"no expert count in the {model_type} config; expected num_local_experts, "
                      "num_experts or n_routed_experts", field="model")
