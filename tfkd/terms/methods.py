"""The registry of distillation methods, declared by the term modules.

A method is what a benchmark compares: a label with its paper, whether it
replaces the `Distiller`'s KL term (CE + term, as DKD, DIST and WTTM are
published) and how its terms are built on a reference pair of models. Each
term module registers its method(s) next to its classes
(`register(Method(...))` at the bottom of `tfkd.terms.features`, ...), so
adding a method is one file: a new term module also goes into
`tfkd.terms.__init__`, which re-exports its classes and, by importing it,
registers its methods. Importing any `tfkd.terms` module runs that
`__init__` first, so `registered()` always holds every method.

The builds are written for the reference CNNs of the benchmarks
(`benchmarks.models`: three teacher conv blocks, two student ones, a
penultimate dense layer in each), by role (`ReferenceLayers`), with the
term weights of the CRD authors' benchmark code (Tian et al., 2020,
github.com/HobbitLong/RepDistiller) unless a method's registration says
otherwise. They are starting points for other models, not tuned values.

The two methods that add no term to the `Distiller`'s own KL, `logit_kd`
(Hinton et al., 2015) and `logit_std` (Sun et al., 2024), are registered
by that term's module, `tfkd.terms.soft_targets`.
"""

import dataclasses
import types
from collections.abc import Callable
from collections.abc import Mapping

from tfkd.terms import base
from tfkd.utils import validation


@dataclasses.dataclass(frozen=True)
class ReferenceLayers:
    """The layers of a teacher-student pair that methods read, by role.

    On the benchmarks' reference CNNs (`benchmarks.models`) the teacher's
    conv layers are 28x28 (w channels), 28x28 (2w) and 14x14 (4w), the
    student's 28x28 (v) and 14x14 (2v), and each has a penultimate dense
    layer: a build may index these lists by those positions.

    Args:
        teacher_convs: Names of the teacher's conv layers, shallow to
            deep. Defaults to `()`.
        student_convs: Names of the student's conv layers, shallow to
            deep. Defaults to `()`.
        teacher_embedding: Name of the teacher's penultimate dense layer.
            Defaults to `None`.
        student_embedding: Name of the student's penultimate dense layer.
            Defaults to `None`.
        num_data: The rows of the training set, for terms that keep one
            row per example (CRD's memory). Defaults to `None`.

    Example:

    >>> layers = ReferenceLayers(teacher_embedding="dense", student_embedding="dense_1")
    >>> layers.student_embedding
    'dense_1'
    """

    teacher_convs: tuple = ()
    student_convs: tuple = ()
    teacher_embedding: str | None = None
    student_embedding: str | None = None
    num_data: int | None = None

    def __post_init__(self):
        # Frozen: set through object.__setattr__, once, as tuples.
        object.__setattr__(self, "teacher_convs", tuple(self.teacher_convs))
        object.__setattr__(self, "student_convs", tuple(self.student_convs))


@dataclasses.dataclass(frozen=True)
class Method:
    """A distillation method as a benchmark arm: its label and its terms.

    Args:
        id: Str, the method's identifier (a results key, a command-line
            choice): lowercase letters, digits and `_`.
        label: Str, the human name with its paper, e.g.
            `"CE + WTTM (Zheng & Yang, 2024)"`.
        build: `ReferenceLayers -> list` of fresh `DistillationTerm`s, or
            `None` for a method that adds no term. Defaults to `None`.
        replaces_kl: Whether the method replaces the `Distiller`'s KL term
            (trained as CE + terms, `Distiller(alpha=1.0)`). Defaults to
            `False`.
        distiller_options: Further `tfkd.Distiller` keyword arguments,
            e.g. `{"logit_standardization": True}`. Defaults to `{}`.
        needs_example_indices: Whether a term needs each example's index
            in the batches (`tfkd.CRD`); `terms` checks it. Defaults to
            `False`.

    Raises:
        TypeError, ValueError: for an invalid argument.

    Example:

    >>> from tfkd.terms.features import FitNetHint
    >>> hint = Method("hint_deep", "Logit KD + a deeper hint (example)",
    ...               build=lambda layers: [FitNetHint(layers.teacher_convs[-1],
    ...                                                layers.student_convs[-1])])
    >>> [term] = hint.terms(ReferenceLayers(teacher_convs=("c1", "c2"),
    ...                                     student_convs=("s1",)))
    >>> term.teacher_layer, term.student_layer
    ('c2', 's1')
    """

    id: str
    label: str
    build: Callable | None = None
    replaces_kl: bool = False
    distiller_options: Mapping = dataclasses.field(default_factory=dict)
    needs_example_indices: bool = False

    def __post_init__(self):
        if not isinstance(self.id, str):
            raise validation.invalid_type("id", "a str", self.id)
        if not self.id or not all(c.islower() or c.isdigit() or c == "_" for c in self.id):
            raise validation.invalid_value(
                "id", "a non-empty str of lowercase letters, digits and '_'", self.id
            )
        if not isinstance(self.label, str) or not self.label:
            raise validation.invalid_type("label", "a non-empty str", self.label)
        if self.build is not None and not callable(self.build):
            raise validation.invalid_type(
                "build", "a function `ReferenceLayers -> list of terms` or None",
                self.build,
            )
        validation.check_bool("replaces_kl", self.replaces_kl)
        validation.check_bool("needs_example_indices", self.needs_example_indices)
        if not isinstance(self.distiller_options, Mapping):
            raise validation.invalid_type(
                "distiller_options", "a dict of `tfkd.Distiller` arguments",
                self.distiller_options,
            )
        # Read-only, as the rest of the record.
        object.__setattr__(
            self, "distiller_options",
            types.MappingProxyType(dict(self.distiller_options)),
        )

    def terms(self, layers):
        """The method's terms, built fresh on `layers`.

        Args:
            layers: A `ReferenceLayers`.

        Returns:
            A list of new `DistillationTerm`s (empty for a method that adds
            no term).

        Raises:
            TypeError: if `build` returns anything but terms.
            ValueError: if a term needs example indices and the method
                does not say so (its batches would lack them).
        """
        if not isinstance(layers, ReferenceLayers):
            raise validation.invalid_type("layers", "a `ReferenceLayers`", layers)
        if self.build is None:
            return []
        terms = base.check_terms(list(self.build(layers)))
        for term in terms:
            if getattr(term, "needs_example_indices", False) and not self.needs_example_indices:
                raise validation.invalid_value(
                    "needs_example_indices",
                    f"True for method {self.id!r}, whose term {term.name!r} reads "
                    "each example's index",
                    self.needs_example_indices,
                )
        return terms


_REGISTRY = {}


def register(method):
    """Adds `method` to the registry; returns it.

    Args:
        method: A `Method` whose `id` is not registered yet.

    Returns:
        `method`.

    Raises:
        TypeError: if `method` is not a `Method`.
        ValueError: if its `id` is taken.

    Example:

    >>> example = register(Method("example_kd", "Logit KD, again (example)"))
    >>> get("example_kd") is example
    True
    >>> unregister("example_kd")
    """
    if not isinstance(method, Method):
        raise validation.invalid_type("method", "a `tfkd.terms.methods.Method`", method)
    if method.id in _REGISTRY:
        raise validation.invalid_value(
            "id", "an id no registered method has (taken by "
            f"{_REGISTRY[method.id].label!r})", method.id,
        )
    _REGISTRY[method.id] = method
    return method


def unregister(method_id):
    """Removes a registered method (tests, interactive experiments).

    Raises:
        ValueError: if `method_id` is not registered.
    """
    get(method_id)
    del _REGISTRY[method_id]


def get(method_id):
    """The registered `Method` of `method_id`.

    Raises:
        ValueError: if `method_id` is not registered.

    Example:

    >>> get("logit_kd").label
    'Logit KD (Hinton et al., 2015)'
    """
    if method_id not in _REGISTRY:
        raise validation.invalid_value(
            "method_id", f"a registered method id, one of {tuple(sorted(_REGISTRY))}",
            method_id,
        )
    return _REGISTRY[method_id]


def registered():
    """Every registered `Method`: those that add no term, then by id.

    The order depends on no import order, so runs list their arms alike.

    Example:

    >>> [m.id for m in registered()][:2]
    ['logit_kd', 'logit_std']
    """
    return tuple(sorted(_REGISTRY.values(), key=lambda m: (m.build is not None, m.id)))

