#!/usr/bin/python3
"""Converts weights trained with the authors' released MemoryFormer code (a GPT-NeoX fork) into this
library's safetensors model file (docs/method.md §5), with the released numerics set in its config.

    /usr/bin/python3 tools/convert_official.py --in STATE.pt --out M.safetensors [--tables fp32|bf16]
        [--config memoryformer_tiny.yml] [--heads 8] [--rotary-pct 0.25] [--rotary-base 10000]
        [--rms-eps 1e-8] [--layernorm-eps 1e-5] [--vocab-size N] [--tau N]

STATE.pt is either a torch.save of the model's state_dict() or a DeepSpeed checkpoint
(mp_rank_00_model_states.pt) whose weights sit under "module". Keys may carry a "module." and a
"sequential." prefix; after them comes the NeoX layer index: the embedding, the transformer layers
in index order, the final norm and the LM head. Read per layer (the released tiny and small
configs: hashing without projection, no attention output projection, Memory Block with extra bits):

    input_layernorm.scale                 -> blocks.{i}.attn_norm.weight
    attention.{query,key,value}_proj.*    -> blocks.{i}.attn.{q,k,v}.{tables,bias}
    post_attention_layernorm.scale        -> blocks.{i}.mlp_norm.weight
    mlp.0.* / mlp.1.* / mlp.2.*           -> blocks.{i}.mlp.up.* / mlp.norm.* / mlp.down.*
    word_embeddings.weight, norm.scale, final_linear.weight -> embed.weight, final_norm.weight, lm_head.weight

Tables [K * 2^bits, width] become [K, 2^bits, width]; the rows keep their order, since both codes
put a chunk's first element in the highest bit. tau, K and the expanding bits come from the shapes
(--tau only where they are ambiguous, tau 1 and 2); what the shapes cannot tell comes from the
flags, whose defaults are the released tiny config's, or from --config (the released YAML; flags
given explicitly win). fp16 values are widened to fp32; --tables bf16 stores the tables as bf16
(fp16 -> bf16 rounds to 8 significant bits). The vocabulary keeps NeoX's padding unless
--vocab-size trims the embedding and head to the tokenizer's size.

The config records score "l1" at temperature 1, rms_form "eps_after_root" and embedding_init
"small_init" (docs/method.md §6). Any tensor the converter does not know, or one it misses, is an
error naming it, and nothing is written; the output appears atomically.
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memoryformer_ref as ref  # noqa: E402  (safetensors writer, Config validation)

RELEASED_TINY = {"heads": 8, "rotary_pct": 0.25, "rotary_base": 10000.0, "rms_eps": 1e-8, "layernorm_eps": 1e-5}
KEY = re.compile(r"^(?:module\.)?(?:sequential\.)?(\d+)\.(.+)$")
BLOCK_TENSORS = ("input_layernorm.scale", "post_attention_layernorm.scale",
                 "attention.query_proj.tables", "attention.query_proj.bias",
                 "attention.key_proj.tables", "attention.key_proj.bias",
                 "attention.value_proj.tables", "attention.value_proj.bias",
                 "mlp.0.tables", "mlp.0.bias", "mlp.1.weight", "mlp.1.bias", "mlp.2.tables", "mlp.2.bias")
OPTIONAL_BLOCK_TENSORS = ("attention.rotary_emb.inv_freq",)  # NeoX saves it with rotary_save_freqs_buffer
OUTER_TENSORS = {"word_embeddings.weight": "embed", "norm.scale": "final_norm", "final_linear.weight": "lm_head"}


class ConversionError(Exception):
    pass


class _Opaque:
    """Stands in for a class the checkpoint pickled but this process cannot import (NeoX args,
    DeepSpeed state): only the tensors under "module" are read."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _PlaceholderModule(types.ModuleType):
    """A module the checkpoint names but this process lacks: every attribute is _Opaque."""

    __path__ = []  # a package, so that its submodules can be placeholders too

    def __getattr__(self, name):
        return _Opaque


def _torch_load(path):
    """torch.load, with a placeholder for each missing module the pickle names (torch 1.13 ignores
    a custom pickle_module, so unknown classes cannot be mapped in the unpickler)."""
    added = []
    try:
        while True:
            try:
                return torch.load(path, map_location="cpu")
            except ModuleNotFoundError as e:
                if not e.name or e.name in sys.modules or len(added) > 50:
                    raise
                sys.modules[e.name] = _PlaceholderModule(e.name)
                added.append(e.name)
    finally:
        for name in added:
            del sys.modules[name]


def load_state_dict(path):
    try:
        obj = _torch_load(path)
    except FileNotFoundError:
        raise ConversionError(f"--in {path}: no such file") from None
    except Exception as e:  # a corrupt or foreign file: say what torch said
        raise ConversionError(f"--in {path}: not a PyTorch checkpoint torch.load can read: {e}") from None
    if isinstance(obj, dict) and isinstance(obj.get("module"), dict):
        obj = obj["module"]  # DeepSpeed: mp_rank_00_model_states.pt
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"--in {path}: expected a state_dict (name -> tensor) or a DeepSpeed checkpoint "
                              "with one under 'module'")
    return obj


def read_released_config(path):
    """The released YAML config (NeoX's JSON-like YAML with # comments and trailing commas)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConversionError(f"--config {path}: {e.strerror}") from None
    try:
        import yaml  # Debian python3-yaml, when installed
        config = yaml.safe_load(text)
    except ImportError:
        lines = [re.sub(r"\s#.*$|^#.*$", "", line) for line in text.splitlines()]
        try:
            config = json.loads(re.sub(r",(\s*[}\]])", r"\1", "\n".join(lines)))
        except json.JSONDecodeError as e:
            raise ConversionError(f"--config {path}: cannot read it as NeoX's JSON-like YAML ({e});"
                                  " install python3-yaml for full YAML") from None
    except Exception as e:
        raise ConversionError(f"--config {path}: not YAML: {e}") from None
    if not isinstance(config, dict):
        raise ConversionError(f"--config {path}: expected a mapping of settings")
    return {k.replace("_", "-"): v for k, v in config.items()}


def settings_from_config(config, path):
    """Flag values the released config gives, and a check that it describes a model we can run."""
    def need(ok, what):
        if not ok:
            raise ConversionError(f"--config {path}: {what}")
    need(config.get("norm", "rmsnorm") == "rmsnorm", f"norm = {config.get('norm')!r}, expected 'rmsnorm'")
    need(config.get("pos-emb", "rotary") == "rotary", f"pos-emb = {config.get('pos-emb')!r}, expected 'rotary'")
    attn = config.get("attn-memory-config", config.get("attn_memory_config", {})) or {}
    for key, want in (("fc_qkv", False), ("remove_projection", True), ("shared_projection", False), ("del_dense", True)):
        need(attn.get(key, want) == want, f"attn_memory_config.{key} = {attn.get(key)!r}, expected {want!r}"
             " (the library's block: hashing without projection, no output projection)")
    settings = {}
    for flag, key in (("heads", "num-attention-heads"), ("rotary_pct", "rotary-pct"),
                      ("rotary_base", "rotary-emb-base"), ("rms_eps", "rms-norm-epsilon")):
        if key in config:
            settings[flag] = config[key]
    return settings, config.get("num-layers"), config.get("hidden-size")


def split_keys(state):
    """{index: {suffix: tensor}} by NeoX layer index; unparsable keys are errors."""
    layers = {}
    bad = [k for k in state if not KEY.match(k)]
    if bad:
        raise ConversionError(f"unknown tensors {bad[:5]}: expected '[module.][sequential.]<layer index>.<name>'")
    for key, value in state.items():
        index, suffix = KEY.match(key).groups()
        layers.setdefault(int(index), {})[suffix] = (key, value)
    return layers


def find_tau(rows, d, given):
    candidates = [t for t in range(1, 17) if d % t == 0 and (d // t) << t == rows]
    if given:
        if given not in candidates:
            raise ConversionError(f"--tau {given}: the Q tables have {rows} rows, not (d / tau) 2^tau for d = {d}")
        return given
    if not candidates:
        raise ConversionError(f"attention.query_proj.tables has {rows} rows: no tau in 1..16 gives (d / tau) 2^tau"
                              f" = {rows} for d = {d}")
    if len(candidates) > 1:
        raise ConversionError(f"tau is ambiguous from the shapes (any of {candidates}); pass --tau")
    return candidates[0]


def convert(args):
    state = load_state_dict(args.input)
    layers = split_keys(state)
    outer, blocks = {}, []
    for index in sorted(layers):
        names = layers[index]
        if "input_layernorm.scale" in names:
            unknown = sorted(set(names) - set(BLOCK_TENSORS) - set(OPTIONAL_BLOCK_TENSORS))
            missing = sorted(set(BLOCK_TENSORS) - set(names))
            if unknown:
                raise ConversionError(f"unknown tensors {[names[s][0] for s in unknown]} in layer {index}: this converter"
                                      " reads the released MemoryFormer block (no hashing projection, no dense"
                                      " attention output, no norm bias)")
            if missing:
                raise ConversionError(f"layer {index} lacks tensors {missing}")
            blocks.append(names)
            continue
        for suffix, (key, value) in names.items():
            if suffix not in OUTER_TENSORS:
                raise ConversionError(f"unknown tensor {key!r}: expected a transformer layer's tensors or one of"
                                      f" {sorted(OUTER_TENSORS)}")
            role = OUTER_TENSORS[suffix]
            if role in outer:
                raise ConversionError(f"tensor {key!r}: a second {suffix} (the first is {outer[role][0]!r})")
            outer[role] = (key, value)
    missing = [s for s, role in OUTER_TENSORS.items() if role not in outer]
    if missing:
        raise ConversionError(f"missing tensors {missing} (embedding, final norm or LM head)")
    if not blocks:
        raise ConversionError("no transformer layer found (no '<index>.input_layernorm.scale')")

    settings = dict(RELEASED_TINY)
    if args.config:
        from_config, n_layers, hidden = settings_from_config(read_released_config(args.config), args.config)
        settings.update(from_config)
    settings.update({k: v for k, v in vars(args).items() if k in RELEASED_TINY and v is not None})

    embed = outer["embed"][1]
    padded_vocab, d = (int(n) for n in embed.shape)
    if args.config and hidden is not None and hidden != d:
        raise ConversionError(f"--config: hidden-size {hidden}, but {outer['embed'][0]} is {d} wide")
    if args.config and n_layers is not None and n_layers != len(blocks):
        raise ConversionError(f"--config: num-layers {n_layers}, but the state dict has {len(blocks)} layers")
    tau = find_tau(int(blocks[0]["attention.query_proj.tables"][1].shape[0]), d, args.tau)
    K = d // tau
    down_rows = int(blocks[0]["mlp.2.tables"][1].shape[0])
    expand = [e for e in range(0, 17 - tau) if K << (tau + e) == down_rows]
    if not expand:
        raise ConversionError(f"{blocks[0]['mlp.2.tables'][0]}: {down_rows} rows, not K 2^(tau + e) for K = {K},"
                              f" tau = {tau} and any e with tau + e <= 16")
    vocab = padded_vocab
    if args.vocab_size is not None:
        if not 1 <= args.vocab_size <= padded_vocab:
            raise ConversionError(f"--vocab-size {args.vocab_size}: expected 1..{padded_vocab}, the padded vocabulary")
        vocab = args.vocab_size
    try:
        config = ref.Config(vocab_size=vocab, d_model=d, n_layers=len(blocks), n_heads=int(settings["heads"]),
                            tau=tau, expand_bits=expand[0], rotary_pct=float(settings["rotary_pct"]),
                            rotary_base=float(settings["rotary_base"]), score="l1", temperature=1.0,
                            norm_eps=float(settings["rms_eps"]), layernorm_eps=float(settings["layernorm_eps"]),
                            rms_form="eps_after_root", embedding_init="small_init")
    except ValueError as e:
        raise ConversionError(f"the flags and shapes give no valid config: {e}") from None

    rot = math.floor(config.rotary_pct * config.head_dim)
    want_freq = 1.0 / config.rotary_base ** (np.arange(0, rot, 2) / rot)
    for names in blocks:
        if "attention.rotary_emb.inv_freq" in names:
            key, freq = names["attention.rotary_emb.inv_freq"]
            freq = freq.double().numpy()
            if freq.shape != want_freq.shape or not np.allclose(freq, want_freq, rtol=1e-3):
                raise ConversionError(f"{key} = {np.array2string(freq, precision=4)} is not the rotary of --heads"
                                      f" {config.n_heads}, --rotary-pct {config.rotary_pct}, --rotary-base"
                                      f" {config.rotary_base} ({np.array2string(want_freq, precision=4)})")

    shapes = ref.expected_shapes(config)
    bf16 = args.tables == "bf16"

    def value(name, key, tensor, rows=None):
        array = tensor.detach().to(torch.float32)
        if name in ("embed.weight", "lm_head.weight"):
            array = array[:vocab]
        if name.endswith(".tables"):
            array = array.reshape(shapes[name]) if array.numel() == math.prod(shapes[name]) else array
        if list(array.shape) != shapes[name]:
            raise ConversionError(f"tensor {key!r}: shape {list(tensor.shape)}, expected {shapes[name]} for {name}")
        if bf16 and name.endswith(".tables"):
            return ref.BF16(array.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
        return array.numpy()

    tensors = {"embed.weight": value("embed.weight", *outer["embed"])}
    for i, names in enumerate(blocks):
        p = f"blocks.{i}."
        for ours, theirs in (("attn_norm.weight", "input_layernorm.scale"),
                             ("attn.q.tables", "attention.query_proj.tables"), ("attn.q.bias", "attention.query_proj.bias"),
                             ("attn.k.tables", "attention.key_proj.tables"), ("attn.k.bias", "attention.key_proj.bias"),
                             ("attn.v.tables", "attention.value_proj.tables"), ("attn.v.bias", "attention.value_proj.bias"),
                             ("mlp_norm.weight", "post_attention_layernorm.scale"),
                             ("mlp.up.tables", "mlp.0.tables"), ("mlp.up.bias", "mlp.0.bias"),
                             ("mlp.norm.weight", "mlp.1.weight"), ("mlp.norm.bias", "mlp.1.bias"),
                             ("mlp.down.tables", "mlp.2.tables"), ("mlp.down.bias", "mlp.2.bias")):
            tensors[p + ours] = value(p + ours, *names[theirs])
    tensors["final_norm.weight"] = value("final_norm.weight", *outer["final_norm"])
    tensors["lm_head.weight"] = value("lm_head.weight", *outer["lm_head"])
    nonfinite = [n for n, t in tensors.items() if not isinstance(t, ref.BF16) and not np.isfinite(t).all()]
    if nonfinite:
        raise ConversionError(f"tensors {nonfinite[:5]} hold inf or NaN")

    metadata = {"format": "memoryformer", "arch": "memoryformer", "config": config.to_json(),
                "converted_from": os.path.basename(args.input)}
    if bf16:
        metadata["tables"] = "bf16"
    folder = os.path.dirname(os.path.abspath(args.out))
    fd, temp = tempfile.mkstemp(prefix=".convert_official.", dir=folder)
    os.close(fd)
    try:
        ref.write_safetensors(temp, tensors, metadata)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temp, args.out)
    except BaseException:
        os.unlink(temp)
        raise
    return config, padded_vocab


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--in", dest="input", required=True, help="state_dict .pt or DeepSpeed mp_rank_00_model_states.pt")
    parser.add_argument("--out", required=True, help="safetensors model file to write")
    parser.add_argument("--tables", choices=("fp32", "bf16"), default="fp32", help="table storage (default fp32)")
    parser.add_argument("--config", help="the released code's YAML config (memoryformer_tiny.yml); flags win")
    parser.add_argument("--heads", type=int, help="attention heads (default 8, the released tiny config)")
    parser.add_argument("--rotary-pct", type=float, help="share of each head's dims rotated (default 0.25)")
    parser.add_argument("--rotary-base", type=float, help="rotary base (default 10000)")
    parser.add_argument("--rms-eps", type=float, help="RMSNorm eps, added after the root (default 1e-8)")
    parser.add_argument("--layernorm-eps", type=float, help="the Memory Block's LayerNorm eps (default 1e-5)")
    parser.add_argument("--vocab-size", type=int, help="trim the padded vocabulary to this size (default: keep)")
    parser.add_argument("--tau", type=int, help="bits per chunk, only when the shapes leave it ambiguous")
    args = parser.parse_args(argv)
    try:
        config, padded = convert(args)
    except ConversionError as e:
        print(f"convert_official: {e}; nothing written", file=sys.stderr)
        return 1
    print(f"convert_official: wrote {args.out}: {config.n_layers} layers, d {config.d_model}, {config.n_heads} heads,"
          f" tau {config.tau}, expand_bits {config.expand_bits}, vocab {config.vocab_size}"
          f" ({'trimmed from' if config.vocab_size != padded else 'padded, as'} {padded}), tables {args.tables}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
