"""``hpo study report``: PNG figures plus one page (report.md and report.html) per study.

Optuna's matplotlib plots where Optuna has the plot (history, importances, parallel
coordinates, Pareto front); hpo's own for what only hpo records (learning curves from the
``curves`` user attribute, accuracy against size, memory and time). Every figure is drawn
off-screen, so the command runs on a headless server; a plot that cannot be drawn becomes a
note on the page instead of an error.
"""

from __future__ import annotations

import html
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.artifacts.style import DPI
from hpo.results import figures, tables
from hpo.results.outputs import make_output_dir
from hpo.results.summary import ranked_trials, tied_with
from hpo.results.text import fmt_value
from hpo.study.attrs import TrialRecord, trial_records
from hpo.study.studies import LoadedStudy, count_states, visible_trials

if TYPE_CHECKING:
    from optuna import Study

    from hpo.spec.model import Spec


@dataclass
class Section:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)  # (text|image|table, payload)

    def text(self, value: str) -> None:
        self.blocks.append(("text", value))

    def image(self, name: str, alt: str) -> None:
        self.blocks.append(("image", (name, alt)))

    def table(self, header: list[str], rows: list[list[str]], align: list[str] | None = None) -> None:
        """``align``: "left" or "right" per column (numbers right); all left when None."""
        self.blocks.append(("table", (header, rows, align or ["left"] * len(header))))


@dataclass
class ReportResult:
    markdown: Path
    html: Path
    figures: list[Path]
    notes: list[str]
    tables: list[Path] = field(default_factory=list)  # each table as NAME.csv and NAME.md


@dataclass
class _Context:
    study: Study
    spec: Spec
    output: Path
    top: int
    names: list[str]  # one per objective
    trials: list[TrialRecord]  # visible trials
    complete: list[TrialRecord]
    pruned: list[TrialRecord]
    ranked: list[TrialRecord]  # best first; the Pareto front when there are several objectives
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)

    @property
    def multi(self) -> bool:
        return len(self.names) > 1

    def note(self, section: Section, message: str) -> None:
        section.text(f"*Note: {message}*")
        self.notes.append(message)

    def save(self, figure: Any, name: str, section: Section, alt: str) -> None:
        import matplotlib.pyplot as plt

        path = self.output / name
        figure.savefig(path, dpi=DPI, bbox_inches="tight")
        plt.close(figure)
        self.figures.append(path)
        section.image(name, alt)


def objective_names(study: Study, spec: Spec) -> list[str]:
    """Metric names for the study's objectives: Optuna's metric names, else the spec's."""
    count = len(study.directions)
    names = study.metric_names
    if names and len(names) == count:
        return list(names)
    if len(spec.objectives) == count:
        return [objective.metric for objective in spec.objectives]
    return ["value"] if count == 1 else [f"value_{i}" for i in range(count)]


def rank_trials(study: Study, complete: list[TrialRecord]) -> list[TrialRecord]:
    """Best first, as ``hpo study show`` ranks them (of equal values the one Optuna and the
    dashboard name); with several objectives, the Pareto front in that order."""
    ranked = ranked_trials(study, complete)
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
        return [t for t in ranked if t.number in front]
    return ranked


def _target(ctx: _Context, index: int) -> Callable[[Any], float] | None:
    return (lambda t: t.values[index]) if ctx.multi else None


# --- Optuna's plots --------------------------------------------------------------------


def _maximize(ctx: _Context, index: int) -> bool:
    from optuna.study import StudyDirection

    return ctx.study.directions[index] == StudyDirection.MAXIMIZE


def _value(index: int) -> Callable[[Any], float]:
    """Objective ``index`` of a trial record or a FrozenTrial."""
    return lambda t: float(t.values[index])


def history(ctx: _Context, section: Section) -> None:
    if not ctx.complete:
        ctx.note(section, "no completed trial yet: no optimisation history to plot")
        return
    for i, name in enumerate(ctx.names):
        figure = figures.history_figure(ctx.complete, _value(i), name, maximize=_maximize(ctx, i))
        file = "history.png" if not ctx.multi else f"history_{i}.png"
        ctx.save(figure, file, section, f"optimisation history of {name}")


def importance_problem(ctx: _Context) -> str | None:
    """Why importances cannot be computed, in the user's terms; None when they can."""
    if len(ctx.complete) < 2:
        return (f"parameter importances need at least 2 complete trials "
                f"(the study has {len(ctx.complete)})")
    values: dict[str, set[str]] = {}
    for trial in ctx.complete:
        for key, value in trial.params.items():
            values.setdefault(key, set()).add(repr(value))
    if not any(len(v) > 1 for v in values.values()):
        return "parameter importances need at least 1 parameter that varies across the complete trials"
    return None


#: Below this many complete trials the report warns that its importances are a hint.
#: PED-ANOVA compares the best ``target_quantile`` (10 %) of the trials with all of them; with
#: fewer than ten trials that best tenth is a single trial.
MIN_IMPORTANCE_TRIALS = 10
IMPORTANCE_METHOD = "PED-ANOVA"


def importance_evaluator() -> Any:
    """optuna-dashboard 0.21's evaluator, with its defaults, so that the report and the
    dashboard's importance panel show the same numbers. The dashboard cannot be told another
    (``optuna_dashboard/_importance.py`` builds ``PedAnovaImportanceEvaluator()`` itself and
    neither ``wsgi()`` nor its CLI takes an evaluator); it is also Optuna 5's default, and,
    unlike fANOVA, it assesses conditional parameters (over the trials that set them)."""
    from optuna.importance import PedAnovaImportanceEvaluator

    return PedAnovaImportanceEvaluator()


def importance_target(ctx: _Context, index: int) -> Callable[[Any], float]:
    """Objective ``index`` as the dashboard passes it: PED-ANOVA takes lower as better, so a
    maximised objective is negated."""
    from optuna.study import StudyDirection

    if ctx.study.directions[index] == StudyDirection.MAXIMIZE:
        return lambda t: -t.values[index]
    return lambda t: t.values[index]


@dataclass(frozen=True)
class ParamCoverage:
    """How many of the complete trials set each parameter, and which PED-ANOVA cannot assess."""

    trials: int  # complete trials with finite values: those PED-ANOVA reads
    set_in: dict[str, int]  # parameter -> trials that set it
    left_out: dict[str, str]  # parameter -> why it gets no importance of its own

    @property
    def conditional(self) -> dict[str, int]:
        """Parameters set in only some of the trials (and assessed there: not left out)."""
        return {k: n for k, n in sorted(self.set_in.items()) if n < self.trials and k not in self.left_out}


def param_coverage(study: Study) -> ParamCoverage:
    """The parameters of the study's complete trials, as PED-ANOVA groups them: per
    parameter, the trials that set it with one distribution form a regime, and a regime of
    fewer than 2 trials, or of one possible value, adds nothing (Optuna's
    ``_partition_by_regime``); a parameter with no other regime scores 0 without being
    assessed. Read from the study, as the dashboard does (warm-start trials included)."""
    import math
    from collections import defaultdict

    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if all(math.isfinite(v) for v in t.values)]
    regimes: dict[str, dict[Any, int]] = defaultdict(lambda: defaultdict(int))
    for trial in trials:
        for name, distribution in trial.distributions.items():
            regimes[name][distribution] += 1
    set_in = {name: sum(counts.values()) for name, counts in regimes.items()}
    left_out = {}
    for name, counts in sorted(regimes.items()):
        if any(n >= 2 and not d.single() for d, n in counts.items()):
            continue
        if set_in[name] < 2:
            left_out[name] = (f"set in {set_in[name]} of {len(trials)} complete trials; "
                              "PED-ANOVA needs 2 where it is set")
        elif all(d.single() for d in counts):
            left_out[name] = "it has a single possible value"
        else:
            left_out[name] = f"no 2 of the {set_in[name]} trials that set it share one range"
    return ParamCoverage(len(trials), set_in, left_out)


def _importance_caveats(ctx: _Context, section: Section) -> None:
    """The method, a warning when the trials are few, and the parameters left out or
    assessed on part of the trials, and why."""
    section.text(f"Method: {IMPORTANCE_METHOD} (Optuna's default evaluator, and the method optuna-dashboard "
                 "uses, so both show these numbers): how far each parameter's distribution among the "
                 "best 10 % of the complete trials is from its distribution among all of them.")
    coverage = param_coverage(ctx.study)
    if coverage.trials < MIN_IMPORTANCE_TRIALS:
        ctx.note(section, f"only {coverage.trials} complete trials: below {MIN_IMPORTANCE_TRIALS}, "
                 f"{IMPORTANCE_METHOD}'s top 10 % of trials is a single trial, so these importances "
                 "are a hint, not a finding")
    if coverage.left_out:
        ctx.note(section, "left out (importance 0, not assessed): "
                 + "; ".join(f"{name} ({why})" for name, why in coverage.left_out.items()))
    if coverage.conditional:
        section.text(f"Conditional parameters, assessed over the trials that set them (Optuna's conditional "
                     f"{IMPORTANCE_METHOD}): "
                     + ", ".join(f"{name} ({n} of {coverage.trials})" for name, n in coverage.conditional.items())
                     + ".")


def importances(ctx: _Context, section: Section) -> None:
    import optuna

    problem = importance_problem(ctx)
    if problem:
        ctx.note(section, f"cannot compute: {problem}")
        return
    _importance_caveats(ctx, section)
    for i, name in enumerate(ctx.names):
        target = importance_target(ctx, i)
        try:
            scores = optuna.importance.get_param_importances(
                ctx.study, evaluator=importance_evaluator(), target=target)
        except (ValueError, RuntimeError) as exc:
            ctx.note(section, f"cannot compute the importances for {name}: {exc}")
            continue
        if not scores:
            ctx.note(section, f"cannot compute the importances for {name}: no parameter in the complete trials")
            continue
        figure = figures.importance_figure(scores, name, IMPORTANCE_METHOD)
        file = "importances.png" if not ctx.multi else f"importances_{i}.png"
        ctx.save(figure, file, section, f"hyperparameter importances ({IMPORTANCE_METHOD}) for {name}")
        section.table(["parameter", f"importance for {name}"],
                      [[key, f"{score:.3f}"] for key, score in scores.items()])


def parallel(ctx: _Context, section: Section) -> None:
    if not ctx.complete or not any(t.params for t in ctx.complete):
        ctx.note(section, "no completed trial with searched parameters: nothing to plot")
        return
    figure = figures.parallel_figure(ctx.study, _value(0), ctx.names[0], maximize=_maximize(ctx, 0))
    ctx.save(figure, "parallel_coordinates.png", section, "parallel coordinates")
    if any(key not in t.params for t in ctx.complete for key in {k for c in ctx.complete for k in c.params}):
        section.text(f"A conditional parameter a trial did not set sits below its axis, at "
                     f"\"{figures.NOT_SET}\".")


def grid(ctx: _Context, section: Section) -> None:
    """The objective over a grid study's searched keys: a heatmap of two, one panel per
    value of a third."""
    keys = figures.grid_keys(ctx.complete)
    if not 2 <= len(keys) <= 3:
        ctx.note(section, f"a grid heatmap shows 2 or 3 searched keys that vary; this study has {len(keys)}")
        return
    # Best first, so that a point run twice shows the run the grid table lists.
    figure = figures.grid_figure(ranked_trials(ctx.study, ctx.complete), _value(0), ctx.names[0], keys)
    ctx.save(figure, "grid.png", section, f"{ctx.names[0]} over the grid of {', '.join(keys)}")


def pareto(ctx: _Context, section: Section) -> None:
    from optuna.visualization.matplotlib import plot_pareto_front

    if len(ctx.complete) < 1:
        ctx.note(section, "no completed trial yet: no Pareto front to plot")
        return
    try:
        ax = plot_pareto_front(ctx.study, target_names=ctx.names)
    except ValueError as exc:  # more than 3 objectives
        ctx.note(section, f"cannot plot the Pareto front: {exc}")
        return
    ctx.save(ax.figure, "pareto_front.png", section, "Pareto front")


# --- hpo's own plots --------------------------------------------------------------------


def _curve(trial: TrialRecord, key: str) -> list[float]:
    return trial.curve(key)


def learning_curves(ctx: _Context, section: Section) -> None:
    top = [t for t in ctx.ranked[:ctx.top] if _curve(t, "val_loss")]
    pruned = [t for t in ctx.pruned if _curve(t, "val_loss")]
    if not top and not pruned:
        ctx.note(section, "no trial recorded learning curves yet")
        return
    fig = figures.learning_curves_figure(top, pruned)
    ctx.save(fig, "learning_curves.png", section, "learning curves")


#: Epochs drawn in the gradient figure at most (evenly spaced, first and last included):
#: more lines than this blur into one another.
MAX_GRADIENT_EPOCHS = 8


def gradient_trial(ctx: _Context) -> TrialRecord | None:
    """The trial whose gradient norms the report draws: the best-ranked one that recorded
    them (train.record_gradients), else the latest pruned or complete one that did."""
    ranked = [t for t in ctx.ranked if t.grad_norms is not None]
    if ranked:
        return ranked[0]
    others = [t for t in ctx.complete + ctx.pruned if t.grad_norms is not None]
    return max(others, key=lambda t: t.number) if others else None


def _shown_epochs(count: int) -> list[int]:
    """Indices of the epochs to draw: all of them, or MAX_GRADIENT_EPOCHS evenly spaced."""
    if count <= MAX_GRADIENT_EPOCHS:
        return list(range(count))
    step = (count - 1) / (MAX_GRADIENT_EPOCHS - 1)
    return sorted({round(i * step) for i in range(MAX_GRADIENT_EPOCHS)})


def gradient_norms(ctx: _Context, section: Section) -> None:
    """Per-layer gradient norms of one trial (figures.gradient_figure)."""
    trial = gradient_trial(ctx)
    if trial is None or trial.grad_norms is None:  # not listed then (write_report)
        return
    fig = figures.gradient_figure(trial, _shown_epochs(len(trial.grad_norms.norms)))
    ctx.save(fig, "gradient_norms.png", section, f"gradient norms per layer of trial {trial.number}")
    section.text(f"Trial {trial.number}: the L2 norm of each Linear/Conv layer's weight gradient, "
                 "averaged over each epoch's batches (train.record_gradients). Norms falling "
                 "towards the input mean vanishing gradients; rising, exploding ones.")


def training_seconds(trial: TrialRecord) -> float | None:
    seconds = _curve(trial, "seconds")
    if seconds:
        return float(sum(seconds))
    per_epoch, epochs = trial.seconds_per_epoch, trial.epochs_trained
    return per_epoch * epochs if per_epoch is not None and epochs else None


def tradeoffs(ctx: _Context, section: Section) -> None:
    trials = [t for t in ctx.complete + ctx.pruned if _curve(t, "val_accuracy")]
    if not trials:
        ctx.note(section, "no trial recorded a validation accuracy yet")
        return
    top = [t for t in ctx.ranked[:ctx.top] if t in trials]
    fig = figures.tradeoffs_figure([t for t in ctx.complete if t in trials], [t for t in ctx.pruned if t in trials],
                                   top, training_seconds)
    ctx.save(fig, "tradeoffs.png", section, "accuracy against parameter count, training time and GPU memory")
    if not any(figures.gpu_memory(t) is not None for t in trials):
        section.text("Peak memory: n/a, no trial ran on a GPU (on CPU it is the worker process's peak "
                     "resident set, spanning every trial that worker ran, so it is not plotted).")


def comparison(ctx: _Context, section: Section) -> None:
    if not ctx.ranked:
        ctx.note(section, "no completed trial yet: nothing to compare")
        return
    if ctx.multi:
        section.text(f"The Pareto front ({len(ctx.ranked)} trials), ordered by {ctx.names[0]}.")
    table = tables.comparison_table(ctx.ranked[:ctx.top], ctx.names, _retrains(ctx), tables.log_keys(ctx.spec))
    _put_table(ctx, section, table, "comparison")
    section.text("s/epoch and images/s both time the training pass (validation excluded). Peak GPU memory "
                 "is n/a for a trial trained on CPU. Test accuracy: mean ± std over the seeds of the latest "
                 "`hpo retrain --test` of that trial. Also written as comparison.csv (raw numbers) and "
                 "comparison.md.")


def grid_table(ctx: _Context, section: Section) -> None:
    """A grid study's points, one row each, sorted by the grid keys as the spec lists them."""
    if not ctx.complete:
        ctx.note(section, "no completed trial yet: no grid point to list")
        return
    searched = tables.param_groups(ctx.complete)
    order = [k for k in ctx.spec.search if k in searched] or list(searched)
    table = tables.grid_table(ctx.ranked, order, ctx.names, _retrains(ctx), tables.log_keys(ctx.spec))
    _put_table(ctx, section, table, "grid_table")
    section.text("One row per grid point that completed, sorted by " + ", ".join(order)
                 + "; a point that ran more than once shows its best-ranked run, as grid.png does. "
                 "Also written as grid_table.csv (raw numbers) and grid_table.md.")


def classes(ctx: _Context, section: Section) -> None:
    """Images per class in each split and the class weights the training loss applied, as the
    best trial (else the latest trial that recorded them) found them; trials that searched
    the data may differ, and ``hpo study show NAME --trial N`` shows each one's."""
    recorded = [t for t in ctx.ranked + sorted(ctx.trials, key=lambda t: -t.number) if t.class_counts()]
    if not recorded:
        ctx.note(section, "no trial recorded its class counts yet")
        return
    trial = recorded[0]
    table = tables.class_table(trial, _retrains(ctx).get(trial.number))
    _put_table(ctx, section, table, "classes")
    weights = trial.class_weights()
    setting = ((trial.config or {}).get("train") or {}).get("class_weights", "none")
    section.text(f"Trial {trial.number}. " + (
        f"Class weights applied in the training loss (train.class_weights {setting}): n / (k × count) per class, "
        "as scikit-learn's balanced weights." if weights else
        f"Class weights: none (train.class_weights {setting}): every image weighs the same in the training loss.")
        + (" The test split is counted by `hpo retrain --test` (tuning never reads it)."
           if "test" not in table.header else ""))


def _retrains(ctx: _Context) -> dict[int, dict[str, Any]]:
    from hpo.study.attrs import StudyRecord

    return dict(StudyRecord.from_attrs(ctx.study.user_attrs).retrains)


def _put_table(ctx: _Context, section: Section, table: tables.Table, name: str) -> None:
    """The table on the page, and as NAME.csv and NAME.md beside it."""
    section.table(table.header, table.formatted(), table.align)
    ctx.tables += table.write(ctx.output, name)


# --- the page ---------------------------------------------------------------------------


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, intro: list[str], sections: list[Section]) -> str:
    lines = [f"# {title}", "", *intro, ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for kind, payload in section.blocks:
            if kind == "text":
                lines += [payload, ""]
            elif kind == "image":
                name, alt = payload
                lines += [f"![{alt}]({name})", ""]
            else:
                header, rows, align = payload
                lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                lines.append("|" + "".join("---:|" if a == "right" else "---|" for a in align))
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:.9em}"
       "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}th{background:#f4f4f4}"
       ".note{color:#805000}")


def render_html(title: str, intro: list[str], sections: list[Section]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{e(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    parts += [f"<p>{e(line)}</p>" for line in intro]
    for section in sections:
        parts.append(f"<h2>{e(section.title)}</h2>")
        for kind, payload in section.blocks:
            if kind == "text":
                if payload.startswith("*Note: "):
                    parts.append(f"<p class=\"note\">{e(payload.strip('*'))}</p>")
                else:
                    parts.append(f"<p>{e(payload)}</p>")
            elif kind == "image":
                name, alt = payload
                parts.append(f"<p><a href=\"{e(name)}\"><img src=\"{e(name)}\" alt=\"{e(alt)}\"></a></p>")
            else:
                header, rows, align = payload
                right = [' style="text-align:right"' if a == "right" else "" for a in align]
                parts.append("<table><tr>" + "".join(f"<th{r}>{e(h)}</th>" for h, r in zip(header, right)) + "</tr>")
                parts += ["<tr>" + "".join(f"<td{r}>{e(c)}</td>" for c, r in zip(row, right)) + "</tr>"
                          for row in rows]
                parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _use_headless_backend() -> None:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # a caller that chose a backend keeps it
        matplotlib.use("Agg")


def _intro(ctx: _Context) -> list[str]:
    counts = count_states(ctx.trials)
    states = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no trials yet"
    directions = ", ".join(f"{d.name.lower()} {n}" for d, n in zip(ctx.study.directions, ctx.names))
    lines = [f"Objective: {directions}. Trials: {states}."]
    if ctx.ranked and not ctx.multi:
        best = ctx.ranked[0]
        tied = tied_with(best, ctx.ranked)
        also = (f" (tied with trial{'s' if len(tied) > 1 else ''} {', '.join(map(str, tied))}: the first of "
                "equal values, as Optuna and the dashboard name it)") if tied else ""
        lines.append(f"Best: trial {best.number}, {ctx.names[0]} = {fmt_value(best.value)}{also}.")
    return lines


def write_report(loaded: LoadedStudy, output: Path, *, top: int = 5) -> ReportResult:
    """Render every figure into ``output`` and write report.md and report.html beside them."""
    import optuna
    from optuna.trial import TrialState
    from rich.console import Console
    from rich.progress import Progress

    _use_headless_backend()
    make_output_dir(output)
    study = loaded.study
    trials = trial_records(visible_trials(study.get_trials(deepcopy=False)))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    ctx = _Context(study=study, spec=loaded.spec, output=output, top=top,
                   names=objective_names(study, loaded.spec), trials=trials, complete=complete,
                   pruned=[t for t in trials if t.state == TrialState.PRUNED],
                   ranked=rank_trials(study, complete))
    steps: list[tuple[str, Callable[[_Context, Section], None]]] = [
        ("Optimisation history", history),
        ("Hyperparameter importances", importances),
        ("Parallel coordinates", parallel),
        *([("Grid", grid)] if ctx.spec.sampler.name == "grid" else []),
        *([("Grid table", grid_table)] if ctx.spec.sampler.name == "grid" else []),
        ("Learning curves", learning_curves),
        ("Accuracy against size, memory and time", tradeoffs),
        ("Model comparison", comparison),
        ("Classes", classes),
    ]
    if ctx.multi:
        steps.insert(0, ("Pareto front", pareto))
    if gradient_trial(ctx) is not None:  # only studies with train.record_gradients have one
        steps.insert(steps.index(("Learning curves", learning_curves)) + 1, ("Gradient norms", gradient_norms))
    sections = []
    console = Console(stderr=True)
    with warnings.catch_warnings(), Progress(console=console, transient=True,
                                             disable=not console.is_terminal) as progress:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # matplotlib on flat axes: the figure is fine
        task = progress.add_task("Report", total=len(steps))
        for title, step in steps:
            progress.update(task, description=title)
            section = Section(title)
            step(ctx, section)
            sections.append(section)
            progress.advance(task)
    title = f"Study {study.study_name}"
    intro = _intro(ctx)
    markdown, page = output / "report.md", output / "report.html"
    markdown.write_text(render_markdown(title, intro, sections))
    page.write_text(render_html(title, intro, sections))
    return ReportResult(markdown, page, ctx.figures, ctx.notes, ctx.tables)
