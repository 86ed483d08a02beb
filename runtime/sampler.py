"""Logits processing and sampling for a batch: penalties, masks, temperature, top-k/top-p/min-p."""
from __future__ import annotations

import torch

from .host_copy import h2d
from .scheduler.request import Req


class Sampler:
    def __init__(self, eos_ids: set[int], random_seed: int, device: str) -> None:
        self.eos_ids = sorted(eos_ids)
        self.generator = torch.Generator(device=device).manual_seed(random_seed)
        self.device = device

    def sample(self, logits: torch.Tensor, reqs: list[Req], masks: torch.Tensor | None = None) -> torch.Tensor:
        """Next token per row of ``logits [R, V]`` (modified in place). ``masks``: bool ``[R, V]`` allowed."""
        self._penalize(logits, reqs)
        if masks is not None:
            logits.masked_fill_(~masks, float("-inf"))
            dead = ~masks.any(dim=-1)
            if bool(dead.any()):
                # NOTE: a constraint that allows no token: emit EOS; the matcher then ends the request.
                logits[dead, self.eos_ids[0] if self.eos_ids else 0] = 0.0
        sampled_rows = [i for i, r in enumerate(reqs) if not r.sampling_params.greedy]
        if len(sampled_rows) == len(reqs):
            return self._sample_rows(logits, reqs)
        out = logits.argmax(dim=-1)
        if sampled_rows:
            rows = h2d(sampled_rows, torch.long, logits.device)
            out[rows] = self._sample_rows(logits[rows], [reqs[i] for i in sampled_rows])
        return out

    def _penalize(self, logits: torch.Tensor, reqs: list[Req]) -> None:
        for i, r in enumerate(reqs):
            sp = r.sampling_params
            if len(r.output_ids) < sp.min_new_tokens and not sp.ignore_eos:
                # NOTE: min_new_tokens: EOS and stop tokens are not allowed yet.
                logits[i, h2d(self.eos_ids + sp.stop_token_ids, torch.long, logits.device)] = float("-inf")
            if (sp.frequency_penalty or sp.presence_penalty) and r.output_ids:
                ids, counts = h2d(r.output_ids, torch.long, logits.device).unique(return_counts=True)
                logits[i, ids] -= sp.frequency_penalty * counts.float() + sp.presence_penalty
            if sp.repetition_penalty != 1.0:
                ids = h2d(r.fill_ids, torch.long, logits.device).unique()
                vals = logits[i, ids]
                logits[i, ids] = torch.where(vals > 0, vals / sp.repetition_penalty, vals * sp.repetition_penalty)

    def _sample_rows(self, logits: torch.Tensor, reqs: list[Req]) -> torch.Tensor:
        sps = [r.sampling_params for r in reqs]
        dev = logits.device
        filtered = any(sp.top_k > 0 or sp.top_p < 1 or sp.min_p > 0 for sp in sps)
        fused = logits.is_cuda and not filtered and logits.dtype == torch.float32
        if fused:   # NOTE: one pass over logits and noise (layers/triton_sampling.py): same draw, no softmax
            inv_temp = h2d([1.0 / sp.temperature for sp in sps], torch.float32, dev)
        else:
            temp = h2d([sp.temperature for sp in sps], torch.float32, dev).unsqueeze(1)
            probs = torch.softmax(logits / temp, dim=-1)
            if filtered:
                probs = _filter(probs, sps)
        # NOTE: argmax(p / E) with E ~ Exp(1) is a draw from p (the exponential race); unlike
        # torch.multinomial it needs no host sync, so the next step can be launched before this one ends.
        noise = torch.empty_like(logits)
        seeded = [i for i, sp in enumerate(sps) if sp.seed is not None]
        if len(seeded) < len(reqs):
            noise.exponential_(generator=self.generator)
        for i in seeded:
            # NOTE: seeded rows are reproducible: the generator depends only on (seed, sample, step).
            sample = int(reqs[i].rid.rpartition("#")[2] or 0) if "#" in reqs[i].rid else 0
            g = torch.Generator(device=dev).manual_seed(
                (sps[i].seed * 1000003 + sample * 7919 + len(reqs[i].output_ids)) % (2**63))
            noise[i].exponential_(generator=g)
        if fused:
            from .layers.triton_sampling import gumbel_max

            return gumbel_max(logits, noise, inv_temp)
        noise.clamp_min_(torch.finfo(noise.dtype).tiny)   # NOTE: E == 0 would make p / E a NaN/inf
        return (probs / noise).argmax(dim=-1)


def _filter(probs: torch.Tensor, sps) -> torch.Tensor:
    """Top-k, top-p and min-p over sorted probabilities, renormalized."""
    dev = probs.device
    vocab = probs.shape[1]
    top_k = h2d([min(sp.top_k, vocab) if sp.top_k > 0 else vocab for sp in sps], torch.long, dev)
    top_p = h2d([sp.top_p for sp in sps], torch.float32, dev)
    min_p = h2d([sp.min_p for sp in sps], torch.float32, dev)
    sp_, idx = probs.sort(dim=-1, descending=True)
    ranks = torch.arange(probs.shape[1], device=dev).unsqueeze(0)
    cum = sp_.cumsum(dim=-1)
    drop = (ranks >= top_k.unsqueeze(1)) | ((cum - sp_) > top_p.unsqueeze(1))
    drop |= sp_ < (min_p * sp_[:, 0]).unsqueeze(1)
    drop[:, 0] = False
    sp_ = sp_.masked_fill(drop, 0.0)
    out = torch.zeros_like(probs).scatter_(1, idx, sp_)
    return out / out.sum(dim=-1, keepdim=True)
