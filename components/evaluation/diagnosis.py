"""What a fine-tuned model's gain is made of: the answers' form (their length) or their content (the facts).

A small model fine-tuned on facts it does not know learns the references' length and phrasing, which ROUGE
rewards, while exact match and token F1 stay low. `diagnose` splits the ROUGE-L gain over the base model
into the part from answers of the right length but the wrong content and the rest, and says in one line
what that means for the user.
"""

from __future__ import annotations

from statistics import fmean

from components.evaluation.metrics import answer_tokens
from components.evaluation.quality import degenerate_baseline

RIGHT_LENGTH = (0.5, 2.0)  # a prediction with this many times the reference's tokens has the right length
WRONG_F1 = 50.0  # token F1 below this, and no exact match: the content is wrong
FORM_SHARE = 0.5  # at least this share of the gain from right-length, wrong-content answers: a gain of form
LOW_EXACT = 10.0  # exact match (%) below which the facts were not learned
CUT_SHARE = 0.3  # at least this share of short answers reached evaluate.max_new_tokens: the limit cut them


def _ratio(prediction: str, reference: str, language: str) -> float:
    return len(answer_tokens(prediction, language)) / max(len(answer_tokens(reference, language)), 1)


def right_length(prediction: str, reference: str, language: str = "en") -> bool:
    low, high = RIGHT_LENGTH
    return low <= _ratio(prediction, reference, language) <= high


def wrong_content(scores: dict) -> bool:
    return not scores["exact_match"] and scores["token_f1"] < WRONG_F1


def diagnose(base_rows: dict[str, dict], tuned_rows: dict[str, dict], language: str = "en") -> dict:
    """Style against substance on the questions both models answered (rows: predictions.jsonl keyed by id)."""
    ids = [i for i in tuned_rows if i in base_rows]
    if not ids:
        raise ValueError("no question answered by both the base and the fine-tuned model")
    b, t = [base_rows[i] for i in ids], [tuned_rows[i] for i in ids]

    def mean(rows, key):
        return fmean(r["scores"][key] for r in rows)

    def tokens_ratio(rows):
        pred = sum(len(answer_tokens(r["prediction"], language)) for r in rows)
        return pred / max(sum(len(answer_tokens(r["reference"], language)) for r in rows), 1)

    gains = [y["scores"]["rouge-l"] - x["scores"]["rouge-l"] for x, y in zip(b, t)]
    form = [g for g, y in zip(gains, t) if right_length(y["prediction"], y["reference"], language)
            and wrong_content(y["scores"])]
    gain = fmean(gains)
    out = {
        "samples": len(ids),
        "rouge-l_gain": round(gain, 4),
        "form_gain": round(sum(form) / len(ids), 4),  # from answers of the right length with the wrong content
        "form_share": round(sum(form) / len(ids) / gain, 4) if gain > 0 else None,
        "length_ratio": {"base": round(tokens_ratio(b), 4), "tuned": round(tokens_ratio(t), 4)},
        "right_length_rate": {k: round(fmean(right_length(r["prediction"], r["reference"], language) for r in rows), 4)
                              for k, rows in (("base", b), ("tuned", t))},
        "exact_match": {"base": round(mean(b, "exact_match"), 4), "tuned": round(mean(t, "exact_match"), 4)},
        "token_f1": {"base": round(mean(b, "token_f1"), 4), "tuned": round(mean(t, "token_f1"), 4)},
        # answers that reached evaluate.max_new_tokens (predictions written before this was recorded: not cut)
        "cut_rate": {k: round(fmean(bool(r.get("cut")) for r in rows), 4) for k, rows in (("base", b), ("tuned", t))},
        "base_degenerate": degenerate_baseline([r["prediction"] for r in b], language),
    }
    out["kind"], out["line"] = _verdict(out)
    return out


def _verdict(d: dict) -> tuple[str, str]:
    ratio, em, f1 = d["length_ratio"]["tuned"], d["exact_match"], d["token_f1"]
    facts = (f"exact match {em['base']:.1f} -> {em['tuned']:.1f}%, token F1 {f1['base']:.1f} -> {f1['tuned']:.1f}")
    broken = d.get("base_degenerate") or {}
    if broken.get("degenerate"):
        return "broken_baseline", (f"the ROUGE-L gain ({d['rouge-l_gain']:+.2f}) is measured against a broken "
                                   f"baseline: {broken['line']}; {facts}")
    if d["rouge-l_gain"] <= 0:
        return "no_gain", (f"no ROUGE-L gain over the base model ({d['rouge-l_gain']:+.2f}); {facts}: train longer "
                           "(train.epochs, train.budget_minutes) or try another learning rate or method")
    cut = d["cut_rate"]["tuned"]
    if ratio < RIGHT_LENGTH[0] and cut >= CUT_SHARE:
        return "cut", (f"answers are {ratio:.2f}x the references' length in tokens and {cut:.0%} of them reached "
                       f"evaluate.max_new_tokens: the limit cuts them, not the model; raise evaluate.max_new_tokens "
                       f"to the references' length; {facts}")
    if ratio < RIGHT_LENGTH[0]:
        return "length", (f"answers are {ratio:.2f}x the references' length in tokens and only {cut:.0%} reached "
                          f"evaluate.max_new_tokens: the model stops early, it has not learned the answers' form; "
                          f"{facts}; train longer (train.epochs, train.budget_minutes)")
    if ratio > RIGHT_LENGTH[1]:
        return "length", (f"answers are {ratio:.2f}x the references' length in tokens: the model has not learned "
                          f"the answers' form; {facts}; train longer, or lower evaluate.max_new_tokens")
    if d["form_share"] is not None and d["form_share"] >= FORM_SHARE and em["tuned"] < LOW_EXACT:
        return "form", (f"answers have the right length ({d['right_length_rate']['tuned']:.0%} within "
                        f"{RIGHT_LENGTH[0]:g}-{RIGHT_LENGTH[1]:g}x the reference); exact match stays at "
                        f"{em['tuned']:.1f}% and {d['form_share']:.0%} of the ROUGE-L gain comes from answers of the "
                        "right length with the wrong content: the base model likely lacks this knowledge; "
                        "consider a larger base model or retrieval")
    return "content", f"the gain is in the content: {facts}"


def diagnosis_markdown(d: dict | None) -> list[str]:
    """The report's and model card's lines on it."""
    if not d:
        return []
    em, f1, lr = d["exact_match"], d["token_f1"], d["length_ratio"]
    share = "-" if d["form_share"] is None else f"{d['form_share']:.0%}"
    return ["## What the gain is made of", "",
            "| | base | fine-tuned |", "|---|---|---|",
            f"| length ratio (tokens, answers / references) | {lr['base']:.2f} | {lr['tuned']:.2f} |",
            f"| answers of the right length | {d['right_length_rate']['base']:.0%} | {d['right_length_rate']['tuned']:.0%} |",
            f"| exact match | {em['base']:.2f} | {em['tuned']:.2f} |",
            f"| token F1 | {f1['base']:.2f} | {f1['tuned']:.2f} |",
            *([f"| answers cut at evaluate.max_new_tokens | {d['cut_rate']['base']:.0%} | {d['cut_rate']['tuned']:.0%} |"]
              if "cut_rate" in d else []), "",
            f"ROUGE-L gain {d['rouge-l_gain']:+.2f}, of which {d['form_gain']:+.2f} ({share}) from answers of the "
            "right length with the wrong content.", "", f"**Diagnosis:** {d['line']}", ""]
