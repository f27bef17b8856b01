"""TFDS catalogue datasets without TensorFlow, failing fast when offline.

Prepared datasets are read with `tfds.data_source` (array_record files; no
TensorFlow). Before that, `tfds.builder(..., try_gcs=False).is_prepared()`
checks the data directory locally: by default TFDS would try to download a
missing dataset and, with no network, retry for minutes. Here a dataset that
is not prepared is an immediate `DataError` saying where TFDS looked.
"""

from __future__ import annotations

from typing import Iterator, Optional

from translearn_jax.data.fields import MISSING, field_value
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
        "downloaded here; prepare it without TensorFlow: python -c \"import tensorflow_datasets "
        f"as tfds; tfds.builder('{name}').download_and_prepare(file_format='array_record')\" "
        '(where there is network), or set data.data_dir to where it is')
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:
    raise DataError(f'TFDS {name!r} split {split!r}: {str(e).splitlines()[0]}') from None


def read_text_field(name: str, split: str, field: str,
                    data_dir: Optional[str] = None) -> Iterator[str]:
  for i, record in records(name, split, data_dir):
    value = field_value(record, field)       # 'translation.en': nested features
    if value is MISSING:
      raise DataError(f'TFDS {name!r} record {i} has no feature {field!r} '
                      f'(has {sorted(record)}); set data.field')
    if isinstance(value, bytes) or type(value).__name__ == 'bytes_':
      try:
        value = bytes(value).decode('utf-8')
      except UnicodeDecodeError as e:
        raise DataError(f'TFDS {name!r} split {split!r} record {i}: feature {field!r} is not '
                        f'UTF-8 text ({e.reason} at byte {e.start})') from None
    if not isinstance(value, str):
      raise DataError(f'TFDS {name!r} split {split!r} record {i}: feature {field!r} is '
                      f'{type(value).__name__}, not text; name a text feature (data.field; '
                      "a nested one as 'translation.en')")
    yield value


def feature_names(name: str, feature: str, data_dir: Optional[str] = None) -> Optional[list]:
  """The class names of a `ClassLabel` feature (a `Sequence` of them too), else None."""
  import tensorflow_datasets as tfds
  features = tfds.builder(name, data_dir=data_dir, try_gcs=False).info.features
  if feature not in features:
    raise DataError(f'TFDS {name!r} has no feature {feature!r} (has {sorted(features)}); '
                    'set the data field')
  f = features[feature]
  f = getattr(f, 'feature', f)            # Sequence(ClassLabel) -> ClassLabel
  return list(f.names) if hasattr(f, 'names') else None


def records(name: str, split: str, data_dir: Optional[str] = None, batch: int = 1024
            ) -> Iterator[tuple[int, dict]]:
  """(index, record) of a prepared split, read `batch` records at a time (`__getitems__`)."""
  source = open_source(name, split, data_dir)
  n = len(source)
  for lo in range(0, n, batch):
    keys = list(range(lo, min(n, lo + batch)))
    for i, rec in zip(keys, source.__getitems__(keys)):
      yield i, rec


def text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)
