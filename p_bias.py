from s2sh import *
from sweep import run_lm
from p_enc_mk import mk_bert, mk_roberta
from safetensors.numpy import load_file, save_file
for kind, mk, names in (('bert', mk_bert, ('cls.predictions.bias', 'cls.predictions.decoder.bias')), ('roberta', mk_roberta, ('lm_head.bias', 'lm_head.decoder.bias'))):
  m, f = mk()
  d = newdir(f'bias_{kind}'); m.save_pretrained(d); f.save_pretrained(d)
  t = load_file(d + '/model.safetensors'); print(kind, 'file has', [n for n in names if n in t])
  rng = np.random.default_rng(3)
  t[names[1]] = (rng.standard_normal(t[names[0]].shape)).astype(np.float32)
  save_file(t, d + '/model.safetensors', metadata={'format': 'pt'})
  try:
    print(kind, 'tied, distinct decoder bias: diff', run_lm(kind, d))
  except Exception as e: print(kind, 'ERR', e)
