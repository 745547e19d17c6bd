"""--precision auto: the decision on given hardware, and every later run following the store."""

from __future__ import annotations

import pytest
from helpers import FakeBackbone, many_images

from headstart.errors import StoreError, UsageError
from headstart.extract import extract_features
from headstart.extract import job as job_module
from headstart.extract.backbone import pipeline_identity
from headstart.extract.job import Job
from headstart.extract.precision import (
    Gpu,
    Hardware,
    choose,
    cpu_flags,
    this_machine,
)
from headstart.extract.runner import ensure_plan
from headstart.features import open_store, part_files
from headstart.features.shards import merge_shards

AVX2 = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})
SAPPHIRE_RAPIDS = AVX2 | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
ZEN4 = AVX2 | {"avx512f", "avx512_bf16"}


@pytest.mark.parametrize("hardware, precision, reason", [
    (Hardware(SAPPHIRE_RAPIDS), "mixed_bfloat16", "this CPU has AMX-BF16 and AVX512-BF16"),
    (Hardware(ZEN4), "mixed_bfloat16", "this CPU has AVX512-BF16"),
    (Hardware(AVX2), "float32", "no bfloat16 units"),
    (Hardware(frozenset()), "float32", "flags are unknown"),
    (Hardware(ZEN4, onednn=False), "float32", "TF_ENABLE_ONEDNN_OPTS=0"),
    (Hardware(frozenset({"fp", "asimd", "bf16"}), machine="aarch64"), "float32", "aarch64"),
    (Hardware(AVX2, gpus=(Gpu("NVIDIA H100 80GB HBM3", (9, 0)),)), "mixed_float16",
     "NVIDIA H100 80GB HBM3 has compute capability 9.0"),
    (Hardware(AVX2, gpus=(Gpu("Tesla V100", (7, 0)), Gpu("Tesla V100", (7, 0)))),
     "mixed_float16", "7.0, float16 tensor cores"),
    (Hardware(SAPPHIRE_RAPIDS, gpus=(Gpu("Tesla P100", (6, 0)),)), "float32", "below 7.0"),
    (Hardware(AVX2, gpus=(Gpu("NVIDIA A100", (8, 0)), Gpu("Tesla K80", (3, 7)))), "float32",
     "Tesla K80 has compute capability 3.7"),
    (Hardware(AVX2, gpus=(Gpu("GPU", None),)), "float32", "compute capability unknown"),
])
def test_auto_chooses_by_cpu_flags_and_gpu_capability(hardware, precision, reason):
    decision = choose(hardware)
    assert decision.precision == precision
    assert reason in decision.reason


def test_the_line_printed_names_the_choice_its_reason_and_the_way_back():
    assert choose(Hardware(ZEN4)).line() == (
        "precision: mixed_bfloat16 (this CPU has AVX512-BF16); --precision float32 for "
        "float32 rows")
    assert choose(Hardware(AVX2)).line().startswith("precision: float32 (this CPU has no")
    assert "--precision float32" not in choose(Hardware(AVX2)).line()


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\n"
                       "flags\t\t: fpu avx2 avx512_bf16 amx_bf16\n\nprocessor\t: 1\n"
                       "flags\t\t: fpu\n")
    assert cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512_bf16", "amx_bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_this_machine_reads_real_flags_and_respects_onednn_off():
    assert this_machine({"TF_ENABLE_ONEDNN_OPTS": "0"}).onednn is False
    here = this_machine({})
    assert here.onednn is True and here.cpu_flags == cpu_flags()


# ---- later runs follow the store ---------------------------------------------------------

class RecordingBackbone(FakeBackbone):
    """The fake backbone, made with the identity (precision included) the run asked for."""

    built: list[str] = []

    def __init__(self, spec, *, precision, dtype="float32", **kwargs):
        super().__init__(identity=pipeline_identity(spec.identity_string(), dtype, precision))
        RecordingBackbone.built.append(precision)


@pytest.fixture
def hardware(monkeypatch):
    """Set the machine extract_features sees: hardware(flags) before each run."""
    monkeypatch.setattr(job_module, "Backbone", RecordingBackbone)
    RecordingBackbone.built = []

    def set_flags(flags):
        monkeypatch.setattr(job_module.precisions, "this_machine", lambda: Hardware(flags))
    return set_flags


def run(folder, out, **options):
    lines = []
    extract_features(folder, out, weights="none", progress=False, log=lines.append, **options)
    return lines


def precision_of(path):
    with open_store(path) as store:
        return store.identity.precision


def test_the_first_run_decides_prints_and_records_and_later_runs_follow(hardware, tmp_path):
    folder = many_images(tmp_path / "pets", 6)
    out = tmp_path / "features.h5"
    hardware(ZEN4)
    lines = run(folder, out)
    assert "precision: mixed_bfloat16 (this CPU has AVX512-BF16); --precision float32 for " \
           "float32 rows" in lines
    assert precision_of(out) == "mixed_bfloat16"

    many_images(tmp_path / "more", 4)
    for src in (tmp_path / "more").rglob("*.jpg"):
        src.rename(folder / src.parent.name / f"new-{src.name}")
    hardware(AVX2)  # the same store appended to on a machine without bf16 units
    lines = run(folder, out)
    assert f"precision: mixed_bfloat16 (recorded in '{out}'); --precision float32 for " \
           "float32 rows" in lines
    assert precision_of(out) == "mixed_bfloat16"
    assert RecordingBackbone.built == ["mixed_bfloat16", "mixed_bfloat16"]
    with open_store(out) as store:
        assert store.n_rows == 10

    with pytest.raises(StoreError, match="precision: the store's 'mixed_bfloat16', this "
                                         "run's.*--precision mixed_bfloat16.*leave out "
                                         "--precision"):
        run(folder, out, precision="float32")


def test_an_interrupted_first_run_is_resumed_in_its_own_precision(hardware, monkeypatch,
                                                                  tmp_path):
    folder = many_images(tmp_path / "pets", 8)
    out = tmp_path / "features.h5"

    class Stop(Exception):
        pass

    class DiesOnSecondBatch(RecordingBackbone):
        def embed(self, pixels):
            if len(RecordingBackbone.built) == 1 and getattr(self, "called", False):
                raise Stop
            self.called = True
            return super().embed(pixels)

    hardware(AVX2)
    monkeypatch.setattr(job_module, "Backbone", DiesOnSecondBatch)
    with pytest.raises(Stop):
        run(folder, out, batch_size=4, flush_rows=4)
    assert part_files(out) and not out.exists()
    hardware(ZEN4)
    lines = run(folder, out, batch_size=4, flush_rows=4)
    assert any(line.startswith("precision: float32 (recorded in ") and ".parts/part-" in line
               for line in lines)
    assert precision_of(out) == "float32"
    with open_store(out) as store:
        assert store.n_rows == 8


def test_shards_follow_the_plan_on_machines_of_other_kinds(hardware, tmp_path):
    folder = many_images(tmp_path / "pets", 9)
    out = tmp_path / "features.h5"
    hardware(SAPPHIRE_RAPIDS)
    run(folder, out, shard=(0, 3))
    hardware(AVX2)
    lines = run(folder, out, shard=(1, 3))
    assert any(line.startswith("precision: mixed_bfloat16 (recorded in ") for line in lines)
    hardware(frozenset())
    run(folder, out, shard=(2, 3))
    merge_shards(out)
    assert precision_of(out) == "mixed_bfloat16"
    assert RecordingBackbone.built == ["mixed_bfloat16"] * 3


def test_a_plan_published_first_in_another_precision_is_followed_only_under_auto(hardware,
                                                                                 tmp_path):
    folder = many_images(tmp_path / "pets", 4)
    out = tmp_path / "features.h5"
    hardware(ZEN4)
    first = Job.checked(folder, out, weights="none", precision="mixed_bfloat16")
    spec = first.weights_spec()
    plan = ensure_plan(first, 2, spec, first.identity(spec), log=lambda line: None)
    late = Job.checked(folder, out, weights="none", precision="float32")
    assert ensure_plan(late, 2, spec, late.identity(spec), log=lambda line: None,
                       follow_precision=True) == plan
    with pytest.raises(StoreError, match="precision: 'mixed_bfloat16' vs 'float32'"):
        ensure_plan(late, 2, spec, late.identity(spec), log=lambda line: None)


def test_auto_is_a_choice_and_other_values_are_refused_before_any_work(tmp_path):
    assert Job.checked(tmp_path, tmp_path / "f.h5").precision == "auto"
    with pytest.raises(UsageError, match="auto, float32, mixed_float16, mixed_bfloat16"):
        Job.checked(tmp_path, tmp_path / "f.h5", precision="bfloat16")
