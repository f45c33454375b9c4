"""Training curves as PNG (matplotlib, without a display)."""

import numpy as np


def loss_curves(path, history, label="RMSE"):
    """Write the training loss and the validation error and score against the ALS step.

    Parameters
    ----------
    path : Path of the .png
    history : ndarray (n, 4): step, training loss, validation squared error (NaN for a ranking metric),
        validation score (NaN without validation ratings)
    label : str, the validation score's name ('RMSE', 'nDCG@10')
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    steps, train_loss, val_error, val_score = np.asarray(history).reshape(-1, 4).T
    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    left, right = figure.subplots(1, 2)
    left.plot(steps, train_loss, marker=".", label="training loss (squared error + penalty)")
    left.plot(steps, val_error, marker=".", label="validation squared error")
    left.set_xlabel("ALS step")
    left.set_yscale("log")
    left.set_title("Loss")
    left.legend()
    right.plot(steps, val_score, marker=".", color="tab:green")
    right.set_xlabel("ALS step")
    right.set_title(f"Validation {label}")
    for axes in (left, right):
        axes.grid(alpha=0.3)
    figure.savefig(path, format="png")
