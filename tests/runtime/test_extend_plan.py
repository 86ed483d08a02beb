"""The extend kernel's longest-first tile list (runtime/attention/extend_plan.py)."""
import random

from runtime.attention.extend_plan import lpt_tiles


def test_every_live_block_once_heaviest_first():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 12)
        ext = [rng.randint(1, 300) for _ in range(n)]
        pre = [rng.choice([0, rng.randint(0, 2000)]) for _ in range(n)]
        bt = rng.choice([16, 32, 64])
        tb, tm = lpt_tiles(ext, pre, bt)
        want = {(b, m) for b in range(n) for m in range(-(-ext[b] // bt))}
        assert len(tb) == len(want) and set(zip(tb, tm)) == want   # each live block exactly once, no empty one
        cost = [pre[b] + min(ext[b], (m + 1) * bt) for b, m in zip(tb, tm)]
        assert cost == sorted(cost, reverse=True)


def test_a_short_extension_of_a_long_prefix_goes_first():
    """The case the (requests, blocks) grid gets wrong: its one block sees 1,000 keys, more than any block of
    the 200-token prefill, yet the grid launches it last (block 0)."""
    tb, tm = lpt_tiles([200, 20], [0, 1000], 32)
    assert (tb[0], tm[0]) == (1, 0)
    assert list(zip(tb[1:], tm[1:])) == [(0, m) for m in (6, 5, 4, 3, 2, 1, 0)]
