"""Shared by ``tools/reference_golden.py`` (which writes the fixtures by running the reference
code) and ``tests/test_reference_golden.py`` (which checks our modules against them).

Initial weights are not stored: every parameter is drawn from a recipe keyed by its name in the
reference module, so the writer and the tests build the same weights without shipping
megabytes (the reference's decoders are 1024 wide). The recipe::

    rng = numpy.random.default_rng([seed, crc32(name)])
    w = rng.uniform(-1, 1, shape) * (1 / sqrt(shape[-1]) if ndim >= 2 else 0.1)
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "reference"

# Small shapes: IEMOCAP-like layout (a, t, v), padded batch of three dialogues.
SHAPES = {"adim": 12, "tdim": 16, "vdim": 10, "hidden": 8, "heads": 2, "depth": 2,
          "n_classes": 4, "lengths": [5, 3, 4]}


def recipe_weight(name: str, shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    scale = 1.0 / np.sqrt(shape[-1]) if len(shape) >= 2 else 0.1
    return rng.uniform(-1.0, 1.0, size=tuple(shape)) * scale


BIG = 4096   # parameters with more values store [norm, 16 projections] (size budget)


def reduce(name: str, x: np.ndarray) -> np.ndarray:
    """A parameter-sized array, or for big ones [norm, 16 seeded projections]."""
    x = np.asarray(x, np.float64)
    if x.size <= BIG:
        return x
    P = np.random.default_rng([99, zlib.crc32(name.encode())]).standard_normal((16, x.size))
    return np.concatenate([[np.linalg.norm(x)], P @ x.ravel()])


def recipe_state(names_shapes: dict[str, list[int]], seed: int) -> dict[str, np.ndarray]:
    """Reference-named weights (float64) for ``{name: shape}``."""
    return {n: recipe_weight(n, s, seed) for n, s in names_shapes.items()}


def load(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """Tensors (safetensors) and metadata (JSON) of fixture ``name``."""
    from safetensors.numpy import load_file
    return load_file(FIXTURES / f"{name}.safetensors"), \
        json.loads((FIXTURES / f"{name}.json").read_text())
