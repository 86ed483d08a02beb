"""Radix tree + slot allocator: properties against a naive reference, locking and LRU eviction."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.mem.allocator import SlotAllocator
from runtime.mem.radix_cache import RadixCache

seqs = st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=1, max_size=25)


def _insert(cache: RadixCache, alloc: SlotAllocator, tokens: list[int]) -> None:
    m = cache.match_prefix(tokens)
    new = alloc.alloc(len(tokens) - m.length)
    slots = m.slots + new
    done = cache.insert(tokens, slots)
    alloc.free(slots[m.length:done])


@settings(max_examples=150, deadline=None)
@given(seqs, st.lists(st.integers(0, 3), min_size=0, max_size=12))
def test_match_is_longest_inserted_prefix(inserted, query):
    alloc = SlotAllocator(1000)
    cache = RadixCache(alloc)
    for s in inserted:
        _insert(cache, alloc, s)
    expected = max((_lcp(s, query) for s in inserted), default=0)
    m = cache.match_prefix(query)
    assert m.length == expected
    # slots are consistent: the same prefix always maps to the same slots
    for s in inserted:
        n = _lcp(s, query)
        assert cache.match_prefix(s[:n]).slots == m.slots[:n]
    # no slot leaked or double-owned
    held = cache.cached_slots()
    assert len(held) == len(set(held)) == alloc.used == cache.total_size


@settings(max_examples=100, deadline=None)
@given(seqs, st.integers(0, 40))
def test_evict_frees_unlocked_only(inserted, n):
    alloc = SlotAllocator(1000)
    cache = RadixCache(alloc)
    for s in inserted:
        _insert(cache, alloc, s)
    locked = cache.match_prefix(inserted[0])
    cache.lock(locked.node)
    cache.evict(n)
    assert cache.match_prefix(inserted[0]).slots == locked.slots  # still there
    assert alloc.used == cache.total_size
    cache.unlock(locked.node)
    cache.evict(10_000)
    assert alloc.used == 0 and cache.total_size == 0


def test_lru_order_and_split():
    alloc = SlotAllocator(100)
    cache = RadixCache(alloc)
    _insert(cache, alloc, [1, 2, 3, 4])
    _insert(cache, alloc, [1, 2, 5, 6])   # splits the edge after [1, 2]
    cache.match_prefix([1, 2, 3, 4])       # touch: [5, 6] is now least recently used
    assert cache.evict(1) == 2
    assert cache.match_prefix([1, 2, 5, 6]).length == 2
    assert cache.match_prefix([1, 2, 3, 4]).length == 4


def test_disabled_cache_keeps_nothing():
    alloc = SlotAllocator(10)
    cache = RadixCache(alloc, disabled=True)
    assert cache.insert([1, 2], [0, 1]) == 0
    assert cache.match_prefix([1, 2]).length == 0


def test_allocator_all_or_nothing_and_double_free():
    alloc = SlotAllocator(4)
    assert alloc.alloc(5) is None and alloc.available == 4
    s = alloc.alloc(3)
    alloc.free(s)
    try:
        alloc.free(s[:1])
    except AssertionError:
        pass
    else:
        raise AssertionError("double free not detected")


def _lcp(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
