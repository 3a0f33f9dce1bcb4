"""The CPU fast path: bf16 where the CPU runs bf16 natively, fp32 elsewhere; the layout measured for each kind of
processor; fp32 evaluation."""

import numpy as np
import pytest
import torch

import bloodcls.training.compute as compute
from bloodcls.data import load_npz
from bloodcls.errors import UserError
from bloodcls.inference.checkpoint import load_trained
from bloodcls.inference.classify import predict_proba
from bloodcls.schema import check_config
from bloodcls.training import train
from tests.conftest import FAST
from tests.helpers import compose_train


def _native(monkeypatch, value: bool, capability: str | None = None):
    monkeypatch.setattr(compute, "native_bf16", lambda: (value, "patched: native" if value else "patched: emulated"))
    capability = capability or ("AVX512" if value else "AVX2")
    monkeypatch.setattr(compute, "cpu_capability", lambda: capability)


@pytest.mark.parametrize("native", [True, False])
def test_auto_takes_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    _native(monkeypatch, native)
    plan = compute.plan_compute("auto", "auto", "cpu", 1)
    assert plan.precision == ("bf16-mixed" if native else "32-true")
    assert plan.native_bf16 is native and plan.eval_precision == "32"
    assert "patched" in plan.reason and plan.precision in compute.describe(plan)


@pytest.mark.parametrize("native, capability, layout", [(True, "AVX512_BF16", True), (False, "AVX2", True),
                                                        (False, "AVX512", True), (False, "DEFAULT", False),
                                                        (False, "SVE256", False)])
def test_auto_layout_is_the_one_measured_for_the_processor(monkeypatch, native, capability, layout):
    _native(monkeypatch, native, capability)
    plan = compute.plan_compute("auto", "auto", "cpu", 1)
    assert plan.channels_last is layout
    line = compute.describe(plan)
    assert ("channels_last" if layout else "NCHW") in line and "data.channels_last=auto" in line
    if not layout:
        assert f"no measurement for fp32 on {capability}" in line  # an unmeasured processor keeps the default, and says so


def test_explicit_settings_win(monkeypatch):
    _native(monkeypatch, True)
    plan = compute.plan_compute("32-true", False, "cpu", 1)
    assert (plan.precision, plan.channels_last) == ("32-true", False)  # trainer.precision=32-true forces fp32
    assert compute.plan_compute("auto", True, "cpu", 1).channels_last is True
    pinned = compute.plan_compute("32-true", "auto", "cpu", 1)  # fp32 pinned on an AVX512-BF16 processor
    assert pinned.channels_last is True and "fp32 on AVX512" in compute.describe(pinned)
    gpu = compute.plan_compute("auto", "auto", "gpu", 1)
    assert gpu.device == "gpu" and gpu.precision == "32-true" and gpu.native_bf16 is None  # trainer=gpu sets its own


def test_threads_follow_affinity_cgroup_and_omp(monkeypatch, tmp_path):
    monkeypatch.setattr(compute.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(compute, "CGROUP_CPU_MAX", quota)
    assert compute.usable_cpus() == 4  # no cgroup file: the affinity mask
    quota.write_text("max 100000\n")
    assert compute.usable_cpus() == 4
    quota.write_text("150000 100000\n")  # 1.5 CPUs of quota: two threads
    assert compute.usable_cpus() == 2
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert compute.plan_compute("auto", "auto", "cpu", "auto").threads == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert compute.plan_compute("auto", "auto", "cpu", "auto").threads == 1
    assert compute.plan_compute("auto", "auto", "cpu", 3).threads == 3


@pytest.mark.parametrize("overrides, key", [(["trainer.precision=fp8"], "trainer.precision"),
                                            (["data.channels_last=sometimes"], "data.channels_last"),
                                            (["threads=0"], "threads")])
def test_bad_compute_values_are_named(overrides, key):
    with pytest.raises(UserError, match=key):
        check_config(compose_train(overrides))


@pytest.mark.slow
@pytest.mark.parametrize("native", [True, False])
def test_run_records_its_choice_and_predict_matches_it_in_fp32(synthetic_root, tmp_path, monkeypatch, native):
    _native(monkeypatch, native)
    threads = torch.get_num_threads()
    cfg = compose_train(["model=baseline", "data.img_size=28", "trainer.max_epochs=4", "logger=csv", "threads=1",
                         f"data.root={synthetic_root}", *FAST], output_dir=tmp_path)
    try:
        results = train(cfg, output_dir=tmp_path)
    finally:
        torch.set_num_threads(threads)
    rec = results["compute"]
    assert rec["precision"] == ("bf16-mixed" if native else "32-true") and rec["channels_last"] is True  # both measured
    assert rec["native_bf16"] is native and rec["threads"] == 1 and rec["eval_precision"] == "32"
    assert results["test"]["acc"] > 0.5  # 8 classes: chance is 0.125
    # The checkpoint loads for predict in fp32 and gives the test step's own predictions.
    model = load_trained(results["checkpoints"]["best"])
    images = load_npz(synthetic_root / "bloodmnist.npz")["test"][0]
    proba = predict_proba(model.net, images)
    assert next(model.net.parameters()).dtype == torch.float32
    assert np.array_equal(proba.argmax(1), np.asarray(results["test"]["predictions"]))
    # ... and its ONNX export computes what the fp32 network computes.
    pytest.importorskip("onnxruntime")
    from bloodcls.inference.exporters import export

    check = export(model, "onnx", tmp_path / "model.onnx")
    assert check["checked"] and check["max_abs_diff"] <= 1e-4
