"""IMDer — Incomplete Multimodality-Diffused Emotion Recognition (Wang, Li, Cui, NeurIPS 2023;
code ``mdswyz/IMDer`` @1901a92: ``trains/singleTask/model/imder.py``, ``scoremodel.py``,
``rcan.py``, ``trains/singleTask/IMDER.py``, ``config/config.json``), ported to utterance
vectors with the utterances of a dialogue (video) as the sequence axis.

=============  =================================================================
``method``     the registered method: stages, conditions, losses, reference masks
``score``      VE-SDE (sigma 25), U-Net / MLP score networks, DSM, Euler-Maruyama
``refine``     ``rec_m``: RCAN group of residual channel-attention blocks
``fusion``     MulT's transformer and the six-cross-modal + three-memory fusion
=============  =================================================================

Shapes: B dialogues of S utterances, D = ``hidden`` (32), M modalities (a, t, v).

1. **Projections.** ``p_m = Linear(x_m)`` (D, no bias), x_m zero where ``available`` hides it.
2. **Stage 1, ``backbone``** (complete modalities: ``apply_condition=False``, not selected):
   projections + fusion trained with the task loss. *Missing upstream*: the reference loads
   ``pt/pretrained-{mosi,mosei}.pth`` and ships no pretraining code (IMDER.py l.32-39; issue
   #5 "pretrained by complete multimodal data ... frozen"; issue #7 unanswered), so this stage
   is ours.
3. **Stage 2, ``diffusion``** (under the condition): projections frozen (computed under
   no_grad, as the reference's l.169-173). For every modality m unavailable at some real
   utterance of the batch: the condition per utterance from the *other available* modalities
   (one: its projection; two: ``cat_*``, a 1x1 map over their concatenation; none: 0); a
   conditional score network per modality (VE-SDE, ``std(t) = sqrt((25^2t - 1)/(2 ln 25))``,
   ``g(t) = 25^t``); Euler-Maruyama sampling (``sampling_steps`` = 100, t = 1 -> 1e-3, under
   no_grad, at train and test, the last step's mean); refinement ``rec_m``; fusion on the
   available projections and the refined recoveries (per utterance).
4. **Loss** (IMDER.py l.76-81): ``task + 0.1 (sum_m DSM_m + L_rec)``; DSM with t ~ U(1e-5, 1)
   and the condition perturbed with the data's noise z (``clean_condition``: not), counted on
   the utterances whose m is hidden but present; ``L_rec = sum_m MSE(refined_m, p_m)`` on the
   same entries. Task: CE, or for regression the reference's L1 (``regression_loss``, "mse" =
   the toolkit's ``task_loss``). Logged parts: ``task``, ``dsm_<m>``, ``rec``.
   A remark on the shared noise (kept as the default, being the reference's): the score net
   sees ``x_t - c_t = x_0 - c`` exactly, a shortcut that the sampler's fresh condition noise
   breaks. On a toy relation v = f(a) (1500 DSM steps of the MLP net, while porting) its raw
   samples stayed ~100x farther from the truth than predicting 0, while ``clean_condition``
   samples came closer than predicting 0 (the test checks the clean form); with the default,
   the refinement ``rec_m`` carries most of the recovery.
5. **Fusion** (MulT): six cross-modal transformers (``nlevels`` layers, 8 heads, causal as
   ``attn_mask: true``), three self-attention memories (``max(nlevels, 3)`` layers), the
   concatenation (6 D) + ``Linear(Drop(ReLU(Linear)))`` residual + linear head.

Reference options (default off): ``reference_batch_masks`` — in training, one random pattern
of available modalities per *batch* instead of the protocol's per-utterance masks, with the
reference's schedule (IMDER.py l.64-73: at missing rate mr the first ``miss_2[int(mr*10-1)]``
of an epoch's batches keep one modality, the next ``miss_1[...]`` keep two, the rest all;
``miss_2 = [.1,.2,.3,.5,.7,.9,1]``, ``miss_1 = [.1,.2,.3,.2,.1,0,0]``; mr = 0 indexes -1,
so every batch misses two, as issue #7 reports). The shares count sequences of the epoch (the
reference: batches over ``round(n_batches / 10) * 10``); only under ``random:p`` conditions
(the fixed-protocol code is unreleased), never in evaluation (the reference draws there too).

Deviations from the reference, all deliberate (the spec's "faithful CPU port"):

* **Sequence axis = the utterances of a dialogue/video** (the reference: 48 time steps of one
  utterance's aligned sequence). The U-Net's convolutions, its cross-attention, the
  refinement's convolutions and channel attention and the MulT fusion therefore mix
  neighbouring utterances — context the reference does not have (MoMKE has it too). Padding
  is masked everywhere (masked GroupNorm and channel averages, zeroed conv inputs, key
  masks), S is padded to a multiple of 2^(levels-1) (8) inside the U-Net, and a real
  utterance's output never depends on the padding.
* **Linear projections** instead of Conv1d(kernel 3, no padding), which would mix
  neighbouring utterances and shorten the sequence. Outputs **per utterance** instead of the
  last time step.
* **Masks**: the protocol's per-utterance masks (any subset missing per utterance); each
  utterance's missing modalities are recovered from its own available ones, both condition
  forms computed for the batch and selected per utterance. The reference: one pattern per
  batch (``reference_batch_masks``), random in evaluation too.
* **Deterministic evaluation**: in eval mode the sampler's noise comes from a generator
  seeded afresh per forward and modality (``sampler_seed``); in training, the global RNG.
* Modalities with no real utterance to recover in a batch are not sampled (the reference
  samples only the missing ones of its batch-wide pattern, the same thing).
* Score networks: the U-Net's widths and depth follow ``score_channels`` (the reference's
  32-64-128-256 by default); GroupNorm groups gcd-reduced for small widths; the Fourier
  weights are a buffer. ``score_net="mlp"``: one MLP per utterance (L = 1), the spec's cheaper
  labelled option. Fewer ``sampling_steps`` and ``refine_blocks`` (4) are cheaper options for
  smoke tests, labelled as deviations in the presets' comments.
* Conditions generalise to any M >= 2: the 1x1 map reads the M-1 other projections (zero if
  unavailable) when two or more are available; for M = 3 this is the reference's cat_*.
* MulT's positional embedding counts every real position (the reference's skips time steps
  whose first feature is exactly 0).
* Schedule: Adam at lr 2e-3 without weight decay (the config's 0.005 is never passed, so
  presets use 0); early stopping after 20 epochs (``train.patience``) on the validation MAE
  for CMU (= the reference's validation L1 "Loss"), WA for IEMOCAP (no validation loss metric
  here). ``clip_grad_value_`` (1.0 / 0.6) is reproduced by ``grad_value_clip`` (gradient
  hooks on the parameters; the trainer only clips norms). **Not reproduced**:
  ReduceLROnPlateau (x0.5 on the validation loss, patience 24 / 5) — the trainer has no
  scheduler; the per-epoch checkpoint files; seeds 1111-1119 and their csv.
"""
from .method import IMDer, IMDerConfig

__all__ = ["IMDer", "IMDerConfig"]
