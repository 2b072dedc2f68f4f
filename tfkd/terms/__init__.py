"""Distillation terms: losses beyond the logit KD of the `Distiller`.

Each term is a `DistillationTerm` (`tfkd.terms.base`), passed to
`tfkd.Distiller(extra_losses=[...])` and saved by `get_config`:

- `tfkd.terms.soft_targets`: the soft-target KL of logit KD
  (`SoftTargetKL`), the term the `Distiller` builds from its own
  `temperature`, `alpha` and `logit_standardization`.
- `tfkd.terms.features`: on intermediate layers, FitNets hints
  (`FitNetHint`) and attention transfer (`AttentionTransfer`).
- `tfkd.terms.relations`: on the relations between examples, RKD distance
  (`RKDDistance`) and angle (`RKDAngle`).
- `tfkd.terms.decoupled`: on the logits, decoupled KD (`DecoupledKD`).
- `tfkd.terms.similarity`: on the similarities between examples,
  similarity-preserving KD (`SimilarityPreserving`, alias `SP`) and
  probabilistic knowledge transfer (`PKT`).
- `tfkd.terms.contrastive`: contrastive representation distillation
  with a memory of negatives (`CRD`).
- `tfkd.terms.correlation`: on the logits, DIST's correlation match
  (`DIST`).
- `tfkd.terms.transformed`: on the logits, weighted transformed teacher
  matching (`WTTM`).

`tfkd.terms.methods` is the registry of methods the benchmarks compare:
each module above registers its own (label, paper, whether it replaces
the KL term, how its terms are built on reference layers) next to its
classes. A new term module is imported here, which re-exports its classes
and registers its methods.
"""

from tfkd.terms.base import DistillationTerm
from tfkd.terms.contrastive import CRD
from tfkd.terms.correlation import DIST
from tfkd.terms.decoupled import DecoupledKD
from tfkd.terms.features import AttentionTransfer
from tfkd.terms.features import FitNetHint
from tfkd.terms.relations import RKDAngle
from tfkd.terms.relations import RKDDistance
from tfkd.terms.similarity import PKT
from tfkd.terms.similarity import SP
from tfkd.terms.similarity import SimilarityPreserving
from tfkd.terms.soft_targets import SoftTargetKL
from tfkd.terms.transformed import WTTM

__all__ = [
    "AttentionTransfer",
    "CRD",
    "DIST",
    "DecoupledKD",
    "DistillationTerm",
    "FitNetHint",
    "PKT",
    "RKDAngle",
    "RKDDistance",
    "SP",
    "SimilarityPreserving",
    "SoftTargetKL",
    "WTTM",
]
