"""From distilled student to deployed student: LiteRT files, run and measured.

- `to_tflite(model, path, quantization=...)` (`tfkd.export.converter`):
  a Keras model (or a `tfkd.Distiller`'s student) to a `.tflite` file,
  float32, float16, dynamic-range or full-integer int8.
- `TFLiteModel(path)` and `evaluate_tflite(path, (x, y))`
  (`tfkd.export.runtime`): the file run by the LiteRT interpreter
  (`pip install 'tfkd[litert]'`), its accuracy and batch-1 latency.

The converter is TensorFlow's; the runtime, ai-edge-litert, is imported
only when a file is run, so `import tfkd` never needs it.

Example:

>>> path = tfkd.export.to_tflite(student, "student.tflite",  # doctest: +SKIP
...                              quantization="int8", representative_data=x_train[:200])
>>> tfkd.export.evaluate_tflite(path, (x_test, y_test))  # doctest: +SKIP
"""

from tfkd.export.converter import QUANTIZATIONS
from tfkd.export.converter import ExportWarning
from tfkd.export.converter import to_tflite
from tfkd.export.runtime import TFLiteModel
from tfkd.export.runtime import evaluate_tflite

__all__ = [
    "QUANTIZATIONS",
    "ExportWarning",
    "TFLiteModel",
    "evaluate_tflite",
    "to_tflite",
]
