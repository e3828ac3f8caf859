"""VRAM -> local language models worth offering (the tiers of the roadmap's GPU detection)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from anklume.firstboot.gpus import Gpu

GiB = 1024**3
EMBEDDING = "nomic-embed-text"

# (largest VRAM of the tier in bytes, models). Checked in order; the last tier has no bound.
TIERS: tuple[tuple[float, tuple[str, ...]], ...] = (
    (8 * GiB, ("qwen2.5-coder:7b", EMBEDDING)),
    (16 * GiB, ("qwen2.5-coder:14b", EMBEDDING)),
    (24 * GiB, ("qwen2.5-coder:32b", EMBEDDING)),
    (float("inf"), ("deepseek-coder-v2:latest", "qwen2.5-coder:32b", EMBEDDING)),
)


@dataclass(frozen=True)
class Recommendation:
    models: tuple[str, ...]  # empty: no local inference, API-only
    reason: str


def recommend(gpus: Sequence[Gpu]) -> Recommendation:
    with_vram = [g for g in gpus if g.dedicated]
    if not with_vram:
        unknown = [g for g in gpus if g.vendor in ("NVIDIA", "AMD")]
        if unknown:
            return Recommendation((), f"{unknown[0].vendor} GPU at {unknown[0].pci} reports no "
                                      "VRAM (driver not loaded): API-only until it does")
        return Recommendation((), "no dedicated GPU: API-only")
    best = max(with_vram, key=lambda g: g.vram or 0)
    vram = best.vram or 0
    for bound, models in TIERS:
        if vram <= bound:
            return Recommendation(models, f"{best.vendor} GPU at {best.pci} with "
                                          f"{vram / GiB:.0f} GiB VRAM")
    raise AssertionError("the last tier is unbounded")
