"""hardymer — robust multimodal emotion recognition with missing modalities.

The Python API (:mod:`hardymer.api`)::

    import hardymer
    report = hardymer.extract("clips.csv", "data/mine")        # media -> feature data set
    hardymer.train("synth:demo", "hardymer", "at", folds=[0], out="runs/h")
    hardymer.load("runs/mine").predict(audio="a.wav", text="…")  # a trained run -> prediction
    hardymer.export("runs/mine", 0, "models/mine")             # one fold, shareable, model card

The API is imported on first use, so ``import hardymer`` (and every ``import hardymer.<part>``,
which imports this file first) does not load the layers above the part asked for;
``hardymer.extract`` loads only the extraction code.
"""
from .version import __version__

_API = ("extract", "load", "export", "train", "sweep", "report", "run_config", "SweepSpec", "Variant")


def __getattr__(name: str):
    if name == "extract":
        from .features.extract import extract
        return extract
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'hardymer' has no attribute {name!r}")


__all__ = ["__version__", *_API]
