"""Hand-written kernels for steps XLA does not lay out well (`cpu`: XLA:CPU custom calls)."""
