"""Two distillation recipes as explicit, documented `Distiller` arguments.

One obvious way in for students that should beat training from scratch:

* `few_labels`: a few labelled examples plus a larger unlabelled transfer
  set (labels -1, or batches of inputs only). The hard loss is the mean
  cross-entropy over the labelled examples of each batch, weighted by α;
  the soft loss covers every example (see `tfkd.Distiller`).
* `function_matching`: Beyer et al. (2022), "Knowledge distillation: A good
  teacher is patient and consistent" (arXiv:2106.05237): KL to the teacher
  only (α = 0), teacher and student on the same mixed-up image, and a long
  schedule (the paper's students keep improving for thousands of epochs).

Every number is a parameter with its default in the signature, so a
measured recipe can change it in one place; the defaults are starting
points; `few_labels`'s come from tfkd's gain map, `function_matching`'s
from the paper (not yet measured on tfkd's benchmarks).

Example:

>>> import keras, tfkd
>>> recipe = tfkd.recipes.function_matching()
>>> kwargs = recipe.distiller_kwargs()
>>> kwargs["alpha"], type(kwargs["mixing"]).__name__
(0.0, 'MixUp')
"""

import dataclasses
import math
import numbers

import keras

from tfkd import hyperparameters
from tfkd.utils import validation

#: The values `Recipe(mixing=...)` accepts.
MIXING_KINDS = (None, "mixup", "cutmix")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The `Distiller` arguments of one recipe, and the schedule it needs.

    Args:
        name: A short name for logs and reports.
        temperature: Float > 0, the Distiller's T.
        alpha: Float in [0, 1], the weight of the hard loss (mean
            cross-entropy over labelled examples).
        mixing: `"mixup"` (`keras.layers.MixUp`), `"cutmix"`
            (`keras.layers.CutMix`) or `None`. Defaults to `None`.
        mixing_alpha: Float > 0: MixUp's `alpha`, or CutMix's `factor`
            (the Beta distribution's parameter). Defaults to `1.0`.
        epochs: Int > 0, the suggested number of epochs (pass it to
            `fit`: a schedule is not a Distiller argument). Defaults to
            `30`.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for an argument out of range.

    Example:

    >>> recipe = Recipe("mine", temperature=2.0, alpha=0.3)
    >>> sorted(recipe.distiller_kwargs())
    ['alpha', 'mixing', 'temperature']
    """

    name: str
    temperature: float
    alpha: float
    mixing: str = None
    mixing_alpha: float = 1.0
    epochs: int = 30

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise validation.invalid_type("name", "a string", self.name)
        hyperparameters.check_temperature(self.temperature)
        validation.check_alpha(self.alpha)
        validation.check_choice("mixing", self.mixing, MIXING_KINDS)
        if not isinstance(self.mixing_alpha, numbers.Real) or isinstance(
            self.mixing_alpha, bool
        ):
            raise validation.invalid_type(
                "mixing_alpha", "a float > 0", self.mixing_alpha
            )
        if not math.isfinite(self.mixing_alpha) or self.mixing_alpha <= 0:
            raise validation.invalid_value(
                "mixing_alpha", "a float > 0", self.mixing_alpha
            )
        validation.check_positive_int("epochs", self.epochs)

    def mixing_layer(self, seed=None):
        """A new mixing layer for this recipe, or `None`.

        Args:
            seed: Optional int seed of the layer. Defaults to `None`.

        Returns:
            A `keras.layers.MixUp`, a `keras.layers.CutMix`, or `None`.
        """
        if self.mixing == "mixup":
            return keras.layers.MixUp(alpha=self.mixing_alpha, seed=seed)
        if self.mixing == "cutmix":
            return keras.layers.CutMix(factor=self.mixing_alpha, seed=seed)
        return None

    def distiller_kwargs(self, seed=None):
        """The keyword arguments to give `tfkd.Distiller`.

        Each call makes a new mixing layer: a layer belongs to one model.

        Args:
            seed: Optional int seed of the mixing layer. Defaults to `None`.

        Returns:
            A dict with `temperature`, `alpha` and `mixing`.
        """
        return {
            "temperature": self.temperature,
            "alpha": self.alpha,
            "mixing": self.mixing_layer(seed),
        }


def few_labels(*, temperature=1.0, alpha=0.0, epochs=20):
    """Few labels plus an unlabelled transfer set.

    Label the unlabelled examples -1 (or stream them without labels): the
    hard term is the mean cross-entropy over each batch's labelled
    examples, times α, and the soft term (T² · KL at temperature T) covers
    every example, times 1 − α.

    The defaults are the best measured in tfkd's gain map
    (`python -m benchmarks gain --preset quick`, Fashion-MNIST, a 26.7 k
    student, a teacher 85.6 % accurate, 3 seeds;
    `benchmarks/results/gain-quick/`): with 10 % of 4,000 images labelled,
    the distilled student gained +4.5 points over scratch at T=1, +3.0 at
    T=2, +1.7 at T=4 (α=0: soft targets only), and the gain grew with the
    schedule (+2.0 at 5 epochs, +3.0 at 10, +4.3 at 20). α > 0 was not
    measured there.

    Args:
        temperature: Float > 0. Defaults to `1.0`.
        alpha: Float in [0, 1], the weight of the labelled examples' hard
            loss. Defaults to `0.0`.
        epochs: Suggested epochs over the whole transfer set. Defaults to
            `20`.

    Returns:
        A `Recipe` without mixing.

    Example:

    >>> few_labels(alpha=0.3).distiller_kwargs()["alpha"]
    0.3
    """
    return Recipe(
        "few_labels", temperature=temperature, alpha=alpha, epochs=epochs
    )


def function_matching(
    *, temperature=1.0, mixing="mixup", mixing_alpha=1.0, epochs=300
):
    """Function matching (Beyer et al., 2022): KL only, mixed images, long.

    Teacher and student see the same mixed batch (`Distiller(mixing=...)`),
    and the loss is the KL to the teacher alone (α = 0), so labels are not
    needed at all (they still feed the metrics). It needs an online teacher
    (a cache cannot hold outputs on fresh mixes) and many epochs.

    Args:
        temperature: Float > 0. Defaults to `1.0` (the paper's choice).
        mixing: `"mixup"` or `"cutmix"`. Defaults to `"mixup"`.
        mixing_alpha: Float > 0, the Beta parameter of the mixing weights
            (1.0: uniform). Defaults to `1.0`.
        epochs: Suggested epochs. Defaults to `300`.

    Returns:
        A `Recipe` with α = 0.

    Example:

    >>> function_matching(mixing="cutmix").mixing
    'cutmix'
    """
    if mixing is None:
        raise validation.invalid_value(
            "mixing", "'mixup' or 'cutmix' (function matching mixes)", mixing
        )
    return Recipe(
        "function_matching",
        temperature=temperature,
        alpha=0.0,
        mixing=mixing,
        mixing_alpha=mixing_alpha,
        epochs=epochs,
    )
