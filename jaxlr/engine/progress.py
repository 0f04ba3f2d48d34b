"""Progress displays of the host driver: one log line per chunk (`ProgressLog`), a tqdm bar
(`ProgressBar`), and `default_observers`, which picks one (`bar_wanted`).

Both are `jaxlr.engine.events.Observer`s; `jaxlr.engine.driver.drive` feeds them.

Dimensions: S points (1 for a single run).
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Callable

import jax
import numpy as np

from jaxlr.engine.events import Chunk, End, Observer, Start
from jaxlr.engine.step import DIVERGE_REASONS


def fmt_time(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour on."""
    seconds = max(0, int(round(seconds))) if math.isfinite(seconds) else 0
    h, rem = divmod(seconds, 3600)
    mnt, s = divmod(rem, 60)
    return f"{h}:{mnt:02d}:{s:02d}" if h else f"{mnt:d}:{s:02d}"


class ProgressLog(Observer):
    """Progress as one log line per chunk (what a pipe, a file or CI shows).

    A run's line: epoch, mean training loss of the chunk, the last check's numbers, steps/s,
    elapsed and time left; a sweep's: epoch, points active, blocks, best validation accuracy
    so far, point-steps/s, elapsed and an upper bound of the time left.
    """

    def __init__(self, log_fn: Callable[[str], None], chunks: bool = True):
        self._log = log_fn
        self._chunks = chunks  # False: start and end lines only (a bar shows the chunks)
        self._kind = "run"
        self._best_acc = math.nan
        self._size = 1

    def on_start(self, start: Start) -> None:
        self._kind, self._size = start.kind, len(start.points)
        if start.resumed:
            self._log(start.resumed)
        if start.description:
            self._log(start.description)

    def on_chunk(self, c: Chunk) -> None:
        if not self._chunks:
            return
        rate = c.steps_ran / max(c.seconds, 1e-9)
        if self._kind == "run":
            part = c.new.get(0)
            losses = part["train_loss"] if part is not None else ()
            loss = float(np.mean(losses)) if len(losses) else float("nan")
            msg = f"epoch {c.epoch}/{c.num_epochs}  train_loss {loss:.4f}"
            if part is not None and len(part["val_loss"]):
                msg += (
                    f"  val_loss {part['val_loss'][-1]:.4f}  val_acc "
                    f"{part['val_accuracy'][-1]:.4f}  train_acc {part['train_accuracy'][-1]:.4f}"
                )
            left = (c.num_epochs - c.epoch) * c.elapsed / max(c.epochs_done, 1)
            msg += f"  {rate:,.0f} steps/s  elapsed {fmt_time(c.elapsed)}  left {fmt_time(left)}"
            if not c.active.any():
                if c.detail.get("diverged"):
                    reason = DIVERGE_REASONS.get(int(c.detail.get("diverge_reason", 0)), "?")
                    msg += f"  (DIVERGED at step {int(c.detail['diverge_step'])}: {reason})"
                else:
                    msg += "  (stopped)"
            self._log(msg)
            return
        for part in c.new.values():
            acc = np.asarray(part["val_accuracy"], np.float64)
            if np.isfinite(acc).any():
                self._best_acc = float(np.nanmax([np.nanmax(acc), self._best_acc]))
        left = c.elapsed * (c.num_epochs - c.epoch) / max(c.epochs_done, 1)
        self._log(
            f"epoch {c.epoch}/{c.num_epochs}  active {int(c.active.sum())}/{self._size}  "
            f"block(s) {c.detail.get('blocks', [])}  best val_acc {self._best_acc:.4f}  "
            f"{rate:,.0f} point-steps/s  elapsed {fmt_time(c.elapsed)}  "
            f"left <= {fmt_time(left)}{'  ' + c.note if c.note else ''}"
        )

    def on_end(self, end: End) -> None:
        if self._kind == "sweep":
            self._log(
                f"sweep done in {end.wall_seconds:.1f} s: {end.epoch} epochs, {end.chunks} chunks"
            )


class ProgressBar(Observer):
    """A tqdm progress bar over epochs (rate and time left; a sweep shows points active).

    `tqdm.auto` gives a widget in a notebook and a text bar in a terminal.
    """

    def __init__(self, desc: str = ""):
        self._desc = desc
        self._bar = None
        self._size = 1
        self._kind = "run"

    def on_start(self, start: Start) -> None:
        from tqdm.auto import tqdm

        self._kind, self._size = start.kind, len(start.points)
        desc = self._desc or (start.kind if start.kind == "sweep" else "train")
        self._bar = tqdm(
            total=start.num_epochs,
            initial=start.epoch,
            desc=desc,
            unit="epoch",
            # A terminal that reports no size (0 x 0, e.g. a bare pty) would hide the bar.
            ncols=None if _in_notebook() else shutil.get_terminal_size((100, 20)).columns,
            nrows=None if _in_notebook() else shutil.get_terminal_size((100, 20)).lines,
            leave=True,
        )

    def on_chunk(self, c: Chunk) -> None:
        if self._bar is None:
            return
        post = {}
        if self._kind == "sweep":
            post["active"] = f"{int(c.active.sum())}/{self._size}"
        else:
            part = c.new.get(0)
            if part is not None and len(part["val_loss"]):
                post["val_loss"] = f"{part['val_loss'][-1]:.4f}"
                post["val_acc"] = f"{part['val_accuracy'][-1]:.4f}"
        if c.note:
            post["note"] = c.note.strip()
        self._bar.set_postfix(post, refresh=False)
        self._bar.update(c.epoch - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        return shell.get_ipython() is not None
    except Exception:  # noqa: BLE001
        return False


def bar_wanted(progress: bool | str) -> bool:
    """Whether to show a progress bar: `progress` True, or "auto" when stderr is a terminal
    or the code runs in a notebook kernel (and tqdm can be imported); process 0 only."""
    if progress is False or progress is None or jax.process_index() != 0:
        return False
    if progress == "auto":
        isatty = getattr(sys.stderr, "isatty", None)
        if not ((isatty is not None and isatty()) or _in_notebook()):
            return False
    elif progress is not True:
        raise ValueError(f"progress must be True, False or 'auto', got {progress!r}")
    try:
        import tqdm.auto  # noqa: F401
    except ImportError:
        return False
    return True


def default_observers(
    log_fn: Callable[[str], None] | None, default_log: Callable[[str], None], progress
) -> list[Observer]:
    """The progress display: a bar where one is wanted (`bar_wanted`), else a line per chunk.

    Lines go to `log_fn` (default `default_log`); beside a bar only the start and end lines.
    """
    bar = bar_wanted(progress)
    lines = ProgressLog(log_fn or default_log, chunks=not bar)
    return [ProgressBar(), lines] if bar else [lines]


# ---------------------------------------------------------------------------------------------
# Checkpoints.
