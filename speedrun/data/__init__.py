"""Token data: FineWeb-format shards, the offline GPT-2 tokenizer, corpus builders, downloads
and the deterministic batch loader.

Layout under the data dir (``paths.data_dir``)::

    <data_dir>/<dataset>/<prefix>_{train,val}_NNNNNN.bin   (+ manifest.json for built corpora)
    <data_dir>/tiktoken/                                   GPT-2 BPE files for tiktoken
    <data_dir>/hellaswag/hellaswag_val.jsonl               HellaSwag's validation examples

where ``prefix`` is the dataset name, except ``fineweb10b`` whose files are ``fineweb_*``.

May import: speedrun.errors.
"""

EOT = 50256  # GPT-2 <|endoftext|>; precedes every document in a shard
