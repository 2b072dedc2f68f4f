"""CRD in a Distiller fed by a `tf.data` pipeline.

Moved verbatim from tests/test_terms_contrastive.py, which runs on every
Keras backend (`conftest.BACKEND_INDEPENDENT_FILES`).
"""

import keras
import numpy as np
import tensorflow as tf

from tfkd.terms.contrastive import CRD
from test_terms_contrastive import FEAT_DIM, NUM_DATA, _data, _distiller


def test_fit_with_indices_trains_and_round_trips(tmp_path):
    x, y = _data()
    term = CRD("embedding", "embedding", num_data=NUM_DATA, feat_dim=FEAT_DIM,
               num_negatives=8, seed=0)
    distiller = _distiller(term)
    before = term.student_memory.numpy().copy()
    dataset = tf.data.Dataset.from_tensor_slices(
        (x, {"labels": y, "index": np.arange(NUM_DATA)})).batch(8)
    history = distiller.fit(dataset, epochs=1, verbose=0)
    assert history.history["crd_loss"][0] > 0
    assert not np.allclose(term.student_memory.numpy(), before)
    # The embeddings train with the student but are not part of it.
    assert len(term.trainable_weights) == 4
    assert len(distiller.student.trainable_weights) == 4
    path = tmp_path / "crd.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    [copy] = loaded.extra_losses
    assert copy.get_config() == term.get_config()
    np.testing.assert_array_equal(copy.student_memory.numpy(), term.student_memory.numpy())
    assert distiller.evaluate(x, y, verbose=0, return_dict=True)["crd_loss"] == 0.0
