"""Using a trained model: checkpoint files, int8 weights, KV-cache decoding, sampling.

    checkpoint  safetensors checkpoints: save, load and check against the config's hooks
    quantize    weight-only int8 weights, dequantized inside the forward pass
    kvcache     the key/value cache of decoding
    generate    prefill, decode loop and speculative decoding, through the training hooks
    hellaswag_score  HellaSwag scored as llm.c scores it (`eval --hellaswag`, and after a
                `run`); the examples themselves are speedrun/data/hellaswag.py
    hf_gpt2     a checkpoint as a Hugging Face GPT-2 folder (`export --format hf`)

The commands that use a model (`sample`, `quantize`, `eval`, `export`) are speedrun/commands/.

May import: speedrun.errors, speedrun.config, speedrun.tracks, speedrun.data, speedrun.core,
speedrun.distributed, tricks. Never training: `run --save` writes checkpoints through this
package, and `eval` (speedrun.training.evaluate) reads them.
"""
