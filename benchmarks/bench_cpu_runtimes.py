"""siglip vs ONNX Runtime, OpenVINO (+ NNCF) and torch on CPU: fp32, bf16 and int8 towers side by side.

    python benchmarks/bench_cpu_runtimes.py [--towers vision,text] [--batch 32] [--rounds 5] [--threads 2]
                                            [--only SUBSTRING ...] [--quick] [--out FILE]

Every contender (cpu_runtimes.py) holds the same random base-patch16-224 weights: transformers builds and saves
each tower; siglip and transformers load the folder, ONNX Runtime and OpenVINO read the ONNX file siglip's
exporter writes from it (and, in the rows marked "transformers' graph", transformers' own tower exported by
`torch.onnx.export`, as a user without siglip would run it). Speed: after a warm-up call each, `--rounds` interleaved rounds (every contender once
per round, the order reversed every other round) on one batch; the median per contender. Accuracy: cosine of
each contender's embeddings to transformers fp32, min and mean, on real photos (tests/fixtures and
/work/shared/data photos, deduplicated, and their mirror images, through siglip's SiglipImageProcessor) for the
image tower, on the timing batch's token ids for the text tower. Static int8 scales (siglip, NNCF PTQ) are
calibrated on corner crops of the same photos. The GEMM peaks (fp32 and bf16 `F.linear`, int8 the faster of
`torch._int_mm` and oneDNN's u8 x s8 kernel, over the tower's own shapes) and the load other processes put on the CPUs during the run are
measured in the same run, and each table ends with the rate those peaks allow with every GEMM at its peak and
nothing else (the GEMM-peak bound), and where 1.1x the int8 peer lies against it. Missing optional runtimes are skipped with a message (pip install '.[bench]').
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import statistics
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_models import PEAK_BLOCK_ROWS, gemm_peak, make_inputs, timed
from cpu_runtimes import CONTENDERS, TOWER_CLASSES, Run, Setup, Skip
from PIL import ImageOps
from summary import machine, record

import siglip
from siglip.image.loading import load_image
from siglip.kernels.plan import cpuid_masked_to

ROOT = Path(__file__).resolve().parents[1]
PHOTO_DIRS = [ROOT / "tests" / "fixtures", Path("/work/shared/data"), Path("/work/shared/data/images")]
PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg"}
UNITS = {"vision": "img/s", "text": "texts/s"}
# the int8 contender each tower's target (issue 18) is measured against
INT8_PEERS = {
    "vision": "OpenVINO int8 post-training quantization (NNCF)",
    "text": "ONNX Runtime int8 dynamic (QInt8 weights)",
}
# the instruction-set caps a run was made under, written before the command it records (emulating a lower CPU)
ISA_CAPS = ("FBGEMM_ENABLE_INSTRUCTIONS", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
TEXT_TOKENS = 64  # base-patch16-224's max_position_embeddings: texts padded to full length, as the processor does


# ---- inputs ------------------------------------------------------------------------------------------------
def photos() -> list[Path]:
    """Every distinct PNG/JPEG photo of the fixture and shared data folders (same bytes counted once)."""
    seen, found = set(), []
    for folder in PHOTO_DIRS:
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.suffix.lower() in PHOTO_SUFFIXES and path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest not in seen:
                    seen.add(digest)
                    found.append(path)
    return found


def photo_sets(paths: list[Path], calibration_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(evaluation pixel_values: the photos and their mirror images, calibration: 70 % corner crops of them)."""
    processor = siglip.SiglipImageProcessor()
    images = [load_image(path) for path in paths]
    evaluation = images + [ImageOps.mirror(image) for image in images]
    crops = []
    for image in images:
        width, height = image.size
        w, h = int(width * 0.7), int(height * 0.7)
        crops += [image.crop((x, y, x + w, y + h)) for x in (0, width - w) for y in (0, height - h)]
    pixels = processor(images=evaluation + crops[:calibration_count], return_tensors="pt")["pixel_values"]
    return pixels[: len(evaluation)], pixels[len(evaluation) :]


# ---- machine -----------------------------------------------------------------------------------------------
class LoadMeter:
    """CPU time the *other* processes used while we ran, in cores: (all busy CPU time - ours) / wall time."""

    def __init__(self) -> None:
        self.start = (time.perf_counter(), self._busy(), time.process_time())

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def others(self) -> float:
        wall, busy, ours = (
            now - then for now, then in zip((time.perf_counter(), self._busy(), time.process_time()), self.start)
        )
        return max(0.0, (busy - ours) / wall)


def int8_peak(config, rows: int, repeats: int) -> float:
    """GOP/s of the faster int8 GEMM over one layer's GEMM shapes, the rows taken PEAK_BLOCK_ROWS at a time (over
    a whole batch the wide shapes' outputs, 6272 x 3072 x 4 bytes, leave the cache and the GEMM measures the
    memory: 541 against 870 GOP/s on the EPYC, not the kernel): `torch._int_mm` (s8 x s8 -> s32, fast with
    VNNI / AMX) or the u8 x s8 -> fp32 oneDNN kernel siglip's int8 linears run (`onednn.qlinear_pointwise`),
    which is the fast one on CPUs without VNNI (there `_int_mm` ran at 5 GOP/s on the Xeon with CPUID masked to
    AVX2)."""
    hidden, inner = config.hidden_size, config.intermediate_size
    shapes = [(hidden, hidden)] * 4 + [(hidden, inner), (inner, hidden)]  # (in, out)
    weights = [torch.randint(-63, 64, shape, dtype=torch.int8) for shape in shapes]
    signed = {size: torch.randint(-127, 128, (rows, size), dtype=torch.int8) for size in (hidden, inner)}
    unsigned = {size: torch.randint(0, 256, (rows, size), dtype=torch.uint8) for size in (hidden, inner)}
    operations = sum(2 * rows * weight.numel() for weight in weights)
    packed = [
        (torch.ops.onednn.qlinear_prepack(weight.t().contiguous(), None), torch.full((weight.shape[1],), 0.01),
         torch.zeros(weight.shape[1], dtype=torch.long), weight.shape[0])
        for weight in weights
    ]  # fmt: skip

    def int_mm() -> None:
        for weight in weights:
            for start in range(0, rows, PEAK_BLOCK_ROWS):
                torch._int_mm(signed[weight.shape[0]][start : start + PEAK_BLOCK_ROWS], weight)

    def qlinear() -> None:
        for weight, scale, zero_points, size in packed:
            for start in range(0, rows, PEAK_BLOCK_ROWS):
                torch.ops.onednn.qlinear_pointwise(
                    unsigned[size][start : start + PEAK_BLOCK_ROWS], 0.01, 128, weight, scale, zero_points, None,
                    1.0, 0, torch.float32, "none", [], "",
                )  # fmt: skip

    best = 0.0
    for run in (int_mm, qlinear):
        run()
        best = max(best, operations / min(timed(run) for _ in range(repeats)) / 1e9)
    return best


def tower_work(config, tower: str, tokens: int) -> tuple[float, float]:
    """(linear ops, attention-product ops) per image or text, counted as 2 x multiply-adds. The text tower's last
    layer runs q/k/v over every position and the rest at the last one (as siglip, and the export, do)."""
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    rest = hidden * hidden + 2 * hidden * inner  # out_proj + fc1 + fc2 per token
    linears = layers * tokens * (3 * hidden * hidden + rest)
    attention = layers * 2 * tokens * tokens * hidden
    if tower == "vision":
        linears += tokens * config.num_channels * config.patch_size**2 * hidden  # patch embedding
    else:  # the last layer: its attention output, residuals and MLP at one position
        linears -= (tokens - 1) * rest
        attention -= 2 * (tokens - 1) * tokens * hidden
    return 2.0 * linears, 2.0 * attention


def median_rates(result: dict) -> dict[str, float]:
    """Items per second of each timed contender, from its median round."""
    return {label: result["batch"] / statistics.median(seconds) for label, seconds in result["times"].items()}


def bound_line(tower: str, result: dict) -> str:
    """The rate GEMMs at this run's peaks allow with nothing else, and where 1.1x the int8 peer lies."""
    linears, attention = result["work"]
    peaks, unit = result["peaks"], UNITS[tower]
    int8 = 1 / (linears / (peaks["int8"] * 1e9) + attention / (max(peaks["bf16"]) * 1e9))
    bf16 = max(peaks["bf16"]) * 1e9 / (linears + attention)
    line = (
        f"GEMM-peak bound (this run's peaks, every GEMM at its peak and nothing else): int8 linears with bf16 "
        f"attention products {int8:.1f} {unit}, all bf16 {bf16:.1f} {unit} ({linears / 1e9:.1f} G linear and "
        f"{attention / 1e9:.1f} G attention ops per item)."
    )
    rates = median_rates(result)
    peer = INT8_PEERS[tower]
    if peer in rates:
        line += f" 1.1x {peer.split(' (')[0]} is {1.1 * rates[peer]:.1f} {unit}: {1.1 * rates[peer] / int8:.0%} of it."
    return line


# ---- one tower ---------------------------------------------------------------------------------------------
def run_tower(tower: str, args: argparse.Namespace, evaluation: torch.Tensor, calibration: torch.Tensor) -> dict:
    """Build every contender for `tower`, time them in interleaved rounds, measure accuracy; return the rows.
    The tower's weights and exports (~0.5 GB) live in a scratch folder removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=f"cpu_runtimes_{tower}_"))
    try:
        return _run_tower(tower, args, evaluation, calibration, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_tower(
    tower: str, args: argparse.Namespace, evaluation: torch.Tensor, calibration: torch.Tensor, folder: Path
) -> dict:
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, TOWER_CLASSES[tower][0].replace("Model", "Config"))()
    getattr(transformers, TOWER_CLASSES[tower][0])(config).eval().save_pretrained(folder)
    tokens = (config.image_size // config.patch_size) ** 2 if tower == "vision" else TEXT_TOKENS
    batch = make_inputs(tower, config, args.batch, tokens)
    if tower == "text":  # the timing ids double as the accuracy set; calibrate on other ids
        evaluation = batch["input_ids"]
        generator = torch.Generator().manual_seed(2)
        calibration = torch.randint(0, config.vocab_size, (len(calibration), tokens), generator=generator)
    scratch = folder / "scratch"  # exports and quantised copies, removed with the folder
    scratch.mkdir()
    setup = Setup(tower=tower, folder=folder, threads=args.threads, calibration=calibration, scratch=scratch)
    name = setup.input_name

    runs: dict[str, Run] = {}
    notes: dict[str, str] = {}
    kept_float: dict[str, tuple[int, int]] = {}  # siglip int8 rows: (linears the self-check kept float, linears)
    with torch.inference_mode():
        for label, build in CONTENDERS:
            if args.only and not any(part.lower() in label.lower() for part in args.only) and runs:
                continue  # `--only` filters; the first contender (transformers fp32, the oracle) always runs
            started = time.perf_counter()
            try:
                run = build(setup)
                run(batch)  # warm-up (and the first call's one-off costs: packing, compilation)
                runs[label] = run
                if hasattr(run, "kept_float"):
                    kept_float[label] = run.kept_float
                print(f"  {tower}: {label} ready ({time.perf_counter() - started:.0f} s)", flush=True)
            except Skip as reason:
                notes[label] = f"skipped: {reason}"
                print(f"  {tower}: {label} SKIPPED: {reason}", flush=True)
            except Exception as error:  # a runtime failing on this model is a row to report, not a crash
                notes[label] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
                print(f"  {tower}: {label} FAILED\n{traceback.format_exc()}", flush=True)

        reference = runs["transformers eager fp32"]({name: evaluation})
        accuracy = {}
        for label, run in runs.items():
            output = torch.cat([run({name: part}) for part in evaluation.split(args.batch)])
            cosine = F.cosine_similarity(output, reference, dim=-1)
            accuracy[label] = (cosine.min().item(), cosine.mean().item())

        meter = LoadMeter()
        times: dict[str, list[float]] = {label: [] for label in runs}
        order = list(runs)
        for round_index in range(args.rounds):
            for label in order if round_index % 2 == 0 else order[::-1]:
                times[label].append(timed(lambda run=runs[label]: run(batch)))
        load = meter.others()

    rows = args.batch * tokens
    peaks = {
        "fp32": gemm_peak(config, rows, torch.float32, args.rounds),
        "bf16": gemm_peak(config, rows, torch.bfloat16, args.rounds),
        "int8": int8_peak(config, rows, args.rounds),
    }
    return {
        "times": times, "accuracy": accuracy, "notes": notes, "kept_float": kept_float, "load": load, "peaks": peaks, "batch": args.batch,
        "work": tower_work(config, tower, tokens),
    }  # fmt: skip


def table(tower: str, result: dict) -> list[str]:
    """The markdown rows of one tower: rate (median), ratio to siglip fp32, cosine min / mean, spread."""
    unit, batch = UNITS[tower], result["batch"]
    rates = median_rates(result)
    base = rates.get("siglip fp32 (default)")
    lines = [
        f"| {tower} contender | {unit} (median) | vs siglip fp32 | cosine min | cosine mean | slowest/fastest round |",
        "|---|---|---|---|---|---|",
    ]
    for label, _ in CONTENDERS:
        if label in rates:
            low, mean = result["accuracy"][label]
            seconds = result["times"][label]
            ratio = f"{rates[label] / base:.2f}x" if base else "-"
            lines.append(
                f"| {label} | {rates[label]:.1f} | {ratio} | {low:.5f} | {mean:.5f} | {max(seconds) / min(seconds):.2f} |"
            )
        elif label in result["notes"]:
            lines.append(f"| {label} | - | - | - | - | {result['notes'][label]} |")
    kept = [f"{label}: {n} of {total}" for label, (n, total) in result.get("kept_float", {}).items() if label in rates]
    if kept:
        lines.append("\nLinears the int8 self-check (`min_cosine=0.999`) kept float: " + "; ".join(kept) + ".")
    peaks = result["peaks"]
    lines.append(
        f"\nGEMM peaks, {tower} shapes ({batch} x tokens rows), same run: fp32 {max(peaks['fp32']):.0f} GFLOP/s, "
        f"bf16 {max(peaks['bf16']):.0f} GFLOP/s (best of F.linear / packed oneDNN), int8 "
        f"{peaks['int8']:.0f} GOP/s (the faster of `torch._int_mm` and oneDNN's u8 x s8 kernel; rows in blocks of {PEAK_BLOCK_ROWS}). Other processes' CPU load during the timed rounds: {result['load']:.2f} cores."
    )
    lines.append("\n" + bound_line(tower, result))
    return lines


def headline(tower: str, result: dict) -> None:
    """The issue's targets as summary rows for run_all.py (only where both sides ran)."""
    rates = median_rates(result)
    unit = UNITS[tower]
    ours = (
        max((rates[label], label) for label in rates if label.startswith("siglip int8"))
        if any(label.startswith("siglip int8") for label in rates)
        else None
    )
    peer = INT8_PEERS[tower]
    if ours and peer in rates:
        record(
            f"CPU {tower} tower int8 vs {peer.split(' (')[0]}",
            ours[0],
            rates[peer],
            unit,
            target=">= 1.1x",
            note=ours[1],
        )
    if "siglip bf16" in rates and "OpenVINO bf16 (throughput hint)" in rates:
        record(
            f"CPU {tower} tower bf16 vs OpenVINO bf16",
            rates["siglip bf16"],
            rates["OpenVINO bf16 (throughput hint)"],
            unit,
            target=">= 1.05x",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--towers", default="vision,text")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=32, help="calibration crops for static int8 scales")
    parser.add_argument("--only", nargs="+", help="run only contenders whose label contains one of these")
    parser.add_argument("--quick", action="store_true", help="batch 4, 2 rounds, 8 calibration crops: a smoke run")
    parser.add_argument("--out", type=Path, help="append the tables to this markdown file")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.rounds, args.calibration = 4, 2, 8
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    found = photos()
    evaluation, calibration = photo_sets(found, args.calibration)
    header = (
        f"{machine()}; batch {args.batch}, {args.rounds} interleaved rounds; accuracy on {len(found)} photos + "
        f"mirror images ({len(evaluation)} images), static int8 calibrated on {len(calibration)} crops; "
        f"load average before: {' '.join(f'{value:.2f}' for value in os.getloadavg())}"
    )
    print(header, flush=True)
    sections = []
    for tower in args.towers.split(","):
        result = run_tower(tower, args, evaluation, calibration)
        lines = table(tower, result)
        print("\n".join(lines), flush=True)
        headline(tower, result)
        sections += ["", *lines]
    if args.out:
        emulated = cpuid_masked_to()
        caps = [f"tools/cpu_emulation/as_cpu.sh {emulated}"] if emulated else []
        # the libraries' own caps, beyond the one as_cpu.sh sets itself
        caps = [
            f"{name}={os.environ[name]}"
            for name in ISA_CAPS
            if os.environ.get(name) and not (emulated and name == "ONEDNN_MAX_CPU_ISA" and os.environ[name] == emulated)
        ] + caps
        command = " ".join(
            [
                *caps,
                "python benchmarks/bench_cpu_runtimes.py",
                f"--towers {args.towers}",
                f"--batch {args.batch}",
                f"--rounds {args.rounds}",
                f"--threads {args.threads}",
                f"--calibration {args.calibration}",
                *([f"--only {shlex.join(args.only)}"] if args.only else []),
            ]
        )
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(["", f"`{command}`", "", header, *sections, ""]))


if __name__ == "__main__":
    main()
