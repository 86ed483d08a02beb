"""The fused Gumbel-max sampling kernel (runtime/layers/triton_sampling.py) vs the exponential race in torch."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("rows,vocab", [(1, 128256), (7, 1000), (33, 32001), (256, 8192)])
def test_gumbel_max_is_the_race_on_the_same_noise(device, rows, vocab):
    """Same logits and noise: the kernel's index is torch's ``argmax(softmax(l / T) / E)`` (what the sampler
    computed before) — exactly, except for near-ties the float rounding may order differently."""
    from runtime.layers.triton_sampling import gumbel_max

    g = torch.Generator(device=device).manual_seed(rows * 7 + vocab)
    logits = torch.randn(rows, vocab, device=device, generator=g) * 3
    noise = torch.empty_like(logits).exponential_(generator=g)
    noise[0, :5] = 0.0   # E == 0 must not produce inf/NaN winners out of nowhere (clamped like the race)
    inv_t = torch.rand(rows, device=device, generator=g) * 1.5 + 0.5
    got = gumbel_max(logits, noise, inv_t)
    race = (torch.softmax(logits * inv_t[:, None], dim=-1) / noise.clamp_min(torch.finfo(torch.float32).tiny)).argmax(-1)
    score = logits.double() * inv_t[:, None].double() - noise.double().clamp_min(torch.finfo(torch.float32).tiny).log()
    assert got.dtype == torch.long and got.shape == (rows,)
    assert ((got >= 0) & (got < vocab)).all()
    same = got == race
    # a differing row must be a near-tie in exact arithmetic
    gap = (score.gather(1, race[:, None]) - score.gather(1, got[:, None])).abs().squeeze(1)
    assert bool((same | (gap < 1e-4)).all()), gap[~same]
    assert same.float().mean() >= 0.97


def test_fused_sampler_draws_from_softmax(device):
    """The Sampler's fused path on the GPU: frequencies of 60k draws match softmax(l / T) (5 sigma)."""
    if device != "cuda":
        pytest.skip("the sampler takes the fused path on CUDA only")
    from runtime.sampler import Sampler
    from runtime.sampling_params import SamplingParams
    from runtime.scheduler.request import Req

    base = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0, 0.25, 1.5], device=device)
    temp = 0.7
    p = torch.softmax(base / temp, dim=-1)
    n = 20000
    reqs = [Req(rid=f"r{i}", input_ids=[1], sampling_params=SamplingParams(temperature=temp, max_new_tokens=4))
            for i in range(n)]
    sampler = Sampler(set(), 0, device)
    counts = torch.zeros(8, device=device)
    for _ in range(3):
        toks = sampler.sample(base.repeat(n, 1).contiguous(), reqs)
        counts += torch.bincount(toks, minlength=8).float()
    freq = counts / (3 * n)
    sigma = (p * (1 - p) / (3 * n)).sqrt()
    assert bool(((freq - p).abs() <= 5 * sigma + 1e-4).all()), (freq, p)
