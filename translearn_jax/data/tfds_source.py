"""TFDS catalogue datasets without TensorFlow, failing fast when offline.

Prepared datasets are read with `tfds.data_source` (array_record files; no
TensorFlow). Before that, `tfds.builder(..., try_gcs=False).is_prepared()`
checks the data directory locally: by default TFDS would try to download a
missing dataset and, with no network, retry for minutes. Here a dataset that
is not prepared is an immediate `DataError` saying where TFDS looked.
"""

from __future__ import annotations

from typing import Iterator, Optional

from translearn_jax.errors import DataError


def open_source(name: str, split: str, data_dir: Optional[str] = None):
  """A random-access `tfds.data_source` for a prepared dataset."""
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:  # pragma: no cover - a declared dependency
    raise DataError('tensorflow-datasets is not installed') from e
  try:
    builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
  except Exception as e:  # DatasetNotFoundError and friends
    raise DataError(f'TFDS has no dataset {name!r}: {str(e).splitlines()[0]}') from None
  if not builder.is_prepared():
    raise DataError(
        f'TFDS dataset {name!r} is not prepared in {builder.data_dir} and will not be '
        'downloaded here; prepare it (tfds build, file_format=array_record) or set '
        'data.data_dir to where it is')
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:
    raise DataError(f'TFDS {name!r} split {split!r}: {str(e).splitlines()[0]}') from None


def read_text_field(name: str, split: str, field: str,
                    data_dir: Optional[str] = None) -> Iterator[str]:
  source = open_source(name, split, data_dir)
  for i in range(len(source)):
    record = source[i]
    if field not in record:
      raise DataError(f'TFDS {name!r} record {i} has no feature {field!r} '
                      f'(has {sorted(record)}); set data.field')
    value = record[field]
    yield value.decode('utf-8') if isinstance(value, bytes) else str(value)
