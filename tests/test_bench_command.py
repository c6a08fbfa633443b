"""`dslnas bench`: what it reports, on CPU with a tiny NB201 (C=4, N=1, batch 8, 2 steps).

Speed is measured by the command, never asserted here: the tests check the report's keys, that
its values are sane and consistent with each other, and the error handling.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import attrs
import pytest
import torch

from dslnas import cli
from dslnas.search.bench import BenchResult, count_flops, format_result, peak_tflops

NB201 = Path(__file__).resolve().parents[1] / "spaces" / "nb201.nas"
TINY = ["--set", "C=4", "--set", "N=1", "--batch-size", "8", "--steps", "2", "--warmup", "1",
        "--device", "cpu"]

# every key docs/performance.md documents
KEYS = {
    "space", "method", "device", "device_name", "torch_version", "threads", "dataset",
    "batch_size", "steps", "epoch", "warmup", "order", "inner_steps", "channels_last",
    "fused", "cuda_graphs", "compiled", "compile_s", "compiled_graphs", "timing", "notes",
    "weight_step_ms", "arch_step_ms", "iteration_ms", "weight_step_ms_all", "arch_step_ms_all",
    "wall_iteration_ms", "images_per_s", "train_images_per_s",
    "peak_memory_bytes", "peak_memory_kind",
    "flops_weight_step", "flops_arch_step", "flops_iteration", "flop_counter",
    "achieved_tflops", "peak_tflops", "peak_reference", "utilisation", "utilisation_basis",
    "profile",
}


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def bench_json(capsys, method, *extra):
    code, out, err = run(capsys, "bench", NB201, "--method", method, *TINY, *extra, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def results():
    """One JSON report per method, shared by the tests below (each run takes seconds)."""
    cache: dict[str, dict] = {}

    def fetch(method: str) -> dict:
        if method not in cache:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                code = cli.main(["bench", str(NB201), "--method", method, *TINY, "--json"])
            assert code == 0
            cache[method] = json.loads(buf.getvalue())
        return cache[method]

    return fetch


@pytest.mark.parametrize("method", ["darts", "darts-2nd", "pc-darts", "drnas"])
def test_json_has_every_documented_key_with_sane_values(results, method):
    r = results(method)
    assert set(r) == KEYS
    assert r["space"] == "nb201" and r["method"] == method
    assert r["device"] == "cpu" and r["device_name"] and r["torch_version"]
    assert r["dataset"] == "synthetic" and r["batch_size"] == 8
    assert r["steps"] == 2 and r["warmup"] == 1 and r["threads"] >= 1
    assert len(r["weight_step_ms_all"]) == len(r["arch_step_ms_all"]) == 2
    for key in ("weight_step_ms", "arch_step_ms", "iteration_ms", "wall_iteration_ms",
                "images_per_s", "train_images_per_s", "achieved_tflops"):
        assert math.isfinite(r[key]) and r[key] > 0, key
    assert all(t > 0 for t in r["weight_step_ms_all"] + r["arch_step_ms_all"])
    assert r["weight_step_ms"] == pytest.approx(sorted(r["weight_step_ms_all"])[0] / 2
                                                + sorted(r["weight_step_ms_all"])[1] / 2)
    # images/s and TFLOP/s follow from the times: 8 train + 8 val images per iteration
    assert r["iteration_ms"] == pytest.approx(r["weight_step_ms"] + r["arch_step_ms"])
    assert r["images_per_s"] == pytest.approx(2 * 8 / (r["iteration_ms"] / 1e3))
    assert r["train_images_per_s"] == pytest.approx(8 / (r["iteration_ms"] / 1e3))
    assert r["flops_weight_step"] > 0 and r["flops_arch_step"] > 0
    assert r["flops_iteration"] == r["flops_weight_step"] + r["flops_arch_step"]
    assert r["achieved_tflops"] == pytest.approx(
        r["flops_iteration"] / (r["iteration_ms"] / 1e3) / 1e12)
    assert "FlopCounterMode" in r["flop_counter"]
    assert r["peak_memory_bytes"] > 0 and "RSS" in r["peak_memory_kind"]
    assert r["cuda_graphs"] is False and r["timing"].startswith("eager")
    assert r["compiled"] is False and r["compile_s"] is None      # CPU default: not compiled
    assert r["compiled_graphs"] is None
    assert r["fused"] is True           # every method here fits the fused cell
    # no peak is tabulated for CPUs, so no utilisation
    assert r["peak_tflops"] is None and r["utilisation"] is None
    assert r["utilisation_basis"] is None
    assert r["profile"] is None                        # only with --profile


def test_second_order_arch_step_costs_more_flops_than_first_order(results):
    first, second = results("darts"), results("darts-2nd")
    assert first["flops_weight_step"] == second["flops_weight_step"]     # the same supernet
    # DARTS-V1's arch step is one forward + backward like the weight step, but reads ∇_α only:
    # its backward computes no weight gradients (a third of a convolution's FLOPs), and none
    # below the first cell (the stem)
    assert 0.55 * first["flops_weight_step"] < first["flops_arch_step"]
    assert first["flops_arch_step"] < 0.7 * first["flops_weight_step"]
    # the unrolled step adds a virtual step and the finite-difference mixed term
    assert second["flops_arch_step"] > 3 * first["flops_arch_step"]


def test_partial_channels_cost_fewer_flops_than_darts(results):
    assert results("pc-darts")["flops_weight_step"] < results("darts")["flops_weight_step"]


def test_human_output_names_the_device_and_the_steps(capsys):
    code, out, err = run(capsys, "bench", NB201, "--method", "darts", *TINY)
    assert code == 0, err
    from dslnas.search.bench import device_name
    assert f"device cpu ({device_name('cpu')}" in out
    for word in ("weight step", "arch step", "images/s", "peak memory", "GFLOP",
                 "FlopCounterMode", "torch ", "fused cells on", "cuda graphs off"):
        assert word in out


def test_real_data_from_the_search_loader(capsys):
    r = bench_json(capsys, "darts", "--dataset", "digits")
    assert r["dataset"] == "digits" and r["flops_weight_step"] > 0
    # digits are 16 x 16, so a step costs about a quarter of a 32 x 32 one
    assert r["flops_weight_step"] < bench_json(capsys, "darts")["flops_weight_step"] / 2


def test_inner_steps_amortise_the_arch_step(capsys):
    r = bench_json(capsys, "darts", "--set", "inner_steps=4")
    assert r["inner_steps"] == 4
    assert r["train_images_per_s"] == pytest.approx(
        4 * 8 / ((4 * r["weight_step_ms"] + r["arch_step_ms"]) / 1e3))


@pytest.mark.parametrize("argv, message", [
    (["--method", "no-such-method"], "unknown method 'no-such-method'"),
    ([], "give --method"),
    (["--method", "darts", "--steps", "0"], "--steps must be >= 1"),
    (["--method", "darts", "--warmup", "-1"], "--warmup must be >= 0"),
    (["--method", "darts", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["--method", "darts", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--method", "darts", "--set", "W=3"], "--set W: not a schedule field"),
    (["--method", "pc-darts", "--set", "K=3"], "does not fit space 'nb201'"),
    (["--method", "darts", "--dataset", "cifar10", "--data", "NODATA", "--no-download"],
     "CIFAR-10"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "nodata") if a == "NODATA" else a for a in argv]
    base = ["--set", "C=4", "--set", "N=1", "--device", "cpu", "--steps", "1", "--warmup", "0"]
    code, out, err = run(capsys, "bench", NB201, *base, *argv)   # argv's flags win
    assert code == 2 and message in err, err
    assert "Traceback" not in err and out == ""


def test_the_parser_registers_bench():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert "bench" in sub.choices


@pytest.mark.parametrize("name, fp32", [
    ("NVIDIA H100 80GB HBM3", 67.0), ("NVIDIA H200", 67.0), ("NVIDIA H100 PCIe", 51.2),
    ("NVIDIA A100-SXM4-80GB", 19.5), ("NVIDIA H100 NVL", None), ("Tesla T4", None),
])
def test_peaks_are_looked_up_by_device_name(name, fp32):
    peaks, source = peak_tflops(name)
    if fp32 is None:
        assert peaks is None and "no peak" in source
    else:
        assert peaks["fp32"] == fp32 and peaks["tf32"] > peaks["fp32"] and "dense" in source


def test_human_output_shows_the_utilisation_on_a_gpu(results):
    r = BenchResult(**results("darts"))
    peaks, source = peak_tflops("NVIDIA H100 80GB HBM3")
    gpu = attrs.evolve(r, device="cuda", device_name="NVIDIA H100 80GB HBM3", peak_tflops=peaks,
                       peak_reference=source,
                       utilisation={k: r.achieved_tflops / v for k, v in peaks.items()},
                       utilisation_basis="tf32")
    text = format_result(gpu)
    assert "NVIDIA H100 80GB HBM3" in text and "of tf32 495 TFLOP/s" in text
    assert "of fp32 67 TFLOP/s" in text


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_a_conv_backward_counts_twice_its_forward_grouped_or_not(groups):
    """grad_input and grad_weight each cost one forward; torch's own formula counts a grouped
    conv's grad_weight as dense (``groups`` times too many), the bench corrects that."""
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=groups, bias=False)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    forward = count_flops(conv, x)
    assert forward == 2 * 2 * 16 * (16 // groups) * 9 * 64
    y = conv(x)
    assert count_flops(lambda: y.sum().backward()) == 2 * forward


def test_fused_cells_change_the_kernels_not_the_flops(results, capsys):
    r = bench_json(capsys, "darts", "--no-fused")
    assert r["fused"] is False and results("darts")["fused"] is True
    for key in ("flops_weight_step", "flops_arch_step"):
        assert r[key] == results("darts")[key]


def test_cuda_graphs_on_a_cpu_are_a_note_not_an_error(capsys):
    r = bench_json(capsys, "darts", "--cuda-graphs")
    assert r["cuda_graphs"] is False and "CUDA graphs need a CUDA device" in r["notes"][0]


def test_the_graphed_timing_path_with_the_eager_twin():
    """On CPU the graphs' eager twin runs the same timing path as CUDA graphs would: the weight
    step is a weights-only iteration, the arch step a full iteration minus it."""
    from dslnas.ir.lower import compile_file
    from dslnas.methods.spec import get_method
    from dslnas.search.bench import benchmark
    ir = compile_file(NB201, {"C": 4, "N": 1})
    r = benchmark(ir, get_method("darts").for_family("nb201"), batch_size=8, steps=2, warmup=0,
                  cuda_graphs=True, _graph_capture=False, profile=True)
    assert r.cuda_graphs is False and r.timing.startswith("cuda graphs")
    assert r.weight_step_ms > 0 and len(r.arch_step_ms_all) == 2
    assert r.iteration_ms == pytest.approx(r.weight_step_ms + r.arch_step_ms)
    assert r.images_per_s == pytest.approx(2 * 8 / (r.iteration_ms / 1e3))
    assert 0 < r.flops_arch_step < r.flops_weight_step   # the arch step reads ∇_α only
    # profiled after the graphed timing, with the eager steps
    assert r.profile["weight"]["aten_ops"] > 0 and r.profile["arch"]["aten_ops"] > 0


def test_compiled_cells_report_their_graphs_and_compile_time(capsys, tmp_path):
    import torch._dynamo
    from test_compile import TWO_CELLS
    torch._dynamo.reset()   # graphs are counted per process: none left from other tests
    space = tmp_path / "two.nas"
    space.write_text(TWO_CELLS)
    code, out, err = run(capsys, "bench", str(space), "--method", "darts", "--compile",
                         "--batch-size", "8", "--steps", "1", "--warmup", "0", "--json",
                         "--profile")
    assert code == 0, err
    r = json.loads(out)
    # two cells of one shape: one graph for the weight step, one for the arch step
    assert r["compiled"] is True and r["compiled_graphs"] == 2 and r["compile_s"] > 0
    # profiling the compiled steps compiles nothing more (the same graphs), and their fused
    # kernels are not ATen calls: fewer dispatched ops than the same steps eagerly
    eager = json.loads(run(capsys, "bench", str(space), "--method", "darts", "--batch-size", "8",
                           "--steps", "1", "--warmup", "0", "--json", "--profile")[1])
    for step in ("weight", "arch"):
        assert 0 < r["profile"][step]["aten_ops"] < eager["profile"][step]["aten_ops"]


def test_profile_counts_what_each_step_dispatches(capsys, tmp_path):
    fused = bench_json(capsys, "darts", "--profile")
    plain = bench_json(capsys, "darts", "--profile", "--no-fused", "--trace", tmp_path / "tr")
    for r in (fused, plain):
        assert set(r["profile"]) == {"weight", "arch"}
        for step in r["profile"].values():
            assert step["aten_ops"] > 0
            assert step["kernels"] is None and step["kernel_ms"] is None     # no GPU
            top = step["top"]
            assert 0 < len(top) <= 12 and sum(calls for _, calls, _ in top) <= step["aten_ops"]
            assert [ms for *_, ms in top] == sorted((ms for *_, ms in top), reverse=True)
            assert all(name.startswith("aten::") for name, *_ in top)
        # the weight step's backward convolutions are among its ops
        assert any(name == "aten::convolution_backward" for name, *_ in r["profile"]["weight"]["top"])
    # the fused cell's point: fewer ops for the same FLOPs
    for step in ("weight", "arch"):
        assert fused["profile"][step]["aten_ops"] < plain["profile"][step]["aten_ops"]
    # --trace wrote each profiled step as a Chrome trace
    for step in ("weight", "arch"):
        trace = json.loads((tmp_path / "tr" / f"{step}_step.json").read_text())
        assert any(e.get("name") == "aten::convolution_backward" for e in trace["traceEvents"])


def test_profile_in_the_human_output(capsys):
    code, out, err = run(capsys, "bench", NB201, "--method", "darts", *TINY, "--profile")
    assert code == 0, err
    assert "weight step: " in out and " ATen ops" in out and "arch step: " in out
    assert "aten::conv2d" in out


def test_profile_summary_of_gpu_events():
    """The CUDA side of the summary, on hand-made profiler events: kernels counted and their
    device time summed and ranked; ATen ops nested in other ATen ops not counted again."""
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import FunctionEvent
    from dslnas.search.profiling import summarise

    def ev(i, name, start, end, device=DeviceType.CPU, parent=None, annotation=False):
        e = FunctionEvent(i, name, thread=1, start_us=start, end_us=end, device_type=device,
                          is_user_annotation=annotation)
        if parent is not None:
            e.set_cpu_parent(parent)
        return e
    conv = ev(0, "aten::conv2d", 0, 50)
    inner = ev(1, "aten::convolution", 1, 49, parent=conv)
    relu = ev(2, "aten::relu", 60, 70)
    launch = ev(3, "cudaLaunchKernel", 61, 62, parent=relu)        # not an ATen op
    kernels = [ev(4, "implicit_gemm", 100, 130, DeviceType.CUDA),
               ev(5, "triton_poi_fused_relu_0", 130, 135, DeviceType.CUDA),
               ev(6, "implicit_gemm", 140, 160, DeviceType.CUDA)]
    # Kineto mirrors user annotations (the optimiser's step) onto the GPU timeline: not kernels
    step = ev(7, "Optimizer.step#SGD.step", 100, 160, DeviceType.CUDA, annotation=True)
    s = summarise([conv, inner, relu, launch, *kernels, step], cuda=True)
    assert s["aten_ops"] == 2 and s["kernels"] == 3
    assert s["kernel_ms"] == pytest.approx(0.055)
    assert s["top"] == [["implicit_gemm", 2, 0.05], ["triton_poi_fused_relu_0", 1, 0.005]]
    cpu = summarise([conv, inner, relu, launch], cuda=False)
    assert cpu["kernels"] is None and [n for n, *_ in cpu["top"]] == ["aten::conv2d", "aten::relu"]


def test_epoch_sets_the_supernet_up_at_that_stage(capsys):
    """--epoch: DrNAS' progressive supernet as the search has it at that epoch (stage 1: the
    partial channels widened from C/4 to C/2 and each edge pruned to 3 of its 5 ops), so its
    convolutions cost more FLOPs than at epoch 0; the human output says which epoch."""
    stages = ["--set", "progressive.epochs=[1, 1]"]
    first = bench_json(capsys, "drnas-progressive", *stages)
    later = bench_json(capsys, "drnas-progressive", *stages, "--epoch", "1")
    assert first["epoch"] == 0 and later["epoch"] == 1
    assert later["flops_weight_step"] > first["flops_weight_step"]
    code, out, _ = run(capsys, "bench", NB201, "--method", "drnas-progressive", *TINY, *stages,
                       "--epoch", "1")
    assert code == 0 and "as at epoch 1" in out


def test_the_device_scripts_summary_reads_a_bench_report(capsys, tmp_path):
    """benchmarks/bench_summary.py (what the device scripts print from each bench JSON): one
    row naming the method, times and device, and one line per profiled step; a missing or
    broken file prints nothing."""
    import runpy
    import sys
    report = bench_json(capsys, "darts", "--profile")
    good, broken = tmp_path / "r.json", tmp_path / "broken.json"
    good.write_text(json.dumps(report))
    broken.write_text("{")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_summary.py"
    argv = sys.argv
    try:
        sys.argv = [str(script), str(good), str(broken), str(tmp_path / "missing.json")]
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith("| nb201 | darts |")
    assert f"{report['weight_step_ms']:.2f}" in lines[0] and report["device_name"] in lines[0]
    assert lines[1].startswith("    weight step:") and lines[2].startswith("    arch step:")
    assert f"{report['profile']['arch']['aten_ops']} ATen ops" in lines[2]
