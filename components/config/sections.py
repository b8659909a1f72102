"""The sections of params.yaml that stand alone (paths, model, data, validate, prepare, evaluate, gates, merge,
export, registry); `components.config.params` puts them together with `train` into Params and re-exports them.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from components.core.layout import GATE_METRICS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Paths(Section):
    """Where each stage writes; dvc.yaml reads these through `${paths.*}`."""

    raw: str = "data/qa.jsonl"
    base_model: str = "models/base"
    validated: str = "artifacts/validated"
    prepared: str = "artifacts/prepared"
    train: str = "artifacts/train"
    eval_base: str = "artifacts/eval_base"
    eval: str = "artifacts/eval"
    gate: str = "artifacts/gate"
    merged: str = "models/merged"
    bundle: str = "bundle"


class ModelConfig(Section):
    source: str = Field("embedded", description="'embedded', a local directory, or a hub model id")
    gguf_file: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = Field(False, description="load pickle (.bin) weights; pickle can run code on load")


DOLLY_PATTERN = r"^### Human: (?P<question>.*?) ### Assistant: (?P<answer>.*)$"


class DataConfig(Section):
    path: str = "data/qa.jsonl"
    test_path: str | None = Field(None, description="optional held-out file; otherwise prepare splits")
    format: Literal["auto", "qa", "alpaca", "sharegpt", "chatglm", "squad", "text"] = "auto"
    question_field: str | None = Field(None, description="question column (qa: 'question', chatglm: 'prompt')")
    answer_field: str | None = Field(None, description="answer column (qa: 'answer', chatglm: 'response')")
    answers_field: str | None = Field(None, description="qa: a list of reference answers, scored best-match "
                                                        "(SQuAD-style); a list field named 'answers' is used when unset")
    history_field: str = "history"
    text_field: str = "text"
    text_pattern: str = Field(DOLLY_PATTERN, description="text format: regex with question and answer groups")
    context_template: str = Field("{context}\n\n{question}", description="squad: how context and question become one prompt")
    template_vars: dict[str, str] = Field(default_factory=dict, description="values for {{name}} placeholders in "
                                          "rows, filled before validation; a row left holding one is quarantined")
    mask_history: bool = Field(False, description="multi-turn rows: learn only the last assistant reply (the earlier "
                               "replies are context, as the user turns are)")


    @field_validator("template_vars", mode="before")
    @classmethod
    def _values_as_text(cls, v):
        if isinstance(v, dict):  # `-S data.template_vars.year=2024` parses as a number
            return {k: str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for k, x in v.items()}
        return v

    @field_validator("template_vars")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not re.fullmatch(r"\w+", k)]
        if bad:
            raise ValueError(f"placeholder names are letters, digits and _ ({{{{name}}}}), not {bad}")
        return v


class ValidateConfig(Section):
    min_question_chars: int = 3
    max_question_chars: int = 2000
    min_answer_chars: int = 1
    max_answer_chars: int = 4000
    max_quarantine_fraction: float = Field(0.2, ge=0, le=1)
    min_rows: int = 10


class PrepareConfig(Section):
    test_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = Field(42, description="the train/test split's own seed: a `seed` sweep keeps the same test set")
    max_length: int | Literal["auto"] = Field("auto", description="tokens a training row keeps; auto: the 99th "
                                             "percentile of the train rows' lengths, at most max_length_cap")
    max_length_cap: int = Field(1024, ge=8, description="the most tokens max_length: auto may take")
    system_prompt: str | None = Field("Answer the question.", description="the system turn of every prompt (neutral "
                                      "by default; one that describes the data's answers helps the base model too)")
    chat_template: str = Field("auto", description="auto (the model's own; plain for a model without one), a "
                               "named template (plain, chatml) over the model's own, or a path to a .jinja file")

    @field_validator("chat_template")
    @classmethod
    def _known_template(cls, v: str) -> str:
        from components.prompts.templates import check_choice

        return check_choice(v)

    @field_validator("max_length")
    @classmethod
    def _at_least_8(cls, v):
        if v != "auto" and v < 8:
            raise ValueError("prepare.max_length is at least 8 tokens, or auto")
        return v

    def resolve_max_length(self, lengths: list[int]) -> int:
        """The max_length used for rows of these (untruncated) lengths: the setting, or auto's 99th percentile."""
        if self.max_length != "auto":
            return self.max_length
        if not lengths:
            return min(8, self.max_length_cap)
        p99 = sorted(lengths)[math.ceil(0.99 * len(lengths)) - 1]  # nearest rank: 99% of the rows are this or shorter
        return max(8, min(self.max_length_cap, p99))




class EvaluateConfig(Section):
    max_samples: int = Field(100, ge=1)
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(48, ge=1)
    language: Literal["en", "zh"] = "en"
    metric_style: Literal["chatglm", "normalised"] = Field(
        "chatglm", description="chatglm: ChatGLM's compute_metrics exactly (case kept); normalised: lower-cased, "
                               "punctuation and articles stripped (SQuAD-style) before BLEU/ROUGE")
    drift_max_new_tokens: int = Field(32, ge=0, description="tokens of each answer to the drift prompts "
                                                           "(gates.drift_prompts); 0: drift not measured")


DEFAULT_MAX_DRIFT = 1.0  # between the embedded default run and a 10x learning rate (docs/benchmarks/quickstart.md, --drift-lr)


class GatesConfig(Section):
    min_scores: dict[str, float] = Field(default_factory=lambda: {"rouge-l": 60.0, "exact_match": 40.0},
                                         description="floors (x100) on the fine-tuned model's metrics")
    min_gain: dict[str, float] = Field(default_factory=lambda: {"rouge-l": 10.0, "exact_match": 20.0},
                                       description="minimum points gained over the base model")
    min_samples: int = Field(50, ge=1, description="fewer scored test questions fail the gate")
    require_significant_gain: bool = True  # the gain's paired bootstrap 95% interval must lie above 0
    bootstrap_samples: int = Field(1000, ge=100)
    promoted: str | None = Field(None, description="bundle of the currently promoted model, for the no-regression gate")
    max_regression: float = Field(1.0, ge=0, description="points allowed below the promoted model on the questions both "
                                                         "were scored on (ROUGE-L and exact match)")
    max_empty_rate: float = Field(0.05, ge=0, le=1)
    max_repeated_ngram_rate: float = Field(0.2, ge=0, le=1)
    min_length_ratio: float = Field(0.5, ge=0)
    max_length_ratio: float = Field(2.0, gt=0)
    drift_prompts: str = Field("data/drift_prompts.jsonl", description="general prompts (JSON lines with \"prompt\", or "
                               "text lines) the base model answers once; the fine-tuned model's drift is measured on them")
    max_drift: float | None = Field(DEFAULT_MAX_DRIFT, gt=0, description="the most the fine-tuned model's loss on the "
                                    "base model's drift answers may exceed the base model's own (nats per token); "
                                    "null: reported, not gated")

    @field_validator("min_scores", "min_gain")
    @classmethod
    def _known_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(GATE_METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {list(GATE_METRICS)}")
        return v


class MergeConfig(Section):
    rtol: float = Field(1e-5, description="allowed max |logit diff| relative to max |logit|")
    atol: float = 1e-5
    check_samples: int = 4


class ExportConfig(Section):
    opset: int = 18
    parity_samples: int = 4
    max_new_tokens: int = 32
    quantize: list[Literal["int8", "int4"]] = Field(default_factory=lambda: ["int8"],
                                            description="quantized variants to try; each ships only if it passes its gate")
    quant_eval_samples: int = Field(32, ge=1, description="test questions on which a variant's ROUGE-L is compared")
    max_quant_rouge_l_drop: float = Field(1.0, ge=0, description="ROUGE-L points a variant may lose against fp32")
    quantize_embeddings: bool | Literal["auto"] = Field("auto", description="quantize the token embedding and LM head "
                                                        "too; auto: for vocabularies of 100,000 tokens and more")


class RegistryConfig(Section):
    """Model registry (GTO tags in this Git repo) and where promoted bundles are materialised."""

    name: str = Field("qa-model", pattern=r"^[a-z0-9][a-z0-9-]*$", description="the model's name in the registry")
    deploy_dir: str = Field(".peftpipe/deployments", description="materialised bundles, one folder per version")
    push: bool = Field(False, description="push tags (git) and the bundle (dvc push) to the remotes on register/promote")
