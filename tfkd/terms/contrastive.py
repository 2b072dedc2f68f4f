"""CRD: contrastive representation distillation with a memory of negatives.

Tian, Krishnan & Isola (2020), "Contrastive Representation Distillation"
(ICLR 2020, arXiv:1910.10699) make the student's embedding of an example
recognise the teacher's embedding of the *same* example among those of
many others. Both features go through a learnable linear embedding to
`feat_dim` and are L2-normalised (`v_s`, `v_t`). Two memory banks hold one
embedding per training example: `M_s` (student) and `M_t` (teacher). For
example `i` of the batch, with `K` negative indices `n_1..n_K` drawn
uniformly from the training set and `τ` the contrast temperature:

    ℓ_t(i) = −log softmax_0([⟨v_t(i), M_s[i]⟩, ⟨v_t(i), M_s[n_1]⟩, ...] / τ)
    ℓ_s(i) = −log softmax_0([⟨v_s(i), M_t[i]⟩, ⟨v_s(i), M_t[n_1]⟩, ...] / τ)
    CRD    = mean over the batch of ℓ_t(i) + ℓ_s(i)

and after each training step `M[i] ← normalise(m · M[i] + (1 − m) · v(i))`
(momentum `m = 0.5`). Differences from the authors' code
(github.com/HobbitLong/RepDistiller): the contrast is the softmax
(InfoNCE) form over one positive and K negatives rather than NCE with an
estimated normalisation constant Z (which the code fixes from the first
batch); a negative may by chance be the example itself.

The memory needs the index of every example in the training set: batches
carry it as `(x, {"labels": y, "index": i})` (with cached teacher logits,
`{"labels", "teacher_logits", "index"}`); the `Distiller` refuses a
training batch without it before the first step. Memory is
`num_data × feat_dim × 2` float32 values (two banks), non-trainable state
saved with the `Distiller`, checked before it is allocated against the
process-wide cap of `tfkd.memory_limit` (1024 MB unless the code or the
`TFKD_MAX_MEMORY_MB` environment variable raises it; never a value from
the config), which `max_memory_mb` can only lower.

What a step costs: the batch needs `batch × (1 + K)` scores per bank. When
the bank is no more than `DENSE_SCORES_MAX_ROWS_PER_SAMPLE` times the
`1 + K` rows one example draws (4,000 rows and K = 4,096 in the methods
benchmark), the scores of the whole bank, one `(batch, feat_dim) ×
(feat_dim, num_data)` product, cost less than gathering
`(batch, 1 + K, feat_dim)` rows: each example's sum over its 1 + K rows is
then a sum over the bank weighted by how often the example drew each row
(`draw_counts`), which is the same loss. A larger bank gathers the rows.
Either way only the batch's rows are read for the update and written
back, by sparse reads and a row scatter.
"""

import keras
from keras import ops

from tfkd import backend_support
from tfkd import hyperparameters
from tfkd import memory_limit
from tfkd.terms import base
from tfkd.terms import methods
from tfkd.utils import validation

_BYTES_PER_FLOAT32 = 4

#: Up to this many bank rows per drawn row (`num_data / (1 + K)`), the
#: loss scores the whole bank rather than gathering each example's rows.
#: Measured on 2 CPU cores, batch 64, K = 4,096, feat_dim 128, one bank,
#: forward and backward (an einsum version of the dense scores, slower than
#: today's): 4.7 ms dense vs 49 ms gathered at 4,000 rows, 16 vs 48 ms at
#: 16,000, 60 vs 53 ms at 64,000 (the break-even near 15); 8 keeps a margin
#: for faster gathers elsewhere.
DENSE_SCORES_MAX_ROWS_PER_SAMPLE = 8


def memory_megabytes(num_data, feat_dim):
    """Size of CRD's two memory banks in MB: `num_data · feat_dim · 2 · 4 B`.

    Example:

    >>> memory_megabytes(50_000, 128)  # CIFAR-100, the paper's feat_dim
    51.2
    """
    return num_data * feat_dim * 2 * _BYTES_PER_FLOAT32 / 1e6


def contrastive_loss(anchors, memory_rows, temperature):
    """Per-example InfoNCE loss, the positive in column 0: `(batch,)`.

    Args:
        anchors: L2-normalised embeddings `(batch, feat_dim)`.
        memory_rows: Memory rows `(batch, 1 + K, feat_dim)`: the anchor's
            own example first, then its K negatives.
        temperature: Float in [0.01, 100], τ.

    Returns:
        A float32 tensor `(batch,)`: `−log softmax(scores / τ)[0]`.

    Example:

    >>> import numpy as np
    >>> a = np.array([[1.0, 0.0]]); rows = np.array([[[1.0, 0.0], [-1.0, 0.0]]])
    >>> float(contrastive_loss(a, rows, 1.0)[0]) < 0.2
    True
    """
    scores = ops.einsum("bkd,bd->bk", memory_rows, anchors) / temperature
    return -ops.log_softmax(scores, axis=-1)[:, 0]  # (batch,)


def draw_counts(rows, num_data):
    """How often each example drew each memory row: float32 `(batch, num_data)`.

    Args:
        rows: Int tensor `(batch, 1 + K)` of memory rows in `[0, num_data)`.
        num_data: Int, the rows of the memory.

    Returns:
        `counts[b, n]`, the number of times `n` occurs in `rows[b]`.

    Example:

    >>> import numpy as np
    >>> np.asarray(draw_counts(np.array([[2, 0, 2]]), 4)).tolist()
    [[1.0, 0.0, 2.0, 0.0]]
    """
    rows = ops.cast(rows, "int32")
    if not backend_support.tensorflow_is_backend():
        # A scatter-add of ones at (example, row), duplicates summed: of a
        # constant size, so it compiles under XLA on JAX as well.
        batch, drawn = ops.shape(rows)[0], ops.shape(rows)[1]
        examples = ops.repeat(ops.arange(batch, dtype="int32"), drawn)
        positions = ops.stack([examples, ops.reshape(rows, (-1,))], axis=-1)
        return ops.scatter(
            positions, ops.ones((batch * drawn,), "float32"), (batch, num_data)
        )  # (batch, num_data)
    tf = backend_support.require_tensorflow("CRD's TensorFlow draw counts")
    # The op itself, of a constant size: `ops.bincount` and `tf.math.bincount`
    # size their output from the data (at least `minlength`), which XLA
    # cannot compile (`jit_compile=True`). Empty weights: counts, as float32.
    return tf.raw_ops.DenseBincount(
        input=rows, size=num_data, weights=tf.zeros((0,), tf.float32)
    )


def contrastive_loss_on_memory(anchors, memory, positives, log_counts, temperature):
    """`contrastive_loss` from the scores of the whole memory: `(batch,)`.

    Each example's softmax over its `1 + K` drawn rows, duplicates
    included, is a softmax over the whole memory in which row `n` counts
    `counts[b, n]` times: `log Σ_k exp(s_{r_k}) = logsumexp_n(s_n + log
    counts[b, n])`. The same loss as `contrastive_loss` on the gathered
    rows, from one `(batch, feat_dim) × (feat_dim, num_data)` product
    instead of `batch × (1 + K)` rows of `feat_dim` values.

    Args:
        anchors: L2-normalised embeddings `(batch, feat_dim)`.
        memory: The memory `(num_data, feat_dim)`.
        positives: Int `(batch,)`, each anchor's own row.
        log_counts: `log(draw_counts(rows, num_data))`, `(batch,
            num_data)`; `-inf` for rows an example did not draw. The
            positive must be among the drawn rows.
        temperature: Float in [0.01, 100], τ.

    Returns:
        A float32 tensor `(batch,)`: `−log softmax(scores / τ)[0]`.

    Example:

    >>> import numpy as np
    >>> a = np.array([[1.0, 0.0]]); memory = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> rows = np.array([[0, 1]])  # as `contrastive_loss(a, memory[rows], 1.0)`
    >>> log_counts = np.log(np.asarray(draw_counts(rows, 2)))
    >>> loss = contrastive_loss_on_memory(a, memory, rows[:, 0], log_counts, 1.0)
    >>> bool(np.isclose(loss[0], contrastive_loss(a, memory[rows], 1.0)[0]))
    True
    """
    # 1/τ on the anchors, (batch, feat_dim), not on the (batch, num_data)
    # scores; the positive's score from its row, not a gather of the scores
    # (whose gradient would be another (batch, num_data) tensor).
    anchors = ops.cast(anchors, "float32") / temperature
    memory = ops.cast(memory, "float32")
    scores = _scores(anchors, memory)  # (batch, num_data)
    own_rows = ops.take(memory, ops.cast(positives, "int32"), axis=0)
    positive = ops.sum(anchors * own_rows, axis=-1)  # (batch,)
    return ops.logsumexp(scores + log_counts, axis=-1) - positive


@keras.saving.register_keras_serializable(package="tfkd")
class CRD(base.DistillationTerm):
    """CRD: contrastive distillation against a memory of other examples.

    Tian et al. (2020), "Contrastive Representation Distillation": see the
    module docstring for the loss, the memory and how this version differs
    from the authors' code. It reads one teacher and one student layer
    (the paper: the penultimate embeddings), learns a linear embedding of
    each (trained with the student, saved with the `Distiller`, never in
    `distiller.student`), and keeps two memory banks of `num_data` rows.

    Every training batch must carry each example's index in the training
    set, `(x, {"labels": y, "index": i})` with `0 <= i < num_data`: the
    memory row of example `i`. `fit` refuses a first batch without it.
    CRD trains only: in evaluation (validation examples have no memory
    rows, and the memory must not change) it adds and reports 0. The
    memory update is a row scatter on one device (TensorFlow's sparse one on
    TensorFlow, `keras.ops.scatter_update` elsewhere); CRD is not tested
    under `tf.distribute` strategies.

    Args:
        teacher_layer: Name of the teacher layer (or `None`, the logits).
        student_layer: Name of the student layer (or `None`, the logits).
        num_data: Int > 0, examples in the training set (memory rows).
        feat_dim: Int > 0, size of the embeddings. Defaults to `128`.
        num_negatives: Int > 0, K negatives per example and step.
            Defaults to `4096` (the paper uses 16384 on CIFAR-100).
        contrast_temperature: Float in [0.01, 100], τ (the accepted range
            of every temperature, `tfkd.hyperparameters`). Defaults to
            `0.07`.
        momentum: Float in [0, 1), m of the memory update. Defaults to
            `0.5`.
        max_memory_mb: Float > 0, this term's own cap on the memory,
            `num_data · feat_dim · 2 · 4` bytes (plus the embeddings, when
            built). It can only lower the process-wide cap of
            `tfkd.memory_limit` (1024 MB by default; raise that with
            `tfkd.memory_limit.set_max_memory_mb` or `TFKD_MAX_MEMORY_MB`):
            a `.keras` file that raises `max_memory_mb` allocates no more.
            A larger memory is a `ValueError` before anything is allocated.
            Defaults to `1024.0`.
        seed: Optional int, the seed of the negative sampling. Defaults to
            `None`.
        weight: Float in [0, 1e6], the paper's β. Defaults to `0.8`.
        name: Defaults to `"crd_loss"`.

    Raises:
        TypeError, ValueError: for an invalid argument, or a memory above
            the effective limit (the smaller of `max_memory_mb` and the
            process-wide cap).

    Example:

    >>> import numpy as np, keras, tfkd
    >>> x, y = np.random.rand(32, 8).astype("float32"), np.arange(32) % 3
    >>> def mlp(): return keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(6, name="embedding"), keras.layers.Dense(3)])
    >>> crd = tfkd.CRD("embedding", "embedding", num_data=32, feat_dim=4,
    ...                num_negatives=8)
    >>> distiller = tfkd.Distiller(teacher=mlp(), student=mlp(), extra_losses=[crd])
    >>> distiller.compile(optimizer="adam")
    >>> targets = {"labels": y, "index": np.arange(32)}
    >>> "crd_loss" in distiller.fit(x, targets, verbose=0).history
    True
    """

    default_name = "crd_loss"
    #: The `Distiller` passes `indices=` and `training=` to this term.
    needs_example_indices = True

    def __init__(
        self,
        teacher_layer=None,
        student_layer=None,
        num_data=None,
        feat_dim=128,
        num_negatives=4096,
        contrast_temperature=0.07,
        momentum=0.5,
        max_memory_mb=1024.0,
        seed=None,
        weight=0.8,
        name=None,
    ):
        super().__init__(
            teacher_layer=teacher_layer,
            student_layer=student_layer,
            weight=weight,
            name=name,
        )
        self.num_data = validation.check_positive_int("num_data", num_data)
        self.feat_dim = validation.check_positive_int("feat_dim", feat_dim)
        self.num_negatives = validation.check_positive_int(
            "num_negatives", num_negatives
        )
        self.contrast_temperature = hyperparameters.check_temperature(
            contrast_temperature, "contrast_temperature"
        )
        momentum = validation.check_non_negative("momentum", momentum)
        if momentum >= 1.0:
            raise validation.invalid_value(
                "momentum", "a float in [0, 1)", momentum
            )
        self.momentum = momentum
        self.max_memory_mb = validation.check_positive_float(
            "max_memory_mb", max_memory_mb
        )
        # Checked before anything is allocated, against a cap that never
        # comes from the config (a `.keras` file is untrusted input).
        memory_limit.check_allocation(
            "num_data",
            self.num_data,
            memory_megabytes(self.num_data, self.feat_dim),
            f"CRD's two memory banks, num_data × feat_dim × 2 × 4 B = "
            f"{self.num_data} × {self.feat_dim} × 2 × 4 B",
            self.max_memory_mb,
        )
        if seed is not None:
            seed = validation.check_int("seed", seed)
        self.seed = seed
        self._seed_generator = keras.random.SeedGenerator(seed)

    def build(self, teacher_features_shape, student_features_shape):
        teacher_size = _flat_size(teacher_features_shape)
        student_size = _flat_size(student_features_shape)
        # The embeddings are sized by the models' features: checked with
        # the banks before either is allocated.
        embedding_mb = (
            (teacher_size + student_size + 2) * self.feat_dim
            * _BYTES_PER_FLOAT32 / 1e6
        )
        memory_limit.check_allocation(
            "feat_dim",
            self.feat_dim,
            memory_megabytes(self.num_data, self.feat_dim) + embedding_mb,
            f"CRD's memory banks and its two embeddings of {teacher_size} "
            f"and {student_size} features",
            self.max_memory_mb,
        )
        self.teacher_embedding = keras.layers.Dense(
            self.feat_dim, name="teacher_embedding", dtype="float32"
        )
        self.student_embedding = keras.layers.Dense(
            self.feat_dim, name="student_embedding", dtype="float32"
        )
        self.teacher_embedding.build((None, teacher_size))
        self.student_embedding.build((None, student_size))
        # As the authors' code: uniform in ±1/sqrt(feat_dim / 3).
        bound = 1.0 / (self.feat_dim / 3.0) ** 0.5
        initializer = keras.initializers.RandomUniform(-bound, bound, seed=self.seed)
        shape = (self.num_data, self.feat_dim)
        self.student_memory = self.add_weight(
            shape=shape, initializer=initializer, trainable=False,
            name="student_memory",
        )
        self.teacher_memory = self.add_weight(
            shape=shape, initializer=initializer, trainable=False,
            name="teacher_memory",
        )
        self.built = True

    def call(
        self,
        teacher_features,
        student_features,
        labels=None,
        sample_weight=None,
        indices=None,
        training=False,
    ):
        del labels
        if not training or indices is None:
            # Evaluation: no memory rows for these examples, no update.
            return ops.zeros((), "float32")
        indices = ops.cast(ops.reshape(indices, (-1,)), "int32")  # (batch,)
        v_t = ops.normalize(
            self.teacher_embedding(base.flatten_examples(teacher_features)),
            axis=-1,
        )  # (batch, feat_dim)
        v_s = ops.normalize(
            self.student_embedding(base.flatten_examples(student_features)),
            axis=-1,
        )  # (batch, feat_dim)
        batch = ops.shape(indices)[0]
        negatives = keras.random.randint(
            (batch, self.num_negatives), 0, self.num_data, dtype="int32",
            seed=self._seed_generator,
        )  # (batch, K)
        rows = ops.concatenate([indices[:, None], negatives], axis=1)
        loss = self.loss_on_memory(v_t, v_s, rows)  # (batch,)
        self._update_memory(self.student_memory, indices, v_s)
        self._update_memory(self.teacher_memory, indices, v_t)
        return base.weighted_batch_mean(loss, sample_weight)

    def loss_on_memory(self, teacher_embeddings, student_embeddings, rows):
        """`ℓ_t + ℓ_s` per example, on the current memory: `(batch,)`.

        Args:
            teacher_embeddings: `v_t`, `(batch, feat_dim)`, L2-normalised.
            student_embeddings: `v_s`, `(batch, feat_dim)`, L2-normalised.
            rows: Int `(batch, 1 + K)`: each example's own index, then its
                negatives.
        """
        rows = ops.cast(rows, "int32")
        tau = self.contrast_temperature
        if self.num_data <= DENSE_SCORES_MAX_ROWS_PER_SAMPLE * (
            self.num_negatives + 1
        ):
            # A small bank: score all of it (see the module docstring);
            # the draw counts serve both banks.
            log_counts = ops.log(draw_counts(rows, self.num_data))
            return contrastive_loss_on_memory(
                teacher_embeddings, _read(self.student_memory), rows[:, 0],
                log_counts, tau,
            ) + contrastive_loss_on_memory(
                student_embeddings, _read(self.teacher_memory), rows[:, 0],
                log_counts, tau,
            )
        student_rows = _gather(self.student_memory, rows)  # (batch, 1 + K, feat_dim)
        teacher_rows = _gather(self.teacher_memory, rows)
        return contrastive_loss(
            teacher_embeddings, student_rows, tau
        ) + contrastive_loss(student_embeddings, teacher_rows, tau)

    def _update_memory(self, memory, indices, embeddings):
        """`M[i] ← normalise(m · M[i] + (1 − m) · v(i))`, rows `indices`."""
        embeddings = ops.stop_gradient(embeddings)
        old = _gather(memory, indices)  # (batch, feat_dim)
        new = ops.normalize(
            self.momentum * old + (1.0 - self.momentum) * embeddings, axis=-1
        )
        # A non-finite batch (which the Distiller then refuses) must not
        # poison the memory: its rows keep their old values.
        finite = ops.all(ops.isfinite(new), axis=-1, keepdims=True)
        new = ops.where(finite, new, old)  # (batch, feat_dim)
        _scatter_rows(memory, indices, new)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_data": self.num_data,
                "feat_dim": self.feat_dim,
                "num_negatives": self.num_negatives,
                "contrast_temperature": self.contrast_temperature,
                "momentum": self.momentum,
                "max_memory_mb": self.max_memory_mb,
                "seed": self.seed,
            }
        )
        return config


def _scores(anchors, memory):
    """`anchors @ memory.T`: `(batch, feat_dim) x (num_data, feat_dim)`."""
    if not backend_support.tensorflow_is_backend():
        return ops.matmul(anchors, ops.transpose(memory))
    tf = backend_support.require_tensorflow("CRD's TensorFlow scores")
    # `transpose_b`: no transposed copy of the memory (`ops.einsum` makes
    # one on TensorFlow's CPU kernels).
    return tf.linalg.matmul(anchors, memory, transpose_b=True)


def _scatter_rows(memory, indices, new):
    """Writes `new` `(batch, feat_dim)` into the memory's rows `indices`."""
    if not backend_support.tensorflow_is_backend():
        # The whole bank in and out (JAX arrays are immutable; inside a
        # compiled step XLA updates it in place).
        memory.assign(
            ops.scatter_update(memory.value, ops.expand_dims(indices, -1), new)
        )
        return
    tf = backend_support.require_tensorflow("CRD's TensorFlow row scatter")
    # A row update, not a copy of the whole memory.
    memory.value.scatter_update(tf.IndexedSlices(new, indices))


def _gather(memory, rows):
    """The memory's `rows`, read by a sparse gather on the variable.

    On TensorFlow, `ops.take` would first read the whole variable, and
    TensorFlow copies a variable on every full read once a row scatter has
    written it (its copy-on-read mode): the whole bank, twice per step.
    Other backends have no such copy and take the rows.
    """
    if not backend_support.tensorflow_is_backend():
        return ops.take(memory.value, rows, axis=0)
    tf = backend_support.require_tensorflow("CRD's TensorFlow gather")
    return tf.gather(memory.value, rows)


def _read(memory):
    """The whole memory as a tensor, for the dense scores: one read.

    This full read copies the bank (see `_gather`); the dense scores read
    every row anyway, and `DENSE_SCORES_MAX_ROWS_PER_SAMPLE` keeps the bank
    within a few times the rows the step draws. Read once per step and
    bank: the scores and the positives' rows share the tensor.
    """
    if backend_support.keras_backend() == "torch":
        # A snapshot: PyTorch's autograd keeps this tensor for the scores'
        # gradient, and the memory update then writes the variable in
        # place, which autograd refuses ("modified by an inplace operation").
        return ops.copy(memory.value)
    if not backend_support.tensorflow_is_backend():
        return ops.convert_to_tensor(memory.value)
    tf = backend_support.require_tensorflow("CRD's TensorFlow memory read")
    # `ops.convert_to_tensor` would hand on the variable, which each use
    # then reads (and copies) again.
    return tf.convert_to_tensor(memory.value)


def _flat_size(shape):
    """Features per example of a static shape `(None, ...)`."""
    size = 1
    for dim in tuple(shape)[1:]:
        if dim is None:
            raise ValueError(
                "Invalid inputs for `CRD`. Expected features of a static "
                f"shape (batch, ...). Received: shape {tuple(shape)}"
            )
        size *= int(dim)
    return size


def _crd(layers):
    # On the penultimate dense layers, 128-d embeddings, 4,096 negatives
    # from a memory of every row of the epoch (`layers.num_data`).
    return [CRD(layers.teacher_embedding, layers.student_embedding,
                num_data=layers.num_data, feat_dim=128, num_negatives=4096,
                weight=0.8, seed=0)]


methods.register(methods.Method(
    "crd", "Logit KD + CRD (Tian et al., 2020)", build=_crd,
    needs_example_indices=True))
