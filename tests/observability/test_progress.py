"""Terminal progress bars (coala_cli.progress): off when stderr is not a terminal or with --quiet, on when
forced; they follow extraction events, the Phase I beta path and the pipeline's progress artifacts."""

from __future__ import annotations

import io
import re
import sys
import warnings

import numpy as np
import pytest

from coala_cli import progress as prog


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_enabled_follows_tty_quiet_and_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COALA_PROGRESS", raising=False)
    assert prog.enabled(stream=Tty()) and not prog.enabled(stream=io.StringIO())
    assert not prog.enabled(quiet=True, stream=Tty())
    monkeypatch.setenv("COALA_PROGRESS", "0")
    assert not prog.enabled(stream=Tty())
    monkeypatch.setenv("COALA_PROGRESS", "1")
    assert prog.enabled(stream=io.StringIO()) and not prog.enabled(quiet=True)


def test_no_bar_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("COALA_PROGRESS", raising=False)
    with prog.beta_path_progress() as update:
        update({"beta_index": 0, "n_betas": 2, "beta": 0.1, "iteration": 5, "max_iter": 10})
    assert capsys.readouterr().err == ""


def test_beta_path_bar_follows_a_real_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from coala_core.phase1 import fit_phase1_path

    monkeypatch.setenv("COALA_PROGRESS", "1")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    rng = np.random.default_rng(0)
    X, V = rng.normal(size=(60, 4)), rng.normal(size=(20, 4))
    # 30 iterations may or may not reach tol (the polish can end a solve early): a non-convergence warning is
    # not what this test is about
    with warnings.catch_warnings(), prog.beta_path_progress() as update:
        warnings.simplefilter("ignore", RuntimeWarning)
        fit_phase1_path((X, 0.5 * X), validation=(V, 0.5 * V), n_patterns=2, max_iter=30, path_n_betas=3, progress=update)
    text = err.getvalue()
    assert "Phase I beta path" in text and re.search(r"\b3(\.00)?/3 betas", text) and "val acc" in text


def test_extraction_and_pipeline_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from tasks.artifacts import PROGRESS_LISTENERS, Progress

    monkeypatch.setenv("COALA_PROGRESS", "1")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with prog.extraction_progress() as update:
        for done in (16, 32, 40):
            update(SimpleNamespace(rows_done=done, rows_total=40, stats=SimpleNamespace(tokens=10 * done, seconds=1.0)))
    assert "40/40" in err.getvalue() and "tok/s" in err.getvalue()
    with prog.pipeline_progress():
        p = Progress("feature-extraction", "Extracting features of 40 pairs")  # outside a run: no artifact
        p.update(0.5)
        p.done()
    assert not PROGRESS_LISTENERS and "Extracting features" in err.getvalue() and "100%" in err.getvalue()


def test_extraction_progress_moves_every_batch_not_every_chunk(tiny_model, tmp_path) -> None:
    """One chunk of 24 rows, batches of 4 texts: progress events arrive per batch (rows_done rising inside
    the chunk, ``committed=False``), then once for the committed chunk."""
    from coala_core.features import ExtractionConfig, FeatureExtractor, extract_features, load_model
    from storage import FeatureStore
    from storage.pairs import from_records

    n = 24
    table = from_records([{"pair_id": f"p{i}", "prompt": [{"role": "user", "content": f"question {i} about spoons"}],
                           "chosen": f"a helpful answer number {i}", "rejected": f"no {i}", "source": "t",
                           "group_id": f"g{i}", "split": "train", "meta": "{}"} for i in range(n)])
    cfg = ExtractionConfig.build(model=str(tiny_model), chunk_rows=n, batch_size=4, max_tokens=32)
    ex = FeatureExtractor(load_model(cfg), cfg)
    store = FeatureStore.open_or_create(tmp_path / "s.zarr", n_rows=n, dim=ex.dim, dtype=cfg.store_dtype,
                                        chunk_rows=cfg.chunk_rows, provenance=ex.provenance("d"))
    events: list = []
    extract_features(table, store, cfg, extractor=ex, progress=events.append, show_progress=False)
    partial = [e for e in events if not e.committed]
    assert len(partial) >= 3 and [e.rows_done for e in partial] == sorted(e.rows_done for e in partial)
    assert 0 < partial[0].rows_done < n and all(e.rows_done < n for e in partial)
    assert events[-1].committed and events[-1].rows_done == n and store.is_complete
