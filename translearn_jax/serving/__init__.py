"""Saved models and inference on files.

* `predict_file(model_dir, input_path, output_path, ...)`: a saved classifier
  or tagger's predictions for a text / TSV / JSONL file, as JSONL
  (`serving.predict`);
* `translate_file(model_dir, input_path, output_path, ...)`: a saved seq2seq
  model's (or a seq2seq run's) translation of each line (`serving.translate`);
* `load(model_dir)`: a saved model (`serving.saved_model`, which also
  describes the directory format and writes it).

Fine-tuning runs save their best model (`workdir/model/`, or in a comparison
`workdir/models/<strategy>/`), seq2seq runs `workdir/model/`. Heavy modules
(JAX, Flax) are imported on first call, so importing this package is cheap.
Bad input raises a `translearn_jax.errors.TranslearnError` with a one-line
message.
"""

from __future__ import annotations

__all__ = ['predict_file', 'translate_file', 'load']


def predict_file(model_dir: str, input_path: str, output_path: str, *, batch_size=None,
                 input_format: str = 'auto', text_field=None, progress: bool = False,
                 encoding: str = 'utf-8', header=None, output_format: str = 'auto') -> dict:
  """Writes a saved classifier's or tagger's predictions for each example of `input_path`
  (text: one a line; TSV/CSV; JSONL; a tagger's CoNLL file; `input_format` 'auto' goes by
  the extension) to `output_path`, one JSON line each, in input order:
  classification `{"label", "probabilities": {label: p}}`, tagging
  `{"tokens", "tags", "probabilities"}` (each word's predicted-tag probability); CoNLL
  input comes back as CoNLL with the predicted tag appended (`output_format='jsonl'` for
  JSONL). `batch_size` None: the batch the task evaluates with, so the predictions are
  exactly the run's own (another size agrees up to float rounding). `encoding`: the input
  file's. `header` (TSV/CSV columns by number): whether the first row is a header (None:
  as training read its files). Returns {'task', 'examples', 'model', 'output',
  'seconds'} (+ 'truncated_words')."""
  from translearn_jax.serving import predict
  return predict.predict_file(model_dir, input_path, output_path, batch_size=batch_size,
                              input_format=input_format, text_field=text_field,
                              progress=progress, encoding=encoding, header=header,
                              output_format=output_format)


def translate_file(model_dir: str, input_path: str, output_path: str, *, beam=None,
                   length_penalty=None, batch_size: int = 64, max_len=None,
                   progress: bool = False, encoding: str = 'utf-8', source_lang=None,
                   target_lang=None, header=None, length_penalty_form=None,
                   min_length=None, no_repeat_ngram_size=None, early_stopping=None) -> dict:
  """Writes a saved seq2seq model's (or a seq2seq run directory's) output for each line of
  `input_path` to `output_path`, one a line; beam, length penalty and maximum output
  length default to the run's `eval.beam`, `eval.length_penalty`, `max_target_len`;
  `encoding`: the input file's; `source_lang` / `target_lang`: a multilingual
  checkpoint's language codes (mBART's `en_XX`, `ro_RO`; default: the run's); `header`
  (TSV/CSV source column by number): whether the first row is a header (None: as training
  read its files); `length_penalty_form`: 'gnmt' or 'length' (None: the run's);
  `min_length` (EOS banned while shorter, the decoder start token counted, as
  transformers' generate() counts it) and `no_repeat_ngram_size` (0: off; None: the
  run's); `early_stopping`: when a beam search ends, 'never', 'heuristic' or 'k_finished'
  (`seq2seq_decode.beam_search`; transformers' early_stopping 'never', False, True; None:
  the run's). Returns {'task', 'examples', 'beam', 'length_penalty', 'length_penalty_form',
  'min_length', 'no_repeat_ngram_size', 'early_stopping', 'max_len', 'model', 'output',
  'seconds'}."""
  from translearn_jax.serving import translate
  return translate.translate_file(model_dir, input_path, output_path, beam=beam,
                                  length_penalty=length_penalty, batch_size=batch_size,
                                  max_len=max_len, progress=progress, encoding=encoding,
                                  source_lang=source_lang, target_lang=target_lang,
                                  header=header, length_penalty_form=length_penalty_form,
                                  min_length=min_length,
                                  no_repeat_ngram_size=no_repeat_ngram_size,
                                  early_stopping=early_stopping)


def load(model_dir: str):
  """The saved model in `model_dir` (`serving.saved_model.SavedModel`)."""
  from translearn_jax.serving import saved_model
  return saved_model.load(model_dir)
