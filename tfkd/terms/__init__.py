"""Distillation terms: losses beyond the logit KD of the `Distiller`.

Each term is a `DistillationTerm` (`tfkd.terms.base`), passed to
`tfkd.Distiller(extra_losses=[...])` and saved by `get_config`:

- `tfkd.terms.features`: on intermediate layers, FitNets hints
  (`FitNetHint`) and attention transfer (`AttentionTransfer`).
- `tfkd.terms.relations`: on the relations between examples, RKD distance
  (`RKDDistance`) and angle (`RKDAngle`).
- `tfkd.terms.decoupled`: on the logits, decoupled KD (`DecoupledKD`).
- `tfkd.terms.correlation`: on the logits, DIST's correlation match
  (`DIST`).
"""

from tfkd.terms.base import DistillationTerm
from tfkd.terms.correlation import DIST
from tfkd.terms.decoupled import DecoupledKD
from tfkd.terms.features import AttentionTransfer
from tfkd.terms.features import FitNetHint
from tfkd.terms.relations import RKDAngle
from tfkd.terms.relations import RKDDistance

__all__ = [
    "AttentionTransfer",
    "DIST",
    "DecoupledKD",
    "DistillationTerm",
    "FitNetHint",
    "RKDAngle",
    "RKDDistance",
]
