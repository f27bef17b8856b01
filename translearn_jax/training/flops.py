"""Peak FLOP/s per device and model FLOPs utilisation (MFU).

MFU = counted model FLOPs per token × tokens/s ÷ (devices × peak FLOP/s), with
the analytic FLOP counts of each model family (`flops_per_token`). Peaks are
dense-matmul vendor figures per device for the compute dtype. CPUs have no
table entry: pass the measured peak (`config.peak_flops_per_device`, e.g. from
`benchmarks/lm_vs_pytorch.py`, which measures a large fp32 matmul) or MFU is
reported as unknown.
"""

from __future__ import annotations

from typing import Optional

import jax

# (substring of jax.Device.device_kind, dtype) -> dense peak FLOP/s per device.
PEAK_FLOPS = {
    ('H200', 'bfloat16'): 989e12, ('H200', 'float32'): 67e12,
    ('H100', 'bfloat16'): 989e12, ('H100', 'float32'): 67e12,
    ('A100', 'bfloat16'): 312e12, ('A100', 'float32'): 19.5e12,
    ('L4', 'bfloat16'): 121e12, ('L4', 'float32'): 30e12,
    ('V100', 'float16'): 125e12, ('V100', 'float32'): 15.7e12,
    ('TPU v4', 'bfloat16'): 275e12,
    ('TPU v5 lite', 'bfloat16'): 197e12, ('TPU v5e', 'bfloat16'): 197e12,
    ('TPU v5p', 'bfloat16'): 459e12, ('TPU v5', 'bfloat16'): 459e12,
    ('TPU v6 lite', 'bfloat16'): 918e12, ('TPU v6e', 'bfloat16'): 918e12,
}


def peak_flops(device: Optional[jax.Device] = None, dtype: str = 'float32',
               override: float = 0.0) -> Optional[float]:
  """Peak FLOP/s of one device, `override` if > 0, None when unknown."""
  if override > 0:
    return override
  kind = (device or jax.devices()[0]).device_kind
  for (name, dt), value in PEAK_FLOPS.items():
    if name.lower() in kind.lower() and dt == dtype:
      return value
  return None


def mfu(flops_per_token: float, tokens_per_sec: float, num_devices: int,
        peak: Optional[float]) -> Optional[float]:
  if not peak:
    return None
  return flops_per_token * tokens_per_sec / (num_devices * peak)
