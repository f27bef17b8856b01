"""Fields of nested records (JSONL objects, TFDS features), named with dots."""

MISSING = object()


def field_value(obj: dict, name: str):
  """`obj[name]`, or for a dotted name ('translation.en', Hugging Face datasets' layout)
  the nested objects' value; `MISSING` when absent."""
  if name in obj:
    return obj[name]
  v = obj
  for part in name.split('.'):
    if not isinstance(v, dict) or part not in v:
      return MISSING
    v = v[part]
  return v
