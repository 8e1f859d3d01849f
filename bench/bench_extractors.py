"""Extractor speed on this machine: utterances per second for each extractor.

Makes real media first (espeak-ng speech, ``--seconds`` of face video at ``--fps`` frames per
second from ``skimage.data.astronaut()``, a transcript), then times every extractor over the
same ``--n`` utterances, model loading apart. The hub plug-ins run on tiny randomly initialised
local models written on the spot (the loading and preprocessing path, not a real network's
cost). Finally one end-to-end ``hardymer predict`` (a + t + v) on a run trained on those media.

Usage::

    python bench/bench_extractors.py                     # 24 utterances, 3 s video at 25 fps
    python bench/bench_extractors.py --n 60 --out bench/results/extractors.json
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hardymer.features.demo_media import make_demo_media
from hardymer.features.extract import utterances_of
from hardymer.features.extractors import create_extractor
from hardymer.features.manifest import read_manifest
from hardymer.features.media import load_audio

SPECS = ["opensmile", "opensmile:feature_set=ComParE_2016", "minilm", "facemesh",
         "facemesh:fps=0"]


def time_extractor(spec: str, items) -> dict:
    ex = create_extractor(spec)
    t0 = time.perf_counter()
    ex.ensure_loaded()
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = []
    for a in range(0, len(items), max(1, ex.batch_size)):
        results += ex.extract_batch(items[a:a + max(1, ex.batch_size)])
    secs = time.perf_counter() - t0
    ok = sum(r.vector is not None for r in results)
    return {"extractor": spec.split(":path=")[0] + (" (tiny local model)" if ":path=" in spec
                                                   else ""),
            "modality": ex.modality, "dim": ex.dim, "utterances": len(items), "ok": ok,
            "load_s": round(load, 2), "seconds": round(secs, 3),
            "utt_per_s": round(len(items) / secs, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=24, help="utterances (a multiple of 3)")
    ap.add_argument("--seconds", type=float, default=3.0, help="video length per utterance")
    ap.add_argument("--fps", type=int, default=25, help="video frame rate")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per = max(1, args.n // 3)
        manifest = make_demo_media(tmp / "media", per_class=per,
                                   classes=("happy", "sad", "angry"), seconds=args.seconds,
                                   fps=args.fps)
        items = utterances_of(read_manifest(manifest).table)
        speech = float(np.mean([len(load_audio(it.audio)) / 16000 for it in items]))
        rows = [time_extractor(s, items) for s in SPECS]
        from hardymer.features.extractors.tiny import write_tiny_models
        rows += [time_extractor(f"{name}:path={folder}", items)
                 for name, folder in write_tiny_models(tmp / "hub").items()]
        threads = torch.get_num_threads()       # what the extractors above ran with
        predict = end_to_end(manifest, tmp, items)
    info = {"machine": f"{platform.machine()}, {threads} torch threads",
            "utterances": len(items), "speech_seconds_mean": round(speech, 2),
            "video": f"{args.seconds} s at {args.fps} fps, 192x192"}
    print(f"{info['utterances']} utterances: speech {speech:.2f} s on average, video "
          f"{info['video']}; {info['machine']}")
    print("| extractor | modality | dim | utt/s | s total | model load s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['extractor']} | {r['modality']} | {r['dim']} | {r['utt_per_s']} | "
              f"{r['seconds']} | {r['load_s']} |")
    print(f"\nhardymer predict (a + t + v, one utterance, run already loaded): "
          f"{predict['predict_s']:.3f} s; loading the run: {predict['load_s']:.2f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**info, "extractors": rows, "predict": predict},
                                       indent=2) + "\n")


def end_to_end(manifest: Path, tmp: Path, items) -> dict:
    import hardymer
    from hardymer.data import open_data
    from hardymer.protocol import parse_condition
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import run_experiment
    hardymer.extract(manifest, tmp / "data", progress=False)
    ds = open_data(str(tmp / "data"))
    cfg = load_run_config("momke", ds.family, ["train.epochs=[2,2]"])
    run_experiment(cfg, ds, [parse_condition("atv", ds.modalities)], [0], out=tmp / "run",
                   data_source=str(tmp / "data"), progress=False)
    t0 = time.perf_counter()
    p = hardymer.load(tmp / "run")
    load = time.perf_counter() - t0
    it = items[0]
    p.predict(audio=it.audio, text=it.text, video=it.video)        # warm-up: models load
    t0 = time.perf_counter()
    p.predict(audio=it.audio, text=it.text, video=it.video)
    return {"load_s": round(load, 3), "predict_s": round(time.perf_counter() - t0, 4)}


if __name__ == "__main__":
    main()
