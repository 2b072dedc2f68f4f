"""Transfer-learning teachers from `keras.applications`, fine-tuned well.

```python
import tfkd.teachers

teacher = tfkd.teachers.build("efficientnetv2b0", num_classes=10,
                              input_shape=(28, 28, 1), weights="imagenet")
history = tfkd.teachers.fine_tune(teacher, train_ds, val_ds, epochs=(3, 10))
```

Any other Keras classifier (including an AutoKeras export) becomes a teacher
with `tfkd.teachers.as_teacher(model)`.
"""

from .adapters import as_teacher
from .builder import build
from .builder import resolve_image_size
from .discriminative import DiscriminativeOptimizer
from .fine_tuning import FineTuneHistory
from .fine_tuning import fine_tune
from .layer_groups import find_backbone
from .layer_groups import layer_groups
from .layers import ApplicationPreprocessing
from .layers import GrayscaleToRGB
from .layers import InferenceMode
from .registry import FamilySpec
from .registry import get_family
from .registry import list_families
from .registry import register_family
from .schedules import SlantedTriangularLR
from .unfreezing import GradualUnfreezing
from .unfreezing import set_trainable_groups

__all__ = [
    "ApplicationPreprocessing",
    "DiscriminativeOptimizer",
    "FamilySpec",
    "FineTuneHistory",
    "GradualUnfreezing",
    "GrayscaleToRGB",
    "InferenceMode",
    "SlantedTriangularLR",
    "as_teacher",
    "build",
    "find_backbone",
    "fine_tune",
    "get_family",
    "layer_groups",
    "list_families",
    "register_family",
    "resolve_image_size",
    "set_trainable_groups",
]
