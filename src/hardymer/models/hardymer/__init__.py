"""HARDY-MER (Zuo et al., ACM MM 2025) in one package.

=============  =================================================================
``method``     the registered method: MoMKE + decoders, the curriculum loss, ablations
``finetune``   per-fold supervised feature fine-tuning (spec §1.1)
``teacher``    the teacher (MoMKE + decoders + critic), a helper, not a method (§1.2)
``estimate``   the two hardness views h_dir, h_ind and their fusion (§1.3)
``plan``       curriculum plans: hardness + ranked supports per training mask (§1.6)
``context``    a fold's state: fine-tuned data, frozen teacher, feature database
``predict``    what ``hardymer predict`` adds: fine-tuned new rows, h_ind, neighbours' h
=============  =================================================================
"""
from .method import ABLATIONS, REFERENCE_CHOICES, HardyConfig, HardyMER
from .teacher import Teacher, TeacherConfig

__all__ = ["ABLATIONS", "REFERENCE_CHOICES", "HardyConfig", "HardyMER", "Teacher",
           "TeacherConfig"]
