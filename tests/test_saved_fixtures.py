"""`.keras` files saved by earlier tfkd versions still load and predict.

`tests/fixtures/distiller-1f66263.keras` was saved by commit 1f66263 (before
the Distiller's terms and settings were reorganised) with Keras 3.12.4 (a file saved by a newer Keras may not load in an older one):
a Distiller with a teacher, logit standardization, a FitNets hint and
DKD, trained two epochs. `make_distiller_1f66263.py` beside it shows how.
"""
import os

import keras
import numpy as np

import tfkd

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _load_1f66263():
    distiller = keras.saving.load_model(
        os.path.join(FIXTURES, "distiller-1f66263.keras")
    )
    return distiller, np.load(os.path.join(FIXTURES, "distiller-1f66263.npz"))


def test_a_distiller_saved_by_1f66263_loads_with_its_settings():
    distiller, _ = _load_1f66263()
    assert isinstance(distiller, tfkd.Distiller)
    config = distiller.get_config()
    assert config["temperature"] == 3.0
    assert config["alpha"] == 0.25
    assert config["logit_standardization"] is True
    assert [term.name for term in distiller.extra_losses] == [
        "fitnet_loss", "dkd_loss"
    ]


def test_a_distiller_saved_by_1f66263_predicts_the_same():
    distiller, saved = _load_1f66263()
    np.testing.assert_allclose(
        distiller.student.predict(saved["x"], verbose=0), saved["student"],
        rtol=1e-6, atol=1e-6,
    )
    np.testing.assert_allclose(
        distiller.teacher.predict(saved["x"], verbose=0), saved["teacher"],
        rtol=1e-6, atol=1e-6,
    )
    np.testing.assert_allclose(
        distiller.predict(saved["x"], verbose=0), saved["student"],
        rtol=1e-6, atol=1e-6,
    )


def test_a_distiller_saved_by_1f66263_evaluates_to_the_same_losses():
    # The saved losses come from the same 32 examples the file was trained
    # on: the KL (standardized), FitNets and DKD must all read the same.
    distiller, saved = _load_1f66263()
    x = np.random.RandomState(0).rand(32, 8, 8, 1).astype("float32")
    y = np.random.RandomState(1).randint(0, 3, size=32)
    results = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert sorted(results) == list(saved["evaluate_names"])
    values = [float(results[name]) for name in saved["evaluate_names"]]
    np.testing.assert_allclose(values, saved["evaluate"], rtol=1e-5, atol=1e-6)
