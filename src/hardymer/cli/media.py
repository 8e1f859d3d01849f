"""``hardymer extract`` and ``hardymer predict``: from recordings to features to an answer."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .main import _fail, app

EXTRACTOR_HELP = ("Extractor spec NAME[:key=value,...] or 'none' to skip the modality; "
                  "`hardymer list` shows them all.")


@app.command()
def extract(
    manifest: Path = typer.Argument(..., help="A manifest (.csv, .tsv or .jsonl with columns "
                                    "utterance_id, [sequence_id, speaker], audio, video, text, "
                                    "[start, end, label]; an empty cell = not given) or a "
                                    "folder of media (one utterance per file stem)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: the generic data set "
                             "plus its resume cache (extraction/)."),
    audio: str = typer.Option("opensmile", help="Audio extractor. " + EXTRACTOR_HELP),
    text: str = typer.Option("minilm", help="Text extractor. " + EXTRACTOR_HELP),
    video: str = typer.Option("facemesh", help="Video extractor. " + EXTRACTOR_HELP),
    task: Optional[str] = typer.Option(None, help="classification or regression (default: "
                                       "from the labels)."),
    classes: Optional[str] = typer.Option(None, help="Class names in id order, comma-"
                                          "separated (default: sorted labels)."),
    audio_from_video: bool = typer.Option(False, help="Where the audio cell is empty, take the "
                                          "sound track of the video."),
    labels_from_folders: bool = typer.Option(False, help="Folder input: the parent folder's "
                                             "name is the label (LABEL/clip.wav)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Extract audio, text and video features of every utterance into a generic data set.

    Each modality is optional per utterance: a modality that is not given, has no content (no
    face in any frame, empty transcript) or fails is recorded as missing in available.npy,
    never as zeros. Re-running the same command resumes: finished utterances are read from
    OUT/extraction/, failed ones are retried. Failures are listed at the end and in
    OUT/extraction/errors.csv (exit code 1 when there are any; the data set is still written).

    \b
    Examples:
      hardymer extract clips.csv --out data/mine
      hardymer extract clips/ --labels-from-folders --out data/mine --video none
      hardymer extract clips.csv --out data/mine-compare --audio opensmile:feature_set=ComParE_2016
      hardymer extract clips.csv --out data/gcnet --audio wav2vec:path=~/models/wav2vec2-base \\
          --text deberta:path=~/models/deberta-large --video face-cnn:path=~/models/vit-fer
      hardymer train --data data/mine --method hardymer --condition all --out runs/mine
    """
    from ..data.validate import DataError
    from ..features.extract import extract as do_extract
    from ..features.extractors import ExtractorError
    class_list = [c.strip() for c in classes.split(",")] if classes else None
    try:
        report = do_extract(manifest, out, audio=audio, text=text, video=video, task=task,
                            classes=class_list, audio_from_video=audio_from_video,
                            labels_from_folders=labels_from_folders, progress=not quiet)
    except (DataError, ExtractorError, ValueError, ImportError, OSError) as err:
        _fail(str(err))
    typer.echo(report.summary())
    ds = report.dataset
    typer.echo(f"wrote {out}: {ds.summary()}")
    if not ds.meta.get("labelled", True):
        typer.echo("no labels in the manifest: the features are written, but training needs a "
                   "label column (add it and re-run; nothing is extracted again)")
    if len(report.errors):
        raise typer.Exit(code=1)


@app.command()
def predict(
    run: Path = typer.Argument(..., help="A run folder made by `hardymer train` on a data set "
                               "made by `hardymer extract`, or a folder made from one by "
                               "`hardymer export`."),
    audio: Optional[Path] = typer.Option(None, "--audio", "-a", help="Audio file (or a video "
                                         "file: its sound track)."),
    text: Optional[str] = typer.Option(None, "--text", "-t", help="The transcript."),
    video: Optional[Path] = typer.Option(None, "--video", "-v", help="Video file of the face."),
    start: Optional[float] = typer.Option(None, help="Seconds into the media where the "
                                          "utterance starts."),
    end: Optional[float] = typer.Option(None, help="Seconds into the media where it ends."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", "-m", help="Batch form: predict "
                                            "every row of a manifest (extract's columns) or media folder."),
    fold: Optional[int] = typer.Option(None, help="Which fold's models answer (default: the "
                                       "run's first)."),
    neighbours: int = typer.Option(5, "--neighbours", "-k", help="Nearest training "
                                   "utterances to show (0: none)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object; a list for "
                                 "--manifest)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Batch form: also "
                                          "write the predictions (.jsonl or .csv)."),
    device: str = typer.Option("auto", help="auto (CUDA when available), cpu, cuda."),
) -> None:
    """Predict the emotion of a clip from whatever modalities you have.

    Extracts the given media with the run's own extractors, answers with the model trained
    under that missing pattern (or the closest the run has), and prints the class
    probabilities, the modalities used, the nearest training utterances with their labels and,
    for HARDY-MER runs, the estimated hardness of the case.

    \b
    Examples:
      hardymer predict runs/mine --audio clip.wav --text "I can't believe you did that"
      hardymer predict runs/mine --video clip.mp4 --json          # camera only
      hardymer predict runs/mine --audio call.wav --start 12.5 --end 15.0
      hardymer predict runs/mine --manifest new.csv --output predictions.csv
      hardymer predict models/mine --text "I can't believe it"    # an export
    """
    from ..inference import PredictError, load
    from ..data.validate import DataError
    from ..features.extractors import ExtractorError
    if manifest is None and audio is None and text is None and video is None:
        _fail("nothing to predict from: give --audio, --text and/or --video (any subset), or "
              "--manifest for a batch")
    if manifest is not None and (audio or text or video or start is not None
                                 or end is not None):
        _fail("give either --manifest (start/end come from its columns) or "
              "--audio/--text/--video [--start/--end], not both")
    if (start is not None and start < 0) or (end is not None and end <= (start or 0.0)):
        _fail(f"--start {start} / --end {end}: expected 0 <= start < end (seconds)")
    try:
        predictor = load(run, fold=fold, device=device)
        if manifest is None:
            results = [predictor.predict(audio=audio, text=text, video=video, start=start,
                                         end=end, neighbours=neighbours)]
        else:
            results = predictor.predict_manifest(manifest, neighbours=neighbours,
                                                 progress=not as_json)
    except (PredictError, DataError, ExtractorError, ImportError, OSError,
            RuntimeError) as err:
        _fail(str(err))
    if output is not None:
        _write_predictions(results, output)
    if as_json:
        typer.echo(json.dumps(results if manifest is not None else results[0], indent=2))
    elif manifest is None:
        typer.echo(_describe(results[0]))
    else:
        typer.echo(_table(results).to_string(index=False))
    if output is not None and not as_json:
        typer.echo(f"wrote {output}")


def _describe(r: dict) -> str:
    m = r["model"]
    lines = [f"prediction: {r['prediction']}  (from {' + '.join(r['modalities'])}; missing: "
             f"{', '.join(r['missing']) or 'none'})",
             f"model: {m['method']} fold {m['fold']}, trained on {m['trained_on']} "
             f"({m['match']})"]
    if "probabilities" in r:
        width = max(len(c) for c in r["probabilities"])
        for c, p in sorted(r["probabilities"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {c:<{width}}  {p:6.3f}  {'#' * int(round(p * 40))}")
    h = r.get("hardness")
    if h and h.get("h") is not None:
        own = f"h_ind {h['h_ind']:.3f}, " if h.get("h_ind") is not None else ""
        lines.append(f"hardness: {own}h {h['h']:.3f}  ({h['estimate']})")
    if r.get("neighbours"):
        lines.append("nearest training utterances:")
        for nb in r["neighbours"]:
            extra = f"  h {nb['h']:.3f}" if "h" in nb else ""
            lines.append(f"  {nb['utterance_id']:<24} {str(nb['label']):<12} "
                         f"distance {nb['distance']:.4f}{extra}")
    notes = {k: v for k, v in (r.get("extraction") or {}).items() if v not in ("ok",
                                                                              "not given")}
    for k, v in notes.items():
        lines.append(f"note: {k} {v}")
    return "\n".join(lines)


def _table(results: list[dict]):
    import pandas as pd
    rows = []
    for r in results:
        row = {"utterance_id": r["utterance_id"]}
        if "error" in r:
            row["error"] = r["error"]
        else:
            row.update(prediction=r["prediction"], modalities="+".join(r["modalities"]),
                       trained_on=r["model"]["trained_on"])
            row.update({f"p_{c}": p for c, p in (r.get("probabilities") or {}).items()})
            if r.get("hardness"):
                row["hardness"] = r["hardness"]["h"]
                if r["hardness"].get("h_ind") is not None:
                    row["h_ind"] = r["hardness"]["h_ind"]
            if r.get("neighbours"):
                nb = r["neighbours"][0]
                row["nearest"] = f"{nb['utterance_id']} ({nb['label']})"
        rows.append(row)
    return pd.DataFrame(rows)


def _write_predictions(results: list[dict], path: Path) -> None:
    from ..fileio import atomic_write_text
    if path.suffix.lower() == ".csv":
        path.parent.mkdir(parents=True, exist_ok=True)
        _table(results).to_csv(path, index=False)
    else:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in results))
