#!/usr/bin/python3
"""Cross-checks of the C++ library against the PyTorch reference (tools/memoryformer_ref.py).

Groups (each one ctest test, label "interop"):
  selftest        the reference against docs/method.md's own statements: the §1 bit-order examples,
                  closed-form p against the explicit 2^tau-way softmax, the §1 gradient formulas
                  (Eq. 12) against autograd, safetensors and §5 model-file round trips.
  python-to-cpp   random tiny models written by the reference (no checksums, no "arch") are run by
                  the C++ library (interop_driver forward-backward): logits, loss and every
                  parameter gradient must match the float64 reference. --score picks the mode;
                  each runs tau 4 and 8 with expand bits 0, 1, 2 (and temperatures 1, 0.5, 2).
  cpp-to-python   models initialised and written by C++ (interop_driver init) load in the
                  reference with the logits C++ computed from the model in memory, and the same
                  gradients.
  cli-logits      `memoryformer logits` (the command-line tool, --cli) on models the reference
                  wrote gives the reference's logits.

Errors are relative to the tensor's scale: max|cpp - ref| / max|ref| per tensor; each case prints
its logits, loss and worst gradient error. Hashing is discontinuous at z = 0, so a float32 rounding
difference could flip a bucket: every case draws its model and tokens until the smallest |z| of
every hashed input is at least MARGIN times its row's RMS (in the reference), and the driver's
bucket codes are compared exactly, so a flip is reported as a flip, never as a large error.

Run: /usr/bin/python3 tests/interop/check_interop.py --driver build/dev/tests/interop/interop_driver
     --work /tmp/interop GROUP [--score paper|l1]
"""

import argparse
import itertools
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import memoryformer_ref as ref  # noqa: E402

TOLERANCE = 2e-5  # float32 C++ vs float64 reference, relative to each tensor's largest value
MARGIN = 1e-4     # smallest |z| / row RMS accepted for a hashed input (see the docstring)
BATCH, SEQ = 2, 6


class CheckFailed(Exception):
    pass


def tiny_config(score, tau, expand_bits, temperature, rotary_pct=0.25, vocab=13):
    # d 32, 2 heads: head_dim 16, so rotary turns 4 (or 8) dims; K = 8 (tau 4) or 4 (tau 8).
    return ref.Config(vocab_size=vocab, d_model=32, n_layers=2, n_heads=2, tau=tau, expand_bits=expand_bits,
                      rotary_pct=rotary_pct, score=score, temperature=temperature)


def token_string(rows):
    return "/".join(",".join(str(int(t)) for t in row) for row in rows)


def hash_margin(model, tokens):
    """min over every hashed value of |z| / RMS of its row, and where it is."""
    trace = {}
    with torch.no_grad():
        model(tokens, trace)
    worst = (math.inf, None)
    for site, (x, _, _) in trace.items():
        rms = x.pow(2).mean(-1, keepdim=True).sqrt()
        ratio = (x.abs() / rms).min().item()
        worst = min(worst, (ratio, site), key=lambda w: w[0])
    return worst


def draw_tokens(model, gen, vocab):
    """Tokens and targets whose hashes keep MARGIN for this model, or None after 50 tries."""
    for _ in range(50):
        tokens = torch.randint(vocab, (BATCH, SEQ), generator=gen)
        if hash_margin(model, tokens)[0] >= MARGIN:
            return tokens, torch.randint(vocab, (BATCH, SEQ), generator=gen)
    return None


def draw_reference_model(config, gen, round_to):
    """A random reference model (values rounded to round_to) with tokens and targets that keep MARGIN."""
    for attempt in range(20):
        model = ref.random_model(config, seed=int(torch.randint(2 ** 31, (1,), generator=gen)), round_to=round_to)
        drawn = draw_tokens(model, gen, config.vocab_size)
        if drawn:
            return model, drawn
    raise CheckFailed(f"no model and tokens with hash margin {MARGIN} in 20 x 50 draws")


def run_driver(driver, *args):
    proc = subprocess.run([driver, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckFailed(f"interop_driver {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")


def relative_error(cpp, reference):
    cpp = np.asarray(cpp, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if cpp.shape != reference.shape:
        raise CheckFailed(f"shape {list(cpp.shape)} from C++, expected {list(reference.shape)}")
    scale = max(np.abs(reference).max(initial=0.0), 1e-30)
    return float(np.abs(cpp - reference).max(initial=0.0) / scale)


def compare_codes(model, tokens, result):
    """Bucket codes of every hash site, C++ against the reference; a flip names its place."""
    trace = {}
    with torch.no_grad():
        model(tokens, trace)
    for site, (x, codes, bits) in trace.items():
        theirs = result["codes." + site]
        mismatch = np.argwhere(theirs != codes.numpy())
        if mismatch.size:
            n, k = mismatch[0]
            z = x[n, k * bits:(k + 1) * bits].numpy()
            raise CheckFailed(f"bucket codes differ at {site} in {len(mismatch)} of {codes.numel()} places; first: "
                              f"token {n} chunk {k}, C++ code {theirs[n, k]}, reference {int(codes[n, k])}, z = {z}"
                              " (one place with a z_j near 0 is a rounding flip; many mean a different hash)")


def compare(model, tokens, targets, result, label):
    """Logits, loss and every gradient of result (from the driver) against the reference."""
    logits, loss, grads = ref.loss_and_grads(model, tokens, targets)
    errors = {"logits": relative_error(result["logits"], logits.numpy())}
    if "loss" in result:
        errors["loss"] = relative_error(result["loss"], loss.numpy())
        grad_errors = {name: relative_error(result["grad." + name], g.numpy()) for name, g in grads.items()}
        worst = max(grad_errors, key=grad_errors.get)
        errors["grad"] = grad_errors[worst]
        missing = set(k[5:] for k in result if k.startswith("grad.")) ^ set(grads)
        if missing:
            raise CheckFailed(f"{label}: gradient names differ between C++ and the reference: {sorted(missing)}")
    else:
        worst = None
    margin, site = hash_margin(model, tokens)
    line = f"{label}: hash margin {margin:.1e} ({site})\n    logits {errors['logits']:.2e}"
    if "loss" in errors:
        line += f"  loss {errors['loss']:.2e}  grad {errors['grad']:.2e} ({worst})"
    print(line, flush=True)
    compare_codes(model, tokens, result)  # after the errors are printed: a flip explains them
    bad = {k: v for k, v in errors.items() if not v <= TOLERANCE}
    if bad:
        raise CheckFailed(f"{label}: relative errors {bad} exceed {TOLERANCE}")
    return errors


# ---------------------------------------------------------------------------------------------

def python_to_cpp(driver, work, score):
    worst = 0.0
    for tau, e in itertools.product((4, 8), (0, 1, 2)):
        temperature, rotary_pct = [(1.0, 0.25), (0.5, 0.5), (2.0, 0.25)][e]
        config = tiny_config(score, tau, e, temperature, rotary_pct)
        dtype = np.float64 if (tau, e) == (4, 2) else np.float32  # one file in F64: the loader converts
        gen = torch.Generator().manual_seed(1000 * tau + 10 * e + (score == "l1"))
        model, (tokens, targets) = draw_reference_model(config, gen, dtype)
        label = f"python->cpp {score:5s} tau {tau} e {e} t {temperature} {np.dtype(dtype).name}"
        path = os.path.join(work, f"py_{score}_{tau}_{e}.safetensors")
        out = os.path.join(work, f"py_{score}_{tau}_{e}.result.safetensors")
        ref.save_model(model, path, dtype)
        run_driver(driver, "forward-backward", "--weights", path, "--tokens", token_string(tokens),
                   "--targets", token_string(targets), "--out", out)
        result, _ = ref.read_safetensors(out)
        worst = max(worst, max(compare(model, tokens, targets, result, label).values()))
    print(f"python->cpp {score}: worst relative error {worst:.2e} (tolerance {TOLERANCE})")


def cpp_to_python(driver, work):
    worst = 0.0
    cases = [("paper", 4, 2, 1.0), ("l1", 8, 1, 0.75)]
    for score, tau, e, temperature in cases:
        config = tiny_config(score, tau, e, temperature)
        gen = torch.Generator().manual_seed(7 + tau)
        path = os.path.join(work, f"cpp_{score}_{tau}_{e}.safetensors")
        for seed in range(1, 21):
            run_driver(driver, "init", "--config", config.to_json(), "--seed", str(seed), "--out", path)
            model = ref.load_model(path)
            drawn = draw_tokens(model, gen, config.vocab_size)
            if drawn:
                break
        else:
            raise CheckFailed(f"no C++ model and tokens with hash margin {MARGIN} in 20 x 50 draws")
        tokens, targets = drawn
        label = f"cpp->python {score:5s} tau {tau} e {e} t {temperature} seed {seed}"
        # Logits of the model in memory (written alongside the file), then gradients of the loaded file.
        logits_out = os.path.join(work, f"cpp_{score}_{tau}_{e}.logits.safetensors")
        run_driver(driver, "init", "--config", config.to_json(), "--seed", str(seed), "--out", path,
                   "--tokens", token_string(tokens), "--logits-out", logits_out)
        model = ref.load_model(path)
        result, _ = ref.read_safetensors(logits_out)
        worst = max(worst, max(compare(model, tokens, targets, result, label + " (in memory)").values()))
        grads_out = os.path.join(work, f"cpp_{score}_{tau}_{e}.result.safetensors")
        run_driver(driver, "forward-backward", "--weights", path, "--tokens", token_string(tokens),
                   "--targets", token_string(targets), "--out", grads_out)
        result, _ = ref.read_safetensors(grads_out)
        worst = max(worst, max(compare(model, tokens, targets, result, label + " (loaded)").values()))
    print(f"cpp->python: worst relative error {worst:.2e} (tolerance {TOLERANCE})")


# ---------------------------------------------------------------------------------------------
# The reference against docs/method.md itself: what makes it a reference rather than a second opinion.

def cli_logits(cli, work):
    worst = 0.0
    for score, tau, e in (("paper", 8, 2), ("l1", 4, 1)):
        config = tiny_config(score, tau, e, 1.0)
        gen = torch.Generator().manual_seed(77 + tau)
        model, (tokens, _) = draw_reference_model(config, gen, np.float32)
        tokens = tokens[:1]  # the CLI runs one sequence; the margin held for the whole batch
        path = os.path.join(work, f"cli_{score}_{tau}_{e}.safetensors")
        out = os.path.join(work, f"cli_{score}_{tau}_{e}.logits.safetensors")
        ref.save_model(model, path, np.float32)
        args = [cli, "logits", "--weights", path, "--tokens", ",".join(str(int(t)) for t in tokens[0]), "--out", out]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CheckFailed(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        result, _ = ref.read_safetensors(out)
        with torch.no_grad():
            want = model(tokens).numpy()
        error = relative_error(result["logits"], want)
        print(f"cli logits {score:5s} tau {tau} e {e}: relative error {error:.2e}", flush=True)
        if not error <= TOLERANCE:
            raise CheckFailed(f"cli logits {score} tau {tau} e {e}: relative error {error:.2e} exceeds {TOLERANCE}")
        worst = max(worst, error)
    print(f"cli-logits: worst relative error {worst:.2e} (tolerance {TOLERANCE})")


def expect(ok, what):
    if not ok:
        raise CheckFailed(what)
    print(f"ok: {what}")


def selftest(work):
    torch.manual_seed(0)
    # §1 step 2: MSB-first examples, and zero counts as positive.
    for z, code in (([0.7, -0.1], 2), ([-1.1, -2.7, 0.6], 1), ([3.4, -1.9, -2.3], 4), ([0.0, -1.0], 2)):
        got = ref.sign_hash(torch.tensor([z], dtype=torch.float64), len(z), 1.0, "paper")[0].item()
        expect(got == code, f"sign_hash({z}) = {got}, docs/method.md §1 says {code}")

    # §1 step 3 / §4: closed-form p equals the explicit 2^tau-way softmax of <z, c> / t at c = sign(z).
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=8)), dtype=torch.float64)  # [256, 8]
    for t in (1.0, 0.5, 3.0):
        z = torch.randn(5, 8, dtype=torch.float64)
        explicit = torch.softmax(z @ signs.T / t, dim=-1)  # [5, 256]
        chosen = [(signs == torch.where(row >= 0, 1.0, -1.0)).all(-1).nonzero().item() for row in z]
        want = explicit[torch.arange(5), chosen]
        got = ref.sign_hash(z, 8, t, "paper")[1][:, 0]
        expect(torch.allclose(got, want, rtol=1e-12, atol=0), f"closed-form p = explicit softmax (tau 8, t {t})")

    # §1 Gradients (Eq. 12), written out by hand, against autograd, away from z = 0.
    for score, t in itertools.product(("paper", "l1"), (1.0, 0.7)):
        bits, k_chunks, h, n = 4, 3, 5, 7
        layer = ref.MemoryLayer(bits * k_chunks, h, bits)
        with torch.no_grad():
            layer.tables.normal_()
            layer.bias.normal_()
        x = torch.randn(n, bits * k_chunks, dtype=torch.float64)
        x = torch.where(x.abs() < 0.05, x.sign() * 0.05 + x, x).requires_grad_(True)
        g = torch.randn(n, h, dtype=torch.float64)
        codes, scores = ref.sign_hash(x, bits, t, score)
        (layer(codes, scores) * g).sum().backward()
        with torch.no_grad():
            z = x.reshape(n, k_chunks, bits)
            sign = torch.where(z >= 0, 1.0, -1.0).double()
            p = torch.sigmoid(2 * z.abs() / t).prod(-1, keepdim=True)
            dp = p * (2 / t) * sign * torch.sigmoid(-2 * z.abs() / t)
            l1 = z.abs().sum(-1, keepdim=True)
            s = p if score == "paper" else l1 * p
            ds_dz = dp if score == "paper" else sign * p + l1 * dp
            rows = layer.tables[torch.arange(k_chunks), codes]  # [n, K, h]
            ds = torch.einsum("nh,nkh->nk", g, rows)
            dx = (ds[..., None] * ds_dz).reshape(n, -1)
            dtables = torch.zeros_like(layer.tables)
            for i in range(n):
                for k in range(k_chunks):
                    dtables[k, codes[i, k]] += s[i, k, 0] * g[i]
        expect(torch.allclose(x.grad, dx, rtol=1e-12, atol=1e-14)
               and torch.allclose(layer.tables.grad, dtables, rtol=1e-12, atol=1e-14)
               and torch.allclose(layer.bias.grad, g.sum(0), rtol=1e-12, atol=1e-14),
               f"Eq. 12 gradients by hand = autograd ({score}, t {t})")

    # safetensors: every dtype round-trips; BF16 reads as the upper half of a float32.
    path = os.path.join(work, "selftest.safetensors")
    arrays = {"f64": np.arange(6.0).reshape(2, 3), "f32": np.float32([[1.5, -2.0]]), "i32": np.int32([3, -4]),
              "u8": np.uint8([1, 255]), "scalar": np.float64(2.5).reshape(())}
    ref.write_safetensors(path, arrays, {"format": "test"})
    back, meta = ref.read_safetensors(path)
    expect(meta == {"format": "test"} and all(np.array_equal(back[k], v) and back[k].dtype == v.dtype
                                               for k, v in arrays.items()), "safetensors round trip")
    with open(path, "rb") as f:
        expect(int.from_bytes(f.read(8), "little") % 8 == 0, "header padded to 8 bytes")

    # §5 model file: names and shapes, metadata, round trip; a stray or missing tensor is an error.
    config = tiny_config("l1", 4, 1, 0.75)
    model = ref.random_model(config, seed=5)
    path = os.path.join(work, "selftest_model.safetensors")
    ref.save_model(model, path)
    tensors, meta = ref.read_safetensors(path)
    expect(set(meta) == {"format", "config"} and ref.Config.from_json(meta["config"]).to_json() == config.to_json(),
           "model file metadata: format and config only")
    tokens = torch.randint(config.vocab_size, (BATCH, SEQ))
    with torch.no_grad():
        expect(torch.equal(ref.load_model(path)(tokens), model(tokens)), "model file round trip: same logits")
        # Causality: a later token never changes earlier logits.
        changed = tokens.clone()
        changed[:, -1] = (changed[:, -1] + 1) % config.vocab_size
        a, b = model(tokens).reshape(BATCH, SEQ, -1), model(changed).reshape(BATCH, SEQ, -1)
        expect(torch.equal(a[:, :-1], b[:, :-1]) and not torch.equal(a[:, -1], b[:, -1]), "causal attention")
    for mutate, what in ((lambda t: t.update(extra=np.zeros(1, np.float32)), "extra tensor"),
                         (lambda t: t.pop("final_norm.weight"), "missing tensor")):
        broken = dict(tensors)
        mutate(broken)
        ref.write_safetensors(path, broken, meta)
        try:
            ref.load_model(path)
            raise CheckFailed(f"load_model accepted a file with an {what}")
        except ref.FormatError as e:
            print(f"ok: {what} rejected: {e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("group", choices=["selftest", "python-to-cpp", "cpp-to-python", "cli-logits"])
    parser.add_argument("--driver", help="path of interop_driver (python-to-cpp, cpp-to-python)")
    parser.add_argument("--cli", help="path of the memoryformer executable (cli-logits)")
    parser.add_argument("--work", required=True, help="directory for the files exchanged")
    parser.add_argument("--score", choices=["paper", "l1"], default="paper", help="python-to-cpp only")
    args = parser.parse_args()
    if args.group in ("python-to-cpp", "cpp-to-python") and not args.driver:
        parser.error(f"{args.group} needs --driver")
    if args.group == "cli-logits" and not args.cli:
        parser.error("cli-logits needs --cli")
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(1)  # tiny tensors; other tests share the cores
    start = time.time()
    try:
        if args.group == "selftest":
            selftest(args.work)
        elif args.group == "cli-logits":
            cli_logits(args.cli, args.work)
        elif args.group == "python-to-cpp":
            python_to_cpp(args.driver, args.work, args.score)
        else:
            cpp_to_python(args.driver, args.work)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"{args.group}: passed in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
