"""Word-vector evaluation against known answers, and word2vec file round trips."""

import numpy as np
import pytest
from scipy import stats

from conftest import shared_data
from translearn_jax.errors import DataError
from translearn_jax.evaluation import word_vectors as wv
from translearn_jax.export.word2vec_format import load_vectors, load_word2vec, save_word2vec


def test_similarity_spearman_and_oov(tmp_path):
  words = ['a', 'b', 'c', 'd']
  angles = np.array([0.0, 0.2, 0.9, 1.4])
  vecs = np.stack([np.cos(angles), np.sin(angles)], 1)
  f = tmp_path / 'sim.txt'
  f.write_text('# header comment\nWord1\tWord2\tScore\n'
               'a\tb\t9\na\tc\t5\na\td\t1\nb\td\t2\nA\tzzz\t3\n', encoding='utf-8')
  r = wv.evaluate_similarity(words, vecs, str(f), 'toy')
  cos = [np.cos(0.2), np.cos(0.9), np.cos(1.4), np.cos(1.2)]
  assert r.pairs_used == 4 and r.pairs_oov == 1
  assert r.spearman == pytest.approx(stats.spearmanr(cos, [9, 5, 1, 2]).statistic)


def test_similarity_bad_line(tmp_path):
  f = tmp_path / 'bad.txt'
  f.write_text('a b 1\nc d\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'bad\.txt:2'):
    wv.read_similarity_pairs(str(f))


WORDS = ['a', 'b', 'c', 'd']
VECS = np.stack([np.cos([0.0, 0.2, 0.9, 1.4]), np.sin([0.0, 0.2, 0.9, 1.4])], 1)
RHO = stats.spearmanr([np.cos(0.2), np.cos(0.9), np.cos(1.4), np.cos(1.2)], [9, 5, 1, 2]).statistic


@pytest.mark.parametrize('layout', [
    'Word 1,Word 2,Human (mean)\na,b,9\na,c,5\na,d,1\nb,d,2\n',          # WordSim combined.csv
    'Word 1,Word 2,Human (mean),1,2\na,b,9,1,8\na,c,5,9,1\na,d,1,1,1\nb,d,2,9,9\n',  # set1.csv
    'word1\tword2\tPOS\tSimLex999\tconc(w1)\na\tb\tN\t9\t4.1\na\tc\tN\t5\t1\n'
    'a\td\tA\t1\t2\nb\td\tV\t2\t3\n',                                 # SimLex-999's own file
    'a b V 9 SYNONYMS\na c V 5 COHYPONYMS\na d V 1 NONE\nb d V 2 NONE\n',  # SimVerb-3500
    'a-n b-n 9.000000\na-n c-v 5.000000\na-j d-n 1.000000\nb-n d-n 2.000000\n',  # MEN lemmas
    'a b 9 7 8\t\na c 5 1 2\na d 1 3 3\nb d 2 0 1\n',                     # RW: extra ratings
    ',word1,word2,score\n0,a,b,9\n1,a,c,5\n2,a,d,1\n3,b,d,2\n',        # pandas' to_csv index
    'id\tw1\tw2\tscore\n7\ta\tb\t9\n3\ta\tc\t5\n12\ta\td\t1\n5\tb\td\t2\n',  # pair ids
    '"word1","word2","score"\n"a","b",9\n"a","c",5\n"a","d",1\n"b","d",2\n',  # R write.csv
    '"a"\t"b"\t9\n"a"\t"c"\t5\n"a"\t"d"\t1\n"b"\t"d"\t2\n',           # quoted TSV
    '"a" "b" 9\n"a" "c" 5\n"a" "d" 1\n"b" "d" 2\n',                       # quoted, spaces
])
def test_similarity_layouts_of_other_distributions(tmp_path, layout):
  f = tmp_path / 'sim.txt'
  f.write_text(layout, encoding='utf-8')
  r = wv.evaluate_similarity(WORDS, VECS, str(f))
  assert (r.pairs_used, r.pairs_oov) == (4, 0)
  assert r.spearman == pytest.approx(RHO)


def test_similarity_words_match_case_blind_through_the_most_frequent_spelling(tmp_path):
  import unicodedata
  f = tmp_path / 'sim.txt'
  f.write_text(f'a b 9\nA C 5\na {unicodedata.normalize("NFD", "dé")} 1\nb dé 2\n',
               encoding='utf-8')
  # a cased vocabulary: 'A' (more frequent) and 'a' both fold to 'a'; the first wins
  words, vecs = ['A', 'B', 'C', 'Dé', 'a'], np.concatenate([VECS, [[0.0, 1.0]]])
  r = wv.evaluate_similarity(words, vecs, str(f))
  assert (r.pairs_used, r.pairs_oov) == (4, 0)
  assert r.spearman == pytest.approx(RHO)


@pytest.mark.parametrize('text, match', [
    ('love sex 6.77x\na b 1\n', r'sim\.txt:1: no numeric score'),     # a typo is no header
    ('a b 1\nc d nan\n', r"sim\.txt:2: score 'nan' is not finite"),
    ('a b 1\nc d x\n', r"sim\.txt:2: score 'x' \(column 3\) is not a number"),
])
def test_similarity_bad_scores_name_the_line(tmp_path, text, match):
  f = tmp_path / 'sim.txt'
  f.write_text(text, encoding='utf-8')
  with pytest.raises(DataError, match=match):
    wv.read_similarity_pairs(str(f))


def test_an_evaluation_file_not_in_utf8_says_to_convert_it(tmp_path):
  """data.encoding is the corpus's: the error for an evaluation set must not advise it."""
  f = tmp_path / 'sim.txt'
  f.write_bytes('a b 1\ncafé b 2\n'.encode('latin-1'))
  with pytest.raises(DataError, match=r'sim\.txt:2: .*evaluation files are read as UTF-8') as e:
    wv.read_similarity_pairs(str(f))
  assert 'data.encoding' not in str(e.value)


def test_an_evaluation_path_naming_several_files_is_refused(tmp_path):
  for name in ('x.txt', 'y.txt'):
    (tmp_path / name).write_text('a b 1\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'names 2 files'):
    wv.read_similarity_pairs(str(tmp_path / '*.txt'))


def test_no_usable_pair_warns_and_is_nan(tmp_path):
  f = tmp_path / 'sim.txt'
  f.write_text('x y 1\nz w 2\n', encoding='utf-8')
  with pytest.warns(UserWarning, match=r'0 of 2 pairs'):
    r = wv.evaluate_similarity(WORDS, VECS, str(f))
  assert np.isnan(r.spearman) and (r.pairs_used, r.pairs_oov) == (0, 2)


def test_analogy_3cosadd_on_constructed_vectors(tmp_path):
  # king - man + woman = queen by construction; 'paris' question is OOV.
  words = ['man', 'woman', 'king', 'queen', 'apple']
  vecs = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]],
                  np.float32)
  f = tmp_path / 'q.txt'
  f.write_text(': family\nman woman king queen\nman king woman apple\n'
               ': capital\nfrance paris italy rome\n', encoding='utf-8')
  r = wv.evaluate_analogies(words, vecs, str(f))
  assert (r.correct, r.answered, r.oov) == (1, 2, 1)
  assert r.sections == {'family': 0.5}
  # restrict drops 'apple' (least frequent), so the second question becomes OOV.
  r2 = wv.evaluate_analogies(words, vecs, str(f), restrict=4)
  assert (r2.correct, r2.answered, r2.oov) == (1, 1, 2)
  # 0 searches every word (as vocab.max_size=0 keeps every word), not none
  r0 = wv.evaluate_analogies(words, vecs, str(f), restrict=0)
  assert (r0.correct, r0.answered, r0.oov) == (r.correct, r.answered, r.oov)



def test_analogy_with_a_cased_vocabulary_and_comment_lines(tmp_path):
  """Case-blind, as gensim: every spelling of a question word is excluded, and another
  spelling of the answer counts as the answer."""
  words = ['man', 'woman', 'King', 'Queen', 'apple', 'king', 'QUEEN']
  vecs = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1],
                   [0, 0, 0, 1], [0, 0, 0, 1]], np.float32)
  unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
  query = unit[1] - unit[0] + unit[2]            # woman - man + King
  f = tmp_path / 'q.txt'
  f.write_text('# a comment line\nman woman king queen\nMAN WOMAN KING QUEEN\n',
               encoding='utf-8')
  vecs[6] = query                                # 'QUEEN' is the nearest: the answer
  assert (wv.evaluate_analogies(words, vecs, str(f)).correct,) == (2,)
  vecs[5] = query * 2                            # 'king', nearer still, is a question word
  r = wv.evaluate_analogies(words, vecs, str(f))
  assert (r.correct, r.answered, r.oov) == (2, 2, 0)
  vecs[6] = [0, 0, 0, 1]                         # now 'Queen' is not the nearest: 'apple' is
  vecs[3] = [0, 1, -1, 0]
  assert wv.evaluate_analogies(words, vecs, str(f)).correct == 0


def test_reads_gensim_and_shared_formats():
  assert len(wv.read_similarity_pairs('gensim:wordsim353.tsv')) == 353
  assert len(wv.read_similarity_pairs(shared_data('word_eval', 'EN-SIMLEX-999.txt'))) == 999
  assert len(wv.read_analogies(shared_data('word_eval', 'questions-words.txt'))) == 19544


@pytest.mark.parametrize('binary', [False, True])
def test_word2vec_roundtrip_and_gensim_loads_it(tmp_path, binary):
  from gensim.models import KeyedVectors
  rng = np.random.default_rng(0)
  words = ['the', 'émigré', 'naïve', "don't", 'x']
  vecs = rng.normal(size=(5, 7)).astype(np.float32)
  path = str(tmp_path / ('v.bin' if binary else 'v.txt'))
  save_word2vec(path, words, vecs, binary=binary)
  w2, v2 = load_word2vec(path, binary=binary)
  assert w2 == words
  np.testing.assert_array_equal(v2, vecs)  # repr() of float32 round-trips exactly
  kv = KeyedVectors.load_word2vec_format(path, binary=binary)
  assert kv.index_to_key == words
  np.testing.assert_array_equal(kv.vectors, vecs)


@pytest.mark.parametrize('binary', [False, True])
def test_words_with_unicode_spaces_round_trip(tmp_path, binary):
  """Only ASCII whitespace separates a row's fields (word2vec.c, gensim and ours): words
  holding a no-break, ideographic or thin space, a line or next-line separator, as
  tokenisers of other tools leave them, export and load back whole in both readers."""
  words = ['a\u00a0b', 'c\u3000d', 'e\u2028f', 'g\u0085h', 'i\u2009j', 'plain']
  vecs = np.arange(12, dtype=np.float32).reshape(6, 2)
  path = str(tmp_path / 'v')
  save_word2vec(path, words, vecs, binary=binary)
  w2, v2 = load_vectors(path, format='word2vec_binary' if binary else 'auto')
  assert w2 == words
  np.testing.assert_array_equal(v2, vecs)
  from gensim.models import KeyedVectors
  kv = KeyedVectors.load_word2vec_format(path, binary=binary)
  assert kv.index_to_key == words


def test_export_refuses_bad_words_and_keeps_old_file(tmp_path):
  path = tmp_path / 'v.txt'
  save_word2vec(str(path), ['a'], np.ones((1, 2)))
  before = path.read_bytes()
  with pytest.raises(ValueError, match='whitespace'):
    save_word2vec(str(path), ['a b'], np.ones((1, 2)))
  assert path.read_bytes() == before
  for bad in ('a\tb', 'a\nb', 'a\rb', 'a\x0cb', ''):
    with pytest.raises(ValueError, match='empty or contains whitespace'):
      save_word2vec(str(path), [bad], np.ones((1, 2)))
  assert path.read_bytes() == before
  with pytest.raises(ValueError, match=r"1 vector\(s\) hold NaN or infinity \(first: row 2, "
                                       r"'b'\): a diverged run"):
    save_word2vec(str(path), ['a', 'b'], np.asarray([[1.0, 2.0], [np.nan, 0.0]]), binary=True)
  assert path.read_bytes() == before
  assert not [p for p in tmp_path.iterdir() if p.name != 'v.txt']


def test_import_errors_name_the_line(tmp_path):
  p = tmp_path / 'v.txt'
  p.write_text('2 3\na 1 2 3\nb 1 2\n', encoding='utf-8')
  with pytest.raises(DataError, match=r'v\.txt:3: expected a word and 3 numbers'):
    load_word2vec(str(p))
  with pytest.raises(DataError, match='cannot read'):
    load_word2vec(str(tmp_path / 'missing.txt'))


def test_paired_comparison_of_two_result_files(tmp_path, capsys):
  import json
  from translearn_jax.evaluation import compare
  rows = lambda t: {'rows': [{'strategy': 'scratch', 'test': [0.5, 0.5, 0.5]},
                             {'strategy': 'finetune', 'test': t}]}
  (tmp_path / 'a.json').write_text(json.dumps(rows([0.70, 0.72, 0.71])))
  (tmp_path / 'b.json').write_text(json.dumps(rows([0.75, 0.76, 0.74])))
  assert compare.main([str(tmp_path / 'a.json'), str(tmp_path / 'b.json')]) == 0
  out = capsys.readouterr().out
  assert 'B - A per seed: +5.00 +4.00 +3.00' in out and 'mean +4.00 ± 2.48' in out
  assert compare.main([str(tmp_path / 'a.json'), str(tmp_path / 'b.json'),
                       '--strategy', 'lora']) == 2
  assert "no strategy 'lora'" in capsys.readouterr().err
  # files recording their test split and seeds pair only when both agree
  for name, digest, t in (('c', 'aa', [0.7]), ('d', 'bb', [0.75]), ('e', 'aa', [0.8])):
    (tmp_path / f'{name}.json').write_text(json.dumps({**rows(t), 'test_digest': digest,
                                                       'seeds': [0]}))
  assert compare.main([str(tmp_path / 'c.json'), str(tmp_path / 'd.json')]) == 2
  assert 'have other test examples (test_digest aa vs bb)' in capsys.readouterr().err
  assert compare.main([str(tmp_path / 'c.json'), str(tmp_path / 'e.json')]) == 0
  assert capsys.readouterr().out.rstrip().endswith('mean +10.00 (one seed: no interval)')
  # and only when they score by the same metric (accuracy against macro-F1 had paired)
  for name, metric in (('f', 'accuracy'), ('g', 'macro_f1')):
    (tmp_path / f'{name}.json').write_text(json.dumps({**rows([0.7]), 'metric': metric}))
  assert compare.main([str(tmp_path / 'f.json'), str(tmp_path / 'g.json')]) == 2
  assert 'have other metric (metric accuracy vs macro_f1)' in capsys.readouterr().err
