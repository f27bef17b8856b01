"""What a compiled program communicates: the collectives of its HLO text, per device.

`collective_bytes(compiled.as_text())` sums the result sizes of every all-to-all,
all-gather, all-reduce, reduce-scatter and collective-permute in the program (each
counted once: a collective inside a loop body counts one iteration's worth). On CPU,
XLA splits an all-to-all into one operand per device, so its tuple of results is summed.
"""

from __future__ import annotations

import re

import numpy as np

_OP = re.compile(r'\s(all-to-all|all-gather|all-reduce|reduce-scatter|collective-permute)'
                 r'(-start)?\(')
_ARRAY = re.compile(r'(\w+)\[([\d,]*)\]')
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'f16': 2, 'bf16': 2, 's16': 2, 'u16': 2,
          'f32': 4, 's32': 4, 'u32': 4, 'f64': 8, 's64': 8, 'u64': 8}


def collectives(hlo_text: str) -> dict[str, int]:
  """Bytes of each kind of collective's results in `hlo_text`, e.g. {'all-to-all': 4096}."""
  out: dict[str, int] = {}
  for line in hlo_text.splitlines():
    m = _OP.search(line)
    if not m or ' = ' not in line[:m.start()]:
      continue
    shape = line[:m.start()].split(' = ', 1)[1]   # an array shape, or a tuple of them
    size = sum(_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(',') if d]))
               for dtype, dims in _ARRAY.findall(shape) if dtype in _BYTES)
    out[m.group(1)] = out.get(m.group(1), 0) + size
  return out


def collective_bytes(hlo_text: str) -> int:
  """Total bytes of the collectives' results in `hlo_text` (see `collectives`)."""
  return sum(collectives(hlo_text).values())
