"""Tests of tfkd/recipes.py: presets of Distiller arguments."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import recipes

from conftest import assert_each_rejected


def _image_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )


def test_function_matching_is_kl_only_with_a_fresh_mixup_each_time():
    recipe = recipes.function_matching()
    assert (recipe.alpha, recipe.temperature, recipe.epochs) == (0.0, 1.0, 300)
    first, second = recipe.distiller_kwargs(seed=1), recipe.distiller_kwargs()
    assert isinstance(first["mixing"], keras.layers.MixUp)
    assert first["mixing"] is not second["mixing"]
    assert first["mixing"].alpha == 1.0
    cutmix = recipes.function_matching(mixing="cutmix", mixing_alpha=0.5)
    assert isinstance(cutmix.mixing_layer(), keras.layers.CutMix)


def test_recipes_train_a_distiller():
    rng = np.random.default_rng(0)
    x = rng.random((16, 4, 4, 1)).astype("float32")
    y = np.array([0, 1, 2, -1] * 4, "int32")
    for recipe in (recipes.function_matching(), recipes.few_labels(alpha=0.3)):
        distiller = tfkd.Distiller(
            teacher=_image_model(0), student=_image_model(1),
            **recipe.distiller_kwargs(seed=0),
        )
        distiller.compile(optimizer="adam", metrics=["accuracy"])
        history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0]), recipe.name
    assert recipes.few_labels().distiller_kwargs()["mixing"] is None


def test_bad_recipe_arguments_are_named():
    base = {"name": "r", "temperature": 2.0, "alpha": 0.5}
    assert_each_rejected(recipes.Recipe, base, [
        ({"temperature": 0.0}, r"`temperature`"),
        ({"alpha": 2.0}, r"`alpha`"),
        ({"mixing": "blend"}, r"`mixing`.*'mixup', 'cutmix'"),
        ({"mixing_alpha": -1.0}, r"`mixing_alpha`. Expected a float > 0"),
        ({"epochs": 0}, r"`epochs`"),
    ])
    assert_each_rejected(recipes.Recipe, base, [
        ({"name": 3}, r"`name`"),
        ({"mixing_alpha": "1"}, r"`mixing_alpha`"),
        ({"epochs": 2.5}, r"`epochs`"),
    ], errors=TypeError)
    with pytest.raises(ValueError, match="`mixing`.*function matching mixes"):
        recipes.function_matching(mixing=None)
