"""`python -m speedrun chat CHECKPOINT`: type a message, read the model's answer, until Ctrl-D.

The conversation is rendered in the chat format (speedrun/posttraining/chat.py) and answered
through the KV-cache sampler; a line the format cannot carry (a marker byte) is refused and the
chat goes on; a conversation longer than the model's context starts again from the last line.
"""

from __future__ import annotations

import argparse
import sys

from speedrun.commands import flags


def add_parser(sub) -> argparse.ArgumentParser:
    ch = sub.add_parser("chat", help="talk to a post-trained checkpoint (until Ctrl-D)",
                        description="Type a message, read the model's answer; the conversation "
                        "goes on until Ctrl-D (end of input).")
    flags.checkpoint(ch)
    flags.sampling(ch, temperature=0.0)
    ch.add_argument("--max-new-tokens", type=int, default=200, metavar="N",
                    help="longest answer (default 200)")
    return ch


def main(args) -> int:
    import jax

    from speedrun.errors import SpeedrunError
    from speedrun.inference import checkpoint
    from speedrun.inference import generate as G
    from speedrun.posttraining import chat

    sampling = G.sampling(args.temperature, args.top_k)
    if args.max_new_tokens < 1:
        raise SpeedrunError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    ck = checkpoint.load(args.checkpoint)
    m = ck.model()
    m = G.Model(jax.device_put(m.params), m.cfg, m.hooks, m.tokenizer)
    sp = chat.specials(m.tokenizer, m.cfg.model.vocab_size)
    print(f"{ck.describe()}\ntype a message and press Enter; Ctrl-D ends", file=sys.stderr)
    conversation, turn = [], 0
    for line in sys.stdin:
        text = line.rstrip("\n")
        if not text.strip():
            continue
        try:  # a line the chat format cannot carry (a marker byte) is refused, not the chat
            chat.encode_text(text, m.tokenizer)
        except SpeedrunError as e:
            print(f"(not sent: {e})", file=sys.stderr)
            continue
        conversation.append({"role": "user", "content": text})
        ids = chat.prompt(conversation, m.tokenizer, m.cfg.model.vocab_size)
        if len(ids) >= m.seq_len - 1:
            print("(the conversation is longer than the model's context: starting a new one)",
                  file=sys.stderr)
            conversation = conversation[-1:]
            ids = chat.prompt(conversation, m.tokenizer, m.cfg.model.vocab_size)[-(m.seq_len - 2):]
        out = G.generate(m, [ids], args.max_new_tokens, sampling, args.seed + turn,
                         stop=sp.assistant_end)[0]
        answer = chat.completion(out, m.tokenizer, m.cfg.model.vocab_size)
        print(answer, flush=True)
        conversation.append({"role": "assistant", "content": answer})
        turn += 1
    return 0
