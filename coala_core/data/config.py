"""Typed options of the dataset stage: building EduFeedback by APS and importing preference files.

Both configs share :class:`DatasetConfig`: how rows are filtered, deduplicated, subset (``limit``) and split
by group. Every option is validated at construction (``StageConfig.build`` names the field and the value).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from coala_core.config import StageConfig
from coala_core.errors import ConfigError

ConversationFormat = Literal["mathdial", "messages"]
ImportFormat = Literal["trl", "hh", "ultrafeedback", "sentiment", "rated"]
InputFormat = Literal["auto", "jsonl", "json", "csv", "tsv", "parquet"]
StudentRole = Literal["tutor", "student", "system", "skip"]


class DatasetConfig(StageConfig):
    """Curation shared by every source.

    - ``train_fraction``/``validation_fraction``/``test_fraction``: shares of *groups* (conversations or
      prompts) per source, allocated by largest remainder after a seeded shuffle; must sum to 1.
    - ``seed``: drives the split, the ``limit`` subset and any random pairing.
    - ``limit``: keep at most this many rows, taken as whole groups in seeded order (for demos).
    - ``max_prompt_chars`` / ``max_response_chars``: length filters in characters (prompt = all message
      contents together); ``None`` disables.
    - ``dedup``: drop a row whose (prompt, chosen, rejected) repeats an earlier row.
    - ``skip_invalid``: skip malformed input lines (listed in the card) instead of stopping at the first.
    - ``source``: the ``source`` column value; ``None`` lets the builder pick a name from the format.
    - ``input_format``: how to read the file; ``auto`` goes by its extension (``.jsonl[.gz]``, ``.json``,
      ``.csv``, ``.tsv``/``.tab``, ``.parquet``). ``delimiter`` overrides the CSV/TSV field separator; fields use
      standard CSV quoting (a quoted field may hold separators, newlines and doubled quotes).
    - ``strip_quotes``: remove one layer of quotes wrapping a whole text value (files that wrap every field in
      tripled quotes); ``unescape_html``: decode HTML entities (``&#039;`` -> ``'``) in every text value.
    - ``split_field``: keep the split the source data already has: the record field naming it; its values map
      to train/validation/test through ``split_names`` (default: train/training, validation/valid/val/dev,
      test/testing). Groups are still respected (a group found in two source splits is an error); when no record
      maps to validation, ``validation_fraction`` of the training groups (relative to train + validation) is held
      out as validation, seeded.
    """

    train_fraction: float = Field(0.8, ge=0.0, le=1.0)
    validation_fraction: float = Field(0.1, ge=0.0, le=1.0)
    test_fraction: float = Field(0.1, ge=0.0, le=1.0)
    seed: int = 0
    limit: int | None = Field(None, gt=0)
    max_prompt_chars: int | None = Field(None, gt=0)
    max_response_chars: int | None = Field(None, gt=0)
    dedup: bool = True
    skip_invalid: bool = False
    source: str | None = Field(None, min_length=1)
    input_format: InputFormat = "auto"
    delimiter: str | None = Field(None, min_length=1, max_length=1)
    strip_quotes: bool = False
    unescape_html: bool = False
    split_field: str | None = Field(None, min_length=1)
    split_names: dict[str, Literal["train", "validation", "test"]] | None = None

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> DatasetConfig:
        total = self.train_fraction + self.validation_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                f"{type(self).__name__}: train_fraction + validation_fraction + test_fraction must sum to 1, "
                f"got {self.train_fraction} + {self.validation_fraction} + {self.test_fraction} = {total:g}"
            )
        return self

    @property
    def fractions(self) -> tuple[float, float, float]:
        return (self.train_fraction, self.validation_fraction, self.test_fraction)

    def split_of_source(self, value: Any) -> str | None:
        """The canonical split a source split value maps to (``None``: not mapped)."""
        names = self.split_names if self.split_names is not None else DEFAULT_SPLIT_NAMES
        key = str(value).strip()
        return names.get(key, names.get(key.lower()))


DEFAULT_SPLIT_NAMES: dict[str, Literal["train", "validation", "test"]] = {
    "train": "train", "training": "train", "validation": "validation", "valid": "validation", "val": "validation",
    "dev": "validation", "test": "test", "testing": "test",
}


class EduFeedbackConfig(DatasetConfig):
    """Options of the Alternating Population Strategy (method.md section 2).

    - ``format``: ``mathdial`` (``conversation`` field, ``|EOM|``-separated turns, ``Teacher:`` = tutor, any
      other turn = student) or ``messages`` (``{"messages": [{"role", "content"}]}``).
    - ``aps_mode``: ``drop`` (default; no triplet without a real turn T_{i+2}) or ``wrap`` (the authors'
      code: the rejected index wraps modulo the number of tutor turns, i.e. to the first tutor turn).
    - ``direction``: ``later-is-worse`` (chosen = T_{i+1}, rejected = T_{i+2}) or ``reversed`` (swapped).
    - ``tutor_role``: the input role that is the tutor (``messages`` format; MathDial's tutor is ``Teacher``).
    - ``role_map``: input role -> ``tutor|student|system|skip``; ``None`` maps ``tutor_role`` to tutor,
      ``system`` to system and every other role to student. With an explicit map an unmapped role is an error.
    - ``include_opening_tutor_turns``: the paper's prompt_0 is S0 alone (tutor turns before the first student
      turn are not in any prompt); ``True`` keeps them at the start of every prompt.
    - ``group_field``: record field whose value groups conversations for the split (``None``: MathDial groups
      by ``qid``, since one problem can have several conversations; ``messages`` by conversation).
    - ``id_field``: record field naming the conversation (fallback: the line number).
    - ``turn_separator``: text joining consecutive turns of one speaker when they are merged.
    """

    format: ConversationFormat = "mathdial"
    aps_mode: Literal["drop", "wrap"] = "drop"
    direction: Literal["later-is-worse", "reversed"] = "later-is-worse"
    tutor_role: str = Field("assistant", min_length=1)
    role_map: dict[str, StudentRole] | None = None
    include_opening_tutor_turns: bool = False
    group_field: str | None = None
    id_field: str = "id"
    turn_separator: str = "\n"

    @property
    def source_name(self) -> str:
        return self.source or ("edufeedback-mathdial" if self.format == "mathdial" else "edufeedback")


class ImportConfig(DatasetConfig):
    """Options of the preference-file importers (``format`` picks one).

    - ``trl``: ``prompt`` (string or messages; absent = implicit prompt) + ``chosen``/``rejected``.
    - ``hh``: HH-RLHF transcripts ``\\n\\nHuman: ...\\n\\nAssistant: ...`` split at their last shared turn.
    - ``ultrafeedback``: binarized rows (message lists, ``score_chosen``/``score_rejected`` kept in meta);
      ``drop_ties`` drops rows whose two scores are equal.
    - ``sentiment``: ``text_field`` + ``label_field``; ``positive_labels``/``negative_labels`` (compared as
      strings); positives and negatives are shuffled with ``seed`` and paired one to one, no prompt.
    - ``rated``: ``prompt_field``, ``response_field``, ``score_field``; per prompt the best-scored response is
      chosen and the worst rejected; prompts whose best and worst scores tie are skipped.

    ``ignore_labels`` (sentiment): labels that are neither positive nor negative and are dropped (counted in
    the card as ``ignored_label``), e.g. a neutral class; ``*`` ignores every label outside the two lists.
    Any other label is an invalid record.
    """

    format: ImportFormat
    prompt_field: str = "prompt"
    response_field: str = "response"
    score_field: str = "score"
    text_field: str = "text"
    label_field: str = "label"
    positive_labels: tuple[str, ...] = ("1", "pos", "positive", "true")
    negative_labels: tuple[str, ...] = ("0", "neg", "negative", "false")
    drop_ties: bool = True
    ignore_labels: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _labels_disjoint(self) -> ImportConfig:
        pos = {s.lower() for s in self.positive_labels}
        neg = {s.lower() for s in self.negative_labels}
        if pos & neg:
            raise ConfigError(f"ImportConfig: positive_labels and negative_labels overlap: {sorted(pos & neg)}")
        ignored = {s.lower() for s in self.ignore_labels}
        if ignored & (pos | neg):
            raise ConfigError(f"ImportConfig: ignore_labels overlap the positive/negative labels: {sorted(ignored & (pos | neg))}")
        return self

    @property
    def source_name(self) -> str:
        return self.source or self.format
