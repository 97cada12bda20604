"""A MemoryFormer with the module structure, parameter names and forward numerics of the authors'
released training code (GPT-NeoX fork, configs memoryformer_tiny/small.yml), written for this
project's converter test from reading that code; it is not a copy of it.

What it reproduces, as the released code runs at the tiny config:
  - a NeoX "sequential" model: index 0 the embedding (word_embeddings), 1 a parameterless step,
    2 .. n + 1 the transformer layers, n + 2 a parameterless step, n + 3 the final norm (norm),
    n + 4 the LM head (final_linear, no bias), so that state_dict() keys read
    "sequential.{index}.{name}";
  - RMSNorm with a parameter named `scale`: x / (||x||_2 / sqrt(d) + eps) * scale;
  - Memory Layers with `tables` [K * 2^bits, out] and `bias` [out]; the hash is the identity on the
    input (no projection): chunk k is x[k bits, (k + 1) bits), bits set where x >= 0, the first
    element the highest bit; score = sum|z| / prod(1 + exp(-2|z|)) (the "l1" score);
  - attention: query_proj, key_proj, value_proj sharing one hash of the normed input; NeoX rotary
    on the first rotary_pct of each head's dims (rotate-half, inv_freq = base^(-2i / rot)); causal
    softmax(QK^T / sqrt(head_dim)) V; no output projection;
  - the MLP as nn.Sequential(MemoryLayer d -> (tau + 2) K, nn.LayerNorm, MemoryLayer with tau + 2
    bits -> d), keys mlp.0 / mlp.1 / mlp.2;
  - residuals: z = x + attention(input_layernorm(x)); y = z + mlp(post_attention_layernorm(z)).
Computation runs in float64 so it can serve as the reference for the converted file's logits.
"""

import math

import torch

EXTRA_BITS = 2  # the released code's "extra_bit" Memory Block


class RMSNorm(torch.nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.scale = torch.nn.Parameter(torch.ones(dim, dtype=torch.float64))

    def forward(self, x):
        rms = x.norm(2, dim=-1, keepdim=True) * x.shape[-1] ** -0.5
        return self.scale * (x / (rms + self.eps))


def hash_codes_scores(x, bits):
    """x [N, K * bits] -> codes [N, K] (first element highest bit) and l1 scores [N, K]."""
    z = x.reshape(x.shape[0], -1, bits)
    weights = 2 ** torch.arange(bits - 1, -1, -1)
    codes = ((z >= 0).long() * weights).sum(-1)
    scores = z.abs().sum(-1) / torch.prod(1 + torch.exp(-2 * z.abs()), dim=-1)
    return codes, scores


class MemoryLayer(torch.nn.Module):
    def __init__(self, in_dim, out_dim, bits):
        super().__init__()
        self.bits, self.chunks = bits, in_dim // bits
        self.tables = torch.nn.Parameter(torch.zeros(self.chunks * 2 ** bits, out_dim, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.zeros(out_dim, dtype=torch.float64))

    def forward(self, x=None, codes_scores=None):
        shape = x.shape[:-1] if x is not None else None
        if codes_scores is None:
            codes_scores = hash_codes_scores(x.reshape(-1, x.shape[-1]), self.bits)
        codes, scores = codes_scores
        rows = codes + torch.arange(self.chunks) * 2 ** self.bits
        out = (self.tables[rows] * scores.unsqueeze(-1)).sum(1) + self.bias
        return out if shape is None else out.reshape(*shape, -1)


def rotate(x, rot, base):
    """NeoX rotary on x [S, H, head_dim]: the first `rot` dims, rotate-half, positions 0 .. S - 1."""
    if rot == 0:
        return x
    inv_freq = 1.0 / base ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot)
    freqs = torch.outer(torch.arange(x.shape[0], dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
    r, rest = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = torch.cat((-r[..., half:], r[..., :half]), dim=-1)
    return torch.cat((r * emb.cos() + rotated * emb.sin(), rest), dim=-1)


class Attention(torch.nn.Module):
    def __init__(self, d, heads, tau, rotary_pct, rotary_base):
        super().__init__()
        self.heads, self.tau, self.base = heads, tau, rotary_base
        self.rot = int(d // heads * rotary_pct)
        self.query_proj, self.key_proj, self.value_proj = (MemoryLayer(d, d, tau) for _ in range(3))

    def forward(self, x):  # x [S, d], one sequence
        codes_scores = hash_codes_scores(x, self.tau)  # one hash for Q, K and V
        s, d = x.shape
        q, k, v = (layer(codes_scores=codes_scores).reshape(s, self.heads, -1)
                   for layer in (self.query_proj, self.key_proj, self.value_proj))
        q, k = rotate(q, self.rot, self.base), rotate(k, self.rot, self.base)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d // self.heads)
        mask = torch.ones(s, s, dtype=torch.bool).triu(1)
        probs = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        return torch.einsum("hqk,khd->qhd", probs, v).reshape(s, d)


class TransformerLayer(torch.nn.Module):
    def __init__(self, d, heads, tau, rotary_pct, rotary_base, rms_eps, layernorm_eps):
        super().__init__()
        width = (tau + EXTRA_BITS) * (d // tau)
        self.input_layernorm = RMSNorm(d, rms_eps)
        self.attention = Attention(d, heads, tau, rotary_pct, rotary_base)
        self.post_attention_layernorm = RMSNorm(d, rms_eps)
        self.mlp = torch.nn.Sequential(MemoryLayer(d, width, tau),
                                       torch.nn.LayerNorm(width, eps=layernorm_eps, dtype=torch.float64),
                                       MemoryLayer(width, d, tau + EXTRA_BITS))

    def forward(self, x):
        z = x + self.attention(self.input_layernorm(x))
        return z + self.mlp(self.post_attention_layernorm(z))


class Embedding(torch.nn.Module):
    def __init__(self, vocab, d):
        super().__init__()
        self.word_embeddings = torch.nn.Embedding(vocab, d, dtype=torch.float64)

    def forward(self, tokens):
        return self.word_embeddings(tokens)


class FinalNorm(torch.nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.norm = RMSNorm(d, eps)

    def forward(self, x):
        return self.norm(x)


class LMHead(torch.nn.Module):
    def __init__(self, d, vocab):
        super().__init__()
        self.final_linear = torch.nn.Linear(d, vocab, bias=False, dtype=torch.float64)

    def forward(self, x):
        return self.final_linear(x)


class ReleasedMemoryFormer(torch.nn.Module):
    def __init__(self, padded_vocab, d, layers, heads, tau, rotary_pct=0.25, rotary_base=10000.0, rms_eps=1e-8,
                 layernorm_eps=1e-5):
        super().__init__()
        self.sequential = torch.nn.Sequential(
            Embedding(padded_vocab, d), torch.nn.Identity(),
            *(TransformerLayer(d, heads, tau, rotary_pct, rotary_base, rms_eps, layernorm_eps) for _ in range(layers)),
            torch.nn.Identity(), FinalNorm(d, rms_eps), LMHead(d, padded_vocab))

    def forward(self, tokens):
        """tokens [S] (one sequence) -> logits [S, padded vocab]."""
        return self.sequential(torch.as_tensor(tokens, dtype=torch.long))

    def hash_inputs(self, tokens):
        """Every input a hash reads, as (name, [N, width], bits): for keeping test inputs off z = 0."""
        seq = self.sequential
        x = seq[0](torch.as_tensor(tokens, dtype=torch.long))
        out = []
        for i, layer in enumerate(seq[2:-3]):
            a = layer.input_layernorm(x)
            out.append((f"layer {i} attention", a, layer.attention.tau))
            z = x + layer.attention(a)
            m = layer.post_attention_layernorm(z)
            out.append((f"layer {i} mlp.0", m, layer.mlp[0].bits))
            out.append((f"layer {i} mlp.2", layer.mlp[1](layer.mlp[0](m)), layer.mlp[2].bits))
            x = layer(x)
        return out

    def randomise(self, generator):
        """Weights as the released code draws them (small_init for the embedding, head and Q/K/V
        tables, 0.02 for the MLP tables, 0.001 for biases), with norm scales and the LayerNorm's
        affine perturbed so that they matter."""
        d = self.sequential[0].word_embeddings.weight.shape[1]
        small = math.sqrt(2.0 / (5.0 * d))
        with torch.no_grad():
            for name, p in self.named_parameters():
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
                if "attention" in name and name.endswith("tables") or "word_embeddings" in name or "final_linear" in name:
                    p.copy_(small * noise)
                elif name.endswith("tables"):
                    p.copy_(0.02 * noise)
                elif name.endswith("scale") or name.endswith("mlp.1.weight"):
                    p.copy_(1 + 0.2 * noise)
                elif name.endswith("mlp.1.bias"):
                    p.copy_(0.1 * noise)
                else:
                    p.copy_(0.001 * noise)
