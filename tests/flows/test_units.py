"""Layer 1: config, cache keys, compute accounting and task functions called with ``.fn`` (no engine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from coala_testsupport.pipeline import TINY_CONFIG, tiny_overrides

from coala_core.errors import ConfigError, DataError, MissingInputError
from flows.config import PipelineConfig, parse_overrides
from tasks.caching import content_token, stable_digest
from tasks.compute import admm_flops, forward_flops, measure
from tasks.refs import DatasetRef
from tasks.stage import TrackingContext
from tasks.tracking import client_for, ensure_experiment


def test_config_composes_stage_configs_and_names_bad_field(tmp_path: Path) -> None:
    cfg = PipelineConfig.from_yaml(TINY_CONFIG, {"phase2.l2": 0.5})
    assert cfg.phase2.l2 == 0.5 and cfg.phase1.n_patterns == 4
    assert cfg.params()["dataset.options.limit"] == 60
    with pytest.raises(ConfigError, match=r"phase2\.l2"):
        PipelineConfig.from_yaml(TINY_CONFIG, {"phase2.l2": -1})
    with pytest.raises(ConfigError, match="unknown_section"):
        PipelineConfig.build({"dataset": {"input": "x"}, "unknown_section": {}})
    assert parse_overrides(["phase2.l2=0.1", "run.name=x"]) == {"phase2.l2": 0.1, "run.name": "x"}
    with pytest.raises(ConfigError):
        parse_overrides(["no-equals-sign"])


def test_cache_tokens_follow_content_not_location(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("same"), b.write_text("same")
    assert stable_digest({"f": a}) == stable_digest({"f": b})
    b.write_text("different")
    assert stable_digest({"f": a}) != stable_digest({"f": b})
    r1 = DatasetRef(uri="/x/p.parquet", digest="d" * 64, n_rows=3)
    r2 = DatasetRef(uri="/elsewhere/p.parquet", digest="d" * 64, n_rows=3)
    assert content_token(r1) == content_token(r2)
    cfg = PipelineConfig.from_yaml(TINY_CONFIG)
    assert stable_digest(cfg.phase1) != stable_digest(cfg.phase1.replace(n_patterns=5))
    with pytest.raises(TypeError):
        content_token(object())


def test_flops_and_meter() -> None:
    assert forward_flops(100, 10) == 2000.0
    assert admm_flops(10, 3, 2, 5) > admm_flops(10, 3, 2, 4) > 0
    with measure() as m:
        block = bytearray(64 * 2**20)
        m.flops = 1e12
    assert m.wall_s > 0 and m.peak_rss_mb > 64 and m.metrics()["tflops"] == 1.0
    del block


def test_build_dataset_fn_writes_pairs_and_card_and_tracks(tmp_path: Path) -> None:
    from tasks.data import build_dataset_task

    cfg = PipelineConfig.from_yaml(TINY_CONFIG, tiny_overrides(tmp_path / "m", tmp_path))
    client = client_for(tmp_path)
    exp = ensure_experiment(client, "units", tmp_path)
    tracking = TrackingContext(uri=client._tracking_client.tracking_uri, experiment_id=exp, system_metrics=False)
    ref = build_dataset_task.fn(Path(cfg.dataset.input), "edufeedback", cfg.dataset.builder_config(),
                                workdir=tmp_path, output=tmp_path / "ds", tracking=tracking)
    assert ref.n_rows == sum(ref.splits.values()) > 0 and len(ref.digest) == 64
    assert Path(ref.files["card_md"]).read_text().startswith("# Dataset card")
    run = client.get_run(ref.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["rows"] == ref.n_rows
    assert {d.dataset.digest for d in run.inputs.dataset_inputs} >= {ref.digest[:36]}


def test_failed_stage_ends_its_run_failed(tmp_path: Path) -> None:
    from tasks.data import build_dataset_task

    cfg = PipelineConfig.from_yaml(TINY_CONFIG, tiny_overrides(tmp_path / "m", tmp_path))
    client = client_for(tmp_path)
    exp = ensure_experiment(client, "units", tmp_path)
    tracking = TrackingContext(uri=client._tracking_client.tracking_uri, experiment_id=exp, system_metrics=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"not": "a mathdial record"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        build_dataset_task.fn(bad, "edufeedback", cfg.dataset.builder_config(), workdir=tmp_path,
                              output=tmp_path / "ds", tracking=tracking)
    runs = client.search_runs([exp])
    statuses = {r.data.params.get("dataset.input"): r.info.status for r in runs}
    assert statuses[str(bad)] == "FAILED" and "RUNNING" not in statuses.values()
    with pytest.raises(MissingInputError, match="dataset.input"):
        build_dataset_task.fn(tmp_path / "absent.jsonl", "edufeedback", cfg.dataset.builder_config(),
                              workdir=tmp_path, output=tmp_path / "ds", tracking=tracking)


def test_admm_monitor_logs_path_metrics_and_phase1_head_scores(tmp_path: Path) -> None:
    import numpy as np

    from coala_core.engine.fit import phase1_head
    from coala_core.phase1 import Phase1Config, fit_phase1_path
    from tasks.artifacts import Progress
    from tasks.tracking import start_run
    from tasks.training import AdmmMonitor

    rng = np.random.default_rng(0)
    w_true = rng.normal(size=6)
    Fw, Fl = rng.normal(size=(80, 6)), rng.normal(size=(80, 6))
    swap = (Fw - Fl) @ w_true < 0
    Fw[swap], Fl[swap] = Fl[swap].copy(), Fw[swap].copy()
    Vw, Vl = Fw[:20] + 0.01, Fl[:20] - 0.01
    client = client_for(tmp_path)
    run = start_run(client, ensure_experiment(client, "units", tmp_path), "phase1")
    monitor = AdmmMonitor(run, Progress("phase1-admm", "outside a run: no artifact"), min_interval=0.0)
    cfg = Phase1Config(n_patterns=3, max_iter=40, path_n_betas=2, tol=1e-4)
    res = fit_phase1_path((Fw, Fl), config=cfg, validation=(Vw, Vl), progress=monitor)
    monitor.flush(1.0, force=True)
    history = client.get_metric_history(run.run_id, "admm/objective")
    assert [m.step for m in history] == list(range(1, monitor.step + 1)) and monitor.step >= 2
    assert len({m.value for m in client.get_metric_history(run.run_id, "admm/beta")}) == 2
    accs = client.get_metric_history(run.run_id, "admm/val_accuracy")
    # one point per beta, and one more when the selected beta was refined from path_tol to tol
    refined = [row for row in res.path if "refine_iterations" in row]
    assert len(refined) == 1 and refined[0]["selected"]  # path_tol defaults to 30x tol: the choice is refined
    assert len(accs) == 3 and accs[-1].step == monitor.step
    head = phase1_head(res)
    assert head.width == res.n_active and np.allclose(head.score(Fw[:5]), np.asarray(res.score(Fw[:5])), atol=1e-8)
    sparse = AdmmMonitor(start_run(client, run.client.get_run(run.run_id).info.experiment_id, "sparse"),
                         Progress("x", "no artifact"), min_interval=0.0, points_per_beta=10)
    for beta_index, last in ((0, 37), (1, 40)):
        for it in range(1, last + 1):
            sparse({"beta_index": beta_index, "n_betas": 2, "beta": 1.0 / (beta_index + 1), "iteration": it,
                    "max_iter": 40, "objective": 1.0 / it, "r_primal": 0.1, "r_dual": 0.1, "cone_violation": 0.0})
        sparse({"beta_index": beta_index, "n_betas": 2, "done": True, "val_accuracy": 0.5})
    steps = [m.step for m in client.get_metric_history(sparse.run.run_id, "admm/objective")]
    assert steps == [4, 8, 12, 16, 20, 24, 28, 32, 36, 37, 41, 45, 49, 53, 57, 61, 65, 69, 73, 77]


def test_embedded_experiment_keeps_artifacts_in_the_workdir(tmp_path):
    import mlflow

    from tasks.tracking import ensure_experiment

    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(tracking_uri=uri)
        exp_id = ensure_experiment(client, "artifacts-here", tmp_path / "wd")
        assert client.get_experiment(exp_id).artifact_location == (tmp_path / "wd" / "mlartifacts").resolve().as_uri()
    finally:
        mlflow.set_tracking_uri(previous)
