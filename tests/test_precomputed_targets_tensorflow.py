"""`Distiller.precompute_targets` under `tf.distribute` and mixed precision.

TensorFlow only (the backend-independent tests are in
`test_precomputed_targets.py`).
"""

import keras
import numpy as np

import tfkd
from conftest import two_replica_strategy
from test_precomputed_targets import ROWS, _data, _model


def _hinted_distiller(teacher, student):
    distiller = tfkd.Distiller(teacher=teacher, student=student, temperature=2.0,
                               alpha=0.5, extra_losses=[tfkd.FitNetHint("hidden", "hidden")])
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    return distiller


def test_under_a_mirrored_strategy_every_row_is_computed_once():
    # Keras's `predict_on_batch` under MirroredStrategy hands back every
    # replica's copy of the batch: twice the rows.
    x, y = _data()
    plain = _hinted_distiller(_model(16, seed=0), _model(4, seed=1))
    expected = plain.precompute_targets(x, y, batch_size=40, verbose=0)
    with two_replica_strategy().scope():
        distiller = _hinted_distiller(_model(16, seed=0), _model(4, seed=1))
    targets = distiller.precompute_targets(x, y, batch_size=40, verbose=0)
    assert targets["teacher_logits"].shape[0] == ROWS
    np.testing.assert_allclose(targets["teacher_logits"], expected["teacher_logits"],
                               atol=1e-6)
    np.testing.assert_allclose(targets["teacher_features"]["hidden"],
                               expected["teacher_features"]["hidden"], atol=1e-6)
    history = distiller.fit(x, targets, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["fitnet_loss"][-1])


def test_a_mixed_precision_teacher_is_stored_in_float32_and_trains():
    keras.mixed_precision.set_dtype_policy("mixed_float16")  # reset by conftest
    x, y = _data()
    teacher, student = _model(16, seed=0), _model(4, seed=1)
    distiller = _hinted_distiller(teacher, student)
    targets = distiller.precompute_targets(x, y, verbose=0)
    assert targets["teacher_logits"].dtype == np.float32
    assert targets["teacher_features"]["hidden"].dtype == np.float32
    history = distiller.fit(x, targets, batch_size=16, epochs=1, verbose=0)
    assert all(np.isfinite(values[-1]) for values in history.history.values())
