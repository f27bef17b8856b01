"""`python -m translearn_jax.convert import-hf HF_DIR RUN_DIR | export-hf RUN_DIR HF_DIR`.

Bad input prints one line `error: ...` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from translearn_jax.errors import TranslearnError


def main(argv=None, prog: str = 'python -m translearn_jax.convert') -> int:
  """Runs the command line `argv` (default: sys.argv[1:]); returns the exit status."""
  p = argparse.ArgumentParser(prog=prog,
                              description='Hugging Face model directories <-> run directories.')
  sub = p.add_subparsers(dest='command', required=True)
  imp = sub.add_parser('import-hf', help='a Hugging Face model directory -> a run directory')
  imp.add_argument('hf_dir')
  imp.add_argument('run_dir')
  imp.add_argument('--drop_pooler', action='store_true',
                   help="leave BERT's pooler out of the imported encoder")
  exp = sub.add_parser('export-hf', help='a run directory -> a Hugging Face model directory')
  exp.add_argument('run_dir')
  exp.add_argument('hf_dir')
  args = p.parse_args(argv)
  import logging
  logging.getLogger('absl').setLevel(logging.WARNING)
  from translearn_jax import convert
  try:
    if args.command == 'import-hf':
      report = convert.import_hf(args.hf_dir, args.run_dir, drop_pooler=args.drop_pooler)
      print(f"imported {report['model_type']} ({report['parameters']:,} parameters, "
            f"{report['imported']} tensors) into {args.run_dir} as a {report['family']} run")
      for key in ('absent_groups', 'unused_tensors', 'ignored_buffers'):
        if report[key]:
          print(f'{key.replace("_", " ")}: {json.dumps(report[key])}')
    else:
      out = convert.export_hf(args.run_dir, args.hf_dir)
      print(f"exported {args.run_dir} as {out['architectures'][0]} ({out['tensors']} tensors) "
            f'into {args.hf_dir}')
  except TranslearnError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
