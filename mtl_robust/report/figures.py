"""Report figures (matplotlib, Agg): relative change vs eps, transfer heatmaps, the sharing-vs-robustness
scatter and example grids. Each function draws one PNG from the plain inputs the other report modules
build (`curves`, `transfer`, `tradeoff`, `examples`) and returns its path; all values are percents.
Directions look as the direction registry says (`report.directions.direction_style`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written on headless machines; never try to open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from mtl_robust.report.curves import EpsCurves  # noqa: E402
from mtl_robust.report.directions import TASK_COLORS, direction_label, direction_style  # noqa: E402
from mtl_robust.report.examples import ExampleRef  # noqa: E402
from mtl_robust.report.order import task_sort_key  # noqa: E402
from mtl_robust.report.records import attack_eps  # noqa: E402
from mtl_robust.report.tables import format_number  # noqa: E402
from mtl_robust.report.tradeoff import TradeoffSet  # noqa: E402
from mtl_robust.report.transfer import TransferSet  # noqa: E402
from mtl_robust.values.budget import eps_axis, eps_axis_title, format_eps  # noqa: E402
from mtl_robust.values.norm import label_norm  # noqa: E402

DPI = 150
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _percent() -> PercentFormatter:
    """A fresh formatter per axis (a formatter binds to its axis); decimals follow the axis range, so a
    narrow range (-0.4 % .. 0 %) does not print "0%" on every tick."""
    return PercentFormatter(xmax=100, decimals=None)


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------- relative change vs eps
# The smallest half-range (in % relative change) of a diverging colour scale: below it, changes are drawn
# near white instead of a +-0.0006 % spread filling the whole scale (a "0.0 %" cell in dark red).
MIN_COLOUR_LIMIT = 1.0


def colour_limit(values: np.ndarray) -> float:
    """The symmetric limit of a diverging colour scale: the largest finite magnitude, floored."""
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite)]
    return max(float(finite.max()) if finite.size else 0.0, MIN_COLOUR_LIMIT)


def plot_eps_curves(curves: EpsCurves, path: str | os.PathLike) -> Path:
    """One panel per task plus the average; one line per direction; x = eps in pixel units."""
    return _save(draw_eps_curves(curves), path)


def draw_eps_curves(curves: EpsCurves) -> plt.Figure:
    """The figure `plot_eps_curves` saves (open: the caller closes it)."""
    panels = list(curves.tasks) + ["avg"]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(2.9 * len(panels) + 0.6, 3.6),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    all_eps = sorted({p.eps for pts in curves.series.values() for p in pts})
    norm = label_norm(curves.method)
    for ax, panel in zip(axes[0], panels):
        for i, (direction, points) in enumerate(curves.series.items()):
            xs = [eps_axis(p.eps, norm) for p in points]
            ys = [p.rel_avg if panel == "avg" else p.rel_task.get(panel, math.nan) for p in points]
            ax.plot(xs, ys, label=direction_label(direction), markersize=5, **direction_style(direction, i))
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title("average over tasks" if panel == "avg" else f"task: {panel}", fontsize=10)
        ax.set_xlabel(eps_axis_title(norm))
        ax.set_xticks([eps_axis(e, norm) for e in all_eps])
        ax.set_xticklabels([format_eps(e, norm).split("/")[0] for e in all_eps])
        if len(all_eps) == 1:
            x = eps_axis(all_eps[0], norm)
            margin = 1.0 if norm == "linf" else max(x, 0.1) / 2  # a pixel step, or half an L2/L1 radius
            ax.set_xlim(x - margin, x + margin)
        ax.yaxis.set_major_formatter(_percent())
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("relative change (%)\n(negative = worse)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 7), frameon=False)
    where = f"{curves.source} · " if curves.source else ""
    fig.suptitle(
        f"{where}{curves.method.upper()} on layout {curves.layout_name} · defense {curves.defense} · "
        f"{curves.data}/{curves.backbone}",
        fontsize=11,
    )
    return fig


# ---------------------------------------------------------------------------------------- transfer heatmap
def plot_transfer_heatmap(ts: TransferSet, path: str | os.PathLike, limit: float | None = None) -> Path:
    """Rows = attacked task, columns = evaluated task; a diverging map centred at 0 on +-`limit` percent
    (by default the largest magnitude in the matrix; pass a shared limit to compare layouts)."""
    attacked = list(ts.matrix)
    evaluated = sorted({t for row in ts.matrix.values() for t in row}, key=task_sort_key)
    values = np.array([[ts.matrix[a].get(t, math.nan) for t in evaluated] for a in attacked], dtype=float)
    finite = np.abs(values[np.isfinite(values)])
    lim = (
        limit
        if limit and math.isfinite(limit) and limit > 0
        else (float(finite.max()) if finite.size else 1.0)
    )
    lim = max(lim, MIN_COLOUR_LIMIT)
    cmap = plt.get_cmap("RdBu").with_extremes(bad="lightgrey")
    fig, ax = plt.subplots(
        figsize=(1.25 * len(evaluated) + 3.0, 0.85 * len(attacked) + 2.0), layout="constrained"
    )
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    for i, a in enumerate(attacked):
        for j, t in enumerate(evaluated):
            v = values[i, j]
            text = "n/a" if not math.isfinite(v) else f"{format_number(v, '.1f')}%"
            strong = math.isfinite(v) and abs(v) > 0.6 * lim
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if strong else "black")
            if a == t:  # the attacked task itself: everything else is transfer
                ax.add_patch(
                    Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5)
                )
    ax.set_xticks(range(len(evaluated)), evaluated)
    ax.set_yticks(range(len(attacked)), [ts.attack_label(a) for a in attacked])
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("attack")
    bar = fig.colorbar(image, ax=ax, format=_percent(), shrink=0.9)
    bar.set_label("relative change (%)")
    where = f"{ts.source} · " if ts.source else ""
    ax.set_title(
        f"{where}transfer of SINGLE attacks · layout {ts.layout_name}\n"
        f"{ts.method.upper()} ε={attack_eps(ts.eps, ts.method)} · defense {ts.defense} · "
        f"{ts.data}/{ts.backbone}",
        fontsize=10,
    )
    return _save(fig, path)


# ------------------------------------------------------------------------------------ sharing vs robustness
def plot_tradeoff(ts: TradeoffSet, path: str | os.PathLike) -> Path:
    """One point per layout (colour = sharing score), one marker per defense (and store)."""
    fig, ax = plt.subplots(figsize=(7.2, 5.0), layout="constrained")
    scores = [p.sharing_score for p in ts.points if math.isfinite(p.sharing_score)]
    norm = Normalize(vmin=0, vmax=max(scores) if scores and max(scores) > 0 else 1)
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    series: dict[str, list] = {}
    for p in ts.points:
        label = f"{p.source} · {p.defense}" if p.source else p.defense
        series.setdefault(label, []).append(p)
    handles = []
    for i, (label, points) in enumerate(series.items()):
        marker = MARKERS[i % len(MARKERS)]
        ax.scatter(
            [p.clean_gain for p in points],
            [p.attack_change for p in points],
            c=[p.sharing_score for p in points],
            cmap=cmap,
            norm=norm,
            marker=marker,
            s=70,
            edgecolors="black",
            linewidths=0.7,
            plotnonfinite=True,
            zorder=3,
        )
        handles.append(
            Line2D(
                [],
                [],
                marker=marker,
                linestyle="",
                markerfacecolor="white",
                markeredgecolor="black",
                markersize=8,
                label=label,
            )
        )
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.axvline(0, color="grey", linewidth=0.8, linestyle="--")
    ax.margins(x=0.18, y=0.12)  # room for the layout names next to the points
    ax.xaxis.set_major_formatter(_percent())
    ax.yaxis.set_major_formatter(_percent())
    ax.set_xlabel("clean accuracy gain over the independent model (%)")
    ax.set_ylabel(f"relative change under {ts.label} (%)\n(lower = less robust)")
    ax.grid(alpha=0.3)
    title = "source · defense" if any(p.source for p in ts.points) else "defense"
    ax.legend(handles=handles, title=title, loc="best", fontsize=8, title_fontsize=9)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    bar.set_label("sharing score (shared blocks summed over task pairs)")
    ax.set_title(
        f"Sharing vs robustness · {ts.data}/{ts.backbone} · {ts.label} {ts.method.upper()} "
        f"ε={attack_eps(ts.eps, ts.method)}",
        fontsize=10,
    )
    _place_labels(
        fig, ax, [(p.clean_gain, p.attack_change) for p in ts.points], [p.layout_name for p in ts.points]
    )
    return _save(fig, path)


_LABEL_SPOTS = (
    ((6, 4), "left", "bottom"),
    ((6, -4), "left", "top"),
    ((-6, 4), "right", "bottom"),
    ((-6, -4), "right", "top"),
    ((0, 8), "center", "bottom"),
    ((0, -8), "center", "top"),
    ((12, 12), "left", "bottom"),
    ((-12, -12), "right", "top"),
)


def _overlap(box, others) -> float:
    total = 0.0
    for other in others:
        inter = Bbox.intersection(box, other)
        if inter is not None:
            total += inter.width * inter.height
    return total


def _place_labels(
    fig: plt.Figure,
    ax: plt.Axes,
    xy: Sequence[tuple[float, float]],
    labels: Sequence[str],
    marker_pt: float = 5,
) -> None:
    """Greedy label placement: each label takes the first spot around its point that overlaps no marker,
    earlier label or the axes border (else the least bad spot), so nearby layouts stay readable."""
    fig.canvas.draw()  # settle the layout: display positions are final from here on
    renderer = fig.canvas.get_renderer()
    radius = marker_pt * fig.dpi / 72
    finite = [(x, y) for x, y in xy if math.isfinite(x) and math.isfinite(y)]
    taken = (
        [
            Bbox.from_extents(px - radius, py - radius, px + radius, py + radius)
            for px, py in ax.transData.transform(finite)
        ]
        if finite
        else []
    )
    frame = ax.get_window_extent(renderer)
    for (x, y), label in zip(xy, labels):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        best = None
        for offset, ha, va in _LABEL_SPOTS:
            text = ax.annotate(
                label, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=8
            )
            box = text.get_window_extent(renderer).expanded(1.04, 1.1)
            outside = box.width * box.height - (_overlap(box, [frame]))
            cost = _overlap(box, taken) + 2 * outside
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, text, box)
            else:
                text.remove()
            if cost == 0:
                break
        taken.append(best[2])


# ------------------------------------------------------------------------------------------ example grids
def _palette(size: int = 256) -> np.ndarray:
    """A fixed categorical palette: tab20 first, then fixed pseudo-random colours, so class k always has
    the same colour in every figure."""
    base = np.array([plt.get_cmap("tab20")(i)[:3] for i in range(20)])
    extra = np.random.default_rng(0).uniform(0.15, 0.95, size=(max(size - 20, 0), 3))
    return np.concatenate([base, extra])[:size]


PALETTE = _palette()


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=float)


def _seg_rgb(labels: np.ndarray) -> np.ndarray:
    labels = labels.astype(np.int64)
    invalid = (labels < 0) | (labels >= 255)
    rgb = PALETTE[np.clip(labels, 0, len(PALETTE) - 1)]
    rgb[invalid] = 0.0
    return rgb


def _normal_rgb(n: np.ndarray, target: bool) -> np.ndarray:
    norm = np.linalg.norm(n, axis=0, keepdims=True)
    rgb = ((n / np.maximum(norm, 1e-8) + 1) / 2).transpose(1, 2, 0).clip(0, 1)
    if target:
        rgb[norm[0] == 0] = 0.0  # all-zero target = invalid
    return rgb


def _shared_range(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays]) if arrays else np.array([])
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [2, 98])
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 0.5, float(lo) + 0.5)


def _task_kind(task: str, channels: int) -> str:
    if task == "seg" or (task not in TASK_COLORS and channels > 3):
        return "seg"
    if task == "normal" or channels == 3:
        return "normal"
    if task == "depth":
        return "depth"
    return "grey"


def _task_images(task: str, clean, adv, target) -> list[tuple[np.ndarray, dict]]:
    """(image, imshow kwargs) for the clean prediction, the adversarial one and the target of one sample."""
    clean, adv = _np(clean), _np(adv)
    target = None if target is None else _np(target)
    kind = _task_kind(task, clean.shape[0])
    if kind == "seg":
        labels = [clean.argmax(0), adv.argmax(0)] if clean.shape[0] > 1 else [clean[0] > 0.5, adv[0] > 0.5]
        if target is not None:
            labels.append(target.reshape(target.shape[-2:]))
        return [(_seg_rgb(lab), {}) for lab in labels]
    if kind == "normal":
        images = [_normal_rgb(clean, False), _normal_rgb(adv, False)]
        if target is not None:
            images.append(_normal_rgb(target.reshape(3, *target.shape[-2:]), True))
        return [(im, {}) for im in images]
    maps = [clean[0], adv[0]]
    if target is not None:
        t = target.reshape(target.shape[-2:]).copy()
        if kind == "depth":
            t[t <= 0] = np.nan  # 0 = invalid depth: drawn as the colormap's "bad" colour
        maps.append(t)
    lo, hi = _shared_range(maps)
    cmap = plt.get_cmap("viridis" if kind == "depth" else "gray").with_extremes(
        bad="black" if kind == "depth" else "tab:red"
    )
    images = [(np.ma.masked_invalid(m), {"cmap": cmap, "vmin": lo, "vmax": hi}) for m in maps]
    images[0][1]["label"] = f"shared range {lo:.3g} to {hi:.3g}"  # the colour scale, once per row and task
    return images


def load_example(path: str | os.PathLike) -> dict:
    import torch  # only example grids need torch; keep the rest of the report light

    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    missing = [k for k in ("x", "x_adv", "preds_clean", "preds_adv") if k not in data]
    if missing:
        raise ValueError(
            f"example file {str(path)!r} lacks {missing}; expected keys x, x_adv, preds_clean, preds_adv, "
            "targets (docs/results_schema.md)"
        )
    return data


def plot_example_grid(
    ref: ExampleRef, path: str | os.PathLike, max_images: int = 3, example: Mapping | None = None
) -> Path:
    """Rows = images; columns = image, amplified perturbation, x_adv, then per task clean / adv / target."""
    data = load_example(ref.path) if example is None else example
    x, x_adv = _np(data["x"]), _np(data["x_adv"])
    preds_clean, preds_adv = data["preds_clean"], data["preds_adv"]
    targets = data.get("targets") or {}
    tasks = sorted((t for t in preds_clean if t in preds_adv), key=task_sort_key)
    n = min(max_images, x.shape[0])
    delta = x_adv[:n] - x[:n]
    eps = ref.record.eps
    scale = eps if math.isfinite(eps) and eps > 0 else float(np.abs(delta).max() or 1.0)
    amp = 0.5 / scale  # maps the whole ±eps ball onto [0, 1], grey = no change
    headers = ["image", f"perturbation ×{amp:.3g}", "x_adv"]
    for t in tasks:
        headers += [f"{t}: clean", f"{t}: adv", f"{t}: target"]
    ncols = len(headers)
    aspect = x.shape[-2] / x.shape[-1]  # rows as tall as the images: no blank bands between them
    fig, axes = plt.subplots(
        n, ncols, figsize=(1.55 * ncols, 1.55 * aspect * n + 1.0), squeeze=False, layout="constrained"
    )
    for i in range(n):
        row = [
            (x[i].transpose(1, 2, 0).clip(0, 1), {}),
            ((0.5 + amp * delta[i]).transpose(1, 2, 0).clip(0, 1), {}),
            (x_adv[i].transpose(1, 2, 0).clip(0, 1), {}),
        ]
        for t in tasks:
            target = targets[t][i] if t in targets else None
            images = _task_images(t, preds_clean[t][i], preds_adv[t][i], target)
            row += images + [(None, {})] * (3 - len(images))
        for j, (image, kwargs) in enumerate(row):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if image is None:
                ax.text(0.5, 0.5, "no target", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            else:
                kwargs = dict(kwargs)
                label = kwargs.pop("label", None)
                ax.imshow(image, interpolation="nearest", **kwargs)
                if label:
                    ax.set_xlabel(label, fontsize=6, labelpad=2)
            if i == 0:
                ax.set_title(headers[j], fontsize=8)
        axes[i][0].set_ylabel(f"image {i}", fontsize=8)
    fig.suptitle(
        f"{ref.title}\nperturbation x_adv − x amplified ×{amp:.3g} (±ε → full range, grey = 0); "
        "seg: fixed class colours, black = ignore; depth: shared range per row, black = invalid; "
        "normals: (n+1)/2 as RGB",
        fontsize=8,
    )
    return _save(fig, path)
