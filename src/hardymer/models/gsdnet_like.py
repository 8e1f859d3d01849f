"""GSDNet-like — a reconstruction from the abstracts, not the paper: GSDNet, Graph Spectral
Diffusion Network (Shou, Yao, Meng, Ai, Chen, Li; arXiv 2506.12325; IJCAI 2025 pp. 6182-6190,
doi 10.24963/ijcai.2025/688). No code is public and the full text could not be read here.

What the two abstracts and the seed slide state, and nothing more: graph-based conversational
emotion recognition with missing modalities that combines GNN completion with score-based
diffusion; diffusing the adjacency directly "destroys connectivity", so Gaussian noise is mapped
to the *graph spectral space* of the missing modalities and only the adjacency's eigenvalues are
perturbed ("low-rank score-based diffusion"); a reconstruction loss plus the emotion loss.
Everything else below is assembled from the lineage (``shared/spec/baselines-more.md`` §5):
GSDM (Luo et al., "Fast Graph Generation via Spectral Diffusion": a low-rank SDE on (X, Λ) with
A = U Λ Uᵀ, U fixed), IMDer (conditional VE-SDE recovery of missing features, σ = 25, 100
Euler–Maruyama steps, loss task + 0.1 (Σ DSM + L_rec)) and SDR-GNN/GCNet (the same group's
dialogue-graph backbone and trainer).

The model, per batch of B dialogues of at most S utterances:

1. **Condition** ``c`` (B, S, D_in + M): every modality the model may see, zero elsewhere
   (``masked_fill(~available, 0)``), and the M availability flags.
2. **Spectrum** of the dialogue graph: the union of SDR-GNN's window edges (self loops
   included), symmetrised, normalised ``Â = D^-1/2 A D^-1/2``; per dialogue the top-k
   eigenpairs (largest eigenvalues: the smooth components) ``U`` (B, S, k), ``Λ_0`` (B, k),
   k = ``spectral_rank`` (fewer slots, masked, for a dialogue of fewer than k utterances).
   ``torch.linalg.eigh`` runs on the padded matrix with -3 on the padding diagonal, so padding
   eigenvectors (eigenvalue -3, below every real one >= -1) never mix with real ones.
3. **Joint VE-SDE** (σ = ``sigma``) on the state ``(X_m for every modality to recover, Λ)``
   with one time t per dialogue: ``X_m,t = X_m,0 + std(t) z`` on the utterances whose m is
   missing (zero elsewhere), ``Λ_t = Λ_0 + std(t) z``; U stays fixed, so the noisy graph
   ``A_t = U diag(Λ_t) Uᵀ`` has the clean graph's eigenvectors (:func:`spectral_graph`).
   Score networks (GCNs on ``A_t``): ``s_m(X_m,t, t | c, A_t)`` per modality
   (:class:`FeatureScoreNet`) and ``s_Λ(Λ_t, t | X_t, c, A_t)`` (:class:`SpectrumScoreNet`).
4. **Recovery**: Euler–Maruyama from t = 1 to ``sample_eps`` in ``sampling_steps`` steps
   (:func:`diffusion.euler_maruyama`), under no_grad, at training and test time as IMDer
   does; a per-modality residual MLP refines the samples (IMDer's ``rec_m``, smaller); the
   refined features fill the missing entries.
5. **Backbone**: SDR-GNN's (BiGRU -> temporal + speaker spectral branches, summed ->
   linear head) on the completed input ``[x_a; x_t; x_v]``.

Loss = task + ``diffusion_weight`` x (Σ_m DSM_m + DSM_Λ + Rec). DSM_m: ``||s std + z||^2``
summed over d_m, mean over the utterances whose m is hidden but present; DSM_Λ: the same over
the k slots, mean over the dialogues with anything hidden but present; Rec: GCNet's masked
reconstruction MSE of the completed input on the hidden-but-present entries
(``graph.masked_reconstruction_loss``). Parts logged: task, dsm_<m>, dsm_spectral, rec.

Shapes: B dialogues, S utterances, M modalities, d_m a modality's width, D_in = Σ d_m,
H = ``score_hidden``, k = ``spectral_rank``; D_e, G, D_h as in ``sdr_gnn``.

Assumptions (the paper could not be read):

* Backbone, graph windows (3/3), speakers, dropout and the optimiser: SDR-GNN's preset.
* The SDE: IMDer's VE-SDE, σ = 25, DSM times U(1e-5, 1), 100 sampler steps to 1e-3; the
  condition is clean (IMDer perturbs it with the data's noise; that trick is not carried
  over). Loss weights: IMDer's 0.1 on the sum of the DSM terms and Rec, task weight 1.
* What is diffused: each missing modality's raw node features (not a learned projection, so
  nothing can collapse) on the utterances where it is missing; its available utterances
  enter through the condition. DSM and Rec count the hidden-but-present utterances only (the
  targets GCNet's reconstruction uses), so a modality never hidden in training never gets a
  score net trained.
* The graph is the dialogue's window graph (the abstracts' "adjacency" of the missing
  modalities is not defined in them); its spectrum does not depend on the missing features,
  so the recovered spectrum matters only through the reverse trajectory: at every sampler
  step the feature score nets read ``A_t`` built from the current ``Λ_t``, ending at the
  recovered ``Λ_0``. The classifier uses SDR-GNN's own relational graphs.
* Score nets: GCN layers ``h' = SiLU(LN(A h W + h W_0 + b + W_t e(t)))`` (depth
  ``score_depth``) with IMDer's Gaussian-Fourier time features (256, scale 30); the score is
  ``-x / (1 + std^2) + F / std`` (the score of unit-variance data plus a learned correction F):
  without that skip term and the LayerNorm an untrained net's samples blow up (seen: NaN in
  20 steps). Inputs and the graph are scaled by ``1 / sqrt(1 + std(t)^2)`` (EDM's c_in) so the
  GCN sees unit-scale values at every t; the unit-variance prior assumes standardised features
  (``train.standardize``). ``s_Λ`` reads out each slot from ``|u_kᵀ H|`` (sign-free, as
  eigenvector signs are arbitrary), ``c_in λ_k,t`` and e(t).
* Refinement: a residual MLP per modality on its sample (IMDer's 20-block RCAN ``rec_m``,
  reduced); only it and the backbone learn from Rec and the task (sampling is under no_grad).
* Top-k by largest eigenvalue, k = 8.
* Sampler noise: one generator per (dialogue, variable), seeded from ``sample_seed`` (eval) or
  the global RNG (training) and the dialogue's first utterance index, so evaluation is
  deterministic and a dialogue's recovery never depends on the other dialogues of its batch.
* ``spectral_sde=false`` (the ablation ``gsdnet-like:no-spectral-sde``, ours; the paper's
  ablation rows are unknown): no spectral SDE, the feature score nets read the clean
  low-rank graph ``U diag(Λ_0) Uᵀ``.
* Protocol: ours (fixed conditions, or ``random:p`` redrawn per training epoch and fixed for
  evaluation); validation selection.

Cost: the sampler dominates. At IEMOCAP's widths (512/1024/1024), 32 dialogues of <= 50
utterances and two modalities to recover, one sampler step is ~0.2 s on one CPU thread, so
100 steps add ~20 s to every batch, in training too; a batch with nothing missing samples
nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Batch
from ..training.method import Ablation, Method, Stage, task_loss
from .diffusion import VESDE, GaussianFourier, dsm_error, euler_maruyama, perturb, sample_times
from .graph import SpectralEncoder, masked_reconstruction_loss
from .registry import register_method

SPECTRUM = "_spectrum"   # the state key of Λ next to the modalities' names
PAD_EIGENVALUE = -3.0    # below every eigenvalue of a normalised adjacency (>= -1)


@dataclass
class GSDNetLikeConfig:
    """Hyper-parameters; every default is an assumption (see the module docstring)."""

    hidden: int = 200             # D_e: SDR-GNN's --hidden=200
    graph_hidden: int = 100       # G: SDR-GNN's hidden // 2
    window_past: int = 3          # SDR-GNN's --windowp=3
    window_future: int = 3        # SDR-GNN's --windowf=3
    n_speakers: int = 2           # IEMOCAP 2, CMU 1 (SDR-GNN's train.py); + 1 unknown slot
    base_model: str = "gru"       # SDR-GNN's --base-model=GRU
    dropout: float = 0.5          # SDR-GNN's --dropout 0.5 (in the backbone's GRUs)
    sigma: float = 25.0           # IMDer's VE-SDE sigma
    sampling_steps: int = 100     # IMDer's Euler-Maruyama steps (train and test)
    dsm_eps: float = 1e-5         # IMDer's loss_fn: t ~ U(eps, 1)
    sample_eps: float = 1e-3      # IMDer's sampler: t from 1 to eps
    spectral_rank: int = 8        # k, top eigenpairs ("low-rank"; GSDM's form)
    spectral_sde: bool = True     # the VE-SDE on the eigenvalues (false: clean spectrum)
    score_hidden: int = 128       # H, width of the score GCNs and the refiners
    score_depth: int = 2          # GCN layers per score net
    time_embed_dim: int = 256     # IMDer's Gaussian-Fourier embed_dim
    fourier_scale: float = 30.0   # IMDer's GaussianFourierProjection scale
    diffusion_weight: float = 0.1  # IMDer's 0.1 x (sum DSM + L_rec)
    sample_seed: int = 0          # the sampler's seed in evaluation


def spectral_basis(edges: torch.Tensor, utt_mask: torch.Tensor, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k eigenpairs of each dialogue's normalised, symmetrised adjacency.

    Parameters
    ----------
    edges : Tensor (B, S, S)
        0/1 edges between real utterances (self loops included), any direction.
    utt_mask : BoolTensor (B, S)
    k : int

    Returns
    -------
    U : Tensor (B, S, k')
        Orthonormal eigenvectors, zero at padding and in unused slots; k' = min(k, S).
    lam : Tensor (B, k')
        Their eigenvalues in decreasing order, zero in unused slots.
    slots : BoolTensor (B, k')
        Used slots: the first min(k, n_b) of dialogue b.
    """
    with torch.no_grad():
        a = ((edges + edges.transpose(1, 2)) > 0).to(edges.dtype)
        deg = a.sum(-1)
        inv = deg.clamp(min=1).rsqrt() * (deg > 0)
        norm = inv[:, :, None] * a * inv[:, None, :]
        pad = torch.diag_embed((~utt_mask).to(edges.dtype) * PAD_EIGENVALUE)
        evals, evecs = torch.linalg.eigh(norm + pad)              # ascending
        kk = min(k, utt_mask.size(1))
        lam = evals[:, -kk:].flip(-1)                              # (B, k') decreasing
        U = evecs[:, :, -kk:].flip(-1)                             # (B, S, k')
        slots = lam > PAD_EIGENVALUE / 2
        return U * slots[:, None, :], lam * slots, slots


def spectral_graph(U: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``U diag(lam) Uᵀ``: (B, S, k), (B, k) -> (B, S, S)."""
    return (U * lam[:, None, :]) @ U.transpose(1, 2)


def input_scale(std: torch.Tensor) -> torch.Tensor:
    """``1 / sqrt(1 + std^2)`` (EDM's c_in), (B,) -> (B,)."""
    return (1.0 + std ** 2).rsqrt()


class TimeEmbedding(nn.Module):
    """IMDer's time features: fixed ``[sin 2πtW; cos 2πtW]``, W ~ N(0, scale²) (E/2,), then
    Linear and SiLU. (B,) -> (B, H)."""

    def __init__(self, embed_dim: int, scale: float, d_out: int):
        super().__init__()
        self.fourier = GaussianFourier(embed_dim, scale)
        self.dense = nn.Linear(embed_dim, d_out)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return F.silu(self.dense(self.fourier(t)))


class GCNLayer(nn.Module):
    """``h' = SiLU(LN(A h W + h W_0 + b + W_t e(t)))``; (B, S, H), (B, S, S), (B, H) ->
    (B, S, H). The LayerNorm bounds the activations whatever the scale of the noisy graph."""

    def __init__(self, d: int):
        super().__init__()
        self.rel = nn.Linear(d, d)
        self.root = nn.Linear(d, d, bias=False)
        self.time = nn.Linear(d, d, bias=False)
        self.norm = nn.LayerNorm(d)

    def forward(self, h: torch.Tensor, adj: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.rel(adj @ h) + self.root(h) + self.time(temb)[:, None, :]))


def prior_score(x: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Score of ``N(0, (1 + std^2) I)``, the marginal of unit-variance data: ``-x / (1 + std^2)``;
    ``std`` broadcasts to ``x``. The score nets learn the difference from it."""
    return -x / (1.0 + std ** 2)


class FeatureScoreNet(nn.Module):
    """``s_m(X_t, t | c, A_t)``: a GCN on the (noisy, scaled) spectral graph.

    ``condition(c)``: (B, S, D_c) -> (B, S, H), computed once per batch (it does not depend
    on t). ``forward(x, t, std, c_emb, adj, rows)``: x (B, S, d_m), t and std (B,), adj
    (B, S, S), rows (B, S) the utterances being recovered -> score (B, S, d_m), zero elsewhere.
    """

    def __init__(self, d_x: int, d_c: int, cfg: GSDNetLikeConfig):
        super().__init__()
        H = cfg.score_hidden
        self.time = TimeEmbedding(cfg.time_embed_dim, cfg.fourier_scale, H)
        self.cond = nn.Linear(d_c, H)
        self.inp = nn.Linear(d_x, H, bias=False)
        self.layers = nn.ModuleList(GCNLayer(H) for _ in range(cfg.score_depth))
        self.out = nn.Linear(H, d_x)

    def condition(self, c: torch.Tensor) -> torch.Tensor:
        return self.cond(c)

    def forward(self, x, t, std, c_emb, adj, rows):
        h = self.inp(x * input_scale(std)[:, None, None]) + c_emb
        temb = self.time(t)
        for layer in self.layers:
            h = layer(h, adj, temb)
        s = prior_score(x, std[:, None, None]) + self.out(h) / std[:, None, None]
        return s.masked_fill(~rows[..., None], 0.0)


class SpectrumScoreNet(nn.Module):
    """``s_Λ(Λ_t, t | X_t, c, A_t)``: a GCN on the spectral graph, then per eigen slot an MLP
    of ``[|u_kᵀ H|; c_in λ_k,t; e(t)]``.

    ``forward(lam, t, std, x, c_emb, U, adj, slots)``: lam (B, k), x a dict of the noisy
    features (B, S, d_m) of the modalities being recovered (an absent one counts as zero),
    U (B, S, k), slots (B, k) -> score (B, k), zero outside ``slots``.
    """

    def __init__(self, dims: dict[str, int], d_c: int, cfg: GSDNetLikeConfig):
        super().__init__()
        H = cfg.score_hidden
        self.time = TimeEmbedding(cfg.time_embed_dim, cfg.fourier_scale, H)
        self.cond = nn.Linear(d_c, H)
        # one Linear over [x_a; x_t; x_v], kept per block so absent (zero) blocks cost nothing
        self.inp = nn.ModuleDict({m: nn.Linear(d, H, bias=False) for m, d in dims.items()})
        self.layers = nn.ModuleList(GCNLayer(H) for _ in range(cfg.score_depth))
        self.readout = nn.Sequential(nn.Linear(2 * H + 1, H), nn.SiLU(), nn.Linear(H, 1))

    def condition(self, c: torch.Tensor) -> torch.Tensor:
        return self.cond(c)

    def forward(self, lam, t, std, x, c_emb, U, adj, slots):
        scale = input_scale(std)
        h = c_emb + sum(self.inp[m](v * scale[:, None, None]) for m, v in x.items())
        temb = self.time(t)
        for layer in self.layers:
            h = layer(h, adj, temb)
        coef = (U.transpose(1, 2) @ h).abs()                              # (B, k, H)
        feat = torch.cat([coef, (lam * scale[:, None])[..., None],
                          temb[:, None, :].expand(-1, lam.size(1), -1)], -1)
        s = prior_score(lam, std[:, None]) + self.readout(feat)[..., 0] / std[:, None]
        return s.masked_fill(~slots, 0.0)


class Refiner(nn.Module):
    """Residual MLP on a sample, ``x + W_2 SiLU(W_1 x)`` (IMDer's ``rec_m``, much smaller)."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _seed(base: int, first_index: int, stream: int) -> int:
    return (base * 1_000_003 + (first_index + 1) * 31 + stream) % (2 ** 62)


@register_method("gsdnet-like")
class GSDNetLike(SpectralEncoder, Method):
    """Joint spectral/feature VE-SDE recovery of the missing modalities, then SDR-GNN's
    backbone on the completed input. See the module docstring.

    ``forward``: (B, S, n_outputs). ``complete``: the completed inputs and the recovered
    features, dicts of (B, S, d_m). ``sample``: the raw samples, with the recovered spectrum
    under ``"_spectrum"`` (B, k).

    Examples
    --------
    >>> from hardymer.models import create_method
    >>> m = create_method("gsdnet-like", dims={"a": 4, "t": 4, "v": 4}, n_outputs=4,
    ...                   task="classification", hidden=8, graph_hidden=4, score_hidden=8)
    >>> sorted(m.feature_scores)
    ['a', 't', 'v']
    """

    Config = GSDNetLikeConfig
    ablations = {"no-spectral-sde": Ablation(("model.spectral_sde=false",), None)}

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if config.base_model not in ("gru", "lstm"):
            raise ValueError(f"model.base_model={config.base_model!r}; expected 'gru' "
                             "(SDR-GNN's) or 'lstm'")
        if not config.sigma > 1:
            raise ValueError(f"model.sigma={config.sigma!r}; expected > 1 (VE-SDE)")
        if config.sampling_steps < 2:
            raise ValueError(f"model.sampling_steps={config.sampling_steps!r}; expected >= 2")
        for name in ("dsm_eps", "sample_eps"):
            if not 0 < getattr(config, name) < 1:
                raise ValueError(f"model.{name}={getattr(config, name)!r}; expected in (0, 1)")
        if config.spectral_rank < 1:
            raise ValueError(f"model.spectral_rank={config.spectral_rank!r}; expected >= 1")
        if config.time_embed_dim % 2 or not config.fourier_scale > 0:
            raise ValueError("model.time_embed_dim must be even and model.fourier_scale > 0")

    def __init__(self, config: GSDNetLikeConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        d_in, d_e = sum(dims.values()), config.hidden
        d_h = 2 * d_e + config.graph_hidden
        d_c = d_in + len(dims)
        self.build_encoder(d_in)
        self.classifier = nn.Linear(d_h, n_outputs)
        self.feature_scores = nn.ModuleDict({m: FeatureScoreNet(d, d_c, config)
                                             for m, d in dims.items()})
        self.spectrum_score = SpectrumScoreNet(dims, d_c, config)
        self.refiners = nn.ModuleDict({m: Refiner(d, config.score_hidden)
                                       for m, d in dims.items()})
        self.sde = VESDE(config.sigma)

    # --- pieces --------------------------------------------------------------------------
    def visible(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each modality (B, S, d_m) where available, zero elsewhere; masked_fill, not a
        product, so hidden values never get in, even inf or NaN."""
        return {m: batch.x[m].masked_fill(~batch.available[..., i, None], 0.0)
                for i, m in enumerate(self.modalities)}

    def condition(self, batch: Batch) -> torch.Tensor:
        """``[visible features; availability flags]`` (B, S, D_in + M)."""
        vis = self.visible(batch)
        return torch.cat([vis[m] for m in self.modalities]
                         + [batch.available.to(vis[self.modalities[0]].dtype)], -1)

    def recover_rows(self, batch: Batch) -> torch.Tensor:
        """(B, S, M): the real utterances whose modality is not available."""
        return batch.utt_mask[..., None] & ~batch.available

    def spectrum(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(U, Λ_0, slots)`` of the window graph (:func:`spectral_basis`)."""
        edges = self.graphs(batch)[0].amax(1)                          # (B, S, S)
        return spectral_basis(edges, batch.utt_mask, self.config.spectral_rank)

    def score_graph(self, U, lam_t, lam0, std) -> torch.Tensor:
        """The graph the score nets read, scaled by c_in: ``U diag(c_in Λ_t) Uᵀ``, or the
        clean ``U diag(Λ_0) Uᵀ`` without the spectral SDE."""
        if not self.config.spectral_sde:
            return spectral_graph(U, lam0)
        return spectral_graph(U, lam_t * input_scale(std)[:, None])

    def _scores(self, state, t, std, cond, U, lam0, slots, rec, dial):
        """Scores of the joint state: ``{m: (B, S, d_m)}`` and, with the spectral SDE,
        ``{"_spectrum": (B, k)}``."""
        adj = self.score_graph(U, state.get(SPECTRUM), lam0, std)
        out = {m: self.feature_scores[m](state[m], t, std, cond[m], adj,
                                         rec[..., self.modalities.index(m)])
               for m in state if m != SPECTRUM}
        if SPECTRUM in state:
            x = {m: v for m, v in state.items() if m != SPECTRUM}
            out[SPECTRUM] = self.spectrum_score(state[SPECTRUM], t, std, x, cond[SPECTRUM], U,
                                                adj, slots & dial[:, None])
        return out

    def _embedded(self, c: torch.Tensor, names) -> dict[str, torch.Tensor]:
        out = {m: self.feature_scores[m].condition(c) for m in names}
        if self.config.spectral_sde:
            out[SPECTRUM] = self.spectrum_score.condition(c)
        return out

    def _noise(self, batch: Batch, rec: torch.Tensor, names, k: int) -> Callable[[], dict]:
        """Standard normal noise for the sampler's state: one generator per (dialogue,
        variable), seeded from ``sample_seed`` in eval (the global RNG in training) and the
        dialogue's first utterance index; zero outside the rows being recovered."""
        B, S = batch.utt_mask.shape
        dev, dtype = batch.utt_mask.device, batch.x[self.modalities[0]].dtype
        base = self.config.sample_seed if not self.training else \
            int(torch.randint(0, 2 ** 31 - 1, ()))
        first = batch.index[:, 0].tolist()
        lengths = batch.utt_mask.sum(1).tolist()
        streams = [m for m in self.modalities if m in names]
        need = {m: rec[..., self.modalities.index(m)].any(1).tolist() for m in streams}
        if self.config.spectral_sde:
            streams.append(SPECTRUM)
            need[SPECTRUM] = rec.any(-1).any(-1).tolist()
        ids = {m: j for j, m in enumerate(self.modalities + (SPECTRUM,))}
        gens = {(b, m): torch.Generator(device=dev).manual_seed(_seed(base, first[b], ids[m]))
                for m in streams for b in range(B) if need[m][b]}

        def draw() -> dict[str, torch.Tensor]:
            out = {}
            for m in streams:
                shape = (S, self.dims[m]) if m != SPECTRUM else (k,)
                z = torch.zeros(B, *shape, device=dev, dtype=dtype)
                for b in range(B):
                    if need[m][b]:
                        if m == SPECTRUM:   # the full rank drawn: slots never depend on S
                            z[b] = torch.randn(self.config.spectral_rank, generator=gens[b, m],
                                               device=dev, dtype=dtype)[:k]
                        else:
                            z[b, :lengths[b]] = torch.randn(lengths[b], shape[1],
                                                            generator=gens[b, m], device=dev,
                                                            dtype=dtype)
                if m != SPECTRUM:
                    z = z.masked_fill(~rec[..., self.modalities.index(m), None], 0.0)
                out[m] = z
            return out
        return draw

    # --- recovery ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Euler–Maruyama samples of every modality with something to recover (B, S, d_m),
        zero where not recovered, and the recovered spectrum ``"_spectrum"`` (B, k) under the
        spectral SDE; ``{}`` when nothing is missing."""
        rec = self.recover_rows(batch)
        names = [m for i, m in enumerate(self.modalities) if rec[..., i].any()]
        if not names:
            return {}
        U, lam0, slots = self.spectrum(batch)
        dial = rec.any(-1).any(-1)
        cond = self._embedded(self.condition(batch), names)
        noise = self._noise(batch, rec, names, lam0.size(1))
        slot_mask = slots & dial[:, None]

        def score(state, t):
            tb = t.expand(rec.size(0))
            out = self._scores(state, tb, self.sde.std(tb), cond, U, lam0, slots, rec, dial)
            if SPECTRUM in out:
                out[SPECTRUM] = out[SPECTRUM].masked_fill(~slot_mask, 0.0)
            return out

        def masked_noise():
            z = noise()
            if SPECTRUM in z:
                z[SPECTRUM] = z[SPECTRUM].masked_fill(~slot_mask, 0.0)
            return z

        like = masked_noise()
        return euler_maruyama(score, like, self.sde, self.config.sampling_steps,
                              self.config.sample_eps, noise=masked_noise)

    def complete(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Completed inputs (visible features, refined samples where missing) and the refined
        samples themselves, dicts of (B, S, d_m); the second has the recovered modalities only."""
        vis = self.visible(batch)
        samples = self.sample(batch)
        rec = self.recover_rows(batch)
        recovered = {m: self.refiners[m](samples[m]) for m in self.modalities if m in samples}
        inputs = {m: torch.where(rec[..., i, None], recovered[m], vis[m]) if m in recovered
                  else vis[m] for i, m in enumerate(self.modalities)}
        return inputs, recovered

    # --- backbone, prediction, losses --------------------------------------------------------
    def encode(self, inputs: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """SDR-GNN's backbone on ``[x_a; x_t; x_v]`` of the completed inputs -> (B, S, D_h)."""
        return self.encode_dialogues(torch.cat([inputs[m] for m in self.modalities], -1), batch)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.classifier(self.encode(self.complete(batch)[0], batch))

    def dsm_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Joint DSM with one t per dialogue: ``{"dsm_<m>": …, "dsm_spectral": …}`` scalars."""
        rec = self.recover_rows(batch)
        targets = rec & batch.present
        names = [m for i, m in enumerate(self.modalities) if targets[..., i].any()]
        zero = batch.utt_mask.new_zeros((), dtype=torch.float32)
        parts = {f"dsm_{m}": zero for m in self.modalities}
        parts["dsm_spectral"] = zero
        dial = targets.any(-1).any(-1)                                 # (B,)
        if not names:
            return parts
        U, lam0, slots = self.spectrum(batch)
        B = rec.size(0)
        t = sample_times(B, self.config.dsm_eps, device=U.device, dtype=U.dtype)
        std = self.sde.std(t)
        state, noise = {}, {}
        for m in names:
            i = self.modalities.index(m)
            x0 = batch.x[m].masked_fill(~targets[..., i, None], 0.0)
            xt, z = perturb(x0, std[:, None, None])
            keep = rec[..., i, None]
            state[m], noise[m] = xt.masked_fill(~keep, 0.0), z.masked_fill(~keep, 0.0)
        if self.config.spectral_sde:
            lt, z = perturb(lam0, std[:, None])
            state[SPECTRUM], noise[SPECTRUM] = lt * slots, z * slots
        cond = self._embedded(self.condition(batch), names)
        scores = self._scores(state, t, std, cond, U, lam0, slots, rec, dial)
        for m in names:
            parts[f"dsm_{m}"] = dsm_error(scores[m], noise[m], std[:, None, None],
                                          targets[..., self.modalities.index(m)])
        if SPECTRUM in scores:
            parts["dsm_spectral"] = dsm_error(scores[SPECTRUM], noise[SPECTRUM], std[:, None],
                                              dial)
        return parts

    def stage_loss(self, batch: Batch, stage: Stage) -> tuple[torch.Tensor, dict[str, float]]:
        inputs, _ = self.complete(batch)
        task = task_loss(self.classifier(self.encode(inputs, batch)), batch, self.task)
        rec = masked_reconstruction_loss(inputs, batch)
        dsm = self.dsm_losses(batch)
        loss = task + self.config.diffusion_weight * (sum(dsm.values()) + rec)
        parts = {"task": task, **dsm, "rec": rec}
        return loss, {k: float(v.detach()) for k, v in parts.items()}
