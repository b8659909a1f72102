"""`peftpipe sweep`: a grid of params run as DVC experiments, one at a time, then a table sorted by a metric.

Each grid point is `dvc exp run <until> -S key=value ...` in the workspace, so it is an ordinary DVC
experiment (`dvc exp show`, `dvc exp diff`, `dvc exp apply`, DVC Studio), and DVC's run cache reuses
every stage whose inputs did not change (the base model and the prepared data are made once). After
the grid, params.yaml is what it was, unless --apply-best applies the winner (`dvc exp apply`).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from flows.report import SWEEP_METRICS as SHOWN

PARAMS = Path("params.yaml")


def split_values(text: str) -> list[str]:
    """'1e-4,3e-4' -> ['1e-4', '3e-4']; commas inside [] or {} stay (a list-valued param is one value)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [v for v in out if v]


def grid(sets: list[str]) -> list[list[str]]:
    """Every combination of the -S axes: ['train.lr=1,2', 'train.method=a,b'] -> 4 override lists."""
    from components.core.errors import ConfigError

    axes = []
    for s in sets:
        if "=" not in s:
            raise ConfigError(f"sweep -S {s!r}: expected KEY=V1,V2,...")
        key, values = s.split("=", 1)
        vals = split_values(values)
        if not vals:
            raise ConfigError(f"sweep -S {s!r}: no values")
        axes.append([f"{key.strip()}={v}" for v in vals])
    return [list(p) for p in itertools.product(*axes)]


def _env() -> dict:
    env = dict(os.environ)  # dvc.yaml calls `peftpipe`: this interpreter's first on PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def sweep(sets: list[str], until: str = "evaluate", sort: str = "rouge-l", apply_best: bool = False,
          prefix: str = "sweep") -> list[dict]:
    """Run the grid; returns one row per point (overrides, experiment name, metrics, seconds), best first."""
    from components.config.params import check_confined, load_params
    from components.core.errors import UserError
    from components.core.runtime import LOG_DIR
    from flows.run import ensure_embedded_data

    points = grid(sets)
    for overrides in points:  # every point is valid before the first one runs
        check_confined(load_params(PARAMS, overrides))
    ensure_embedded_data(load_params(PARAMS).data.path)
    original = PARAMS.read_text()
    stamp = time.strftime("%m%d-%H%M%S")
    rows: list[dict] = []
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    try:
        for i, overrides in enumerate(points, 1):
            name = f"{prefix}-{stamp}-{i}"
            print(f"[{i}/{len(points)}] {name}: {' '.join(overrides)}", end=" ... ", flush=True)
            log = LOG_DIR / f"{name}.log"
            cmd = [sys.executable, "-m", "dvc", "exp", "run", until, "--name", name]
            cmd += [x for o in overrides for x in ("-S", o)]
            t0 = time.perf_counter()
            with open(log, "w", encoding="utf-8") as out:
                code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env()).returncode
            seconds = round(time.perf_counter() - t0, 1)
            metrics = _read(Path("metrics") / "evaluate.json") if code == 0 else {}
            row = {"name": name if code == 0 else None, "overrides": overrides, "exit": code, "seconds": seconds,
                   **{k: metrics.get(k) for k in SHOWN}, "log": str(log)}
            if sort not in SHOWN:
                row[sort] = metrics.get(sort)
            rows.append(row)
            print(f"{sort} {row[sort]:.2f} ({seconds:.0f} s)" if code == 0 else f"FAILED (exit {code}; see {log})",
                  flush=True)
    finally:
        PARAMS.write_text(original)  # the workspace's params as they were; the experiments keep theirs
    done = [r for r in rows if r["exit"] == 0]
    if not done:
        raise UserError(f"sweep: every one of the {len(rows)} runs failed; see {rows[0]['log'] if rows else LOG_DIR}")
    ranked = sorted(done, key=lambda r: -(r[sort] if r[sort] is not None else float("-inf"))) + \
        [r for r in rows if r["exit"] != 0]
    if apply_best:
        best = ranked[0]
        subprocess.run([sys.executable, "-m", "dvc", "exp", "apply", best["name"]], check=True, env=_env(),
                       stdout=subprocess.DEVNULL)
        print(f"applied the best run, {best['name']} ({' '.join(best['overrides'])}): params.yaml and outputs are its own")
    return ranked


def environment() -> dict:
    """The machine a sweep ran on (components.core.runtime.machine) and the library versions."""
    import platform

    import torch
    import transformers

    from components.core.runtime import machine

    return {**machine(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}
