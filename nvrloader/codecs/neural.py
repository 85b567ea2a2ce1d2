"""Neural codecs: one network fitted to the whole dataset, stored as entropy-coded quantised weights
plus the side information its decoder needs (D-NeRV keyframes, HNeRV/SNeRV embeddings).

At a target bpp the keyframe quality (D-NeRV) and the model width are chosen before fitting, and
the weight quantisation step is tuned after fitting so the archive lands on the target, counting
the codec config it will store. A few epochs of quantisation-aware fitting at those bits follow
(`nvrloader.codecs.qat`), so the stored weights are the ones trained.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from nvrloader.codecs.base import Codec, CodecError, EncodeJob, register_codec
from nvrloader.codecs.keyframes import (CLIP_CANDIDATES, DEFAULT_CLIP_LEN, SEARCH_FRACTION, SHARE_CANDIDATES,
                                        Candidate, KeyframeCodecs, Keyframes, candidate_shares, final_fit,
                                        planned_trials, sample_positions, search_split, share_range,
                                        short_fit)
from nvrloader.codecs.options import CodecOptions, EmbeddingOptions, KeyframeOptions, NeuralOptions
from nvrloader.codecs.qat import (QAT_LR_SCALE, QAT_PLANNED_BITS, qat_epochs, quantisation_aware_fit, stored_modes,
                                  time_shares)
from nvrloader.codecs.training import training_for
from nvrloader.compress import quant
from nvrloader.decode.base import video_key
from nvrloader.decode.layouts import (ClipLayout, FrameTable, TimeLayout, keyframe_indices, keyframe_pixels,
                                     no_stats, to_float)
from nvrloader.decode.neural import stored_state
from nvrloader.distributed import broadcast
from nvrloader.fit import FakeQuant, FitConfig, fit
from nvrloader.framestore import FrameStore
from nvrloader.metrics import psnr
from nvrloader.models import create_model, list_models, minimum_params, model_family, weights_per_part
from nvrloader.models.registry import count_model_params
from nvrloader.rate import RateError, search_rate

# Coded bits per weight after 8-bit quantisation and entropy coding (b - 1.5 at b bits), used only to pick
# a width before fitting; the quantisation step is tuned afterwards on the real bytes.
BITS_PER_WEIGHT_GUESS = 6.5
# Coded embedding bits per value relative to the quantisation bits (entropy coding saves ~10%),
# used only to size the model before the embeddings exist.
EMBEDDING_CODING_GAIN = 0.9
WEIGHT_BITS_RANGE = (4.0, 12.0)
# With QAT the weights are trained at the bits searched, so the search may go one bit lower: a model
# sized for QAT_PLANNED_BITS near the smallest model can need it (3-bit QAT still beats 3-bit rounding).
QAT_MIN_BITS = 3.0
BITS_TOLERANCE = 0.02  # relative bpp error the weight-bits search accepts
DEFAULT_WEIGHT_BITS = 8.0
DEFAULT_KEYFRAME_QUALITY = 50


def jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(cfg, default=list))


def pack_weights(state: dict[str, torch.Tensor], bits: float, modes: Any = "auto") -> bytes:
    return quant.pack(quant.quantize_state_dict(state, bits=bits, granularity=modes))


class _FloatSide:
    """Side information before it is stored: lossy keyframes as trained on, float embeddings."""

    def __init__(self, keyframes: dict[int, np.ndarray], embeddings: list[torch.Tensor] | None,
                 device: torch.device) -> None:
        self._kf, self._emb, self.device = keyframes, embeddings, device

    def keyframes(self, video: int) -> torch.Tensor:
        return to_float(self._kf[video]).to(self.device)

    def embeddings(self, video: int) -> torch.Tensor:
        return self._emb[video]


def keyframe_config(codec: str, quality: int) -> dict[str, Any]:
    """D-NeRV's stored keyframe config; ``as_frames`` is decided once the weights are final
    (`NeuralCodec._keyframes_as_frames`), and is a key of the same size until then."""
    return {"codec": codec, "quality": quality, "as_frames": False}


@register_codec
class NeuralCodec(Codec):
    names = tuple(list_models())
    distributed = True

    def validate(self, options: CodecOptions, resolution: tuple[int, int]) -> None:
        extra = options.model_overrides() if isinstance(options, KeyframeOptions) else {}
        try:
            with torch.device("meta"):
                create_model(self.name, options.size, resolution, **extra)
        except ValueError as err:
            raise CodecError(f"{self.name} size {options.size!r} cannot code {resolution[0]}x{resolution[1]} "
                             f"frames: {err}") from None

    def _fit_config(self, job: EncodeJob) -> FitConfig:
        opts: NeuralOptions = job.options
        recipe = dict(model_family(self.name).recipe)
        recipe.update(recipe.pop("by_size", {}).get(opts.size, {}))   # the papers' values for their presets
        for key in ("batch_size", "lr", "loss", "warmup_start"):
            if getattr(opts, key) is not None:
                recipe[key] = getattr(opts, key)
        return FitConfig(**recipe, epochs=opts.epochs, time_budget=opts.time_budget,
                         checkpoint_every=opts.checkpoint_every, num_workers=opts.num_workers, seed=opts.seed,
                         checkpoint_dir=job.checkpoint_dir, resume=job.resume, progress=job.progress)

    def encode(self, job: EncodeJob) -> dict[str, Any]:
        fit_cfg = self._fit_config(job)
        emb_bits = job.options.embedding_bits if isinstance(job.options, EmbeddingOptions) else None

        # 1. keyframes first: their decoded (lossy) pixels are the D-NeRV model's training input; at a
        #    target bpp their interval, codec and quality follow the measured rate split
        keyframe_payloads: list[bytes] = []
        lossy: dict[int, np.ndarray] = {}
        kf_cfg: dict[str, Any] = {}
        split: dict[str, Any] = {}
        warm: dict[str, torch.Tensor] | None = None
        if isinstance(job.options, KeyframeOptions):
            keyframes, quality, split, warm = self._keyframes(job, fit_cfg, emb_bits)
            job = self._with_clip_len(job, keyframes.clip_len)
            keyframe_payloads, lossy = keyframes.encode(quality, job.progress)
            kf_cfg = keyframe_config(keyframes.codec, quality)
        opts: NeuralOptions = job.options
        store, video_ids, budget = job.store, job.video_ids, job.budget
        clip_len = opts.clip_len if isinstance(opts, KeyframeOptions) else 8
        training = self._training(job, clip_len)
        target_bytes = budget.target_bytes
        side_bytes = sum(map(len, keyframe_payloads))

        # 2. the model, sized to what the budget leaves
        qat = qat_epochs(opts)
        config = functools.partial(self._stored_config, opts, clip_len, emb_bits, kf_cfg)
        model = self._sized_model(job, side_bytes, config, emb_bits, training.layout.table.total)
        cfg = jsonable(model.config)

        # 3. fit, with the float fit's share of a time budget (after a search: from the chosen trial's
        #    weights, with the epochs or time the search left)
        if warm is not None:
            model.load_state_dict(warm)
            fit_cfg = final_fit(fit_cfg, short_fit(fit_cfg, split["trials_planned"]))
        float_budget, qat_budget = time_shares(fit_cfg.time_budget, fit_cfg.epochs, qat)
        fit_cfg = dataclasses.replace(fit_cfg, time_budget=float_budget)
        fingerprint = self._fingerprint(store, video_ids, cfg, kf_cfg, fit_cfg)
        items = training.items(store, video_ids, lossy)
        result = fit(training.trainable(model), items, training.forward, fit_cfg, job.device, fingerprint)
        model = training.fitted(result.model).eval()
        main = job.writer is not None  # DDP ranks other than 0 share the fits only

        # 4. weights: bits chosen on the float model, fitted through their quantisation, stored as trained.
        # Before QAT rank 0 does only what every rank needs (the bits); the report's PSNRs come after.
        float_state = copy.deepcopy(model.state_dict()) if main else None
        side, emb_payload = self._side(model, lossy, emb_bits, job) if main else (None, b"")
        float_side = side
        masks = quant.prune_(model, opts.prune) if opts.prune else None

        def measure(b: float, modes: Any = "auto") -> float:
            payload = pack_weights(stored_state(model), round(b, 3), modes)
            return budget.bpp(len(payload) + side_bytes + len(emb_payload), config(cfg, b))

        bits = self._weight_bits(job, measure) if main else None
        float_bits, modes = broadcast((bits, stored_modes(stored_state(model), bits)) if main else None)
        bits, fake, qat_result = float_bits, FakeQuant(model, float_bits, modes, masks), None
        if qat:
            qat_result = quantisation_aware_fit(training.trainable(model), items, training.forward, fit_cfg, qat,
                                                qat_budget, fake, stored_state(model), job.device, fingerprint, main)
            model.eval()
        if not main:
            return {}
        quality = {}
        if qat_result is not None:
            side, emb_payload = self._side(model, lossy, emb_bits, job)  # embeddings of the QAT'd encoder
            if target_bytes is not None and opts.weight_bits is None \
                    and measure(bits, modes) > budget.target_bpp * (1 + BITS_TOLERANCE):
                bits = self._search_bits(job, lambda b: measure(b, modes), hi=bits)  # QAT grew the weights
                fake = FakeQuant(model, bits, modes, masks)
            with fake.applied():
                quality["psnr_qat"] = self._psnr(model, training.layout, store, video_ids, side, job.device)
        if emb_payload:
            job.writer.put("embeddings", "all", emb_payload)
        for i, payload in enumerate(keyframe_payloads):
            job.writer.put("keyframes", video_key(i), payload)
        job.writer.put("model", "weights", pack_weights(stored_state(model), bits, modes))
        # the float fit's model, for the report: as fitted, and rounded as a build without QAT stores it
        trained = copy.deepcopy(model.state_dict())
        model.load_state_dict(float_state)
        quality["psnr_float"] = self._psnr(model, training.layout, store, video_ids, float_side, job.device)
        with FakeQuant(model, float_bits, modes, masks).applied():
            quality["psnr_rounded"] = self._psnr(model, training.layout, store, video_ids, float_side, job.device)
        model.load_state_dict(trained)
        if kf_cfg:
            with fake.applied():  # the weights as stored
                quality["keyframes_as_frames"] = self._keyframes_as_frames(model, training.layout, store, video_ids,
                                                                           side, job.device)
            kf_cfg["as_frames"] = quality["keyframes_as_frames"]["chosen"]   # into config(), read below
        fits = [r for r in (result, qat_result) if r is not None]
        return {**config(cfg, bits),
                "report": {**({"rate_split": split} if split else {}), "params": count_model_params(model),
                           "weights_per_part": weights_per_part(model),
                           "train_seconds": round(sum(r.seconds for r in fits), 1),
                           "epochs": result.epochs_done, "steps": result.steps,
                           "stopped_early": any(r.stopped_early for r in fits), **quality, "fit_psnr": result.psnr,
                           "fit": jsonable({k: v for k, v in dataclasses.asdict(fit_cfg).items()
                                            if k not in ("checkpoint_dir", "resume", "progress")}),
                           "qat": {"bits": float_bits, "lr": fit_cfg.lr * QAT_LR_SCALE, **qat_result.summary()}
                           if qat_result is not None else None}}

    def _weight_bits(self, job: EncodeJob, measure: Callable[[float], float]) -> float:
        """The option, or the default, or (at a target bpp) the bits whose archive meets it."""
        bits = job.options.weight_bits
        if bits is not None or job.budget.target_bytes is None:
            return DEFAULT_WEIGHT_BITS if bits is None else bits
        return self._search_bits(job, measure, hi=WEIGHT_BITS_RANGE[1])

    def _search_bits(self, job: EncodeJob, measure: Callable[[float], float], hi: float) -> float:
        try:
            low = QAT_MIN_BITS if qat_epochs(job.options) else WEIGHT_BITS_RANGE[0]
            bits, _ = search_rate(measure, job.budget.target_bpp, low, hi, tolerance=BITS_TOLERANCE)
        except RateError as err:
            raise CodecError(f"{self.name}: after fitting, {err}; adjust keyframe_share or params") from None
        return round(bits, 3)

    def _side(self, model: nn.Module, lossy: dict[int, np.ndarray], emb_bits: int | None, job: EncodeJob
              ) -> tuple[_FloatSide, bytes]:
        """Side information as a decoder reads it, from the model as it is now: D-NeRV's lossy keyframes,
        HNeRV/SNeRV's embeddings from its encoder, quantised (and their payload)."""
        if emb_bits is None:
            return _FloatSide(lossy, None, job.device), b""
        embeddings, payload = self._embeddings(model, job.store, job.video_ids, emb_bits, job.device)
        return _FloatSide(lossy, embeddings, job.device), payload

    def _params_for(self, job: EncodeJob, side_bytes: int, stored_config: dict[str, Any],
                    probe: nn.Module, emb_bits: int | None, num_frames: int, weight_bits: float) -> int:
        """Weights the budget leaves once side information and the stored meta are counted, at about
        ``weight_bits`` quantisation bits each.

        ``stored_config`` is the config the archive will hold, with the preset's model config in
        place of the final one (the same keys; only width values change)."""
        budget = job.budget
        meta_bytes = budget.meta_bytes(stored_config)
        room = budget.target_bytes - side_bytes - meta_bytes
        if emb_bits is not None:
            room -= num_frames * math.prod(probe.embedding_shape) * emb_bits * EMBEDDING_CODING_GAIN / 8
        if room <= 0:
            raise CodecError(f"target {budget.target_bpp:.4g} bpp leaves no room for a model: side information "
                             f"and meta alone take {8 * (side_bytes + meta_bytes) / budget.pixels:.4g} bpp")
        return int(room * 8 / (BITS_PER_WEIGHT_GUESS - DEFAULT_WEIGHT_BITS + weight_bits))

    @staticmethod
    def _dataset_id(store: FrameStore, video_ids: Sequence[int]) -> str:
        names = [f"{store.records[v].name}:{store.num_frames(v)}" for v in video_ids]
        key = f"{store.height}x{store.width}@{store.fps}|" + "|".join(names)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def _stored_config(self, opts: NeuralOptions, clip_len: int, emb_bits: int | None, kf_cfg: dict[str, Any],
                       model_cfg: dict[str, Any], bits: float) -> dict[str, Any]:
        """The codec config the archive stores."""
        return {"model": self.name, "model_config": model_cfg, "clip_len": clip_len,
                "weights": {"bits": round(bits, 3), "prune": opts.prune},
                "embeddings": {"bits": emb_bits} if emb_bits is not None else None,
                "keyframes": kf_cfg or None}

    def _probe(self, opts: NeuralOptions, resolution: tuple[int, int]) -> nn.Module:
        """The preset's model on the meta device: its config has the keys the sized one will have."""
        extra = opts.model_overrides() if isinstance(opts, KeyframeOptions) else {}
        with torch.device("meta"):
            return create_model(self.name, opts.size, resolution, **extra)

    def _sized_model(self, job: EncodeJob, side_bytes: int, config: Callable[[dict[str, Any], float], dict[str, Any]],
                     emb_bits: int | None, num_frames: int) -> nn.Module:
        """The model to fit: ``params`` weights if given, else sized to what a target leaves after
        ``side_bytes`` of side information and the stored meta, at the bits the weights will likely get
        (QAT_PLANNED_BITS when QAT follows and the bits are searched, so QAT's gain buys a larger model)."""
        opts: NeuralOptions = job.options
        weight_bits = QAT_PLANNED_BITS if qat_epochs(opts) and opts.weight_bits is None else DEFAULT_WEIGHT_BITS
        resolution = (job.store.height, job.store.width)
        extra = opts.model_overrides() if isinstance(opts, KeyframeOptions) else {}
        params = opts.params
        if job.budget.target_bytes is not None and params is None:
            probe = self._probe(opts, resolution)
            params = self._params_for(job, side_bytes, config(jsonable(probe.config), weight_bits), probe,
                                      emb_bits, num_frames, weight_bits)
        torch.manual_seed(opts.seed)
        try:
            return create_model(self.name, opts.size, resolution, params=params, **extra)
        except ValueError as err:
            if job.budget.target_bytes is None or opts.params is not None:
                raise
            # below the smallest model at the bits guessed: it may still fit at fewer bits (searched after fitting)
            floor, floor_bytes = self._smallest_model(opts, resolution)
            if params * BITS_PER_WEIGHT_GUESS / 8 < floor_bytes:
                raise CodecError(f"target {job.budget.target_bpp:.4g} bpp leaves room for about {params} weights, "
                                 f"and {err}; raise the target bpp") from None
            torch.manual_seed(opts.seed)
            return create_model(self.name, opts.size, resolution, params=floor, **extra)

    @functools.lru_cache(maxsize=4)
    def _smallest_model(self, opts: NeuralOptions, resolution: tuple[int, int]) -> tuple[int, int]:
        """Weights of the smallest model the sizing rule builds here, and its bytes at the fewest bits
        the weight search tries (measured on the initialised model)."""
        extra = opts.model_overrides() if isinstance(opts, KeyframeOptions) else {}
        floor = minimum_params(self.name, self._probe(opts, resolution).config, pinned=extra)
        torch.manual_seed(opts.seed)
        model = create_model(self.name, opts.size, resolution, params=floor, **extra)
        return floor, len(pack_weights(stored_state(model), WEIGHT_BITS_RANGE[0]))

    def _fingerprint(self, store: FrameStore, video_ids: Sequence[int], model_cfg: dict[str, Any],
                     kf_cfg: dict[str, Any], fit_cfg: FitConfig) -> dict[str, Any]:
        """What a fit checkpoint must match to be resumed."""
        return {"codec": self.name, "videos": self._dataset_id(store, video_ids), "model": model_cfg,
                "keyframes": kf_cfg, "fit": {k: str(v) for k, v in vars(fit_cfg).items()
                                             if k not in ("resume", "progress", "time_budget", "checkpoint_dir",
                                                          "num_workers")}}

    def _training(self, job: EncodeJob, clip_len: int) -> Any:
        """The family's training half over the job's videos."""
        table = FrameTable(tuple(job.store.num_frames(v) for v in job.video_ids))
        return training_for(model_family(self.name).layout, table, clip_len,
                            getattr(job.options, "keyframe_loss", True))

    @staticmethod
    def _with_clip_len(job: EncodeJob, clip_len: int) -> EncodeJob:
        """The job with D-NeRV's clip length decided (the options then build that model)."""
        return dataclasses.replace(job, options=dataclasses.replace(job.options, clip_len=clip_len))

    def _keyframes(self, job: EncodeJob, fit_cfg: FitConfig, emb_bits: int | None
                   ) -> tuple[Keyframes, int, dict[str, Any], dict[str, torch.Tensor] | None]:
        """The keyframes (interval and codec) and their quality, how they were chosen (the report's
        ``rate_split``; empty without a target) and, after a search, the chosen trial's weights (the
        full fit goes on from them).

        Given a quality, or without a target: that quality (default 50) with the first codec, every
        ``clip_len`` (default 8) frames. At a target bpp, for each clip length (``clip_len``, else
        2, 4 and 8) a share of the target (``keyframe_share``, else a few) clipped to what the target
        can hold is the keyframe budget, and the codec's highest quality within it (of the ``auto``
        codecs, the one with the best keyframe PSNR) is used; short fits pick among these candidates
        (`nvrloader.codecs.keyframes`)."""
        opts: KeyframeOptions = job.options
        budget, target = job.budget, job.budget.target_bytes
        if opts.keyframe_quality is not None or target is None:
            codecs = KeyframeCodecs(opts.keyframe_codec, job.store, job.video_ids, opts.clip_len or DEFAULT_CLIP_LEN)
            quality = DEFAULT_KEYFRAME_QUALITY if opts.keyframe_quality is None else opts.keyframe_quality
            return codecs.default, quality, {}, None
        resolution = (job.store.height, job.store.width)
        shares = SHARE_CANDIDATES if opts.keyframe_share is None else (opts.keyframe_share,)
        codecs_by_clip: dict[int, KeyframeCodecs] = {}
        by_clip: dict[int, list[Candidate]] = {}
        report: dict[str, Any] = {"feasible_shares": {}, "smallest_model": {}, "refused": {}}
        for clip_len in (CLIP_CANDIDATES if opts.clip_len is None else (opts.clip_len,)):
            clip_opts = self._with_clip_len(job, clip_len).options
            codecs = KeyframeCodecs(opts.keyframe_codec, job.store, job.video_ids, clip_len)
            widest = keyframe_config(max(codecs.by_name, key=len), 100)  # meta bytes not undercounted
            meta = budget.meta_bytes(self._stored_config(clip_opts, clip_len, emb_bits, widest,
                                                         jsonable(self._probe(clip_opts, resolution).config),
                                                         DEFAULT_WEIGHT_BITS))
            floor, floor_bytes = self._smallest_model(clip_opts, resolution)
            try:
                feasible = share_range(codecs.lowest(), target, meta, floor_bytes, budget.target_bpp)
            except CodecError as err:  # too many keyframes for the target at this interval
                report["refused"][clip_len] = str(err)
                continue
            codecs_by_clip[clip_len] = codecs
            by_clip[clip_len] = candidate_shares(feasible, codecs.best_within, target, clip_len, shares)
            report["feasible_shares"][clip_len] = [round(feasible.low, 4), round(feasible.high, 4)]
            report["smallest_model"][clip_len] = {"params": floor, "bytes": floor_bytes}
        if not by_clip:
            raise CodecError(report["refused"][max(report["refused"])])  # the longest clips need the least
        given = {k: getattr(opts, k) for k in ("keyframe_share", "clip_len") if getattr(opts, k) is not None}
        planned = planned_trials(by_clip)
        if planned == 1:
            (only,) = (c for candidates in by_clip.values() for c in candidates)
            return codecs_by_clip[only.clip_len].by_name[only.codec], only.quality, {
                **report, "given": given, **dataclasses.asdict(only), "share": round(only.share, 4)}, None
        states: dict[Candidate, dict[str, torch.Tensor]] = {}
        evaluated = sample_positions(len(job.video_ids))   # a trial's PSNR: the sample's frames

        def trial(candidate: Candidate) -> dict[str, Any]:
            clip_job = self._with_clip_len(job, candidate.clip_len)
            training = self._training(clip_job, candidate.clip_len)
            keyframes = codecs_by_clip[candidate.clip_len].by_name[candidate.codec]
            payloads, lossy = keyframes.encode(candidate.quality)
            config = functools.partial(self._stored_config, clip_job.options, candidate.clip_len, emb_bits,
                                       keyframe_config(candidate.codec, candidate.quality))
            model = self._sized_model(clip_job, sum(map(len, payloads)), config, emb_bits, training.layout.table.total)
            short = short_fit(fit_cfg, planned)
            result = fit(training.trainable(model), training.items(job.store, job.video_ids, lossy), training.forward,
                         short, job.device, self._fingerprint(job.store, job.video_ids, jsonable(model.config),
                                                              dataclasses.asdict(candidate), short))
            model = training.fitted(result.model).eval()
            states[candidate] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return {"psnr": self._psnr(model, training.layout, job.store, job.video_ids,
                                       _FloatSide(lossy, None, job.device), job.device, evaluated),
                    "keyframe_psnr": keyframes.psnr(candidate.quality), "keyframe_bytes": sum(map(len, payloads)),
                    "params": count_model_params(model), "epochs": result.epochs_done}

        best, trials = search_split(by_clip, trial)
        chosen = next(c for c in states if (c.clip_len, c.codec, c.quality) ==
                      (best["clip_len"], best["codec"], best["quality"]))
        return codecs_by_clip[chosen.clip_len].by_name[chosen.codec], chosen.quality, {
            **report, "given": given, **{k: best[k] for k in ("clip_len", "share", "codec", "quality")},
            "trials": trials, "trials_planned": planned,
            "chosen_by": f"highest PSNR after short fits ({SEARCH_FRACTION:.0%} of the fit, float weights), over "
                         f"{len(evaluated)} evenly spaced videos; the full fit goes on from the chosen trial"
            }, states[chosen]

    @torch.no_grad()
    def _embeddings(self, model: nn.Module, store: FrameStore, video_ids: Sequence[int], bits: int,
                    device: torch.device) -> tuple[list[torch.Tensor], bytes]:
        """Every frame's embedding from the trained encoder, quantised as stored; returns what the decoder sees."""
        emb = torch.cat([torch.cat([model.encode(to_float(store.frames(v, np.arange(s, min(s + 32, store.num_frames(v)))))
                                                 .to(device)) for s in range(0, store.num_frames(v), 32)])
                         for v in video_ids])
        payload = quant.pack(quant.quantize_embeddings(emb.cpu(), bits=bits))
        deq = quant.unpack(payload)["embeddings"].to(device)
        return list(deq.split([store.num_frames(v) for v in video_ids])), payload

    @torch.no_grad()
    def _keyframes_as_frames(self, model: nn.Module, layout: ClipLayout, store: FrameStore, video_ids: Sequence[int],
                             side: Any, device: torch.device) -> dict[str, Any]:
        """Mean PSNR at the keyframe positions of the network's frames and of the stored keyframes; the
        decoder delivers the keyframes themselves (and skips the network there) when they are no worse."""
        network, stored = [], []
        for i, v in enumerate(video_ids):
            idx = keyframe_indices(store.num_frames(v), layout.clip_len)
            ref = torch.from_numpy(store.frames(v, idx)).permute(0, 3, 1, 2)
            pairs = np.stack([np.full(len(idx), i), idx], 1)
            network.append(psnr(layout.network_frames(model, pairs, device, side, no_stats, None).cpu(), ref))
            stored.append(psnr(keyframe_pixels(side, i).cpu(), ref))
        net, kept = float(torch.cat(network).mean()), float(torch.cat(stored).mean())
        return {"psnr_network": round(net, 4), "psnr_keyframes": round(kept, 4), "chosen": kept >= net}

    @torch.no_grad()
    def _psnr(self, model: nn.Module, layout: TimeLayout, store: FrameStore, video_ids: Sequence[int],
              side: Any, device: torch.device, positions: Sequence[int] | None = None) -> float:
        """Mean per-frame PSNR of the model with its weights as they are now and ``side``, for the report;
        over the videos at ``positions`` of ``video_ids`` (default all)."""
        values = []
        for i in range(len(video_ids)) if positions is None else positions:
            v = video_ids[i]
            n = store.num_frames(v)
            out = layout.decode(model, [(i, np.arange(n))], device, side)[0].cpu()
            values.append(psnr(out, torch.from_numpy(store.frames(v)).permute(0, 3, 1, 2)))
        return float(torch.cat(values).mean())
