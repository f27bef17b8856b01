"""The shipped configs as `translearn_jax.configs`, in a source checkout: the root `configs/`.

The config files live in the repository's root `configs/` folder. An install
(`pip install .`, a wheel) maps the package `translearn_jax.configs` onto that
folder (`[tool.setuptools.package-dir]` in pyproject.toml), so this file is not
installed: there the package is `configs/` itself. In a source checkout
(`translearn_jax` imported from the repository, as `python train.py` and the
tests do), this file points the package's search path at the checkout's own
`configs/`, so `from translearn_jax.configs import skipgram` loads the file
beside this `translearn_jax/`, never the `configs/` of another checkout that
an editable install of the project happens to map.
"""

import os

__path__ = [os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'configs')]
