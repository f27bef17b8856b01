"""A tiny labelled TFDS dataset (sentence + ClassLabel; train/validation/test, the test split
unlabelled as GLUE's is), built by the tests as array_record files without TensorFlow."""

import tensorflow_datasets as tfds

POS = ['a fine and good film', 'good acting, fine story', 'a truly good time', 'fine work']
NEG = ['a bad and dull film', 'dull acting, bad story', 'a truly bad time', 'bad work']


class Builder(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'sentence': tfds.features.Text(),
        'label': tfds.features.ClassLabel(names=['negative', 'positive'])}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(POS * 3, NEG * 3),
            'validation': self._generate_examples(POS, NEG),
            'test': self._generate_examples(POS, NEG, unlabelled=True)}

  def _generate_examples(self, pos, neg, unlabelled=False):
    for i, (t, y) in enumerate([(t, 1) for t in pos] + [(t, 0) for t in neg]):
      yield i, {'sentence': t, 'label': -1 if unlabelled else y}
