"""A tiny NER dataset shaped like TFDS's conll2003 (token and ClassLabel tag sequences),
built by the tests as array_record files without TensorFlow."""

import tensorflow_datasets as tfds

TAGS = ['O', 'B-PER', 'I-PER', 'B-LOC']
SENTENCES = [(['Anna', 'Smith', 'went', 'home'], ['B-PER', 'I-PER', 'O', 'O']),
             (['Berlin', 'is', 'big'], ['B-LOC', 'O', 'O']),
             (['Tom', 'saw', 'Paris'], ['B-PER', 'O', 'B-LOC'])]


class Builder(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'tokens': tfds.features.Sequence(tfds.features.Text()),
        'ner_tags': tfds.features.Sequence(tfds.features.ClassLabel(names=TAGS))}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(), 'validation': self._generate_examples()}

  def _generate_examples(self):
    for i, (words, tags) in enumerate(SENTENCES):
      yield i, {'tokens': words, 'ner_tags': tags}
