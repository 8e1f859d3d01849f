"""Training curves for TensorBoard (``train.log=[tensorboard]``, ``--log tensorboard``).

Each trainer folder (a cell: one fold, condition and seed; a fold's shared stage 1; HARDY-MER's
teacher) gets its own event files under ``<folder>/tensorboard/``, so ``tensorboard --logdir
RUN`` lists one run per folder, named by its path. Every numeric value of an epoch's log row
becomes a scalar at step = epoch, tagged by split: ``train/loss``, ``train/loss_a``,
``train/utt_per_s`` (throughput), ``train/lr``, ``val/WA``, ``test/WA`` (``paper`` protocol
only), ``time/train_seconds``, ``time/eval_seconds``. ``metrics.jsonl`` stays the record; the
event files are a view of it for the TensorBoard UI.

Resume: a restarted fit replays the epochs after its last checkpoint, so the writer opens with
``purge_step`` at the first replayed epoch: TensorBoard hides the earlier attempt's points
from there on, and the curve shows each epoch once.
"""
from __future__ import annotations

from pathlib import Path

TRACKERS = ("tensorboard",)
INSTALL_HINT = 'pip install -e ".[tracking]"  (or: pip install tensorboard)'


def tag(key: str) -> str:
    """A log-row key -> its TensorBoard tag: ``val_WA`` -> ``val/WA``."""
    if key in ("train_seconds", "eval_seconds"):
        return f"time/{key}"
    if key == "lr":
        return "train/lr"
    split, _, name = key.partition("_")
    return f"{split}/{name}" if name and split in ("train", "val", "test") else key


class TensorBoardLog:
    """Writes log rows as scalars; ``first_epoch`` is the first epoch this fit will write."""

    def __init__(self, out_dir: Path, first_epoch: int = 1):
        check(["tensorboard"])            # torch's writer needs the tensorboard package
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"),
                                    purge_step=first_epoch if first_epoch > 1 else None)

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag(key), value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def check(names) -> None:
    """ValueError naming ``train.log`` for an unknown tracker, or with the install line when
    one of ``names`` cannot be imported."""
    if not isinstance(names, list) or any(n not in TRACKERS for n in names):
        raise ValueError(f"train.log={names!r}; expected a list of trackers from "
                         f"{', '.join(TRACKERS)} (e.g. --log tensorboard), or [] for none")
    if "tensorboard" in names:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ValueError("train.log=[tensorboard] (--log tensorboard) needs the tensorboard "
                             f"package, an optional extra: {INSTALL_HINT}") from None


def override(names: list[str]) -> list[str]:
    """The ``--set`` override that asks for the trackers ``names`` (none for [])."""
    return [f"train.log=[{','.join(names)}]"] if names else []


def open_trackers(names: list[str], out_dir: Path, first_epoch: int) -> list[TensorBoardLog]:
    """The trackers ``names`` (``train.log``) writing under ``out_dir``."""
    return [TensorBoardLog(out_dir, first_epoch) for n in names if n == "tensorboard"]
