"""Grafting pretrained parameter trees into downstream models.

A graft takes a pretrained tree (from an orbax checkpoint of any run, or from
a word2vec vector file) and places its leaves into a freshly initialised
downstream tree by explicit rules: `(source_regex, target_template)` pairs over
'/'-joined paths, the template using the regex groups (`\\1`). The first rule
that matches a source path decides its target. Every decision is checked and
reported:

* a target path that does not exist, or a shape/dtype mismatch, raises a
  `GraftError` naming both paths and shapes (never a silent skip);
* rules that matched no source leaf, and target leaves left at their
  initialisation ("created"), are listed in the `GraftReport`;
* a rule with an empty target (`mlm/.*=>`) leaves the source leaves it
  matches out on purpose (big_vision's `dont_load`), e.g. a masked-LM run's
  prediction head; they are listed as "dropped", apart from leaves no rule
  placed ("unused");
* embedding matrices whose rows are indexed by different vocabularies are
  remapped by token string (`remap_rows`): rows of tokens missing from the
  source are initialised (mean of the source rows, or random) and counted.

The report is printed and saved as JSON beside the run.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
import flax.linen as nn
from flax import traverse_util

from translearn_jax.data.vocab import fold, folded_index
from translearn_jax.errors import ConfigError, TranslearnError
from translearn_jax.training.metrics import write_json


class GraftError(TranslearnError):
  """A rule maps a source leaf somewhere it cannot go."""


@dataclasses.dataclass
class GraftReport:
  grafted: list = dataclasses.field(default_factory=list)      # (source, target, shape)
  created: list = dataclasses.field(default_factory=list)      # target paths left at init
  unmatched_rules: list = dataclasses.field(default_factory=list)
  unused_source: list = dataclasses.field(default_factory=list)
  dropped: list = dataclasses.field(default_factory=list)      # source leaves left out by rule
  remapped: dict = dataclasses.field(default_factory=dict)     # target -> remap stats
  frozen: list = dataclasses.field(default_factory=list)       # filled by the strategy
  unseen_rows: dict = dataclasses.field(default_factory=dict)  # target -> rows kept at init

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def summary(self) -> str:
    lines = [f'graft: {len(self.grafted)} leaves grafted, {len(self.created)} created '
             f'(left at init), {len(self.unused_source)} source leaves unused, '
             f'{len(self.dropped)} dropped by rule, '
             f'{len(self.unmatched_rules)} rules matched nothing, {len(self.frozen)} frozen']
    for tgt, st in self.remapped.items():
      folded = f' ({st["found_folded"]} by case-folded match)' if st.get('found_folded') else ''
      lines.append(f'  {tgt}: vocabulary remap {st["found"]}/{st["target_rows"]} rows from '
                   f'the source{folded}, {st["missing"]} initialised ({st["init"]})')
    for tgt, st in self.unseen_rows.items():
      lines.append(f'  {tgt}: {st["rows"]}/{st["vocab"]} rows of pieces the source never saw '
                   f'in training kept at init ({st["counts"]})')
    for rule in self.unmatched_rules:
      lines.append(f'  rule matched nothing: {rule}')
    if self.created:
      lines.append('  created: ' + ', '.join(self.created[:12]) +
                   (' ...' if len(self.created) > 12 else ''))
    return '\n'.join(lines)

  def save(self, path: str) -> None:
    write_json(path, self.to_dict())

  def refuse_frozen_random(self, params, strategy: str) -> None:
    """A `GraftError` when `strategy` freezes (`self.frozen`) a leaf the graft did not fill
    whose initial values vary: frozen random weights are random features, which no
    transfer run means (a LayerNorm's ones, a bias's zeros or a LoRA adapter, whose B is
    zero, are no such weights)."""
    flat = flatten(params)
    created = set(self.created)
    # a LoRA adapter's A is random, but its B starts at zero: frozen, it changes nothing
    random = [p for p in self.frozen if p in created and p in flat
              and not p.rsplit('/', 1)[-1].startswith('lora_')
              and np.ptp(np.asarray(jax.device_get(flat[p]), np.float32)) > 0]
    if random:
      raise GraftError(
          f'transfer.strategy={strategy!r} freezes {len(random)} parameter(s) the graft did '
          f'not fill, at their random initial values: {", ".join(random[:6])}'
          f'{" ..." if len(random) > 6 else ""} ({len(self.grafted)} leaves grafted); map '
          'them from the source in config.init.rules, or train them (transfer.strategy='
          "'finetune')")


# Rules into an encoder-decoder (`models.seq2seq`), by source kind and the part they fill
# (`init.rules` names a preset of its kind, or is explicit rule text):
# * a seq2seq run (e.g. denoising-pretrained): everything ('all');
# * a causal Transformer LM into the decoder ('decoder', the default; Ramachandran et al.
#   2017): self-attention, MLP, their LayerNorms, the final LayerNorm, the shared embedding
#   and learned positions; the cross-attention, its LayerNorm and the encoder are created.
#   'encoder' puts the same layers into the encoder (one source leaf fills one target);
# * a masked-LM encoder into the encoder ('encoder', the default): its blocks, final or
#   embedding LayerNorm, the shared embedding and learned positions (the MLM head, pooler
#   and token-type table are not grafted; the runner folds type 0 into the positions).
# Every leaf these rules do not fill is created and listed in the graft report.
def _blocks_into(part: str, ln_final: str, embed_ln: str = '') -> list[str]:
  rules = [rf'block_(\d+)/attn/(.*)=>{part}_block_\1/self_attn/\2',
           rf'block_(\d+)/ln_attn/(.*)=>{part}_block_\1/ln_self/\2',
           rf'block_(\d+)/(mlp|ln_mlp)/(.*)=>{part}_block_\1/\2/\3',
           rf'ln_final/(.*)=>{ln_final}/\1', rf'pos_embed=>{part}_pos_embed']
  if embed_ln:
    rules.append(rf'embed_ln/(.*)=>{embed_ln}/\1')
  return rules


_EMBED = ['embed/embedding=>embed/embedding']
SEQ2SEQ_RULES = {
    'seq2seq': {'all': r'(.*)=>\1'},
    'lm': {part: '; '.join(rules + _EMBED + ['head/.*=>']) for part, rules in {
        'decoder': _blocks_into('decoder', 'dec_ln'),
        'encoder': _blocks_into('encoder', 'enc_ln')}.items()},
    'mlm': {'encoder': '; '.join(_blocks_into('encoder', 'enc_ln', 'encoder_embed_ln') + _EMBED
                                 + ['mlm/.*=>', 'pooler/.*=>', 'type_embed/.*=>'])},
}
SEQ2SEQ_DEFAULT_PART = {'seq2seq': 'all', 'lm': 'decoder', 'mlm': 'encoder'}


def seq2seq_rules(kind: str, spec: str = '') -> str:
  """The rule text of `init.rules` for a seq2seq target: '' (the kind's default part), a
  part preset of `SEQ2SEQ_RULES[kind]`, or explicit 'src_regex=>target; ...' text."""
  presets = SEQ2SEQ_RULES[kind]
  if '=>' in spec:
    return spec
  part = spec.strip() or SEQ2SEQ_DEFAULT_PART[kind]
  if part not in presets:
    raise ConfigError(f'config.init.rules: a {kind} source fills {sorted(presets)} of a '
                      f'seq2seq model (or give explicit "src_regex=>target" rules), got {spec!r}')
  return presets[part]


def parse_rules(spec: str) -> list[tuple[str, str]]:
  """'src_regex=>target_template; ...' -> [(src, tgt)] (an empty template drops the leaves)."""
  rules = []
  for part in [p.strip() for p in spec.split(';') if p.strip()]:
    if '=>' not in part:
      raise ConfigError(f'graft rule {part!r} must look like "source_regex=>target_path"')
    src, tgt = (s.strip() for s in part.split('=>', 1))
    try:
      pattern = re.compile(src)
    except re.error as e:
      raise ConfigError(f'graft rule {part!r}: bad regular expression: {e}') from None
    _check_template(part, tgt, pattern)
    rules.append((src, tgt))
  return rules


_GROUP_REF = re.compile(r'\\g<([^>]*)>|\\([1-9][0-9]?)')


def _check_template(part: str, template: str, pattern: re.Pattern) -> None:
  """Each group a rule's target names (`\\1`, `\\g<1>`, `\\g<name>`) is one its regex has
  (else `re` fails with a traceback on the first leaf it matches)."""
  for m in _GROUP_REF.finditer(template):
    ref = m.group(1) if m.group(1) is not None else m.group(2)
    ok = (int(ref) <= pattern.groups if ref.isdigit() else ref in pattern.groupindex)
    if not ok:
      have = (f'{pattern.groups} group(s)' + (f' named {sorted(pattern.groupindex)}'
                                              if pattern.groupindex else ''))
      raise ConfigError(f'graft rule {part!r}: the target names group {ref!r}, but the '
                        f'source regex has {have}')


def flatten(tree) -> dict[str, Any]:
  return {'/'.join(map(str, k)): v for k, v in traverse_util.flatten_dict(tree).items()}


def unflatten(flat: dict[str, Any]):
  return traverse_util.unflatten_dict({tuple(k.split('/')): v for k, v in flat.items()})


REMAP_INITS = ('mean', 'random', 'init', 'subword')


def remap_rows(source: np.ndarray, source_vocab: Sequence[str], target_vocab: Sequence[str],
               target_init: np.ndarray, init: str = 'mean', seed: int = 0,
               subword: Optional[Callable[[list[str]], np.ndarray]] = None
               ) -> tuple[np.ndarray, dict]:
  """Rows of `source` re-indexed by `target_vocab` (matched by token string).

  A target token with no exact match takes the first source row whose token is the
  same after lowercasing and NFC normalisation (cased vector files — GoogleNews,
  fastText, glove.840B — list words by frequency, so the first is the most common
  casing; a lowercased target vocabulary would otherwise miss most of them);
  `stats['found_folded']` counts those. Target tokens absent from the source even so
  get: 'mean' (the mean source row), 'random' (normal with the source rows'
  per-dimension std), 'init' (keep the target's own initialisation), or 'subword'
  (`subword(words)`: a fastText model's vectors from each word's character n-grams).
  """
  if init not in REMAP_INITS:
    raise ConfigError(f'vocabulary remap init must be one of {REMAP_INITS}, got {init!r}')
  if init == 'subword' and subword is None:
    raise ConfigError("remap_init='subword' needs a source that builds vectors from subwords "
                      '(a fastText .bin model); this one has whole-word vectors only')
  if source.shape[1] != target_init.shape[1]:
    raise GraftError(f'embedding widths differ: source {source.shape} vs target '
                     f'{target_init.shape} (set config.model.dim={source.shape[1]}, the '
                     "source's width)")
  index: dict[str, int] = {}
  for i, w in enumerate(source_vocab):                # a repeated token keeps its first row,
    index.setdefault(w, i)                            # as vector files and folded matches do
  folded = folded_index(source_vocab)
  exact = np.array([index.get(w, -1) for w in target_vocab])
  src_rows = np.array([r if r >= 0 else folded.get(fold(w), -1)
                       for w, r in zip(target_vocab, exact)])
  found = src_rows >= 0
  out = np.array(target_init, dtype=source.dtype, copy=True)
  out[found] = source[src_rows[found]]
  missing = ~found
  if init == 'mean':
    out[missing] = source.mean(0)
  elif init == 'random':
    rng = np.random.default_rng(seed)
    out[missing] = rng.normal(0, source.std(0), (missing.sum(), source.shape[1]))
  elif init == 'subword' and missing.any():
    out[missing] = np.asarray(subword([target_vocab[i] for i in np.flatnonzero(missing)]),
                              out.dtype)
  stats = {'target_rows': int(len(target_vocab)), 'found': int(found.sum()),
           'found_folded': int((found & (exact < 0)).sum()),
           'missing': int(missing.sum()), 'init': init,
           'missing_examples': [target_vocab[i] for i in np.flatnonzero(missing)[:10]]}
  return out, stats


def graft(target_params, source_params, rules: Sequence[tuple[str, str]], *,
          vocab_remap: Optional[dict] = None, remap_init: str = 'mean', seed: int = 0
          ) -> tuple[Any, GraftReport]:
  """Places source leaves into `target_params` by `rules`.

  `vocab_remap` maps a target path to `(source_vocab, target_vocab)` or
  `(source_vocab, target_vocab, subword)`: that leaf's rows are remapped by token
  instead of copied (its shapes may then differ in the number of rows; `subword`:
  see `remap_rows`). Trees straight from `model.init` (leaves boxed
  with their logical axis names) are unboxed first; the result is plain.
  """
  vocab_remap = vocab_remap or {}
  src, tgt = flatten(nn.unbox(source_params)), flatten(nn.unbox(target_params))
  compiled = [(re.compile(s), t, f'{s}=>{t}') for s, t in rules]
  report = GraftReport()
  used_rules, written = set(), {}
  for spath, value in src.items():
    for rx, template, name in compiled:
      m = rx.fullmatch(spath)
      if not m:
        continue
      used_rules.add(name)
      if not template:
        report.dropped.append(spath)
        break
      tpath = m.expand(template)
      if tpath not in tgt:
        near = [p for p in tgt if p.rsplit('/', 1)[-1] == tpath.rsplit('/', 1)[-1]][:5]
        raise GraftError(f'rule {name}: source {spath} {tuple(np.shape(value))} maps to '
                         f'{tpath}, which the target does not have (targets ending alike: '
                         f'{near})')
      if tpath in written:
        raise GraftError(f'rule {name}: {spath} and {written[tpath]} both map to {tpath}')
      target_leaf = tgt[tpath]
      if tpath in vocab_remap:
        src_vocab, tgt_vocab, *subword = vocab_remap[tpath]
        if np.ndim(value) != 2 or np.ndim(target_leaf) != 2:
          raise GraftError(f'rule {name}: source {spath} {tuple(np.shape(value))} maps to the '
                           f'vocabulary table {tpath} {tuple(np.shape(target_leaf))}: a '
                           'remapped table is (rows, width) on both sides')
        try:
          new, stats = remap_rows(np.asarray(value), src_vocab, tgt_vocab,
                                  np.asarray(target_leaf), remap_init, seed,
                                  subword[0] if subword else None)
        except GraftError as e:
          raise GraftError(f'source {spath} -> target {tpath}: {e}') from None
        report.remapped[tpath] = stats
        value = new
      elif np.shape(value) != np.shape(target_leaf):
        raise GraftError(f'shape mismatch: source {spath} {tuple(np.shape(value))} vs target '
                         f'{tpath} {tuple(np.shape(target_leaf))}')
      s_dtype, t_dtype = np.asarray(value).dtype, np.dtype(target_leaf.dtype)
      if s_dtype != t_dtype and not (np.issubdtype(s_dtype, np.floating) and
                                     np.issubdtype(t_dtype, np.floating)):
        raise GraftError(f'dtype mismatch: source {spath} {s_dtype} vs target {tpath} {t_dtype}')
      tgt[tpath] = jax.numpy.asarray(value, dtype=t_dtype)
      written[tpath] = spath
      report.grafted.append((spath, tpath, tuple(np.shape(value))))
      break
    else:
      report.unused_source.append(spath)
  report.unmatched_rules = [name for _, _, name in compiled if name not in used_rules]
  report.created = [p for p in tgt if p not in written]
  return unflatten(tgt), report
