"""The same baseline train step in straightforward PyTorch eager, for the side-by-side comparison
in README's performance section (not part of the unit suite; PyTorch is not a dependency).

    pip install torch==2.13.0        # the CPU build; in a separate venv if you like
    python tests/benchmarks/torch_step.py              # the wiki-bytes baseline's shapes
    python -m speedrun bench                            # ours, same shapes, same machine

The model is the harness's baseline GPT-2 (speedrun/core/model.py) written as a PyTorch user would:
learned positions, pre-LayerNorm blocks with biases, GELU (tanh) MLP 4x, output head tied to the
token embedding, ``F.scaled_dot_product_attention(is_causal=True)`` (PyTorch's fused CPU
attention), mean cross-entropy, ``torch.optim.AdamW`` (its default foreach implementation),
float32, ``torch.set_num_threads`` = the machine's cores. No ``torch.compile``: eager is the
reference the performance issue names. Prints the median step time and tokens/s.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d) for _ in range(4))
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, D = x.shape
        h = self.ln1(x)
        q, k, v = (w(h).view(B, T, self.heads, -1).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(y.transpose(1, 2).reshape(B, T, D))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, seq, d, layers, heads):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        for b in self.blocks:  # GPT-2's scaled residual projections
            for w in (b.wo.weight, b.proj.weight):
                nn.init.normal_(w, std=0.02 / math.sqrt(2 * layers))

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GPT(a.vocab, a.seq, a.d, a.layers, a.heads)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randint(0, a.vocab, (a.batch, a.seq))
    y = torch.randint(0, a.vocab, (a.batch, a.seq))
    times = []
    for i in range(a.steps + 3):
        t = time.perf_counter()
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # wait for the step, as the JAX bench does
        if i >= 3:
            times.append(time.perf_counter() - t)
    s = statistics.median(times)
    print(f"torch {torch.__version__}, {a.threads} threads: {a.layers}L d{a.d} h{a.heads} "
          f"seq{a.seq} vocab{a.vocab}, batch {a.batch}")
    print(f"step time: {s * 1e3:.1f} ms (median of {a.steps}); "
          f"{a.batch * a.seq / s:,.0f} tokens/s; final loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
