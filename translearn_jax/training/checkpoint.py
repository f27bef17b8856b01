"""Orbax checkpoints: train state + data-iterator position, keep-N, resume latest.

A checkpoint directory `workdir/checkpoints/<step>/` holds two items: `state`
(the train-state pytree) and `data` (JSON: where the input pipeline stands).
Orbax writes each step to a temporary directory and renames it on success, so
a crash mid-save never leaves a half-written checkpoint that resume would pick.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=('state', 'data'))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict, wait: bool = True) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
        force=True)
    if wait:
      self.manager.wait_until_finished()

  def restore(self, state_template: Any, step: Optional[int] = None):
    """Restores (state, data_state) with the shardings/dtypes of the template."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    return restored['state'], dict(restored['data'])

  def restore_params(self, step: Optional[int] = None):
    """Only `state.params` of a checkpoint, as numpy arrays: no template, no optimiser.

    Shapes and dtypes come from the checkpoint's own metadata (orbax partial restore).
    """
    step = self.latest_step() if step is None else step
    path = os.path.join(self.directory, str(step), 'state')
    with ocp.PyTreeCheckpointer() as ckptr:
      meta = ckptr.metadata(path)
      tree = meta.item_metadata.tree if hasattr(meta, 'item_metadata') else meta.tree
      abstract = {'params': jax.tree.map(lambda m: np.empty(0, m.dtype), tree['params'])}
      restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
      restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(
          item=abstract, restore_args=restore_args, partial_restore=True))
    return restored['params']

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
