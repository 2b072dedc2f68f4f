"""Infrastructure shared by tfkd's modules and its benchmarks.

- `tfkd.utils.validation`: argument checks that raise Keras-worded
  `ValueError`/`TypeError` before any training starts.
- `tfkd.utils.files`: atomic writes, durable renames and file digests.
- `tfkd.utils.progress`: a progress bar over a dataset's batches.

These are public so that every module (and `benchmarks/`) uses one
implementation; they are not part of the distillation API re-exported from
`tfkd`.
"""
