"""The `translearn` console script: one command, a subcommand per job.

  translearn train --config skipgram --workdir /tmp/skipgram [--config.FIELD=VALUE ...]
  translearn predict MODEL_DIR --input FILE --output FILE
  translearn translate MODEL_DIR --input FILE --output FILE [--beam K]
  translearn sample --workdir RUN_DIR --prompt TEXT
  translearn convert import-hf HF_DIR RUN_DIR | export-hf RUN_DIR HF_DIR
  translearn pretokenize --tokenizer T --input SPEC --out DIR --shards N
  translearn configs

This is the one folder that imports the runners (`pretraining/`,
`experiments/`), and only when a run starts: `translearn --help` and
`translearn configs` import neither JAX nor a runner. Bad input prints one
line `error: ...` and exits 2.
"""

from __future__ import annotations

import contextlib
import os
import sys

from translearn_jax.cli.absl_flags import HELP_FLAGS, flag_help, parse_absl_flags

PROG = 'translearn'

COMMANDS = {
    'train': 'train a shipped config or a config file: --config NAME_OR_FILE --workdir DIR '
             '[--config.FIELD=VALUE ...]',
    'predict': 'label a file with a trained downstream run: MODEL_DIR --input FILE '
               '--output FILE',
    'translate': 'translate (or summarise) a file with a seq2seq run: MODEL_DIR --input FILE '
                 '--output FILE [--beam K]',
    'sample': 'sample text from an LM run: --workdir RUN_DIR --prompt TEXT [--temperature T]',
    'convert': 'Hugging Face model directories <-> run directories: import-hf | export-hf',
    'pretokenize': "tokenise a corpus once into shards for data.kind='pretokenized': "
                   '--tokenizer T --input SPEC --out DIR --shards N',
    'configs': 'list the shipped configs with their first docstring lines',
}


def usage() -> str:
  """`translearn --help`: the subcommands, then the families and the shipped configs."""
  from translearn_jax.cli.catalogue import catalogue
  lines = [f'usage: {PROG} COMMAND [ARGS ...]   ({PROG} COMMAND --help: the command\'s flags)',
           '', 'Commands:']
  lines += [f'  {name:<10} {text}' for name, text in COMMANDS.items()]
  return '\n'.join(lines) + '\n' + catalogue()


def _print(text: str) -> None:
  """`print`, quiet when the reader stops early (`translearn configs | head`)."""
  try:
    print(text)
    sys.stdout.flush()
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _train(argv: list[str]) -> int:
  from translearn_jax.cli import train
  train.entry([f'{PROG} train', *argv])
  return 0


def _sample(argv: list[str]) -> int:
  from absl import app, flags
  from translearn_jax.generation import sample
  if 'max_new_tokens' not in flags.FLAGS:
    sample._define_flags()
  if any(a in HELP_FLAGS for a in argv):
    print(f'{sample.__doc__.rstrip()}\n\nFlags:\n{flag_help(sample.__name__)}'
          if sample.__doc__ else flag_help(sample.__name__))
    return 0
  app.run(sample.main, argv=[f'{PROG} sample', *argv], flags_parser=parse_absl_flags)
  return 0


def _convert(argv: list[str]) -> int:
  from translearn_jax.convert.__main__ import main as convert_main
  return convert_main(argv, prog=f'{PROG} convert')


def _pretokenize(argv: list[str]) -> int:
  from translearn_jax.data import pretokenized
  try:
    return pretokenized.main(argv, prog=f'{PROG} pretokenize')
  except SystemExit as e:      # its parser's one-line errors (and --help) exit
    return e.code if isinstance(e.code, int) else 2


def _serving_parser(command: str):
  import argparse
  p = argparse.ArgumentParser(prog=f'{PROG} {command}', description=COMMANDS[command])
  p.add_argument('model_dir', help='a saved model: a run\'s model/ or models/<strategy>/ '
                 'folder (translate also takes a seq2seq run directory)')
  p.add_argument('--input', required=True,
                 help="the file to read ('-': standard input; a pipe is read once, whole)")
  p.add_argument('--output', required=True, help="the file to write ('-': standard output)")
  p.add_argument('--batch_size', type=int, help='examples per batch (default: the library\'s)')
  p.add_argument('--no_progress', action='store_true', help='no progress bar')
  p.add_argument('--encoding', help="the input's text encoding (default utf-8; e.g. latin-1)")
  return p


def _predict(argv: list[str]) -> int:
  p = _serving_parser('predict')
  p.add_argument('--format', dest='input_format',
                 choices=('auto', 'text', 'tsv', 'csv', 'jsonl', 'conll'),
                 help='input format (default: auto, from the file name; .conll/.iob/.bio: conll)')
  p.add_argument('--output_format', choices=('auto', 'jsonl', 'conll'),
                 help='auto (default): CoNLL input gives its lines back with the predicted '
                 'tag appended (what conlleval scores) unless --output ends in .jsonl; any '
                 'other input JSONL')
  p.add_argument('--text_field', help='the TSV/CSV column or JSONL key holding the text '
                 '(several, comma-separated, are joined with a space, as training joins them)')
  _header_flag(p)
  args = p.parse_args(argv)
  return _serve('predict_file', args, ('batch_size', 'input_format', 'text_field', 'encoding',
                                       'header', 'output_format'))


def _header_flag(p) -> None:
  p.add_argument('--header', choices=('yes', 'no'),
                 help='TSV/CSV columns given by number: is the first row a header? (default: '
                 'as the training files were read)')


def _translate(argv: list[str]) -> int:
  p = _serving_parser('translate')
  p.add_argument('--beam', type=int, help='beam size (1: greedy)')
  p.add_argument('--length_penalty', type=float, help='beam length penalty alpha')
  p.add_argument('--length_penalty_form', choices=('gnmt', 'length'),
                 help="divide beam scores by ((5+len)/6)**alpha (GNMT) or len**alpha "
                      "(fairseq's and transformers'); default: the run's")
  p.add_argument('--max_len', type=int, help='most target tokens per output')
  p.add_argument('--min_length', type=int, help="no EOS before this many tokens, the "
                 "decoder start one included (transformers' min_length; default: the run's)")
  p.add_argument('--no_repeat_ngram_size', type=int, help='no n-gram of this size twice in '
                 "an output (0: off; default: the run's)")
  p.add_argument('--early_stopping', choices=('never', 'heuristic', 'k_finished'),
                 help="when a beam search ends: 'never' (exact), 'heuristic' or 'k_finished' "
                      "(transformers' early_stopping 'never', False, True); default: the run's")
  p.add_argument('--source_lang', help="a multilingual checkpoint's source language code "
                 "(mBART: en_XX; default: the run's)")
  p.add_argument('--target_lang', help="its target language code (mBART: ro_RO): where "
                 "decoding starts, as transformers' tgt_lang / forced_bos_token_id")
  _header_flag(p)
  args = p.parse_args(argv)
  return _serve('translate_file', args, ('beam', 'length_penalty', 'length_penalty_form',
                                         'min_length', 'no_repeat_ngram_size',
                                         'early_stopping', 'batch_size', 'max_len',
                                         'encoding', 'source_lang', 'target_lang', 'header'))


def _serve(function: str, args, options: tuple[str, ...]) -> int:
  """Calls `translearn_jax.serving.<function>` with the options given on the command line
  (the others keep the library's defaults)."""
  from translearn_jax.errors import TranslearnError
  try:
    from translearn_jax import serving
  except ImportError as e:
    if e.name not in ('translearn_jax.serving', 'translearn_jax'):
      raise
    print('error: this installation of translearn_jax has no serving module', file=sys.stderr)
    return 2
  kwargs = {k: getattr(args, k) for k in options if getattr(args, k) is not None}
  if 'header' in kwargs:
    kwargs['header'] = kwargs['header'] == 'yes'
  try:
    with contextlib.ExitStack() as stack:
      path, shown = _readable_input(args.input, stack)
      try:
        summary = getattr(serving, function)(args.model_dir, path, args.output,
                                             progress=not args.no_progress, **kwargs)
      except TranslearnError as e:
        raise type(e)(str(e).replace(path, shown)) from None
  except TranslearnError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:            # the output is written atomically: nothing half-done
    print(f'interrupted: {args.output} was not written', file=sys.stderr)
    return 130
  if isinstance(summary, dict):
    cut = summary.get('truncated_words')
    what = 'predictions' if function == 'predict_file' else 'translations'
    where = 'standard output' if args.output == '-' else args.output
    src_cut = summary.get('truncated_sources')
    print(f'wrote {summary.get("examples")} {what} to {where}'
          + (f"; {cut} words beyond the model's max_tokens were tagged O" if cut else '')
          + (f"; {src_cut} sources longer than the model's max_source_len "
             f"({summary.get('max_source_len')} pieces) were cut to it" if src_cut else ''),
          file=sys.stderr)
  return 0


def _readable_input(name: str, stack) -> tuple[str, str]:
  """(a regular file to read, the name to show for it): `name` itself, or, for '-'
  (standard input) and other inputs that can be read only once (a pipe, /dev/stdin, a
  process substitution), a copy of their bytes in a temporary directory that `stack`
  removes, under the input's own base name (its extension picks the format)."""
  import shutil
  import tempfile
  if name != '-' and (not os.path.exists(name) or os.path.isfile(name) or os.path.isdir(name)):
    return name, name                  # the library names a missing file or a directory
  shown = '<stdin>' if name == '-' else name
  base = 'stdin' if name == '-' else os.path.basename(name) or 'input'
  tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix='translearn_input_'))
  path = os.path.join(tmp, base)
  with (open(name, 'rb') if name != '-' else contextlib.nullcontext(sys.stdin.buffer)) as src, \
      open(path, 'wb') as dst:
    shutil.copyfileobj(src, dst)
  return path, shown


def _configs(argv: list[str]) -> int:
  from translearn_jax.cli.catalogue import config_lines
  if any(a in HELP_FLAGS for a in argv):
    print(f'usage: {PROG} configs\n\n{COMMANDS["configs"]}')
    return 0
  if argv:
    print(f'error: {PROG} configs takes no arguments, got {argv}', file=sys.stderr)
    return 2
  _print('\n'.join(['Configs (translearn train --config NAME):'] + config_lines()))
  return 0


RUN = {'train': _train, 'predict': _predict, 'translate': _translate, 'sample': _sample,
       'convert': _convert, 'pretokenize': _pretokenize, 'configs': _configs}


def main(argv: list[str] | None = None) -> int:
  """The console script: `translearn COMMAND [ARGS ...]`; returns the exit status."""
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv:
    print(usage().split('\n', 1)[0], file=sys.stderr)
    print(f'error: {PROG} needs a command: {", ".join(RUN)}', file=sys.stderr)
    return 2
  if argv[0] in HELP_FLAGS:
    _print(usage())
    return 0
  if argv[0] == '--version':
    import translearn_jax
    print(f'translearn_jax {translearn_jax.__version__} '
          f'({os.path.dirname(os.path.abspath(translearn_jax.__file__))})')
    return 0
  if argv[0] not in RUN:
    print(f'error: unknown command {argv[0]!r}; commands: {", ".join(RUN)} '
          f'(see {PROG} --help)', file=sys.stderr)
    return 2
  return RUN[argv[0]](argv[1:])
