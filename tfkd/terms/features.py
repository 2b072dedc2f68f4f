"""Feature distillation: FitNets hints and attention transfer.

Both compare a teacher feature map with a student one, read from layers
chosen by name; the `Distiller` gets both maps from its single forward pass
of each model (see `tfkd.feature_views`).

FitNets (Romero et al., 2015, "FitNets: Hints for Thin Deep Nets",
arXiv:1412.6550) regress the teacher's "hint" layer from the student's
"guided" layer through a learnable connector `r`:

    hint_i = mean_j (t_ij − r(s_i)_j)²

(the paper's `½ ‖t − r(s)‖²` divided by the number of features, so that
one weight suits layers of any size).

Attention transfer (Zagoruyko & Komodakis, 2017, "Paying More Attention to
Attention", arXiv:1612.03928) matches where the two networks look: the
activation-based spatial attention map `Q = Σ_c |A_c|^p` of each, flattened
and L2-normalized, so that channel counts may differ:

    AT_i = ½ · mean_j (Q̂_s,ij − Q̂_t,ij)²,   Q̂ = Q / ‖Q‖₂

which with `weight = β = 10³` is the loss of the authors' reference code
(`β/2 · (at(x) − at(y)).pow(2).mean()`, github.com/szagoruyko/
attention-transfer).
"""

import keras
from keras import ops

from tfkd import hyperparameters
from tfkd.utils import validation
from tfkd.terms import base
from tfkd.terms import methods

#: The values `FitNetHint(connector=...)` accepts.
CONNECTOR_MODES = ("auto", "always", "never")

# F.normalize's epsilon in the reference code: an all-zero attention map
# (a dead ReLU layer) normalizes to zeros instead of NaN.
_NORM_EPSILON = 1e-12


def fitnet_hint_loss(teacher_features, student_features):
    """Per-example FitNets hint loss `mean_j (t_ij − s_ij)²`.

    `student_features` are the connector's output when the shapes differ:
    this function compares tensors of one shape.

    Args:
        teacher_features: Tensor of shape `(batch, ...)`.
        student_features: Tensor of the same shape.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> t = np.ones((2, 3, 3, 4)); s = np.zeros((2, 3, 3, 4))
    >>> np.asarray(fitnet_hint_loss(t, s)).tolist()
    [1.0, 1.0]
    """
    teacher = base.flatten_examples(teacher_features)
    student = base.flatten_examples(student_features)
    return ops.mean(ops.square(teacher - student), axis=-1)  # (batch,)


def attention_map(features, p=2.0):
    """Spatial attention map `Q̂ = Q / ‖Q‖₂` with `Q = Σ_c |A_c|^p`.

    Args:
        features: Channels-last tensor of shape `(batch, *spatial,
            channels)`, e.g. `(batch, height, width, channels)`.
        p: Float > 0, the exponent (`AttentionTransfer` accepts [1, 4]).
            Defaults to `2.0` (the paper's choice).

    Returns:
        A float32 tensor of shape `(batch, prod(spatial))` whose rows have
        unit L2 norm (or are zero).

    Example:

    >>> import numpy as np
    >>> q = attention_map(np.ones((1, 2, 2, 3)))
    >>> np.round(np.asarray(q), 3).tolist()
    [[0.5, 0.5, 0.5, 0.5]]
    """
    features = ops.cast(features, "float32")
    energy = ops.sum(ops.power(ops.abs(features), p), axis=-1)  # (batch, *spatial)
    energy = ops.reshape(energy, (ops.shape(energy)[0], -1))  # (batch, positions)
    norm = ops.sqrt(ops.sum(ops.square(energy), axis=-1, keepdims=True))
    return energy / ops.maximum(norm, _NORM_EPSILON)  # (batch, positions)


def attention_transfer_loss(teacher_features, student_features, p=2.0):
    """Per-example attention-transfer loss `½ · mean_j (Q̂_s − Q̂_t)²`.

    Args:
        teacher_features: Channels-last tensor `(batch, *spatial, c_t)`.
        student_features: Channels-last tensor `(batch, *spatial, c_s)`:
            same spatial size, any number of channels.
        p: Float > 0, the exponent of `attention_map`. Defaults to `2.0`.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> f = np.random.rand(2, 4, 4, 3)
    >>> np.asarray(attention_transfer_loss(f, f * 2.0)).tolist()
    [0.0, 0.0]
    """
    difference = attention_map(student_features, p) - attention_map(
        teacher_features, p
    )  # (batch, positions)
    return 0.5 * ops.mean(ops.square(difference), axis=-1)


def _spatial_mismatch(teacher_shape, student_shape):
    """Whether two `(batch, ..., channels)` shapes differ in rank or in a
    known spatial size (`None` sizes match anything)."""
    return len(teacher_shape) != len(student_shape) or any(
        a is not None and b is not None and a != b
        for a, b in zip(teacher_shape[1:-1], student_shape[1:-1])
    )


@keras.saving.register_keras_serializable(package="tfkd")
class FitNetHint(base.DistillationTerm):
    """FitNets hint: the student's layer regresses the teacher's.

    Romero et al. (2015), "FitNets: Hints for Thin Deep Nets". The student
    feature map goes through a learnable connector (the paper's
    "regressor") when its channels differ from the teacher's: a 1×1
    convolution for `(batch, height, width, channels)` maps, a dense layer
    on the last axis otherwise. The loss per example is
    `mean_j (t_j − connector(s)_j)²`.

    The connector trains with the student (the `Distiller` adds its weights
    to the optimized variables and saves them in its `.keras` file), but it
    is not part of `distiller.student`: the exported student is exactly the
    model that was passed in. Its weights are created when the `Distiller`
    is built, from the static shapes of the two layers, in float32.

    Args:
        teacher_layer: Name of the teacher's hint layer, or `None` for its
            logits. Defaults to `None`.
        student_layer: Name of the student's guided layer, or `None` for
            its logits. Defaults to `None`.
        weight: Float in [0, 1e6], the term's weight in the total loss. Defaults
            to `1.0` (feature scales vary: classification benchmarks such as
            Tian et al., 2020 use 100 next to the KD loss).
        connector: `"auto"` (a connector only when the channel counts
            differ), `"always"` (the paper's set-up: always learn one), or
            `"never"` (shapes must match). Defaults to `"auto"`.
        name: The term's name (its metric in `fit`'s history). Defaults to
            `"fitnet_loss"`.

    Raises:
        ValueError: for an invalid argument; when the `Distiller` is built,
            for layers whose spatial sizes differ (pick layers of the same
            resolution) or differing channels with `connector="never"`.

    Example:

    >>> import numpy as np, keras, tfkd
    >>> def cnn(filters, name):
    ...     return keras.Sequential([
    ...         keras.Input((8, 8, 1)),
    ...         keras.layers.Conv2D(filters, 3, padding="same", name="conv"),
    ...         keras.layers.GlobalAveragePooling2D(),
    ...         keras.layers.Dense(3)], name=name)
    >>> hint = tfkd.FitNetHint(teacher_layer="conv", student_layer="conv")
    >>> distiller = tfkd.Distiller(teacher=cnn(8, "t"), student=cnn(4, "s"),
    ...                            extra_losses=[hint])
    >>> tuple(hint.connector.kernel.shape)  # 1x1 conv from 4 to 8 channels
    (1, 1, 4, 8)
    """

    default_name = "fitnet_loss"

    def __init__(
        self,
        teacher_layer=None,
        student_layer=None,
        weight=1.0,
        connector="auto",
        name=None,
    ):
        super().__init__(
            weight=weight,
            teacher_layer=teacher_layer,
            student_layer=student_layer,
            name=name,
        )
        self.connector_mode = validation.check_choice(
            "connector", connector, CONNECTOR_MODES
        )
        self.connector = None

    def build(self, teacher_features_shape, student_features_shape):
        teacher_shape = tuple(teacher_features_shape)
        student_shape = tuple(student_features_shape)
        if _spatial_mismatch(teacher_shape, student_shape):
            raise ValueError(
                f"Invalid layers for `{self.name}`. Expected a teacher and a "
                "student feature map of the same rank and spatial size (the "
                "connector maps channels only): pick layers of the same "
                "resolution. Received: teacher_layer="
                f"{self.teacher_layer!r} of shape {teacher_shape}, "
                f"student_layer={self.student_layer!r} of shape "
                f"{student_shape}"
            )
        channels_differ = teacher_shape[-1] != student_shape[-1]
        if self.connector_mode == "never" and channels_differ:
            raise ValueError(
                "Invalid value for argument `connector`. Expected 'auto' or "
                "'always' for layers with different channels: teacher "
                f"{teacher_shape}, student {student_shape}. Received: "
                "connector='never'"
            )
        if self.connector_mode == "always" or channels_differ:
            if teacher_shape[-1] is None:
                raise ValueError(
                    f"Invalid layers for `{self.name}`. Expected a teacher "
                    "feature map with a known number of channels to size "
                    f"the connector. Received: shape {teacher_shape}"
                )
            if len(student_shape) == 4:
                self.connector = keras.layers.Conv2D(
                    teacher_shape[-1], 1, dtype="float32", name="connector"
                )
            else:
                self.connector = keras.layers.Dense(
                    teacher_shape[-1], dtype="float32", name="connector"
                )
            self.connector.build(student_shape)

    def per_example_loss(self, teacher_features, student_features, labels):
        del labels
        if self.connector is not None:
            student_features = self.connector(student_features)
        return fitnet_hint_loss(teacher_features, student_features)

    def get_config(self):
        config = super().get_config()
        config["connector"] = self.connector_mode
        return config


def _check_p(p):
    low, high = hyperparameters.ATTENTION_EXPONENT_RANGE
    return hyperparameters.check_float_in_range(
        "p",
        p,
        low,
        high,
        "(below 1 the gradient of |A|^p is infinite at zero activations; "
        "above 4 the attention norm overflows float32 for large features)",
    )


@keras.saving.register_keras_serializable(package="tfkd")
class AttentionTransfer(base.DistillationTerm):
    """Attention transfer: the student attends where the teacher does.

    Zagoruyko & Komodakis (2017), "Paying More Attention to Attention:
    Improving the Performance of Convolutional Neural Networks via
    Attention Transfer". Per example, `½ · mean_j (Q̂_s,j − Q̂_t,j)²` with
    `Q̂` the L2-normalized map `Σ_c |A_c|^p` (see `attention_map`). It has
    no weights: the channel counts may differ, the spatial sizes must not.
    The paper transfers attention at several depths; add one term per pair
    of layers, each with its own `name`.

    Args:
        teacher_layer: Name of a channels-last teacher layer with spatial
            axes, e.g. the output of a conv block.
        student_layer: Name of the student layer of the same spatial size.
        weight: Float in [0, 1e6], the paper's β. Defaults to `1000.0` (the paper's
            value for CIFAR).
        p: Float in [1, 4], the exponent of the attention map: below 1
            the gradient is infinite at zero activations, above 4 the map's
            norm overflows float32 for large features. Defaults to `2.0`.
        name: Defaults to `"attention_transfer_loss"`.

    Raises:
        ValueError: for an invalid argument; when the `Distiller` is built,
            for layers without spatial axes or of different spatial sizes.

    Example:

    >>> import tfkd
    >>> term = tfkd.AttentionTransfer(teacher_layer="block2",
    ...                               student_layer="block1", weight=1000.0)
    >>> term.get_config()["p"]
    2.0
    """

    default_name = "attention_transfer_loss"

    def __init__(
        self,
        teacher_layer,
        student_layer,
        weight=1000.0,
        p=2.0,
        name=None,
    ):
        super().__init__(
            weight=weight,
            teacher_layer=teacher_layer,
            student_layer=student_layer,
            name=name,
        )
        self.p = _check_p(p)

    def build(self, teacher_features_shape, student_features_shape):
        teacher_shape = tuple(teacher_features_shape)
        student_shape = tuple(student_features_shape)
        if len(teacher_shape) < 3 or _spatial_mismatch(
            teacher_shape, student_shape
        ):
            raise ValueError(
                f"Invalid layers for `{self.name}`. Expected channels-last "
                "feature maps (batch, height, width, channels) of the same "
                "spatial size in teacher and student. Received: "
                f"teacher_layer={self.teacher_layer!r} of shape "
                f"{teacher_shape}, student_layer={self.student_layer!r} of "
                f"shape {student_shape}"
            )

    def per_example_loss(self, teacher_features, student_features, labels):
        del labels
        return attention_transfer_loss(teacher_features, student_features, self.p)

    def get_config(self):
        config = super().get_config()
        config["p"] = self.p
        return config


def _fitnets(layers):
    # The student's second conv block regresses the teacher's third (both
    # 14x14 on the reference CNNs) through a 1x1-conv connector.
    return [FitNetHint(layers.teacher_convs[2], layers.student_convs[1], weight=100.0)]


def _attention(layers):
    # One term per resolution the two CNNs share: 28x28 and 14x14, β = 1000
    # each (the class default).
    return [
        AttentionTransfer(layers.teacher_convs[1], layers.student_convs[0], name="at_28x28"),
        AttentionTransfer(layers.teacher_convs[2], layers.student_convs[1], name="at_14x14"),
    ]


methods.register(methods.Method(
    "fitnets", "Logit KD + FitNets hint (Romero et al., 2015)", build=_fitnets))
methods.register(methods.Method(
    "attention", "Logit KD + attention transfer (Zagoruyko & Komodakis, 2017)",
    build=_attention))
