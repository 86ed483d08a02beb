"""The shared-prefix (cascade) planner: groups from radix-tree paths, chunking, capacity (pure Python)."""
from __future__ import annotations

import random

import pytest

from runtime.attention.cascade import chunk_capacity, chunk_members, find_groups, plan_cascade
from runtime.mem.allocator import SlotAllocator
from runtime.mem.radix_cache import RadixCache


def _tree_nodes(prompts: list[list[int]]):
    """Insert each prompt into a real radix cache and return each one's locked node, as the scheduler does."""
    alloc = SlotAllocator(10_000)
    cache = RadixCache(alloc)
    nodes = []
    for p in prompts:
        m = cache.match_prefix(p)
        slots = list(m.slots) + alloc.alloc(len(p) - m.length)
        cache.insert(p, slots)
        nodes.append(cache.match_prefix(p).node)
    return cache, nodes


def test_groups_follow_shared_paths():
    a = list(range(100))
    b = list(range(1000, 1050))
    prompts = [a + [7, 8], a + [9], a + [9, 10, 11], b + [1], b + [2], list(range(5000, 5040))]
    _, nodes = _tree_nodes(prompts)
    groups = sorted(find_groups(nodes, min_shared=32))
    # rows 1 and 2 share a + [9] (101 tokens), deeper than a (100): they group there, row 0 is alone at a;
    # rows 3 and 4 share b (50 tokens); row 5 shares nothing.
    assert groups == [(50, [3, 4]), (101, [1, 2])]
    # Every member's prompt really starts with the shared length's tokens of the others.
    for plen, rows in groups:
        heads = {tuple(prompts[r][:plen]) for r in rows}
        assert len(heads) == 1


def test_min_shared_and_root():
    cache, nodes = _tree_nodes([[1] * 10 + [2], [1] * 10 + [3]])
    assert find_groups(nodes, min_shared=32) == []
    assert find_groups(nodes, min_shared=8) == [(10, [0, 1])]
    assert find_groups([None, cache.root, None]) == []


@pytest.mark.parametrize("seed", range(20))
def test_groups_match_the_definition_on_random_trees(seed):
    """Against the definition, row by row: a row's group is the deepest node of its path that another row's
    path also holds, if it is ``min_shared`` tokens deep (else the row has none); rows of one group share it."""
    rng = random.Random(seed)
    stems = [[rng.randrange(50) for _ in range(rng.randrange(1, 60))] for _ in range(5)]
    prompts = []
    for _ in range(rng.randrange(2, 30)):
        head = rng.choice(stems)[:rng.randrange(0, 60)]
        prompts.append(head + [rng.randrange(1000, 2000) for _ in range(rng.randrange(1, 20))])
    _, nodes = _tree_nodes(prompts)
    if rng.random() < 0.3:
        nodes[0] = None   # a row with no locked node
    min_shared = rng.choice([1, 8, 32])

    def path(n):
        out = []
        while n is not None and n.parent is not None:
            out.append(n)
            n = n.parent
        return out   # deepest first

    def depth(n):
        return sum(len(x.key) for x in path(n))

    paths = [path(n) for n in nodes]
    want: dict[int, tuple[int, list[int]]] = {}
    for b, p in enumerate(paths):
        shared = [x for x in p if sum(any(x is y for y in q) for q in paths) >= 2]
        if shared and depth(shared[0]) >= min_shared:
            want.setdefault(id(shared[0]), (depth(shared[0]), []))[1].append(b)
    assert sorted(find_groups(nodes, min_shared)) == sorted(g for g in want.values() if len(g[1]) >= 2)


def test_plan_chunks_and_capacity():
    a = list(range(200))
    prompts = [a + [i] for i in range(20)] + [list(range(300, 340)) + [i] for i in range(3)]
    _, nodes = _tree_nodes(prompts)
    starts = [1000 * i for i in range(len(prompts))]
    plan = plan_cascade(nodes, starts, chunk=8, max_chunks=10)
    # 20 members in chunks of 8, 8, 4; then the group of 3.
    assert plan.num_chunks == 4
    assert plan.length == [200, 200, 200, 40]
    assert plan.rows[:8] == list(range(8)) and plan.rows[16:20] == [16, 17, 18, 19]
    assert plan.rows[20:24] == [-1] * 4
    assert plan.start == [0, 8000, 16000, 20000]
    assert plan.skip == [200] * 20 + [40] * 3
    # Capacity 2: the largest group's first two chunks only; the rest attend alone.
    small = plan_cascade(nodes, starts, chunk=8, max_chunks=2)
    assert small.num_chunks == 2 and small.skip == [200] * 16 + [0] * 7
    # A trailing single member gets no chunk of its own.
    one = plan_cascade(nodes[:17], starts[:17], chunk=8, max_chunks=10)
    assert one.num_chunks == 2 and one.skip[16] == 0
    assert plan_cascade(nodes[:1], starts[:1], chunk=8, max_chunks=10) is None


def test_chunk_sizes_are_about_one_tile():
    assert chunk_members(4) == 16 and chunk_members(1) == 64 and chunk_members(8) == 8
    assert all(chunk_capacity(b) <= chunk_capacity(b + 1) for b in range(1, 600))


def test_planner_reuses_groups_while_nodes_stay():
    from runtime.attention.cascade import CascadePlanner

    a = list(range(100))
    prompts = [a + [i] for i in range(10)] + [list(range(500, 540))]
    _, nodes = _tree_nodes(prompts)
    planner = CascadePlanner(chunk=4)
    starts = [200 * i for i in range(len(nodes))]
    first = planner.plan(list(nodes), starts)
    assert first == plan_cascade(nodes, starts, 4, chunk_capacity(len(nodes)))
    groups = planner._groups
    moved = [s + i for i, s in enumerate(starts)]   # the next step: every row grew, offsets moved
    second = planner.plan(list(nodes), moved)
    assert planner._groups is groups                 # not recomputed
    assert second.start == [moved[r] for r in second.rows[::4]]
    # A row left (finished): recomputed for the new rows.
    third = planner.plan(list(nodes[1:]), moved[1:])
    assert planner._groups is not groups and third == plan_cascade(nodes[1:], moved[1:], 4, chunk_capacity(10))


def test_worker_counts_cascade_rows_and_mixed_passes(tmp_path):
    """The counters reach ``metrics()``: a prefill that arrives while others decode rides with their decode
    rows (mixed on); on the CPU (torch backend) no decode row goes through a cascade chunk."""
    from runtime.config import RuntimeConfig
    from runtime.worker import Worker

    w = Worker(RuntimeConfig(model_path=_tiny(tmp_path), load_format="dummy", device="cpu",
                             skip_tokenizer_init=True, max_total_tokens=4000, mixed_chunk="on"))
    head = list(range(1, 60))

    def add(lo, hi):
        w.add_requests([{"rid": f"r{i}", "input_ids": head + [100 + i],
                         "sampling_params": {"max_new_tokens": 8, "ignore_eos": True}} for i in range(lo, hi)])

    add(0, 9)
    for _ in range(3):
        w.step()
    add(9, 12)
    while w.busy:
        w.step()
    m = w.metrics()
    assert m["mixed_passes_total"] >= 1
    assert m["cascade_rows_total"] == 0 and m["decode_tokens_total"] > 0


def _tiny(tmp_path) -> str:
    import json

    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
           "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 1,
           "vocab_size": 256, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "torch_dtype": "float32"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return str(tmp_path)
