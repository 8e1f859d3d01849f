"""hardymer — robust multimodal emotion recognition with missing modalities."""
__version__ = "0.1.0"
