"""Bad input across families through the one entry point (`train.run`): each case is one
`TranslearnError` (train.py: one `error:` line, exit 2) whose message names the culprit —
the config field, or the file — and nothing is trained."""

import os

import pytest

from conftest import set_fields
import train
from translearn_jax.errors import ConfigError, DataError, TranslearnError

# (case, config, overrides, error class, message regex). In overrides and regexes,
# {task} / {vectors} / {lm} / {missing} stand for a labelled TSV, a vectors file, an
# LM run and a path that does not exist.
CASES = [
    ('w2v corpus missing', 'skipgram', {'data.kind': 'text', 'data.path': '{missing}'}, DataError, r'{missing}'),
    ('w2v dim 0', 'skipgram', {'model.dim': 0}, ConfigError, r'config\.model\.dim'),
    ('w2v seed < 0', 'skipgram', {'seed': -1}, ConfigError, r'config\.seed: must be >= 0, got -1'),
    ('w2v max_size < 0', 'skipgram', {'vocab.max_size': -5}, ConfigError, r'config\.vocab\.max_size: must be >= 0, got -5'),
    ('w2v batch 0', 'skipgram', {'train.batch_size': 0}, ConfigError, r'config\.train\.batch_size: must be >= 1'),
    ('w2v lr 0', 'skipgram', {'optim.learning_rate': 0.0}, ConfigError, r'config\.optim\.learning_rate'),
    ('w2v mode', 'skipgram', {'model.mode': 'glove'}, ConfigError, r"config\.model\.mode: must be 'skipgram' or 'cbow'"),
    ('w2v export', 'skipgram', {'export.format': 'xml'}, ConfigError, r'config\.export\.format'),
    ('w2v min_count', 'skipgram', {'vocab.min_count': 0}, ConfigError, r'config\.vocab\.min_count'),
    ('w2v sample', 'skipgram', {'sample': -1.0}, ConfigError, r'config\.sample'),
    ('w2v window', 'skipgram', {'model.window': 0}, ConfigError, r'config\.model\.window'),
    ('w2v steps_per_call', 'skipgram', {'train.steps_per_call': 0}, ConfigError, r'config\.train\.steps_per_call'),
    ('w2v table_sharding', 'skipgram', {'model.table_sharding': 'cols'}, ConfigError, r'config\.model\.table_sharding'),
    ('w2v row_cap_mode', 'skipgram', {'optim.row_cap_mode': 'sum'}, ConfigError, r'config\.optim\.row_cap_mode'),
    ('w2v warmup_steps', 'skipgram', {'optim.warmup_steps': -1}, ConfigError, r'config\.optim\.warmup_steps: must be >= 0'),
    ('w2v negative_draws < 0', 'skipgram', {'model.negative_draws': -1}, ConfigError, r'config\.model\.negative_draws'),
    ('w2v negative_draws per pair', 'skipgram', {'model.negative_draws': 10, 'model.pair_negatives': True}, ConfigError, r'config\.model\.negative_draws'),
    ('w2v negative_share 0', 'cbow', {'model.negative_share': 0}, ConfigError, r'config\.model\.negative_share'),
    ('w2v max_score < 0', 'skipgram', {'model.max_score': -6.0}, ConfigError, r'config\.model\.max_score: must be >= 0'),
    ('w2v max_score nan', 'cbow', {'model.max_score': float('nan')}, ConfigError, r'config\.model\.max_score'),
    ('w2v pair_order unknown', 'skipgram', {'model.pair_order': 'shuffled'}, ConfigError, r"config\.model\.pair_order: must be 'summed' or 'sequential'"),
    ('w2v sequential shared', 'skipgram_shared', {'model.pair_order': 'sequential'}, ConfigError, r'config\.model\.pair_order: .sequential. is for skip-gram with model\.pair_negatives'),
    ('w2v row_cap_cross without the curvature cap', 'cbow', {'optim.row_cap_cross': 0.1}, ConfigError, r"config\.optim\.row_cap_cross: .*row_cap_mode='curvature'"),
    ('w2v input_workers < 0', 'cbow', {'train.input_workers': -1}, ConfigError, r'config\.train\.input_workers: must be >= 0'),
    ('w2v batch_rows unknown', 'skipgram', {'train.batch_rows': 'strided'}, ConfigError, r"config\.train\.batch_rows: must be 'block' or 'spread', got 'strided'"),
    ('w2v sequential count-capped', 'skipgram', {'optim.row_cap': 1.0, 'optim.row_cap_mode': 'count'}, ConfigError, r"config\.optim\.row_cap: with model\.pair_order='sequential' needs optim\.row_cap_mode='curvature'"),
    ('w2v negative_share not dividing', 'cbow', {'model.negative_share': 3}, ConfigError, r'config\.model\.negative_share.*seq_length'),
    ('w2v negative_share per pair', 'skipgram', {'model.negative_share': 2, 'model.pair_negatives': True, 'model.negative_draws': 0}, ConfigError, r'config\.model\.negative_share'),
    ('lm arch', 'lm_transformer', {'model.arch': 'gru'}, ConfigError, r'config\.model\.arch'),
    ('lm dtype', 'lm_transformer', {'dtype': 'float16'}, ConfigError, r'config\.dtype'),
    ('lm seq > max_len', 'lm_transformer', {'train.seq_length': 1024}, ConfigError, r'config\.train\.seq_length'),
    ('lm valid fraction', 'lm_transformer', {'data.valid_fraction': 1.5}, ConfigError, r'config\.data\.valid_fraction'),
    ('lm steps < 0', 'lm_transformer', {'train.steps': -1}, ConfigError, r'config\.train\.steps'),
    ('lm grad_accum 0', 'lm_transformer', {'train.grad_accum': 0}, ConfigError, r'config\.train\.grad_accum'),
    ('lm dropout 1.5', 'lm_transformer', {'model.dropout': 1.5}, ConfigError, r'config\.model\.dropout'),
    ('lm lr < 0', 'lm_transformer', {'optim.learning_rate': -1.0}, ConfigError, r'config\.optim\.learning_rate: must be a finite number >= 0 \(0: no change\), got -1\.0'),
    ('lm warmup < 0', 'lm_lstm', {'optim.warmup_steps': -1}, ConfigError, r'config\.optim\.warmup_steps: must be an integer >= 0'),
    ('lm end_lr_ratio 2', 'lm_transformer', {'optim.end_lr_ratio': 2.0}, ConfigError, r'config\.optim\.end_lr_ratio: must be in \[0, 1\]'),
    ('lm eval_max_rows < 0', 'lm_transformer', {'train.eval_max_rows': -376}, ConfigError, r'config\.train\.eval_max_rows: must be >= 0'),
    ('lm tokenizer vocab 0', 'lm_transformer', {'tokenizer.vocab_size': 0}, ConfigError, r'config\.tokenizer\.vocab_size: must be an integer >= 1, got 0'),
    ('lm tokenizer normalization', 'lm_transformer', {'tokenizer.normalization': 'foo'}, ConfigError, r"config\.tokenizer\.normalization: must be one of sentencepiece's rules .*got 'foo'"),
    ('mlm b2 1', 'mlm_encoder', {'optim.b2': 1.0}, ConfigError, r'config\.optim\.b2: must be in \[0, 1\)'),
    ('s2s kind unknown', 'seq2seq_multi30k', {'data.kind': 'txt'}, ConfigError, r"config\.data\.kind must be one of \('text', 'jsonl', 'tsv', 'csv', 'tfds'\) for pairs, got 'txt'"),
    ('s2s length_penalty < 0', 'seq2seq_multi30k', {'eval.length_penalty': -1.0}, ConfigError, r'eval\.length_penalty must be a finite number >= 0, got -1\.0'),
    ('s2s length_penalty nan', 'seq2seq_multi30k', {'eval.length_penalty': float('nan')}, ConfigError, r'eval\.length_penalty must be a finite number >= 0, got nan'),
    ('s2s label_smoothing 1.5', 'seq2seq_multi30k', {'label_smoothing': 1.5}, ConfigError, r'config\.label_smoothing: must be in \[0, 1\)'),
    ('s2s max_examples < 0', 'seq2seq_multi30k', {'eval.max_examples': -1}, ConfigError, r'config\.eval\.max_examples: must be >= 0'),
    ('s2s lr nan', 'seq2seq_multi30k', {'optim.learning_rate': float('nan')}, ConfigError, r'config\.optim\.learning_rate'),
    ('s2s tokenizer normalization', 'seq2seq_multi30k', {'tokenizer.normalization': 'NFKC'}, ConfigError, r'config\.tokenizer\.normalization'),
    ('lm attention dropout', 'lm_transformer', {'model.attention_dropout': -0.1}, ConfigError, r'config\.model\.attention_dropout'),
    ('lm init run missing', 'lm_transformer', {'init.path': '{missing}'}, DataError, r'config\.init\.path'),
    ('lm init not an LM', 'lm_transformer', {'init.path': '{tmp}'}, DataError, r'config\.init\.path'),
    ('lm corpus missing', 'lm_transformer', {'data.kind': 'text', 'data.path': '{missing}'}, DataError, r'{missing}'),
    ('lm heads', 'lm_transformer', {'model.d_model': 30}, ConfigError, r'model\.d_model=30'),
    ('lstm weight drop', 'lm_lstm', {'model.weight_drop': 1.0}, ConfigError, r'config\.model\.weight_drop'),
    ('mlm mask rate', 'mlm_encoder', {'mlm.mask_rate': 0.0}, ConfigError, r'config\.mlm\.mask_rate'),
    ('mlm arch', 'mlm_encoder', {'model.arch': 'lstm'}, ConfigError, r'config\.model\.arch'),
    ('mlm one row a shard on 2x2x2', 'mlm_encoder', {'num_devices': 8, 'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2, 'train.batch_size': 4}, ConfigError, r'config\.train\.batch_size: 4 is one row a batch shard'),
    ('mlm norm', 'mlm_encoder', {'model.norm': 'sandwich'}, ConfigError, r'model\.norm'),
    ('mlm seq > max_len', 'mlm_encoder', {'train.seq_length': 1024}, ConfigError, r'config\.train\.seq_length'),
    ('mlm tokenizer without <mask>', 'mlm_encoder', {'data.kind': 'text', 'data.path': '{task}', 'tokenizer.path': '{lm}/tokenizer.model'}, DataError, r'{lm}/tokenizer\.model: the tokenizer has no <mask>'),
    ('mlm init is an LM run', 'mlm_encoder', {'init.path': '{lm}'}, ConfigError, r'config\.init\.path: .* is not a masked-LM'),
    ('mlm-clf source is an LM run', 'transfer_mr_mlm', {'init.path': '{lm}'}, ConfigError, r'config\.init\.path: .* is a lm run, not a mlm run'),
    ('s2s source missing', 'seq2seq_multi30k', {'data.train_source': '{missing}'}, DataError, r'{missing}'),
    ('s2s dropout', 'seq2seq_multi30k', {'model.dropout': -0.5}, ConfigError, r'config\.model\.dropout'),
    ('s2s min_length < 0', 'seq2seq_multi30k', {'eval.min_length': -1}, ConfigError, r'eval\.min_length must be an integer >= 0'),
    ('s2s early_stopping unknown', 'seq2seq_multi30k', {'eval.early_stopping': 'yes'}, ConfigError, r"eval\.early_stopping must be one of \('never', 'heuristic', 'k_finished'\).*got 'yes'"),
    ('s2s no_repeat_ngram_size < 0', 'seq2seq_multi30k', {'eval.no_repeat_ngram_size': -2}, ConfigError, r'eval\.no_repeat_ngram_size must be an integer >= 0'),
    ('s2s strategy without init', 'seq2seq_multi30k', {'transfer.strategy': 'feature_extraction'}, ConfigError, r"config\.transfer\.strategy: 'feature_extraction' fine-tunes a pretrained initialisation, and config\.init\.path is empty"),
    ('s2s freeze without init', 'seq2seq_multi30k', {'transfer.freeze_bottom': 1}, ConfigError, r'config\.transfer\.freeze_bottom: 1 fine-tunes'),
    ('clf data missing', 'transfer_mr_skipgram', {'data.kind': 'tsv', 'data.path': '{missing}'}, DataError, r'{missing}'),
    ('clf vectors missing', 'transfer_mr_skipgram', {'init.path': '{missing}'}, DataError, r'config\.init\.path: {missing}: no such vectors file'),
    ('clf init kind', 'transfer_mr_skipgram', {'init.kind': 'glove'}, ConfigError, r'init\.kind'),
    ('clf model type', 'transfer_mr_skipgram', {'model.type': 'cnn'}, ConfigError, r'model\.type'),
    ('clf strategy', 'transfer_mr_skipgram', {'transfer.strategy': 'magic'}, ConfigError, r'magic'),
    ('clf groups', 'transfer_mr_skipgram', {'transfer.groups': 'nogroup'}, ConfigError, r'transfer\.groups'),
    ('clf groups uncovered', 'transfer_mr_skipgram', {'transfer.groups': 'head=^head/'}, ConfigError, r'transfer\.groups: no pattern matches'),
    ('clf schedule', 'transfer_mr_skipgram', {'optim.schedule': 'step'}, ConfigError, r'optim\.schedule'),
    ('clf batch too big', 'transfer_mr_skipgram', {'train.batch_size': 100000}, DataError, r'train\.batch_size=100000'),
    ('clf dropout', 'transfer_mr_skipgram', {'model.dropout': 1.0}, ConfigError, r'config\.model\.dropout'),
    ('clf split of two', 'transfer_mr_skipgram', {'data.kind': 'tsv', 'data.path': '{task}', 'data.split': '0.8,0.2'}, ConfigError, r"config\.data\.split must be three train,dev,test fractions .*got '0\.8,0\.2'"),
    ('clf split nan', 'transfer_mr_skipgram', {'data.kind': 'tsv', 'data.path': '{task}', 'data.split': 'nan,0.5,0.5'}, ConfigError, r'config\.data\.split must be three'),
    ('clf split_seed < 0', 'transfer_mr_skipgram', {'data.split_seed': -3}, ConfigError, r'config\.data\.split_seed: must be >= 0'),
    ('clf max_tokens 0', 'transfer_mr_skipgram', {'model.max_tokens': 0}, ConfigError, r'config\.model\.max_tokens: must be >= 1'),
    ('clf batch 0', 'transfer_mr_skipgram', {'train.batch_size': 0}, ConfigError, r'config\.train\.batch_size: must be >= 1'),
    ('tagger seeds 0', 'transfer_conll_lm', {'seeds': 0}, ConfigError, r'config\.seeds: must be >= 1'),
    ('clf lm encoder without LM', 'transfer_mr_skipgram', {'model.type': 'lm_encoder'}, ConfigError, r"init\.kind='lm'"),
    ('clf freeze all', 'transfer_mr_skipgram', {'transfer.freeze_bottom': 5}, ConfigError, r'transfer\.freeze_bottom'),
    ('clf save_models', 'transfer_mr_skipgram', {'save_models': 'some'}, ConfigError, r"config\.save_models: must be one of \('best', 'all', 'none'\), got 'some'"),
    ('tag save_models', 'transfer_conll_lm', {'init.path': '{lm}', 'save_models': 'every'}, ConfigError, r'config\.save_models'),
    ('lm-clf max_tokens', 'transfer_mr_lm', {'init.path': '{lm}', 'model.max_tokens': 4096}, ConfigError, r'config\.model\.max_tokens=4096'),
    ('lm-clf run missing', 'transfer_mr_lm', {'init.path': '{missing}'}, DataError, r'config\.init\.path'),
    ('tag data missing', 'transfer_conll_lm', {'init.path': '{lm}', 'data.train_path': '{missing}'}, DataError, r'{missing}'),
    ('zs init kind', 'zero_shot_mr', {'init.kind': 'none'}, ConfigError, r'config\.init\.kind'),
    ('zs eval split', 'zero_shot_mr', {'eval_split': 'valid'}, ConfigError, r'config\.eval_split'),
    ('zs descriptions', 'zero_shot_mr', {'zero_shot.descriptions': 'negative=bad'}, ConfigError, r'zero_shot\.descriptions'),
    ('dann vectors missing', 'dann_mr', {'init.path': '{missing}'}, DataError, r'{missing}'),
    ('multitask tasks', 'multitask', {'init.path': '{lm}', 'multitask.tasks': 'lm,nope'}, ConfigError, r'multitask\.tasks'),
    ('multitask run missing', 'multitask', {'init.path': '{missing}'}, DataError, r'config\.init\.path'),
    ('multitask task twice', 'multitask', {'init.path': '{lm}', 'multitask.tasks': 'lm,lm'}, ConfigError, r"config\.multitask\.tasks: \['lm'\] named more than once"),
    ('multitask task a scalar field', 'multitask', {'init.path': '{lm}', 'multitask.tasks': 'lm,seed'}, ConfigError, r"config\.multitask\.tasks: 'seed' is not a sub-config"),
    ('multitask lm task unscored', 'multitask', {'init.path': '{lm}', 'multitask.tasks': 'lm', 'lm.data.valid_fraction': 0.0}, ConfigError, r'config\.lm: the task has no valid examples to score'),
    ('multitask init misspelt', 'multitask', {'init.path': '{lm}', 'multitask.init': 'scrach'}, ConfigError, r"config\.multitask\.init: must be 'pretrained'"),
    ('multitask nan temperature', 'multitask', {'init.path': '{lm}', 'multitask.temperature': float('nan')}, ConfigError, r'config\.multitask\.temperature: mixing temperature must be a finite number > 0'),
    ('multitask mixing mode', 'multitask', {'init.path': '{lm}', 'multitask.mixing': 'sqrt'}, ConfigError, r'config\.multitask\.mixing: mixing mode'),
    ('dann hidden 0', 'dann_mr', {'dann.hidden': 0}, ConfigError, r'config\.dann\.hidden: .* >= 1, got 0'),
    ('dann lambda negative', 'dann_mr', {'dann.lambda_max': -1.0}, ConfigError, r'config\.dann\.lambda_max: .* > 0'),
    ('dann batch past the data', 'dann_mr', {'train.batch_size': 5000}, DataError, r'config\.train\.batch_size=5000: config\.source_data has only \d+ labelled source texts'),
    ('curves probe', 'curves_mr_skipgram', {'curve.strategies': 'linear_probe_svm'}, ConfigError, r'curve\.strategies'),
    ('search no source', 'search_mr_skipgram', {'init.kind': 'none'}, ConfigError, r'pretrained source'),
    ('unknown family', 'skipgram', {'family': 'nope'}, TranslearnError, r'config\.family'),
]


def substitute(value, paths):
  return value.format(**paths) if isinstance(value, str) else value


@pytest.mark.parametrize('case, name, over, error, pattern', CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_one_error_naming_the_culprit(tmp_path, topic_task, vectors, tiny_lm_run,
                                                    case, name, over, error, pattern):
  import importlib
  paths = {'task': topic_task, 'vectors': vectors[0], 'lm': tiny_lm_run,
           'missing': str(tmp_path / 'no_such_file'), 'tmp': str(tmp_path / 'other')}
  os.makedirs(paths['tmp'])
  c = importlib.import_module(f'configs.{name}').get_config()
  defaults = {'transfer_mr_skipgram': {'data.kind': 'tsv', 'data.path': '{task}', 'model.dim': 16,
                                      'init.path': '{vectors}'}}
  for base in ('transfer_mr_skipgram', 'curves_mr_skipgram', 'search_mr_skipgram', 'dann_mr'):
    defaults.setdefault(base, defaults['transfer_mr_skipgram'])
  defaults['dann_mr'] = {**defaults['transfer_mr_skipgram'], 'dann.label_mapping': '0=0,1=1',
                        'source_data': {'kind': 'tsv', 'path': '{task}', 'text_field': 'sentence',
                                        'label_field': 'label', 'encoding': 'utf-8'}}
  defaults['transfer_mr_lm'] = {'data.kind': 'tsv', 'data.path': '{task}'}
  defaults['transfer_mr_mlm'] = defaults['transfer_mr_lm']
  defaults['zero_shot_mr'] = {'data.kind': 'tsv', 'data.path': '{task}', 'init.path': '{vectors}'}
  set_fields(c, {k: ({key: substitute(x, paths) for key, x in v.items()}
                     if isinstance(v, dict) else substitute(v, paths))
                 for k, v in {**defaults.get(name, {}), **over}.items()})
  workdir = tmp_path / 'run'
  with pytest.raises(error, match=substitute(pattern, paths)) as info:
    train.run(c, str(workdir))
  assert '\n' not in str(info.value)                      # one line
  assert not (workdir / 'checkpoints').exists()           # nothing trained


def test_matrix_has_at_least_40_cases_across_families():
  assert len(CASES) >= 40 and len({c[1] for c in CASES}) >= 10
