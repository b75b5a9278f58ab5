"""Seeded mutants of the shipped scenarios, hardware profiles and model files.

A mutant is the text of one input file: a shipped file with one to three mutations, each
either structural (on the parsed YAML: a value swapped for a hostile one or scaled by a power of
ten, a key deleted, renamed, duplicated or added, a sweep axis turned into a hostile range) or
textual (a byte flipped or cut, non-UTF-8 bytes, a line repeated or dropped, an alias bomb, deep
nesting, an unsafe tag). ``mutant(seed)`` is a pure function of the seed and the shipped files.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("scenario", "profile", "model")

#: Values an adversarial or careless user types: extremes of every type, wrong types, specs
#: that used to hang, exhaust memory or return NaN.
HOSTILE = [
    0, -1, 1, 2, 3, 7, 1000, 2 ** 31, 2 ** 53 + 1, 2 ** 63, 2 ** 64, -(2 ** 63), 10 ** 30,
    1e308, -1e308, math.inf, -math.inf, math.nan, -0.0, 1e-300, 5e-324, 0.5, 1.5, 1e12,
    True, False, None, "", "x", "a" * 5000, [], {}, [1, 2], {"a": 1}, [[[[[1]]]]],
    "zipf:inf", "zipf:nan", "zipf:1e308", "lognormal:1e308", "probs:1,0,0", "probs:nan",
    "probs:" + ",".join(["1"] * 70000), "trace:/dev/zero", "trace:/dev/zero.npy",
    "trace:missing.npz@3", "replicated:99999999999", "replicated:-1", "balanced",
    "round-robin", "/dev/zero", "/etc/passwd", "../../x.yaml", "h100-sxm", "mixtral-8x7b",
    "two-batch", "hierarchical", "fp8", "int4", "<script>alert(1)</script>", "all",
    {"start": 1, "stop": 10 ** 15, "step": 1}, {"start": 1, "stop": 10, "num": math.inf},
    {"start": 1, "stop": 10, "step": "x"}, {"start": math.nan, "stop": 1, "num": 3},
    {"start": 1, "stop": 2, "num": 1e12}, {"start": 0, "stop": 1, "num": 3, "scale": "log"},
]
TEXT_PAYLOADS = [
    "description: &a [x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}" if i > 1 else "*a"] * 9) + "]\n"
        for i in range(1, 10)),
    "deep: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep2:\n" + "".join("  " * i + f"k{i}:\n" for i in range(300)),
    "x: !!python/object/apply:os.system ['true']\n",
    "\t bad: indent\n",
    "date: 2024-02-30\n",
    "big: " + "9" * 5000 + "\n",
]


@dataclass(frozen=True)
class Mutant:
    seed: int
    kind: str  # scenario | profile | model
    source: str  # the shipped file it came from
    text: bytes
    steps: tuple[str, ...]


def corpus() -> dict[str, list[Path]]:
    """The shipped files each kind of mutant starts from."""
    return {
        "scenario": sorted((ROOT / "scenarios").glob("*.yaml")),
        "profile": sorted((ROOT / "hardware_profiles").rglob("*.yaml")),
        "model": sorted((ROOT / "moesim" / "presets" / "models").glob("*.yaml")),
    }


def mutant(seed: int, files: dict[str, list[Path]] | None = None) -> Mutant:
    """Mutant number ``seed``: a kind, a shipped file, one to three mutations."""
    rng = random.Random(seed)
    files = files or corpus()
    kind = rng.choice(KINDS)
    source = rng.choice(files[kind])
    text = source.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    steps = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        if rng.random() < 0.7 and isinstance(data, dict):
            data, step = _structural(rng, data)
            text = yaml.safe_dump(data, sort_keys=False, width=1 << 20)
        else:
            text, step = _textual(rng, text)
            data = None
        steps.append(step)
    raw = text.encode("utf-8", errors="surrogateescape")
    if rng.random() < 0.05:
        raw, step = _bytes(rng, raw)
        steps.append(step)
    return Mutant(seed, kind, str(source.relative_to(ROOT)), raw, tuple(steps))


def _paths(node, prefix=()):
    """Every (path, value) of a parsed document, containers included."""
    yield prefix, node
    items = node.items() if isinstance(node, dict) else \
        enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _paths(value, prefix + (key,))


def _set(data, path, value):
    if not path:
        return value
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def _hostile(rng: random.Random, old):
    if isinstance(old, (int, float)) and not isinstance(old, bool) and rng.random() < 0.5:
        factor = rng.choice([10.0 ** k for k in range(-12, 13)] + [-1, 0.5, 3])
        new = old * factor
        return int(new) if isinstance(old, int) and math.isfinite(new) else new
    return rng.choice(HOSTILE)


def _structural(rng: random.Random, data: dict):
    paths = [p for p, _ in _paths(data) if p]
    path = rng.choice(paths)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    op = rng.choice(("replace", "replace", "replace", "delete", "rename", "add", "sweep"))
    if op == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif op == "rename" and isinstance(parent, dict) and isinstance(path[-1], str):
        key = path[-1]
        new = key[:-1] if len(key) > 1 and rng.random() < 0.5 else key + "s"
        parent[new] = parent.pop(key)
    elif op == "add" and isinstance(parent, dict):
        parent[rng.choice(["experts", "tokens", "memory", "seed", "routing", "bogus",
                           "capacity_factor", "drop_tokens", "base"])] = _hostile(rng, 1)
    elif op == "sweep":
        field = rng.choice(["tokens", "ep", "experts", "top_k", "seed", "capacity_factor",
                            "routing", "placement", "hidden"])
        data.setdefault("sweep", {})
        if isinstance(data["sweep"], dict):
            data["sweep"][field] = rng.choice([h for h in HOSTILE if isinstance(h, (dict, list))]
                                              + [[True, 16], [1, "x"], [math.nan, 2]])
    else:
        data = _set(data, path, _hostile(rng, _get(data, path)))
    return data, f"{op} {'.'.join(map(str, path))}"


def _get(data, path):
    for key in path:
        data = data[key]
    return data


def _textual(rng: random.Random, text: str):
    lines = text.splitlines(keepends=True) or [""]
    op = rng.choice(("payload", "dup_line", "drop_line", "cut", "dup_key", "indent"))
    i = rng.randrange(len(lines))
    if op == "payload":
        lines.insert(rng.choice((0, len(lines))), rng.choice(TEXT_PAYLOADS))
    elif op == "dup_line":
        lines.insert(i, lines[i])
    elif op == "drop_line":
        del lines[i]
    elif op == "cut":
        return text[:rng.randrange(len(text) + 1)], "cut"
    elif op == "dup_key":
        top = [ln for ln in lines if ln[:1].isalpha() and ":" in ln]
        if top:
            lines.append(rng.choice(top))
    else:
        lines[i] = " " * rng.choice((1, 2, 3, 8)) + lines[i]
    return "".join(lines), op


def _bytes(rng: random.Random, raw: bytes):
    if not raw:
        return b"\xff", "bytes"
    i = rng.randrange(len(raw))
    return raw[:i] + rng.choice((b"\xff", b"\xc3", b"\x00", b"\xe9\x80")) + raw[i + 1:], "bytes"
