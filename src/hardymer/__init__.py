"""hardymer — robust multimodal emotion recognition with missing modalities.

Two entry points for media (heavy imports happen on first call)::

    import hardymer
    report = hardymer.extract("clips.csv", "data/mine")        # media -> feature data set
    hardymer.load("runs/mine").predict(audio="a.wav", text="…")  # a trained run -> prediction
"""
__version__ = "0.1.0"


def extract(source, out=None, **options):
    """Extract features of a manifest or media folder into a generic data set.

    See :func:`hardymer.features.extract.extract` for the options (extractor specs per
    modality, task, classes); returns an :class:`~hardymer.features.extract.ExtractionReport`.
    """
    from .features.extract import extract as _extract
    return _extract(source, out, **options)


def load(run, fold=None, device="auto"):
    """Open a trained run for prediction: ``hardymer.load(run).predict(audio=..., text=...)``.

    See :class:`hardymer.inference.Predictor`.
    """
    from .inference import load as _load
    return _load(run, fold=fold, device=device)
