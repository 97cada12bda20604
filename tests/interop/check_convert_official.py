#!/usr/bin/python3
"""tools/convert_official.py against a model with the released code's structure and numerics
(released_memoryformer.py): the converted file, run by `memoryformer logits`, must give that
module's logits to 1e-4 relative (score l1, tau 8, e = 2, the released RMSNorm).

Cases: a plain state_dict in fp16 with the vocabulary trimmed; a DeepSpeed-style checkpoint
(weights under "module", next to objects of a module the converter cannot import) with the padding
kept and the rotary buffer present; the released YAML config for the flags; bf16 tables; and
errors (an unknown tensor, a missing one, a rotary buffer that disagrees with the flags), which
must name the tensor, exit non-zero and write nothing.

Run: /usr/bin/python3 tests/interop/check_convert_official.py --cli build/dev/tools/memoryformer --work /tmp/conv
"""

import argparse
import os
import subprocess
import sys
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
sys.path.insert(0, HERE)
import memoryformer_ref as ref  # noqa: E402
from released_memoryformer import ReleasedMemoryFormer  # noqa: E402

CONVERTER = os.path.join(HERE, "..", "..", "tools", "convert_official.py")
TOLERANCE = 1e-4
MARGIN = 1e-3  # smallest |z| / row RMS of any hashed input: float32 C++ and float64 here agree on every bucket
D, LAYERS, HEADS, TAU, VOCAB, PADDED = 32, 2, 2, 8, 50, 64
RMS_EPS = 1e-2  # large, so that eps inside the root (the library's default form) would fail the check


class CheckFailed(Exception):
    pass


def margin_of(model, tokens):
    worst = float("inf")
    for _, x, _ in model.hash_inputs(tokens):
        rms = x.pow(2).mean(-1, keepdim=True).sqrt()
        worst = min(worst, float((x.abs() / rms).min()))
    return worst


def released_model(seed):
    """A random released-style model stored in fp16 (as the released code saves), and tokens whose
    hashed inputs all keep MARGIN from zero, drawing again until they do."""
    for attempt in range(200):
        gen = torch.Generator().manual_seed(seed * 1000 + attempt)
        model = ReleasedMemoryFormer(PADDED, D, LAYERS, HEADS, TAU, rms_eps=RMS_EPS)
        model.randomise(gen)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.half().double())  # the values an fp16 checkpoint holds
        tokens = torch.randint(0, VOCAB, (7,), generator=gen)
        if margin_of(model, tokens) >= MARGIN:
            return model, tokens
    raise CheckFailed(f"no model with hash margin >= {MARGIN} in 200 draws")


def fp16_state(model):
    return {k: v.half() for k, v in model.state_dict().items()}


def run(args, expect_ok=True):
    result = subprocess.run(args, capture_output=True, text=True)
    if expect_ok and result.returncode != 0:
        raise CheckFailed(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def convert(work, state_path, out, *flags, expect_ok=True):
    return run([sys.executable, CONVERTER, "--in", state_path, "--out", out, *flags], expect_ok)


def cli_logits(cli, weights, tokens, work):
    out = os.path.join(work, "logits.safetensors")
    run([cli, "logits", "--weights", weights, "--tokens", ",".join(str(int(t)) for t in tokens), "--out", out])
    return ref.read_safetensors(out)[0]["logits"].astype(np.float64)


def compare(label, got, want, tolerance):
    error = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"{label}: relative error {error:.2e} (tolerance {tolerance:.0e})", flush=True)
    if got.shape != want.shape:
        raise CheckFailed(f"{label}: logits shape {got.shape}, expected {want.shape}")
    if not error <= tolerance:
        raise CheckFailed(f"{label}: relative error {error:.2e} exceeds {tolerance:.0e}")


def expect_refusal(label, result, out, words):
    text = result.stdout + result.stderr
    if result.returncode == 0:
        raise CheckFailed(f"{label}: the converter succeeded, expected an error naming {words}")
    missing = [w for w in words if w not in text]
    if missing:
        raise CheckFailed(f"{label}: the error does not name {missing}:\n{text}")
    if os.path.exists(out):
        raise CheckFailed(f"{label}: {out} was written although the conversion failed")
    leftovers = [f for f in os.listdir(os.path.dirname(out)) if f.startswith(".convert_official.")]
    if leftovers:
        raise CheckFailed(f"{label}: temporary files left behind: {leftovers}")
    print(f"{label}: refused, naming {words}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cli", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    flags = ["--heads", str(HEADS), "--rms-eps", str(RMS_EPS)]

    model, tokens = released_model(1)
    with torch.no_grad():
        want = model(tokens).numpy()
    print(f"model: d {D}, {LAYERS} layers, {HEADS} heads, tau {TAU}, e 2, vocab {VOCAB} padded to {PADDED};"
          f" hash margin {margin_of(model, tokens):.1e}", flush=True)

    # 1. torch.save(state_dict()) in fp16, vocabulary trimmed to the tokenizer's size.
    plain = os.path.join(args.work, "state_dict.pt")
    torch.save(fp16_state(model), plain)
    out = os.path.join(args.work, "plain.safetensors")
    convert(args.work, plain, out, *flags, "--vocab-size", str(VOCAB))
    _, metadata = ref.read_safetensors(out)
    config = ref.Config.from_json(metadata["config"])
    for field, value in (("vocab_size", VOCAB), ("tau", TAU), ("expand_bits", 2), ("score", "l1"),
                         ("rms_form", "eps_after_root"), ("embedding_init", "small_init"), ("n_heads", HEADS)):
        if getattr(config, field) != value:
            raise CheckFailed(f"plain: config {field} = {getattr(config, field)!r}, expected {value!r}")
    compare("state_dict, fp16 widened, vocab trimmed", cli_logits(args.cli, out, tokens, args.work),
            want[:, :VOCAB], TOLERANCE)

    # 2. DeepSpeed layout: weights under "module" beside objects of a module the converter lacks,
    #    the rotary buffer saved too, the padding kept; flags from the released YAML config.
    fake = types.ModuleType("released_training_args")

    class NeoXArgs:  # pickled by reference to a module that does not exist in the converter's process
        def __init__(self):
            self.lr = 3e-3

    NeoXArgs.__module__, NeoXArgs.__qualname__ = "released_training_args", "NeoXArgs"
    fake.NeoXArgs = NeoXArgs
    sys.modules["released_training_args"] = fake
    state = fp16_state(model)
    rot = int(D // HEADS * 0.25)
    for i in range(LAYERS):
        state[f"sequential.{i + 2}.attention.rotary_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, rot, 2).float() / rot)
    deepspeed = os.path.join(args.work, "mp_rank_00_model_states.pt")
    torch.save({"module": state, "args": NeoXArgs(), "iteration": 5, "dp_world_size": 1}, deepspeed)
    del sys.modules["released_training_args"]
    yaml_path = os.path.join(args.work, "memoryformer_test.yml")
    with open(yaml_path, "w") as f:
        f.write('{\n  # the released format: JSON-like YAML with comments and trailing commas\n'
                f'  "num-layers": {LAYERS},\n  "hidden-size": {D},\n  "num-attention-heads": {HEADS},\n'
                f'  "rotary-pct": 0.25,\n  "norm": "rmsnorm",\n  "rms-norm-epsilon": {RMS_EPS},\n'
                '  "attn_memory_config": {\n    "remove_projection": true,\n    "del_dense": true,\n  },\n}\n')
    out = os.path.join(args.work, "deepspeed.safetensors")
    convert(args.work, deepspeed, out, "--config", yaml_path)
    compare("DeepSpeed checkpoint, YAML config, vocab padded", cli_logits(args.cli, out, tokens, args.work), want,
            TOLERANCE)

    # 3. bf16 tables: fp16 -> bf16 keeps 8 significant bits, so only a loose bound holds.
    out = os.path.join(args.work, "bf16.safetensors")
    convert(args.work, plain, out, *flags, "--tables", "bf16")
    tensors, metadata = ref.read_safetensors(out)
    if metadata.get("tables") != "bf16":
        raise CheckFailed(f"bf16: metadata tables = {metadata.get('tables')!r}, expected 'bf16'")
    compare("bf16 tables", cli_logits(args.cli, out, tokens, args.work), want, 1e-2)

    # 4. Refusals: nothing written, the offending tensor or flag named.
    out = os.path.join(args.work, "refused.safetensors")
    bad = fp16_state(model)
    bad["sequential.2.attention.dense.weight"] = torch.zeros(D, D, dtype=torch.float16)
    torch.save(bad, os.path.join(args.work, "unknown.pt"))
    expect_refusal("unknown tensor", convert(args.work, os.path.join(args.work, "unknown.pt"), out, *flags,
                                             expect_ok=False), out, ["sequential.2.attention.dense.weight"])
    bad = fp16_state(model)
    del bad["sequential.3.mlp.1.bias"]
    torch.save(bad, os.path.join(args.work, "missing.pt"))
    expect_refusal("missing tensor", convert(args.work, os.path.join(args.work, "missing.pt"), out, *flags,
                                             expect_ok=False), out, ["layer 3", "mlp.1.bias"])
    expect_refusal("rotary buffer against the flags",
                   convert(args.work, deepspeed, out, "--heads", "4", expect_ok=False), out,
                   ["rotary_emb.inv_freq", "--heads 4"])
    expect_refusal("heads not dividing d", convert(args.work, plain, out, "--heads", "3", expect_ok=False), out,
                   ["n_heads", "3"])
    print("convert-official: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
