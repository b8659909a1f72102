"""One home for names that several stages share: metric keys, the output layout, bundle file names."""

from __future__ import annotations

from pathlib import Path

# metric keys as the evaluation writes them (x100); the order is the report's
TEXT_METRICS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
FACT_METRICS = ("exact_match", "token_f1")
REPORT_METRICS = TEXT_METRICS + FACT_METRICS
GATE_METRICS = REPORT_METRICS + ("sacrebleu",)
PER_SAMPLE_METRICS = REPORT_METRICS  # scored per question (paired comparisons); sacrebleu is corpus-level
REGRESSION_METRICS = ("rouge-l", "exact_match")  # compared with the promoted model on shared questions

# the output layout
METRICS_DIR = Path("metrics")
STAGE_NAMES = ("base_model", "validate", "prepare", "train", "evaluate_base", "evaluate", "gate", "merge", "export")
METHOD_FILE = "method.json"          # in a train folder: which method wrote it and how to load it
PREDICTIONS_FILE = "predictions.jsonl"
GATES_FILE = "gates.json"

# bundle files
MODEL_ONNX = "model.onnx"
CHECKSUMS = "checksums.sha256"
GENERATION_CONFIG = "generation_config.json"
MODEL_CARD_JSON = "model_card.json"
MODEL_CARD_MD = "README.md"
PREFIX_FILE = "prefix_kv.safetensors"  # a prompt method's key/value prefix
ICL_FILE = "icl.json"                  # in-context examples


def metrics_file(stage: str, root: str | Path = ".") -> Path:
    return Path(root) / METRICS_DIR / f"{stage}.json"
