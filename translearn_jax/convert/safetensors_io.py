"""Hugging Face weight files: `model.safetensors` (or a sharded index) in, safetensors out.

Only safetensors are read — never a pickle (`pytorch_model.bin`, `.pt`, `.ckpt`):
a directory holding only those is an error that says how to convert it where
PyTorch is trusted. Reading goes through the `safetensors` package into numpy
(no PyTorch). A truncated or corrupt file is an error naming the file.
"""

from __future__ import annotations

import json
import os

import numpy as np

from translearn_jax.errors import DataError

WEIGHTS = 'model.safetensors'
INDEX = 'model.safetensors.index.json'
PICKLES = ('pytorch_model.bin', 'pytorch_model.bin.index.json', 'tf_model.h5',
           'flax_model.msgpack', 'model.ckpt.index')


def _read_file(path: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file
  try:
    return load_file(path)
  except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError
    raise DataError(f'{path}: cannot read safetensors file ({" ".join(str(e).split())}); '
                    'is it truncated or not a safetensors file?') from None


def read_weights(directory: str) -> dict[str, np.ndarray]:
  """{name: array} of the safetensors weights of a Hugging Face model directory."""
  single, index = os.path.join(directory, WEIGHTS), os.path.join(directory, INDEX)
  if os.path.isfile(single):
    return _read_file(single)
  if os.path.isfile(index):
    try:
      with open(index, encoding='utf-8') as f:
        weight_map = json.load(f)['weight_map']
    except (ValueError, KeyError, TypeError) as e:
      raise DataError(f'{index}: not a safetensors index ({e})') from None
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
      path = os.path.join(directory, shard)
      if not os.path.isfile(path):
        raise DataError(f'{index}: names shard {shard}, which is missing')
      out.update(_read_file(path))
    missing = sorted(set(weight_map) - set(out))
    if missing:
      raise DataError(f'{index}: tensors {missing[:3]} are in no shard')
    return out
  pickled = [p for p in PICKLES if os.path.exists(os.path.join(directory, p))]
  if pickled and pickled[0].endswith('.index.json'):
    raise DataError(
        f'{directory}: only sharded {pickled[0]} weights found; this project reads safetensors '
        'weights only (a pickle can run code when loaded). Convert them where you trust the '
        "files: python -c \"import json, torch; from safetensors.torch import save_file; "
        f"d = '{directory}'; m = json.load(open(d + '/{pickled[0]}'))['weight_map']; "
        "t = {}; [t.update(torch.load(d + '/' + s, weights_only=True)) for s in sorted(set(m.values()))]; "
        "save_file({k: v.clone().contiguous() for k, v in t.items()}, 'OUT_DIR/model.safetensors', "
        "metadata={'format': 'pt'})\" (every tensor of every shard; copy config.json and the "
        'tokenizer beside it)')
  if pickled:
    raise DataError(
        f'{directory}: only {pickled[0]} found; this project reads safetensors weights only '
        '(a pickle can run code when loaded). Convert it where you trust the file: '
        "python -c \"import torch; from safetensors.torch import save_file; "
        f"save_file({{k: v.clone().contiguous() for k, v in torch.load('{directory}/{pickled[0]}', "
        "weights_only=True).items()}, 'OUT_DIR/model.safetensors', metadata={'format': 'pt'})\" "
        '(every tensor as saved, heads included; copy config.json and the tokenizer beside '
        'it)')
  raise DataError(f'{directory}: no {WEIGHTS} (not a Hugging Face model directory)')


def write_weights(path: str, tensors: dict[str, np.ndarray]) -> None:
  """Writes `tensors` as one safetensors file with PyTorch's `format` metadata."""
  from safetensors.numpy import save_file
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path,
            metadata={'format': 'pt'})
