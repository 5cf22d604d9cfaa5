"""The benchmark's batch-size reading, overhead split, issue-12 target checks and own cost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from benchmarks import aggregate, batch_metrics, overhead, profile, targets
from benchmarks.scenarios import EMBEDDING_12MP, FULL_12MP
from benchmarks.server import PssSampler


def exposition(batches: dict[str, list[int]]) -> str:
    """A /metrics text with BentoML's adaptive batch size histogram, as its servers write it."""
    registry = CollectorRegistry()
    hist = Histogram(
        "adaptive_batch_size",
        "Service adaptive batch size",
        labelnames=["runner_name", "worker_index", "method_name", "service_version"],
        namespace="bentoml_service",
        buckets=[1, 2, 4, 8, 16],
        registry=registry,
    )
    for runner, sizes in batches.items():
        for size in sizes:
            hist.labels(runner, "1", "score", "").observe(size)
    return generate_latest(registry).decode()


def test_batches_between_scrapes_are_differences_of_cumulative_counters() -> None:
    before = batch_metrics.parse(exposition({"NimaTechnical": [1, 1]}))
    after = batch_metrics.parse(exposition({"NimaTechnical": [1, 1, 4, 2], "CLIPEncoder": [3, 5]}))
    found = batch_metrics.batches_between(before, after)
    assert found == {
        "CLIPEncoder": {"batches": 2, "requests": 8, "mean_batch_size": 4.0},
        "NimaTechnical": {"batches": 2, "requests": 6, "mean_batch_size": 3.0},
    }
    assert batch_metrics.batches_between(after, after) == {}


def test_repeated_runs_fold_into_one_mean_over_all_batches() -> None:
    run = {
        "name": "s",
        "cpu": {},
        "cpu_ms_per_image_by_process": {},
        "first_errors": [],
        **{k: 1.0 for k in ("images_per_s", "latency_p50_s", "latency_p95_s", "latency_mean_s")},
        **{k: 1 for k in ("requests", "images_ok", "errors", "wall_s", "latency_max_s")},
    }
    runs = [
        {**run, "batches": {"CLIPEncoder": {"batches": 1, "requests": 8}}},
        {**run, "batches": {"CLIPEncoder": {"batches": 3, "requests": 4}}, "inprocess": {}},
    ]
    (row,) = aggregate.fold(runs)
    assert row["batches"]["CLIPEncoder"] == {"batches": 4, "requests": 12, "mean_batch_size": 3.0}
    assert "inprocess" not in row  # each run keeps its own: see benchmarks.overhead


def test_cost_at_interpolates_between_measured_batch_sizes() -> None:
    costs = {"1": 50.0, "2": 40.0, "8": 30.0}
    assert overhead.cost_at(costs, 1.0) == 50.0
    assert overhead.cost_at(costs, 1.5) == pytest.approx(45.0)
    assert overhead.cost_at(costs, 5.0) == pytest.approx(35.0)
    assert overhead.cost_at(costs, 12.0) == 30.0  # beyond the largest measured size


def test_batch_sizes_needed_brackets_each_mean() -> None:
    scenarios = [
        {"batches": {"CLIPEncoder": {"mean_batch_size": 2.4}}},
        {"batches": {"CLIPEncoder": {"mean_batch_size": 1.0}, "Brisque": {"mean_batch_size": 3}}},
    ]
    assert overhead.batch_sizes_needed(scenarios) == {"Brisque": [3], "CLIPEncoder": [1, 2, 3]}


def scenario(name: str, pipeline: str, rate: float, split: dict[str, float], batches: dict) -> dict:
    return {
        "name": name,
        "pipeline": pipeline,
        "endpoint": "analyze",
        "source": "base64",
        "megapixels": 12,
        "images_per_s": rate,
        "errors": 0,
        "cpu_ms_per_image_by_process": split,
        "batches": batches,
    }


INPROCESS = {
    "api_cpu_ms_per_image": {"embedding": {"total": 30.0}, "full": {"total": 60.0}},
    "runner_cpu_ms_per_image": {"CLIPEncoder": {"1": 40.0, "2": 30.0}},
}


def test_overhead_charges_each_process_with_its_own_work_only() -> None:
    s = scenario(
        EMBEDDING_12MP,
        "embedding",
        20.0,
        {"festora-vision": 45.0, "CLIPEncoder": 38.0, "bentoml-serve (supervisor)": 0.5},
        {"CLIPEncoder": {"mean_batch_size": 1.5}},
    )
    split = overhead.split(s, INPROCESS)
    assert split is not None
    assert split["processes"]["festora-vision"]["overhead_cpu_ms"] == 15.0
    assert split["processes"]["CLIPEncoder"]["inprocess_cpu_ms"] == 35.0
    assert split["processes"]["bentoml-serve (supervisor)"]["inprocess_cpu_ms"] == 0.0
    assert split["overhead_cpu_ms"] == pytest.approx(18.5)
    # a runner the in-process run did not time leaves the scenario without a split
    assert overhead.split({**s, "batches": {"Brisque": {"mean_batch_size": 1}}}, INPROCESS) is None


def test_each_run_is_set_against_the_in_process_timing_taken_right_after_it() -> None:
    """The machine's speed drifts between minutes: a slow run and a fast run each keep their
    own 10 ms of overhead, where one shared in-process timing would give them 0 and 20."""
    fast = {"api_cpu_ms_per_image": {"embedding": {"total": 30.0}}, "runner_cpu_ms_per_image": {}}
    slow = {"api_cpu_ms_per_image": {"embedding": {"total": 50.0}}, "runner_cpu_ms_per_image": {}}
    runs = [
        {
            **scenario(EMBEDDING_12MP, "embedding", 20.0, {"festora-vision": 40.0}, {}),
            "inprocess": fast,
        },
        {
            **scenario(EMBEDDING_12MP, "embedding", 15.0, {"festora-vision": 60.0}, {}),
            "inprocess": slow,
        },
        scenario("embedding-12mp-url-c8", "embedding", 20.0, {"festora-vision": 40.0}, {}),
    ]
    found = overhead.evaluate(runs)

    assert list(found) == [EMBEDDING_12MP]  # a run with no in-process timing has no split
    assert found[EMBEDDING_12MP]["overhead_cpu_ms_runs"] == [10.0, 10.0]
    assert found[EMBEDDING_12MP]["overhead_cpu_ms"] == 10.0
    assert found[EMBEDDING_12MP]["processes"]["festora-vision"]["server_cpu_ms"] == 50.0

    folded = aggregate.fold_inprocess(
        [
            {**fast, "photos": ["a"], "rounds": 3, "engines": {}, "cpu": {"other_pct": 1.0}},
            {**slow, "photos": ["a"], "rounds": 3, "engines": {}, "cpu": {"other_pct": 3.0}},
        ]
    )
    assert folded is not None and folded["runs"] == 2
    assert folded["api_cpu_ms_per_image"] == {"embedding": {"total": 40.0}}
    assert folded["cpu"]["other_pct"] == 2.0
    assert aggregate.fold_inprocess([]) is None


def test_targets_check_efficiency_overhead_and_embedding_ratio() -> None:
    emb = scenario(
        EMBEDDING_12MP,
        "embedding",
        23.0,
        {"festora-vision": 45.0, "CLIPEncoder": 35.0},
        {"CLIPEncoder": {"mean_batch_size": 2.0}},
    )
    full = scenario(FULL_12MP, "full", 3.0, {"festora-vision": 500.0}, {})
    results = {
        "scenarios": [emb, full],
        "baseline": {"embedding_images_per_s": 1.5, "full_images_per_s": 0.1},
        "machine": {"logical_cores": 2},
        "memory": {"peak_pss_bytes": 3e9},
        "startup": {"ready_s": 20.0},
    }
    results["overhead"] = overhead.evaluate([{**s, "inprocess": INPROCESS} for s in (emb, full)])
    checks = {c.target: c for c in targets.evaluate(results)}

    efficiency = [c for t, c in checks.items() if t.startswith("8 clients >= 90%")]
    # full: bound 2000 / 500 = 4 images/s, 3 is 75 %; embedding: bound 25, 23 is 92 %
    assert [c.passed for c in efficiency] == [False, True]
    overheads = [c for t, c in checks.items() if t.startswith("serving overhead")]
    # embedding: 80 - (30 + 30) = 20 ms > 15; full: 500 - 60 = 440 ms > 40
    assert overheads[0].passed is False and "20.0 ms" in overheads[0].measured
    assert overheads[1].passed is False and "440.0 ms" in overheads[1].measured
    ratio = next(c for t, c in checks.items() if "naive embedding baseline" in t)
    assert ratio.passed is True and ratio.measured.startswith("15.3x")


def baseline_pass(full: float, embedding: float, other_pct: float) -> dict[str, object]:
    return {
        "torch_threads": 2,
        "images": [{"image": "a.jpg"}],
        "full_images_per_s": full,
        "full_seconds_per_image": 1 / full,
        "embedding_images_per_s": embedding,
        "embedding_seconds_per_image": 1 / embedding,
        "embedding_rounds": 5,
        "stage_mean_seconds": {"decode": 1 / embedding / 2, "clip": 1 / embedding / 2},
        "cpu": {"other_pct": other_pct},
    }


def test_baseline_timed_per_pass_folds_to_medians_and_reports_each_pass() -> None:
    from benchmarks import report

    runs = [
        baseline_pass(0.10, 2.0, 1.0),
        baseline_pass(0.12, 3.0, 3.0),
        baseline_pass(0.11, 4.0, 2.0),
    ]
    folded = aggregate.fold_baseline(runs)
    assert folded["passes"] == 3
    assert folded["full_images_per_s"] == pytest.approx(0.11)
    assert folded["embedding_images_per_s"] == pytest.approx(3.0)
    assert folded["embedding_seconds_per_image"] == pytest.approx(1 / 3)
    assert folded["embedding_images_per_s_runs"] == [2.0, 3.0, 4.0]
    assert folded["cpu"]["other_pct"] == pytest.approx(2.0)

    emb = scenario(EMBEDDING_12MP, "embedding", 36.0, {"festora-vision": 30.0}, {})
    text = "\n".join(report._baseline({"baseline": folded, "scenarios": [emb]}))
    assert "medians of 3 passes: full 0.1000, 0.1200, 0.1100" in text
    assert "embedding 2.000, 3.000, 4.000 images/s" in text
    assert "the mean of 5 timings per image" in text
    assert "36.00 images/s = **12.0x** the baseline (3.0000 images/s)" in text


def test_report_tables_show_batches_and_overhead_per_process() -> None:
    from benchmarks import report

    emb = scenario(
        EMBEDDING_12MP,
        "embedding",
        20.0,
        {"festora-vision": 45.0, "CLIPEncoder": 38.0},
        {"CLIPEncoder": {"batches": 4, "requests": 6, "mean_batch_size": 1.5}},
    )
    inprocess = {
        **INPROCESS,
        "api_cpu_ms_per_image": {
            p: {"base64": 2.0, "decode": 25.0, "prepare": 3.0, "total": 30.0}
            for p in ("embedding", "full")
        },
        "engines": {"CLIPEncoder": "openvino-bf16"},
        "cpu": {"other_pct": 5.0},
    }
    results = {"scenarios": [emb], "inprocess": inprocess}
    results["overhead"] = overhead.evaluate([{**emb, "inprocess": inprocess}])
    text = "\n".join(report._batches(results) + report._overhead(results))
    assert f"| {EMBEDDING_12MP} | 1.50 (6 / 4) |" in text
    assert "| CLIPEncoder | 38.0 | 35.0 | 3.0 |" in text
    assert "| festora-vision | 45.0 | 30.0 | 15.0 |" in text
    assert "| **total** | 83.0 | 65.0 | **18.0** |" in text


# Frames as py-spy writes them: "function (module path:line)", outermost first.
SERVE = "Server.run (uvicorn/server.py:86);Handle._run (asyncio/events.py:80)"
ROUTE = "Route.handle (starlette/routing.py:289);FestoraVision.analyze (service.py:160)"
SAMPLE_STACKS = {
    f"{SERVE};EpollSelector.select (selectors.py:468) 12": profile.WAITING,
    "asyncio_run (uvicorn/_compat.py:30);Runner.run (asyncio/runners.py:118) 8": profile.WAITING,
    f"{ROUTE};decode_image (festora/images.py:92);_decode_scaled_jpeg (festora/images.py:158)"
    " 50": profile.WORK,
    f"{ROUTE};ImageAnalyzer.analyze (festora/analysis.py:164) 5": "dispatch (BentoML, "
    "Starlette, asyncio, middleware)",
    f"{SERVE};H11Protocol.data_received (uvicorn/protocols/http/h11_impl.py:175) 10": "HTTP "
    "(sockets, parsing, runner client)",
    f"{ROUTE};PickleSerde.serialize (_bentoml_impl/serde.py:280) 10": "serialisation "
    "(pickle, JSON, pydantic)",
    f"{SERVE};NimaTechnical.score (runners/nima.py:200);trim_after_batch "
    "(runners/serving/memory.py:70);_trim (runners/serving/memory.py:55) 5": "heap trim",
}


def test_profile_files_each_sample_under_its_innermost_kind_of_work() -> None:
    for line, kind in SAMPLE_STACKS.items():
        stack = line.rpartition(" ")[0]
        assert profile.kind_of(stack.split(";")) == kind, stack


def test_profile_splits_the_timed_cpu_in_the_shares_of_busy_samples(tmp_path: Path) -> None:
    raw = tmp_path / "api.txt"
    raw.write_text("\n".join(SAMPLE_STACKS) + "\n")
    samples = {"festora-vision": dict(profile.read_raw(raw)), "idle": {profile.WAITING: 9}}

    split = profile.apportion(samples, {"festora-vision": 80.0, "idle": 0.1})

    assert list(split) == ["festora-vision"]  # a process that did no work is left out
    api = split["festora-vision"]
    assert (api["samples"], api["waiting_samples"]) == (80, 20)
    assert api["ms_per_image"][profile.WORK] == 50.0  # 50 of 80 busy samples of 80 ms
    assert sum(api["ms_per_image"].values()) == pytest.approx(80.0)
    assert profile.WAITING not in api["ms_per_image"]


def test_the_pss_sampler_counts_what_its_samples_cost_and_slows_down_on_request() -> None:
    sampler = PssSampler(os.getpid(), interval_s=0.5)

    assert sampler.sample() > 0
    assert sampler.samples == 1 and sampler.sample_cpu_s > 0
    with sampler.sparse(2.0):
        assert sampler.interval_s == 2.0
    assert sampler.interval_s == 0.5
