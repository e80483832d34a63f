"""Pictures a person would rather look at than numbers: ROC, calibration, confusion, backtest."""

import base64
import io

import numpy as np


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.6), dpi=90)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def roc_curve_png(y_true, proba, title: str) -> bytes:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y_true, proba)
    plt, fig, ax = _figure()
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y_true, proba):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    return _png(plt, fig)


def calibration_png(y_true, proba, title: str, bins: int = 10) -> bytes:
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y_true, proba, n_bins=bins, strategy="quantile")
    plt, fig, ax = _figure()
    ax.plot(predicted, observed, marker="o")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="predicted probability of late", ylabel="observed late rate", title=title)
    return _png(plt, fig)


def confusion_png(y_true, proba, threshold: float, title: str) -> bytes:
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(np.asarray(y_true), (np.asarray(proba) >= threshold).astype(int), labels=[0, 1])
    plt, fig, ax = _figure()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xticks([0, 1], ["on time", "late"])
    ax.set_yticks([0, 1], ["on time", "late"])
    ax.set(xlabel="predicted", ylabel="actual", title=title)
    return _png(plt, fig)


def weekly_auc_png(weeks, series: dict[str, list[float]], title: str) -> bytes:
    plt, fig, ax = _figure()
    fig.set_size_inches(7, 3.6)
    weeks = list(weeks)
    colours = {}
    for name, values in series.items():
        # One colour per regime (the name's first word when there are several), frozen dashed.
        regime = name.split(" ")[0] if len(series) > 2 else name
        colour = colours.setdefault(regime, f"C{len(colours)}")
        style = "--" if "frozen" in name and len(series) > 2 else "-"
        ax.plot(range(len(weeks)), values, marker=".", label=name, color=colour, linestyle=style)
    step = max(1, len(weeks) // 12)
    ax.set_xticks(range(0, len(weeks), step), weeks[::step])
    ax.set(xlabel="week starting", ylabel="holdout AUC", title=title)
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize="small", ncols=2 if len(series) > 2 else 1)  # six lines with three regimes
    return _png(plt, fig)


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown the Dagster UI renders inline (a data URI, so no file server is needed)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def importance_png(features: list[str], values: list[float], errors: list[float], title: str) -> bytes:
    """Horizontal bars, the most important feature on top."""
    plt, fig, ax = _figure()
    fig.set_size_inches(6, 0.3 * len(features) + 1.2)
    positions = np.arange(len(features))[::-1]
    ax.barh(positions, values, xerr=errors, color="tab:blue")
    ax.set_yticks(positions, features)
    ax.set(xlabel="holdout AUC drop when shuffled", title=title)
    return _png(plt, fig)
