#!/usr/bin/python3
"""MemoryFormer reference in PyTorch, written from docs/method.md (the project's specification).

This is an independent implementation of the method, kept small and readable, against which the C++
library is cross-checked (tests/interop/check_interop.py). It is not a port of the C++ code:
every formula below cites the docs/method.md section it comes from. Gradients come from autograd.

Contents
  - a safetensors reader and writer of its own (struct + json + numpy, no other package);
  - Config: the 12 fields of the docs/method.md §5 "config" metadata and the optional §6 variants;
  - sign_hash / MemoryLayer (§1), rms_norm / layer_norm, rotary, causal attention (§2);
  - MemoryFormerBlock (§2) and MemoryFormerModel (§3), whose named_parameters() are the §5 names;
  - load_model / save_model for §5 weight files; random_model for test models.

Weight files. save_model writes every tensor as F32 (or F64) with the §5 names and shapes and
`__metadata__` {"format": "memoryformer", "config": <JSON string>}: exactly what docs/method.md §5
requires of any writer. It writes no "checksums" (XXH3-64 needs a package we do not use; the C++
loader verifies checksums only when present) and no "arch" (a C++ extension that defaults to
"memoryformer" when absent). load_model accepts files of any writer: it ignores "checksums"
(unverified here), accepts "arch" only when absent or "memoryformer", and requires every §5 tensor
with its shape and nothing else, like the C++ loader.

Requirements: Debian's python3-torch (1.13) and python3-numpy, run with /usr/bin/python3
(`bash scripts/install-deps.sh --interop` installs them).

Command line
  /usr/bin/python3 tools/memoryformer_ref.py init --config JSON --seed 1 --out m.safetensors [--dtype F64]
      a random model (docs/method.md §3 initialisation, norms perturbed so that their gradients matter);
      JSON holds every §5 config field, e.g. {"vocab_size": 13, "d_model": 32, "n_layers": 2,
      "n_heads": 2, "tau": 4, "expand_bits": 2, "rotary_pct": 0.25, "rotary_base": 10000,
      "score": "paper", "temperature": 1, "norm_eps": 1e-8, "layernorm_eps": 1e-5}
  /usr/bin/python3 tools/memoryformer_ref.py logits --weights m.safetensors --tokens 1,2,3/4,5,6
      prints the logits of the sequences ("/" separates sequences of equal length), one row per token
  /usr/bin/python3 tools/memoryformer_ref.py loss --weights m.safetensors --tokens 1,2,3 --targets 2,3,4
      prints the mean next-token cross-entropy and the gradient norm of every parameter
The cross-checks with C++ run as `ctest --preset dev -L interop` (see README.md, "PyTorch interop"):
tests/interop/check_interop.py regenerates every model and result file it compares on each run
(under build/<preset>/tests/interop/work/); nothing is checked in, so there is nothing to refresh
when the method or the library changes.
"""

import argparse
import json
import math
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length N, N bytes of JSON header
# {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the
# data section the offsets point into (offsets relative to its start).

_NUMPY_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U8": "u1", "BOOL": "?",
}
_DTYPE_NAMES = {np.dtype(v): k for k, v in _NUMPY_DTYPES.items()}
_MAX_HEADER_BYTES = 100_000_000


class FormatError(ValueError):
    """A file that does not follow safetensors or docs/method.md §5; the message says what and where."""


def read_safetensors(path):
    """Returns ({name: numpy array}, {metadata key: value}) of the safetensors file at path."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise FormatError(f"{path}: {len(blob)} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > min(len(blob) - 8, _MAX_HEADER_BYTES):
        raise FormatError(f"{path}: header length {header_len} exceeds the {len(blob) - 8} bytes after it")
    try:
        header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: header is not UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: header is {type(header).__name__}, expected a JSON object")
    data = memoryview(blob)[8 + header_len:]
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{path}: __metadata__ = {metadata!r}, expected an object of strings")
    tensors = {}
    for name, entry in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{where}: entry {entry!r}, expected exactly dtype, shape and data_offsets")
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise FormatError(f"{where}: shape {shape}, expected non-negative integers")
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= len(data)):
            raise FormatError(f"{where}: data_offsets [{begin}, {end}] outside the data section of {len(data)} bytes")
        count = math.prod(shape)
        if dtype == "BF16":  # no numpy bf16: the upper 16 bits of a float32
            raw = np.frombuffer(data[begin:end], dtype="<u2")
            if raw.size != count or end - begin != 2 * count:
                raise FormatError(f"{where}: shape {shape} of BF16 needs {2 * count} bytes, offsets span {end - begin}")
            array = (raw.astype(np.uint32) << 16).view(np.float32)
        elif dtype in _NUMPY_DTYPES:
            np_dtype = np.dtype(_NUMPY_DTYPES[dtype])
            if end - begin != count * np_dtype.itemsize:
                raise FormatError(f"{where}: shape {shape} of {dtype} needs {count * np_dtype.itemsize} bytes,"
                                  f" offsets span {end - begin}")
            array = np.frombuffer(data[begin:end], dtype=np_dtype)
        else:
            raise FormatError(f"{where}: dtype {dtype!r}, expected one of {sorted(_NUMPY_DTYPES) + ['BF16']}")
        tensors[name] = array.reshape(shape).copy()
    return tensors, metadata


class BF16:
    """A tensor to write as BF16: `bits` holds each value's upper 16 bits (uint16, any shape)."""

    def __init__(self, bits):
        self.bits = np.asarray(bits, dtype=np.uint16)


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: numpy array or BF16} (in the given order) and string metadata to path.

    The header is padded with spaces so the data section starts 8-byte aligned, which lets readers
    (the C++ one included) map tensors in place."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for name, array in tensors.items():
        if isinstance(array, BF16):
            raw = array.bits.astype("<u2").tobytes()
            header[name] = {"dtype": "BF16", "shape": list(array.bits.shape), "data_offsets": [offset, offset + len(raw)]}
            chunks.append(raw)
            offset += len(raw)
            continue
        array = np.array(array, order="C", copy=False)  # not ascontiguousarray: it turns shape [] into [1]
        if array.dtype not in _DTYPE_NAMES:
            raise ValueError(f"write_safetensors: tensor {name!r} dtype {array.dtype}, expected one of "
                             f"{sorted(str(d) for d in _DTYPE_NAMES)}")
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPE_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


# ---------------------------------------------------------------------------------------------
# Config: the fields of docs/method.md §5's "config" metadata.

class Config:
    INT_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "tau", "expand_bits")
    REAL_FIELDS = ("rotary_pct", "rotary_base", "temperature", "norm_eps", "layernorm_eps")
    FIELDS = INT_FIELDS + REAL_FIELDS + ("score",)
    # The docs/method.md §6 variants: optional in a file, absent meaning these defaults. This
    # reference implements both RMSNorm forms; the embedding init only matters to random_model.
    VARIANTS = {"rms_form": "eps_in_root", "embedding_init": "normal_0.02", "memory_block_activation": "none",
                "output_projection": False}

    def __init__(self, vocab_size=256, d_model=512, n_layers=6, n_heads=8, tau=8, expand_bits=2,
                 rotary_pct=0.25, rotary_base=10000.0, score="paper", temperature=1.0, norm_eps=1e-8,
                 layernorm_eps=1e-5, rms_form="eps_in_root", embedding_init="normal_0.02",
                 memory_block_activation="none", output_projection=False):
        # Defaults: docs/method.md §1 (t = 1, paper score), §2 (eps, e = 2, rotary), §3 (tiny model).
        self.vocab_size, self.d_model, self.n_layers, self.n_heads = vocab_size, d_model, n_layers, n_heads
        self.tau, self.expand_bits = tau, expand_bits
        self.rotary_pct, self.rotary_base = float(rotary_pct), float(rotary_base)
        self.score, self.temperature = score, float(temperature)
        self.norm_eps, self.layernorm_eps = float(norm_eps), float(layernorm_eps)
        self.rms_form, self.embedding_init = rms_form, embedding_init
        self.memory_block_activation, self.output_projection = memory_block_activation, output_projection
        self.validate()

    @property
    def num_chunks(self):  # K
        return self.d_model // self.tau

    @property
    def head_dim(self):
        return self.d_model // self.n_heads

    @property
    def memory_width(self):  # (tau + e) K, the Memory Block's hidden width (§2)
        return (self.tau + self.expand_bits) * self.num_chunks

    def validate(self):
        def need(ok, field, expected):
            if not ok:
                raise ValueError(f"Config: {field} = {getattr(self, field)!r}, expected {expected}")
        for f in self.INT_FIELDS:
            need(isinstance(getattr(self, f), int) and not isinstance(getattr(self, f), bool), f, "an integer")
        need(self.vocab_size >= 1, "vocab_size", "a positive integer")
        need(self.n_layers >= 0, "n_layers", "an integer >= 0")
        need(self.d_model >= 1, "d_model", "a positive integer")
        need(self.n_heads >= 1 and self.d_model % self.n_heads == 0, "n_heads",
             f"a positive divisor of d_model = {self.d_model}")
        need(1 <= self.tau <= 16, "tau", "an integer in 1..16")
        need(self.d_model % self.tau == 0, "d_model", f"a multiple of tau = {self.tau}")
        need(self.expand_bits >= 0 and self.tau + self.expand_bits <= 16, "expand_bits",
             f"an integer >= 0 with tau + expand_bits <= 16 (tau = {self.tau})")
        need(self.score in ("paper", "l1"), "score", '"paper" or "l1"')
        need(0.0 <= self.rotary_pct <= 1.0, "rotary_pct", "a value in [0, 1]")
        need(math.floor(self.rotary_pct * self.head_dim) % 2 == 0, "rotary_pct",
             f"a value giving an even rot = floor(rotary_pct * head_dim) (head_dim = {self.head_dim})")
        for f in ("rotary_base", "temperature", "norm_eps", "layernorm_eps"):
            need(math.isfinite(getattr(self, f)) and getattr(self, f) > 0, f, "a finite value > 0")
        need(self.rms_form in ("eps_in_root", "eps_after_root"), "rms_form", '"eps_in_root" or "eps_after_root"')
        need(self.embedding_init in ("normal_0.02", "small_init"), "embedding_init", '"normal_0.02" or "small_init"')
        need(self.memory_block_activation == "none", "memory_block_activation",
             '"none" (this reference does not implement the GeLU variant)')
        need(self.output_projection is False, "output_projection", "false (this reference has no W_O)")

    def to_json(self):  # the variants only where they differ from the default
        fields = {f: getattr(self, f) for f in self.FIELDS}
        fields.update({f: getattr(self, f) for f, default in self.VARIANTS.items() if getattr(self, f) != default})
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text):
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise ValueError(f"Config.from_json: {text!r}, expected a JSON object")
        unknown, missing = set(fields) - set(cls.FIELDS) - set(cls.VARIANTS), set(cls.FIELDS) - set(fields)
        if unknown or missing:
            raise ValueError(f"Config.from_json: keys unknown {sorted(unknown)}, missing {sorted(missing)};"
                             f" expected the docs/method.md §5 fields {list(cls.FIELDS)}"
                             f" and optionally {list(cls.VARIANTS)}")
        return cls(**fields)


# ---------------------------------------------------------------------------------------------
# §1 Memory Layer

def sign_hash(x, bits, temperature, score):
    """x [N, K * bits] -> (codes [N, K] int64, scores [N, K]) by docs/method.md §1 steps 1-4."""
    n, width = x.shape
    z = x.reshape(n, width // bits, bits)  # step 1: chunk k is x[k*bits : (k+1)*bits]
    # Step 2: bit j is 1 iff z_j >= 0 (zero counts as positive), MSB-first: z_0 weighs 2^(bits-1).
    place = 2 ** torch.arange(bits - 1, -1, -1, device=x.device)
    codes = ((z >= 0).long() * place).sum(-1)
    # Step 3: p(z) = prod_j sigmoid(2|z_j|/t), as exp(-sum_j softplus(-2|z_j|/t)) for stability.
    p = torch.exp(-F.softplus(-2.0 * z.abs() / temperature).sum(-1))
    # Step 4: the score; autograd differentiates |z| with sign(z), which is exact away from z = 0.
    if score == "paper":
        return codes, p
    if score == "l1":
        return codes, z.abs().sum(-1) * p
    raise ValueError(f"sign_hash: score = {score!r}, expected 'paper' or 'l1'")


class MemoryLayer(torch.nn.Module):
    """y = b + sum_k s_k T[k, code_k, :] (§1 step 5), tables [K, 2^bits, out_dim]."""

    def __init__(self, in_dim, out_dim, bits, dtype=torch.float64):
        super().__init__()
        if in_dim % bits != 0:
            raise ValueError(f"MemoryLayer: in_dim = {in_dim}, expected a multiple of bits = {bits}")
        self.bits = bits
        self.tables = torch.nn.Parameter(torch.zeros(in_dim // bits, 2 ** bits, out_dim, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(out_dim, dtype=dtype))

    def forward(self, codes, scores):
        """Takes a hash of the input (sign_hash), so Q, K and V can share one (§2)."""
        chunk = torch.arange(self.tables.shape[0], device=codes.device)
        rows = self.tables[chunk, codes]  # [N, K, out_dim]: row code_k of table k; codes pass no gradient
        return self.bias + torch.einsum("nk,nkh->nh", scores, rows)


# ---------------------------------------------------------------------------------------------
# §2 norms, rotary, attention, block

class RMSNorm(torch.nn.Module):
    def __init__(self, width, eps, dtype=torch.float64, form="eps_in_root"):
        super().__init__()
        self.eps, self.form = eps, form
        self.weight = torch.nn.Parameter(torch.ones(width, dtype=dtype))

    def forward(self, x):  # x / sqrt(mean(x^2) + eps) * w (or eps after the root): no centring, no bias
        mean_square = (x * x).mean(-1, keepdim=True)
        if self.form == "eps_after_root":
            return x / (torch.sqrt(mean_square) + self.eps) * self.weight
        return x / torch.sqrt(mean_square + self.eps) * self.weight


class LayerNorm(torch.nn.Module):
    def __init__(self, width, eps, dtype=torch.float64):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(width, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(width, dtype=dtype))

    def forward(self, x):  # biased variance: divide by the width
        centred = x - x.mean(-1, keepdim=True)
        var = (centred * centred).mean(-1, keepdim=True)
        return centred / torch.sqrt(var + self.eps) * self.weight + self.bias


def rotary(x, rotary_pct, base):
    """x [B, S, H, head_dim] at positions 0..S-1 -> GPT-NeoX rotary ("rotate half"), §2."""
    head_dim, seq = x.shape[-1], x.shape[1]
    rot = math.floor(rotary_pct * head_dim)
    if rot == 0:
        return x
    half = rot // 2
    inv_freq = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / rot)
    angle = torch.arange(seq, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [S, rot/2]
    cos = torch.cos(angle).to(x.dtype)[None, :, None, :]
    sin = torch.sin(angle).to(x.dtype)[None, :, None, :]
    x1, x2, rest = x[..., :half], x[..., half:rot], x[..., rot:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def causal_attention(q, k, v, n_heads, rotary_pct, rotary_base):
    """q, k, v [B, S, d] -> [B, S, d]: heads are contiguous column slices; no output projection."""
    b, s, d = q.shape
    hd = d // n_heads
    q = rotary(q.reshape(b, s, n_heads, hd), rotary_pct, rotary_base).transpose(1, 2)  # [B, H, S, hd]
    k = rotary(k.reshape(b, s, n_heads, hd), rotary_pct, rotary_base).transpose(1, 2)
    v = v.reshape(b, s, n_heads, hd).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(hd)
    future = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    weights = torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(b, s, d)


class Attention(torch.nn.Module):  # holds q, k, v so that the names are blocks.{i}.attn.{q,k,v}.*
    def __init__(self, c, dtype):
        super().__init__()
        self.q = MemoryLayer(c.d_model, c.d_model, c.tau, dtype)
        self.k = MemoryLayer(c.d_model, c.d_model, c.tau, dtype)
        self.v = MemoryLayer(c.d_model, c.d_model, c.tau, dtype)


class MemoryBlock(torch.nn.Module):
    """d -> (tau+e)K -> LayerNorm -> d, no activation (§2)."""

    def __init__(self, c, dtype):
        super().__init__()
        self.c = c
        self.up = MemoryLayer(c.d_model, c.memory_width, c.tau, dtype)
        self.norm = LayerNorm(c.memory_width, c.layernorm_eps, dtype)
        self.down = MemoryLayer(c.memory_width, c.d_model, c.tau + c.expand_bits, dtype)

    def forward(self, m, trace=None, prefix=""):
        c = self.c
        up_hash = sign_hash(m, c.tau, c.temperature, c.score)
        u = self.norm(self.up(*up_hash))
        down_hash = sign_hash(u, c.tau + c.expand_bits, c.temperature, c.score)
        if trace is not None:
            trace[prefix + ".up"] = (m.detach(), up_hash[0], c.tau)
            trace[prefix + ".down"] = (u.detach(), down_hash[0], c.tau + c.expand_bits)
        return self.down(*down_hash)


class MemoryFormerBlock(torch.nn.Module):
    def __init__(self, c, dtype):
        super().__init__()
        self.c = c
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps, dtype, c.rms_form)
        self.attn = Attention(c, dtype)
        self.mlp_norm = RMSNorm(c.d_model, c.norm_eps, dtype, c.rms_form)
        self.mlp = MemoryBlock(c, dtype)

    def forward(self, x, trace=None, prefix=""):
        """x [B, S, d] -> [B, S, d], docs/method.md §2 line by line."""
        c = self.c
        b, s, d = x.shape
        a = self.attn_norm(x).reshape(b * s, d)
        codes, scores = sign_hash(a, c.tau, c.temperature, c.score)  # hashed once for Q, K and V
        if trace is not None:
            trace[prefix + ".attn"] = (a.detach(), codes, c.tau)
        q, k, v = (layer(codes, scores).reshape(b, s, d) for layer in (self.attn.q, self.attn.k, self.attn.v))
        z = x + causal_attention(q, k, v, c.n_heads, c.rotary_pct, c.rotary_base)
        m = self.mlp_norm(z).reshape(b * s, d)
        return z + self.mlp(m, trace, prefix + ".mlp").reshape(b, s, d)


class MemoryFormerModel(torch.nn.Module):
    """Embedding -> blocks -> final RMSNorm -> untied LM head [V, d] (§3)."""

    def __init__(self, c, dtype=torch.float64):
        super().__init__()
        self.config = c
        self.embed = torch.nn.Embedding(c.vocab_size, c.d_model, dtype=dtype)
        self.blocks = torch.nn.ModuleList(MemoryFormerBlock(c, dtype) for _ in range(c.n_layers))
        self.final_norm = RMSNorm(c.d_model, c.norm_eps, dtype, c.rms_form)
        self.lm_head = torch.nn.Linear(c.d_model, c.vocab_size, bias=False, dtype=dtype)

    def forward(self, tokens, trace=None):
        """tokens [B, S] (int) -> logits [B * S, V]; row b * S + t predicts token t + 1 of sequence b.

        With a dict `trace`, records every hashed input by site ("blocks.{i}.attn", ".mlp.up",
        ".mlp.down") as (input [N, width], codes [N, K], bits), for checking hash margins."""
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() != 2 or tokens.numel() == 0:
            raise ValueError(f"forward: tokens shape {tuple(tokens.shape)}, expected [batch, seq], non-empty")
        if tokens.min() < 0 or tokens.max() >= self.config.vocab_size:
            raise ValueError(f"forward: token ids in [{int(tokens.min())}, {int(tokens.max())}],"
                             f" expected [0, {self.config.vocab_size})")
        x = self.embed(tokens)
        for i, block in enumerate(self.blocks):
            x = block(x, trace, f"blocks.{i}")
        return self.lm_head(self.final_norm(x)).reshape(-1, self.config.vocab_size)


def expected_shapes(c):
    """The §5 name -> shape of every tensor of a model with config c."""
    K, w = c.num_chunks, c.memory_width
    shapes = {"embed.weight": [c.vocab_size, c.d_model]}
    for i in range(c.n_layers):
        p = f"blocks.{i}."
        shapes[p + "attn_norm.weight"] = [c.d_model]
        for name in "qkv":
            shapes[p + f"attn.{name}.tables"] = [K, 2 ** c.tau, c.d_model]
            shapes[p + f"attn.{name}.bias"] = [c.d_model]
        shapes[p + "mlp_norm.weight"] = [c.d_model]
        shapes[p + "mlp.up.tables"] = [K, 2 ** c.tau, w]
        shapes[p + "mlp.up.bias"] = [w]
        shapes[p + "mlp.norm.weight"] = [w]
        shapes[p + "mlp.norm.bias"] = [w]
        shapes[p + "mlp.down.tables"] = [K, 2 ** (c.tau + c.expand_bits), c.d_model]
        shapes[p + "mlp.down.bias"] = [c.d_model]
    shapes["final_norm.weight"] = [c.d_model]
    shapes["lm_head.weight"] = [c.vocab_size, c.d_model]
    return shapes


def save_model(model, path, dtype=np.float32):
    """A §5 weight file: every parameter by name, format and config metadata (no checksums)."""
    tensors = {name: p.detach().cpu().numpy().astype(dtype) for name, p in model.named_parameters()}
    want = expected_shapes(model.config)
    if {n: list(t.shape) for n, t in tensors.items()} != want:  # the module layout is the §5 layout
        raise AssertionError("save_model: parameter names or shapes differ from docs/method.md §5")
    write_safetensors(path, tensors, {"format": "memoryformer", "config": model.config.to_json()})


def load_model(path, dtype=torch.float64):
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != "memoryformer":
        raise FormatError(f"{path}: __metadata__ format = {metadata.get('format')!r}, expected 'memoryformer'")
    if metadata.get("arch", "memoryformer") != "memoryformer":
        raise FormatError(f"{path}: __metadata__ arch = {metadata['arch']!r}, expected 'memoryformer'"
                          " (this reference implements the MemoryFormer block only)")
    if "config" not in metadata:
        raise FormatError(f"{path}: __metadata__ has no 'config' entry (docs/method.md §5)")
    config = Config.from_json(metadata["config"])
    want = expected_shapes(config)
    for name in tensors:
        if name not in want:
            raise FormatError(f"{path}: tensor {name!r} is not one of the model's (docs/method.md §5)")
    model = MemoryFormerModel(config, dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in tensors:
                raise FormatError(f"{path}: tensor {name!r} is missing")
            if list(tensors[name].shape) != want[name]:
                raise FormatError(f"{path}: tensor {name!r} shape {list(tensors[name].shape)}, expected {want[name]}")
            p.copy_(torch.from_numpy(tensors[name].astype(np.float64)))
    return model


def random_model(config, seed, dtype=torch.float64, round_to=np.float32):
    """A model initialised as docs/method.md §3 says, except that norm scales are 1 + 0.2 N(0,1) and the
    LayerNorm bias 0.1 N(0,1), so that their gradients are not degenerate. With `round_to`, every
    value is first rounded to that dtype, so a file written in it holds exactly this model."""
    gen = torch.Generator().manual_seed(seed)
    model = MemoryFormerModel(config, dtype)
    d = config.d_model
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if ".attn." in name and name.endswith(".tables"):
                value = noise * math.sqrt(2.0 / (5.0 * d))
            elif name.endswith(".tables") or name in ("embed.weight", "lm_head.weight"):
                value = noise * 0.02
            elif name.endswith("norm.weight"):
                value = 1.0 + 0.2 * noise
            elif name.endswith("norm.bias"):
                value = 0.1 * noise
            else:  # Memory Layer biases
                value = 0.001 * noise
            if round_to is not None:
                value = torch.from_numpy(value.numpy().astype(round_to).astype(np.float64))
            p.copy_(value)
    return model


def loss_and_grads(model, tokens, targets):
    """Mean next-token cross-entropy over all B * S tokens and {name: dL/dparam}."""
    model.zero_grad(set_to_none=True)
    logits = model(tokens)
    loss = F.cross_entropy(logits, torch.as_tensor(targets, dtype=torch.long).reshape(-1), reduction="mean")
    loss.backward()
    grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}
    return logits.detach(), loss.detach(), grads


# ---------------------------------------------------------------------------------------------
# Command line

def parse_tokens(text, what):
    """'1,2,3/4,5,6' -> [[1, 2, 3], [4, 5, 6]]; sequences of equal length."""
    try:
        rows = [[int(t) for t in seq.split(",")] for seq in text.split("/")]
    except ValueError:
        raise SystemExit(f"--{what} = {text!r}: expected integers, ',' between tokens, '/' between sequences")
    if len({len(r) for r in rows}) != 1:
        raise SystemExit(f"--{what} = {text!r}: sequences of lengths {[len(r) for r in rows]}, expected equal")
    return rows


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write a random model")
    init.add_argument("--config", required=True, help="JSON with the docs/method.md §5 config fields")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--out", required=True)
    init.add_argument("--dtype", choices=["F32", "F64"], default="F32")
    for name in ("logits", "loss"):
        p = sub.add_parser(name, help=f"print the {name} of a model on tokens")
        p.add_argument("--weights", required=True)
        p.add_argument("--tokens", required=True, help="e.g. 1,2,3/4,5,6")
        if name == "loss":
            p.add_argument("--targets", required=True, help="as --tokens")
    args = parser.parse_args(argv)

    torch.set_printoptions(precision=8)
    if args.command == "init":
        model = random_model(Config.from_json(args.config), args.seed)
        save_model(model, args.out, np.float32 if args.dtype == "F32" else np.float64)
        return
    model = load_model(args.weights)
    tokens = parse_tokens(args.tokens, "tokens")
    if args.command == "logits":
        with torch.no_grad():
            print(model(tokens).numpy())
    else:
        _, loss, grads = loss_and_grads(model, tokens, parse_tokens(args.targets, "targets"))
        print(f"loss {loss.item():.10g}")
        for name, g in grads.items():
            print(f"grad {name} norm {g.norm().item():.6g}")


if __name__ == "__main__":
    main(sys.argv[1:])
