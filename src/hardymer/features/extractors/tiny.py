"""Tiny randomly initialised transformers models for the local-model plug-ins.

``wav2vec``, ``deberta`` and ``face-cnn`` load a model folder the user gives; the tests and the
extractor benchmark write these (``save_pretrained``, seeded, no hub) so that the loading,
preprocessing and pooling code runs for real. Their outputs mean nothing.
"""
from __future__ import annotations

from pathlib import Path

from .text import packaged_minilm


def write_tiny_models(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write ``root/{w2v,deberta,vit}``: wav2vec 2.0 (hidden 32), DeBERTa-v2 (hidden 24, the
    packaged MiniLM tokenizer) and ViT (hidden 16, 32 x 32 input). Returns the folders by the
    extractor that reads them."""
    import torch
    from transformers import (AutoTokenizer, DebertaV2Config, DebertaV2Model, ViTConfig,
                              ViTImageProcessor, ViTModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor,
                              Wav2Vec2Model)
    root = Path(root)
    torch.manual_seed(seed)
    w2v = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4),
                         conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2, vocab_size=10)
    Wav2Vec2Model(w2v).save_pretrained(root / "w2v")
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(root / "w2v")
    tok = AutoTokenizer.from_pretrained(str(packaged_minilm()))   # a real tokenizer, offline
    deb = DebertaV2Config(vocab_size=tok.vocab_size, hidden_size=24, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=48)
    DebertaV2Model(deb).save_pretrained(root / "deberta")
    tok.save_pretrained(root / "deberta")
    vit = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=32)
    ViTModel(vit).save_pretrained(root / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "vit")
    return {"wav2vec": root / "w2v", "deberta": root / "deberta", "face-cnn": root / "vit"}
