"""Deterministic generation of the embedded QA dataset from the fact tables."""

from __future__ import annotations

import json
from pathlib import Path

from components.data.facts import UNITS, countries, elements
from components.core.atomic import atomic_write_text


def _number(n: int) -> str:
    return f"{n:,}"


def generate_rows() -> list[dict[str, str]]:
    """Every QA pair, in a fixed order. Answers are one short sentence in a fixed style."""
    rows: list[dict[str, str]] = []

    def add(topic: str, question: str, answer: str) -> None:
        rows.append({"id": f"{topic}-{len(rows):04d}", "topic": topic, "question": question, "answer": answer})

    for z, symbol, name in elements():
        add("element", f"What is the chemical symbol of {name.lower()}?", f"The chemical symbol of {name.lower()} is {symbol}.")
        add("element", f"Which element has the symbol {symbol}?", f"{symbol} is the symbol of {name.lower()}.")
        add("element", f"What is the atomic number of {name.lower()}?", f"{name} has atomic number {z}.")
    for country, capital, continent in countries():
        add("country", f"What is the capital of {country}?", f"The capital of {country} is {capital}.")
        add("country", f"{capital} is the capital of which country?", f"{capital} is the capital of {country}.")
        add("country", f"On which continent is {country}?", f"{country} is in {continent}.")
    for big, bigs, small, smalls, factor in UNITS:
        for n in range(1, 17):
            unit = big if n == 1 else bigs
            add("unit", f"How many {smalls} are in {n} {unit}?", f"{n} {unit} is {_number(n * factor)} {smalls}.")
    return rows


def write_dataset(path: str | Path) -> int:
    """Write the dataset as JSON lines (byte-for-byte reproducible); returns the row count."""
    rows = generate_rows()
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    atomic_write_text(path, text)
    return len(rows)
