"""The two halves of tools/aarch64_check.sh: a reference made on the x86 host, checked inside an arm64 root.

    python tools/aarch64_smoke.py reference OUT_DIR   # x86 host, with transformers: tiny random models + inputs +
                                                      # transformers' fp32 outputs, and an int8 checkpoint
    python tools/aarch64_smoke.py check REF_DIR       # aarch64 (under qemu): siglip's fp32 == the reference
                                                      # (<= 1e-5), bf16 cosine > 0.999, `siglip doctor --json`
                                                      # says aarch64, int8 refused with siglip.InputError

The models are tiny (hidden 48, 2 layers) SigLIP and SigLIP2-NaFlex built by transformers with random weights
(every parameter perturbed, so zero-initialised biases count too), fed real photos from tests/fixtures through
transformers' own image processors. Where transformers imports on the aarch64 side too, siglip is also compared
with it there (the same-machine oracle); the x86 reference is always checked. The last line printed is the
one-line summary, `aarch64 check: PASS ...` or `aarch64 check: FAIL ...`; `check` exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
PHOTOS = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg"]
TOL = 1e-5
BF16_MIN_COSINE = 0.999
OUTPUTS = ("image_embeds", "text_embeds", "logits_per_image", "vision_last_hidden_state", "text_last_hidden_state")

# name -> (model class name, config kwargs, image processor kwargs, text length)
MODELS = {
    "siglip": (
        "SiglipModel",
        dict(
            text_config=dict(vocab_size=128, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, max_position_embeddings=16),
            vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3,
                               image_size=64, patch_size=16),
        ),
        dict(size={"height": 64, "width": 64}),
        16,
    ),
    "siglip2_naflex": (
        "Siglip2Model",
        dict(
            text_config=dict(vocab_size=128, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, max_position_embeddings=16),
            vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3,
                               patch_size=8, num_patches=64),
        ),
        dict(patch_size=8, max_num_patches=64),
        16,
    ),
}  # fmt: skip


def log(message: str) -> None:
    print(message, flush=True)


def model_outputs(model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs)
    return {
        "image_embeds": out.image_embeds, "text_embeds": out.text_embeds, "logits_per_image": out.logits_per_image,
        "vision_last_hidden_state": out.vision_model_output.last_hidden_state,
        "text_last_hidden_state": out.text_model_output.last_hidden_state,
    }  # fmt: skip


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


def photos():
    from PIL import Image

    return [Image.open(FIXTURES / name).convert("RGB") for name in PHOTOS]


# ---- x86 side ------------------------------------------------------------------------------------------------
def reference(out: Path) -> int:
    import transformers
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "torch": torch.__version__, "transformers": transformers.__version__,
            "models": {}}  # fmt: skip
    for name, (cls_name, config_kwargs, processor_kwargs, length) in MODELS.items():
        start = time.perf_counter()
        torch.manual_seed(0)
        config_cls = getattr(transformers, cls_name.replace("Model", "Config"))
        model = getattr(transformers, cls_name)(config_cls(**config_kwargs)).eval()
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            model.logit_scale.fill_(2.3)
            model.logit_bias.fill_(-1.7)
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
        model.save_pretrained(out / name)
        processor_cls = getattr(transformers, cls_name.replace("Model", "ImageProcessor"))
        processor = processor_cls(**processor_kwargs)
        processor.save_pretrained(out / name)
        pixels = dict(processor(images=photos(), return_tensors="pt"))
        vocab = config_kwargs["text_config"]["vocab_size"]
        input_ids = torch.randint(0, vocab, (len(PHOTOS), length), generator=torch.Generator().manual_seed(0))
        inputs = {**pixels, "input_ids": input_ids}
        reference_model = getattr(transformers, cls_name).from_pretrained(out / name, attn_implementation="eager")
        expected = model_outputs(reference_model.eval(), inputs)
        save_file({**{f"input.{k}": v.contiguous() for k, v in inputs.items()},
                   **{f"expected.{k}": v.contiguous() for k, v in expected.items()}},
                  str(out / f"{name}.reference.safetensors"))  # fmt: skip
        entry = {"class": cls_name, "inputs": sorted(inputs), "seconds": round(time.perf_counter() - start, 2)}
        # An int8 checkpoint made here: on aarch64 loading it must be refused as clearly as quantize() is.
        try:
            import siglip

            int8 = getattr(siglip, cls_name).from_pretrained(out / name).quantize("int8")
            int8.save_pretrained(out / f"{name}-int8")
            entry["int8_checkpoint"] = f"{name}-int8"
        except Exception as error:  # noqa: BLE001 - reported, and the aarch64 side skips that one check
            entry["int8_checkpoint_error"] = f"{type(error).__name__}: {error}"
        meta["models"][name] = entry
        log(f"reference {name}: {entry}")
    (out / "reference.json").write_text(json.dumps(meta, indent=2))
    return 0


# ---- aarch64 side --------------------------------------------------------------------------------------------
class Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.facts: list[str] = []

    def expect(self, ok: bool, what: str) -> None:
        log(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failures.append(what)

    def run(self, what: str, function) -> None:
        """Run one step; an exception is a failure with its traceback printed (for the report)."""
        start = time.perf_counter()
        log(f"[{what}]")
        try:
            function()
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            sys.stdout.flush()
            self.failures.append(f"{what}: {traceback.format_exc().strip().splitlines()[-1]}")
        log(f"  ({time.perf_counter() - start:.1f} s)")


def check(ref: Path) -> int:
    from safetensors.torch import load_file

    import siglip

    total = time.perf_counter()
    checks = Checks()
    meta = json.loads((ref / "reference.json").read_text())
    log(f"machine {platform.machine()}, python {platform.python_version()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}; reference made on {meta['machine']} with torch {meta['torch']}, "
        f"transformers {meta['transformers']}")  # fmt: skip
    checks.expect(platform.machine() in ("aarch64", "arm64"), f"platform.machine() is aarch64 ({platform.machine()})")
    try:
        import transformers
    except Exception as error:  # noqa: BLE001
        transformers = None
        log(f"transformers does not import here ({type(error).__name__}: {error}): x86 reference only")

    def platform_gemm():
        """torch's own fp32 GEMMs against float64, on the small shapes the tiny models use: a failure here is the
        platform's (torch, or qemu's emulation of the CPU model), not siglip's."""
        generator = torch.Generator().manual_seed(0)
        worst_gemm = 0.0
        for rows in (1, 4, 16, 64):
            for inner, outer in ((48, 48), (48, 96), (96, 48)):
                a = torch.randn(rows, inner, generator=generator)
                w, b = torch.randn(outer, inner, generator=generator), torch.randn(outer, generator=generator)
                exact = a.double() @ w.double().T + b.double()
                worst_gemm = max(worst_gemm, (torch.nn.functional.linear(a, w, b).double() - exact).abs().max().item())
        worst["torch_gemm"] = worst_gemm
        checks.expect(
            worst_gemm <= 1e-4, f"torch's own fp32 F.linear vs float64 (not siglip): max|diff| {worst_gemm:.1e}"
        )

    worst = {"torch_gemm": 0.0, "fp32_vs_x86": 0.0, "fp32_vs_transformers_here": 0.0, "pixels": 0.0, "bf16_cos": 1.0}

    checks.run("platform: torch fp32 GEMM", platform_gemm)
    for name, entry in meta["models"].items():
        cls_name = entry["class"]
        cls = getattr(siglip, cls_name)
        data = load_file(str(ref / f"{name}.reference.safetensors"))
        inputs = {k.removeprefix("input."): v for k, v in data.items() if k.startswith("input.")}
        expected = {k.removeprefix("expected."): v for k, v in data.items() if k.startswith("expected.")}
        state: dict = {}

        def fp32(name=name, cls=cls, inputs=inputs, expected=expected, state=state):
            start = time.perf_counter()
            state["model"] = model = cls.from_pretrained(ref / name)
            state["fp32"] = ours = model_outputs(model, inputs)
            diffs = {key: max_diff(ours[key], expected[key]) for key in OUTPUTS}
            worst["fp32_vs_x86"] = max(worst["fp32_vs_x86"], *diffs.values())
            checks.expect(max(diffs.values()) <= TOL, f"{name} fp32 vs transformers on x86: max|diff| "
                          f"{max(diffs.values()):.2e} <= {TOL:g} ({time.perf_counter() - start:.1f} s) {diffs}")  # fmt: skip

        def oracle_here(name=name, cls_name=cls_name, inputs=inputs, expected=expected, state=state):
            theirs_model = getattr(transformers, cls_name).from_pretrained(ref / name, attn_implementation="eager")
            theirs = model_outputs(theirs_model.eval(), inputs)
            diffs = {key: max_diff(state["fp32"][key], theirs[key]) for key in OUTPUTS}
            worst["fp32_vs_transformers_here"] = max(worst["fp32_vs_transformers_here"], *diffs.values())
            checks.expect(max(diffs.values()) <= TOL, f"{name} fp32 vs transformers on aarch64: max|diff| "
                          f"{max(diffs.values()):.2e} <= {TOL:g}")  # fmt: skip
            across = max(max_diff(theirs[key], expected[key]) for key in OUTPUTS)
            log(f"  info transformers aarch64 vs transformers x86: max|diff| {across:.2e}")

        def pixels(name=name, cls_name=cls_name, inputs=inputs):
            processor = getattr(siglip, cls_name.replace("Model", "ImageProcessor")).from_pretrained(ref / name)
            ours = processor(images=photos(), return_tensors="pt")
            diff = max(max_diff(ours[key], inputs[key]) for key in inputs if key != "input_ids")
            worst["pixels"] = max(worst["pixels"], diff)
            checks.expect(diff <= TOL, f"{name} siglip image processor vs transformers' on x86: max|diff| {diff:.2e}")

        def bf16(name=name, cls=cls, inputs=inputs, state=state):
            start = time.perf_counter()
            model = cls.from_pretrained(ref / name, dtype=torch.bfloat16)
            half = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ours = model_outputs(model, half)
            for warning in caught:  # reported, not failed: e.g. torch's own bf16 fallbacks on CPUs without bf16
                where = f"{Path(warning.filename).parent.name}/{Path(warning.filename).name}:{warning.lineno}"
                log(f"  warn {where}: {str(warning.message).splitlines()[0][:200]}")
            cos = min(min_cosine(ours[key], state["fp32"][key]) for key in ("image_embeds", "text_embeds"))
            worst["bf16_cos"] = min(worst["bf16_cos"], cos)
            checks.expect(cos > BF16_MIN_COSINE, f"{name} bf16 vs fp32 embeddings: cosine min {cos:.6f} > "
                          f"{BF16_MIN_COSINE} ({time.perf_counter() - start:.1f} s)")  # fmt: skip

        def int8(name=name, cls=cls, entry=entry, state=state, inputs=inputs):
            attempts = {
                "model.quantize('int8')": lambda: state["model"].quantize("int8"),
                "from_pretrained(quantization='int8')": lambda: cls.from_pretrained(ref / name, quantization="int8"),
            }
            if "int8_checkpoint" in entry:
                # Refused at load, or else at its first forward (the check says which).
                def load_and_run():
                    model = cls.from_pretrained(ref / entry["int8_checkpoint"])
                    log("  note an int8 checkpoint saved on x86 loads here without an error; its first forward:")
                    model_outputs(model, inputs)

                attempts["from_pretrained(an int8 checkpoint saved on x86)"] = load_and_run
            else:
                log(f"  skip int8 checkpoint reload: none was made on x86 ({entry.get('int8_checkpoint_error')})")
            for what, attempt in attempts.items():
                try:
                    attempt()
                except siglip.InputError as error:
                    message = str(error)
                    clear = "int8" in message and platform.machine() in message
                    checks.expect(clear, f"{name} {what} raises InputError: {message}")
                except Exception as error:  # noqa: BLE001
                    traceback.print_exc()
                    checks.expect(False, f"{name} {what} raised {type(error).__name__} (not InputError): {error}")
                else:
                    checks.expect(False, f"{name} {what} was not refused on {platform.machine()}")

        checks.run(f"{name} fp32", fp32)
        if "model" in state:
            if transformers is not None:
                checks.run(f"{name} transformers oracle on aarch64", oracle_here)
            checks.run(f"{name} image processor", pixels)
            checks.run(f"{name} bf16", bf16)
            checks.run(f"{name} int8 refused", int8)

    doctor: dict = {}

    def run_doctor():
        result = subprocess.run([sys.executable, "-m", "siglip", "doctor", "--json"], capture_output=True, text=True,
                                timeout=900)  # fmt: skip
        log(result.stdout)
        if result.returncode != 0:
            log(result.stderr)
        checks.expect(result.returncode == 0, f"python -m siglip doctor --json exits 0 (got {result.returncode})")
        doctor.update(json.loads(result.stdout))
        cpu = doctor["cpu"]
        checks.expect(cpu["machine"] in ("aarch64", "arm64"), f"doctor: machine {cpu['machine']}")
        checks.expect(cpu["int8_supported"] is False, f"doctor: int8_supported {cpu['int8_supported']}")
        int8_row = [row for row in doctor.get("kernels", []) if row.get("dtype") == "int8"]
        checks.expect(bool(int8_row) and not int8_row[0].get("available", True),
                      f"doctor: int8 kernel row says unavailable ({int8_row[0] if int8_row else 'missing'})")  # fmt: skip

    checks.run("siglip doctor --json", run_doctor)
    cpu = doctor.get("cpu", {})
    isa = (f"doctor machine={cpu.get('machine')} onednn_isa={cpu.get('onednn_isa')} "
           f"aten={cpu.get('aten_capability')} native_bf16={cpu.get('native_bf16')} "
           f"int8_supported={cpu.get('int8_supported')}")  # fmt: skip
    here = "n/a" if transformers is None else f"{worst['fp32_vs_transformers_here']:.2e}"
    qemu = f"QEMU_CPU={os.environ['QEMU_CPU']}; " if os.environ.get("QEMU_CPU") else ""
    summary = (f"{qemu}torch GEMM {worst['torch_gemm']:.1e}; fp32 max|diff| {worst['fp32_vs_x86']:.2e} vs x86 transformers, {here} vs aarch64 transformers; "
               f"pixels {worst['pixels']:.2e}; bf16 cosine min {worst['bf16_cos']:.6f}; {isa}; "
               f"{time.perf_counter() - total:.0f} s")  # fmt: skip
    if checks.failures:
        log("failures:\n  " + "\n  ".join(checks.failures))
        log(f"aarch64 check: FAIL ({len(checks.failures)} failed) {summary}")
        return 1
    log(f"aarch64 check: PASS {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["reference", "check"])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return reference(args.folder) if args.mode == "reference" else check(args.folder)


if __name__ == "__main__":
    sys.exit(main())
