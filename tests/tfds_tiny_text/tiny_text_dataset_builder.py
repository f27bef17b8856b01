"""A three-document TFDS dataset built by the tests (array_record, no TensorFlow)."""

import tensorflow_datasets as tfds

TEXTS = ['hello world', 'café au lait', 'third document here']


class Builder(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({'text': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i, t in enumerate(TEXTS):
      yield i, {'text': t}
