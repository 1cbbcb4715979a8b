"""``coala_pipeline``: the whole DAG as subflows, tracked as one MLflow parent run with a nested run per stage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext

from coala_core.report.embed import image_links, inline_images, report_html
from flows.config import PipelineConfig
from flows.params import PipelineParams
from flows.stages import build_dataset, evaluate, extract_features, train_head
from tasks import artifacts
from tasks.datasets import log_input_datasets
from tasks.refs import HeadRef, ReportRef
from tasks.stage import TrackingContext, prefect_tags
from tasks.tracking import (
    TrackedRun,
    client_for,
    code_version,
    end_status,
    ensure_experiment,
    params_from_config,
    start_run,
)

SUMMARY_KEYS = ("accuracy", "sigmoid_margin", "rewards/margins", "rewards/accuracies", "ece")


def _fail_parent_runs(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow failure/crash hook: no MLflow run of this flow run stays RUNNING."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    if ids:
        for run in client.search_runs(ids, filter_string=f"tags.`prefect.flow_run_id` = '{flow_run.id}' and attributes.status = 'RUNNING'"):
            client.set_terminated(run.info.run_id, status="FAILED")


@flow(name="coala-pipeline", log_prints=True, on_failure=[_fail_parent_runs], on_crashed=[_fail_parent_runs])
def coala_pipeline(config_path: str, overrides: dict[str, Any] | None = None,
                   params: PipelineParams | None = None) -> ReportRef:
    """Build dataset -> extract features -> train head (Phase I, Phase II) -> evaluate, from one YAML file.

    ``params`` are the typed overrides of the UI's run form; ``overrides`` dotted keys (``--set``), applied
    after them."""
    # PipelineParams is named in the body on purpose: a served run gets this function pickled by value, with only
    # the globals its code uses, and Prefect's parameter model needs the class behind the string annotation
    merged = {**(PipelineParams.model_validate(params).to_overrides() if params is not None else {}), **(overrides or {})}
    config = PipelineConfig.from_yaml(config_path, merged)
    return run_pipeline(config)


def run_pipeline(config: PipelineConfig) -> ReportRef:
    workdir = config.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    client = client_for(workdir)
    experiment_id = ensure_experiment(client, config.run.experiment, workdir)
    flow_ctx = FlowRunContext.get()
    run_name = f"{config.run.name}-{flow_ctx.flow_run.name}" if flow_ctx and flow_ctx.flow_run else config.run.name
    parent = start_run(client, experiment_id, run_name, tags={"coala.pipeline": "true", **prefect_tags()},
                       source="coala pipeline run" if flow_ctx is None else f"prefect flow {flow_ctx.flow.name}")
    parent.log_params({**params_from_config(config.to_dict()), "code_version": code_version()})
    artifacts.link("mlflow-run", parent.url(), f"MLflow run {parent.run_id}", "The MLflow parent run of this pipeline run")
    tracking = TrackingContext(uri=client._tracking_client.tracking_uri, experiment_id=experiment_id,
                               parent_run_id=parent.run_id, system_metrics=config.run.system_metrics,
                               system_metrics_interval_s=config.run.system_metrics_interval_s)
    t0 = time.perf_counter()
    status = "FAILED"
    try:
        dataset = build_dataset(config, tracking)
        features = extract_features(dataset, config, tracking)
        head = train_head(features, config, tracking)
        report = evaluate(head, features, dataset, config, tracking)
        stages = {"build_dataset": dataset.metrics, "extract_features": features.metrics, "train_head": head.metrics,
                  "evaluate": report.metrics}
        summary = pipeline_summary(stages, report, time.perf_counter() - t0)
        parent.log_metrics(summary)
        log_input_datasets(parent, {"dataset": dataset, "features": features})
        report_uri = log_report(parent, report)
        training = training_record(head)
        parent.set_tags({"coala.report": report_uri, "coala.head": head_artifact_uri(client, head),
                         "coala.dataset_digest": dataset.digest, **chosen_tags(training)})
        if training.get("phase1_path"):
            client.log_dict(parent.run_id, training["phase1_path"], "training/beta_path.json")
        if config.run.register_model:
            from tasks.scorer import register_scorer

            reg = register_scorer(tracking, head, features["train"].provenance, config)
            parent.set_tags({"coala.registered_model": reg.describe(),
                             "coala.model_uri": f"models:/{reg.name}/{reg.head_version or reg.version}"})
        status = "FINISHED"
        print(f"report: {report.files.get('report')}  MLflow parent run: {parent.run_id}")
        return report
    except BaseException as err:  # interrupted (SIGTERM, Ctrl-C) ends KILLED, any other error FAILED
        status = end_status(err)
        raise
    finally:
        parent.end(status)


def log_report(parent: TrackedRun, report: ReportRef) -> str:
    """The whole report on the parent run (``report/``: markdown, PNGs, metrics, a self-contained HTML page
    that MLflow's preview renders) and as a Prefect markdown artifact with its images inlined; returns the
    artifact URI of ``report.md``."""
    folder = Path(report.files.get("dir") or Path(report.files["report"]).parent)
    parent.log_artifact(folder, "report")
    md_path = Path(report.files["report"])
    if not md_path.is_file():
        return ""
    text = md_path.read_text(encoding="utf-8")
    images = {name: (folder / name).read_bytes() for name in image_links(text) if (folder / name).is_file()}
    parent.client.log_text(parent.run_id, report_html(text, images, "COALA evaluation report"), "report/report.html")
    artifacts.markdown("coala-report", inline_images(text, images), "COALA evaluation report (plots inlined)")
    return f"{parent.client.get_run(parent.run_id).info.artifact_uri}/report/{md_path.name}"


def head_artifact_uri(client: Any, head: HeadRef) -> str:
    """Where the head lies in the MLflow artifact store (the run that trained it logged it under ``head``)."""
    if not head.mlflow_run_id:
        return head.uri
    run = client.get_run(head.mlflow_run_id)
    names = {a.path for a in client.list_artifacts(head.mlflow_run_id)}
    sub = "head" if "head" in names else (sorted(names)[0] if names else "")
    return f"{run.info.artifact_uri}/{sub}".rstrip("/")


def training_record(head: HeadRef) -> dict[str, Any]:
    """The ``training`` section of the head's ``head.json`` (empty when unreadable)."""
    import json

    try:
        meta = json.loads((Path(head.uri) / "head.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    training = meta.get("training") if isinstance(meta, dict) else None
    return training if isinstance(training, dict) else {}


def chosen_tags(training: dict[str, Any]) -> dict[str, str]:
    """What training chose (Phase I beta, Phase II beta / gamma / l2) as ``coala.chosen.*`` tags, which
    ``coala runs compare`` shows beside the configured params."""
    p2 = training.get("phase2_summary") or {}
    chosen = {"phase1.beta": training.get("phase1_beta"),
              **{f"phase2.{k}": p2.get(k) for k in ("beta", "gamma", "l2") if isinstance(p2, dict)}}
    return {f"coala.chosen.{k}": f"{float(v):.6g}" for k, v in chosen.items() if isinstance(v, int | float)}


def pipeline_summary(stages: dict[str, dict[str, float]], report: ReportRef, wall_s: float) -> dict[str, float]:
    """Headline metrics of the parent run: held-out metrics, per-stage and total FLOPs, wall time, memory."""
    out: dict[str, float] = {"pipeline_wall_s": wall_s}
    for key, value in report.metrics.items():
        if any(key.endswith("/" + k) for k in SUMMARY_KEYS):
            out[key] = value
    total = 0.0
    for stage, metrics in stages.items():
        for k in ("flops", "wall_s", "peak_rss_mb"):
            if k in metrics:
                out[f"{stage}/{k}"] = metrics[k]
        total += metrics.get("flops", 0.0) + metrics.get("phase1/flops", 0.0)
    out["total_flops"] = total
    out["total_tflops"] = total / 1e12
    out["peak_rss_mb"] = max((m.get("peak_rss_mb", 0.0) for m in stages.values()), default=0.0)
    return out


def default_config_path() -> Path:
    return Path("configs/demo.yaml")
