"""The grid: every base x dataset x target x recipe x per-class limit x unlabeled count x seed
(``compare``).

Every run is planned before the first extraction, so a grid never fails at run 5 of 8 on
something it could have said at once; with ``out``, each finished run is kept at once and
reused when the same grid runs again.
"""
from __future__ import annotations

import logging
from pathlib import Path

from bottleneck.cache.store import check_writable
from bottleneck.core import faults as _faults
from bottleneck.core.errors import BottleneckError
from bottleneck.data.datasets import load_dataset
from bottleneck.experiments.recipes import unlabeled_of
from bottleneck.experiments.run import execute_fitted, keep, plan_run, split_kwargs
from bottleneck.extraction.run import engine_session
from bottleneck.report.html import draw_grid, draw_run, write_report
from bottleneck.report.results import ResultsDir, markdown_table, write_results  # noqa: F401  (tables live in results)

log = logging.getLogger("bottleneck")


def compare(bases: list[str], datasets: list[str], per_class: list[int | None] = (100,), seeds: list[int] = (0,),
            head: str | None = None, out: str | Path | None = None, *, targets: list[str | None] = (None,),
            eval_per_class: int | None = None, head_params: dict | None = None, holdout_classes=None,
            loss: str | None = None, plots: bool = False, recipes: list[str | None] = (None,),
            unlabeled: list[int | str] = (0,), semi: str | None = None, **extract_kwargs) -> list[dict]:
    """Every base x dataset x target x recipe x per-class limit x unlabeled count x seed;
    returns the rows. With ``out``, each finished row is kept there at once (results.csv,
    results.json, table.md remade from all rows in the folder), and rows finished by an
    earlier run of the same grid are reused. ``unlabeled``: images per class learnt from
    without their labels (0: none, the plain protocol; "all"), by the method ``semi``."""
    from tqdm.auto import tqdm

    plan_kwargs, options = split_kwargs(extract_kwargs)
    if plots and not out:
        raise BottleneckError("--plots needs --out (the folder the pictures go to)", "add --out FOLDER")

    def learns_unlabeled(recipe, u) -> bool:
        return unlabeled_of(recipe, u) not in (None, 0)

    if semi is not None and not any(learns_unlabeled(c, u) for c in recipes for u in unlabeled):
        raise BottleneckError(f"--semi {semi} learns from unlabeled images, and no run of this grid has any",
                              "add --unlabeled N|all (e.g. --unlabeled 0,all), or drop --semi")
    loaded = {d: load_dataset(d, plan_kwargs.get("data_dir")) for d in datasets}  # list each dataset once
    grid = [(b, d, t, n, s, c, u) for b in bases for d in datasets for t in targets for c in recipes
            for n in per_class for u in unlabeled for s in seeds]
    # Every check that can fail, before the first extraction: bases, weights, sizes, layers, splits, targets, heads.
    planned = [plan_run(b, loaded[d], n, s, target=t, head=head, head_params=head_params,
                        eval_per_class=eval_per_class, holdout_classes=holdout_classes, loss=loss, recipe=c,
                        unlabeled=u, semi=semi if learns_unlabeled(c, u) else None, **plan_kwargs)
               for b, d, t, n, s, c, u in grid]
    if any(p is not None and not p.path.exists() for r in planned
           for p in (r.train, getattr(r, "val", None), getattr(r, "mirror", None), r.test, *[q for part in getattr(r, "parts", ()) for q in part],
                     *getattr(r, "pool", ()))):
        check_writable(plan_kwargs.get("cache_dir", "features"))
    results = ResultsDir(out) if out else None
    rows = []
    with tqdm(total=len(grid), desc="grid", unit="run", disable=not options.progress or len(grid) < 2) as bar, \
            engine_session(options):  # one Ray instance for the whole grid
        for (b, d, t, n, s, c, u), r in zip(grid, planned):
            bar.set_postfix_str(f"{b} {d} {r.target.name} N={n} seed={s}" + (f" recipe={c}" if c else "")
                                + (f" unlabeled={u}" if u != 0 else ""))
            row = results.get(r.key) if results else None
            if row is None:
                fitted = execute_fitted(r, options)
                row = fitted.row
                if results:
                    keep(results, r, fitted, plots)
            else:
                if plots and not (results.out / "plots" / r.key).is_dir():
                    draw_run(results, row)  # a run finished earlier without --plots
                row = {**row, "extracted_images": 0, "reused_row": True}
            rows.append(row)
            bar.update(1)
            _faults.checkpoint("after-run", len(rows) - 1)
    if plots:
        draw_grid(results, results.rows())
        write_report(out, draw=False)
    return rows
