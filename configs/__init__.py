"""The shipped configs, one `get_config()` per file; installed as `translearn_jax.configs`.

Run one by name or by path: `translearn train --config skipgram --workdir DIR`,
`python train.py --config configs/skipgram.py --workdir DIR`. Configs that
build on another import it as `from translearn_jax.configs import NAME`.
"""
