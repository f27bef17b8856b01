"""The package's layer order (ARCHITECTURE.md), checked by parsing every module's imports.

Each top-level folder of `translearn_jax` has a rank; a module may import a
module of another folder only if that folder's rank is strictly lower, and the
module-level import graph (imports inside functions included) has no cycle.
Library code never imports the entry point, configs or benchmarks.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / 'translearn_jax'

# Lower rank = lower layer. Keep in sync with ARCHITECTURE.md.
RANKS = {
    'errors': 0, 'config_fields': 0.5,
    'kernels': 0.75,                        # C++ custom calls and their builder
    'data': 1, 'models': 1, 'export': 1.5,   # export reads files through data.readers
    'training': 2, 'evaluation': 2,
    'transfer': 3,
    'generation': 4, 'downstream': 4, 'fusion': 4, 'convert': 4,
    'serving': 4.5,
    'pretraining': 5,
    'experiments': 6,
    'configs': 6.5,  # the shipped configs (data, not code): read by the command line only
    'cli': 7,        # the console script: the one library folder that imports the runners
}


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def modules() -> dict[str, pathlib.Path]:
  return {module_name(p): p for p in PKG.rglob('*.py')}


def imports_of(path: pathlib.Path, known: set[str]) -> set[str]:
  """Every translearn_jax module `path` imports, at any depth of its code."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level:
      raise AssertionError(f'{path}: relative import; use absolute translearn_jax imports')
    for n in names:
      if n.split('.')[0] in ('train', 'configs', 'benchmarks', 'tests'):
        out.add(n)
      while n and n not in known:
        n = n.rpartition('.')[0]
      if n.startswith('translearn_jax'):
        out.add(n)
  return out


def folder(mod: str) -> str:
  parts = mod.split('.')
  return parts[1] if len(parts) > 1 else ''


def test_every_folder_has_a_rank():
  folders = {folder(m) for m in modules()} - {''}
  assert folders <= set(RANKS), f'folders without a layer rank: {folders - set(RANKS)}'


def graph() -> dict[str, set[str]]:
  mods = modules()
  return {m: imports_of(p, set(mods)) for m, p in mods.items()}


def test_imports_point_down():
  bad = []
  for mod, deps in graph().items():
    for dep in deps:
      if not dep.startswith('translearn_jax'):
        bad.append(f'{mod} imports {dep} (library code never imports runners or scripts)')
        continue
      a, b = folder(mod), folder(dep)
      if a and b and a != b and RANKS[b] >= RANKS[a]:
        bad.append(f'{mod} ({a}, rank {RANKS[a]}) imports {dep} ({b}, rank {RANKS[b]})')
  assert not bad, '\n'.join(bad)


def test_no_import_cycle():
  g = graph()
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(m):
    state[m] = 1
    stack.append(m)
    for d in sorted(g.get(m, ())):
      if d == m or d not in g:
        continue
      if state.get(d) == 1:
        cycle = stack[stack.index(d):] + [d]
        raise AssertionError('import cycle: ' + ' -> '.join(cycle))
      if d not in state:
        visit(d)
    stack.pop()
    state[m] = 2

  for m in sorted(g):
    if m not in state:
      visit(m)


def test_checker_catches_violations(tmp_path, monkeypatch):
  """The checks fail on an upward import and on a cycle (the test can fail)."""
  pkg = tmp_path / 'translearn_jax'
  for sub in ('data', 'experiments'):
    (pkg / sub).mkdir(parents=True)
    (pkg / sub / '__init__.py').write_text('')
  (pkg / '__init__.py').write_text('')
  (pkg / 'data' / 'a.py').write_text('def f():\n  from translearn_jax.experiments import b\n')
  (pkg / 'experiments' / 'b.py').write_text('from translearn_jax.data import a\n')
  monkeypatch.setattr(__import__(__name__), 'ROOT', tmp_path)
  monkeypatch.setattr(__import__(__name__), 'PKG', pkg)
  with pytest.raises(AssertionError, match=r'translearn_jax\.data\.a \(data, rank 1\) imports '
                                           r'translearn_jax\.experiments\.b'):
    test_imports_point_down()
  with pytest.raises(AssertionError, match='import cycle'):
    test_no_import_cycle()


def test_repository_root_holds_the_design_layout():
  """The root's tracked entries are the design card's (pyproject.toml, translearn_jax/,
  train.py, configs/, tests/, benchmarks/) plus docs and CI: a scratch script committed by
  mistake (one once imported modules that exist only on a developer's machine) fails here."""
  import shutil
  import subprocess
  if shutil.which('git') is None or not (ROOT / '.git').exists():
    pytest.skip('not a git checkout (the tracked files are unknown)')
  tracked = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
  top = {p.split('/')[0] for p in tracked}
  allowed = {'pyproject.toml', 'translearn_jax', 'train.py', 'configs', 'tests', 'benchmarks',
             'README.md', 'ARCHITECTURE.md', '.ci', '.gitignore'}
  assert top - allowed == set(), f'unexpected entries at the repository root: {top - allowed}'
