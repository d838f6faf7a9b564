"""Layouts: validation, TreeMTL enumeration order, named/explicit forms, sharing measures."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from mtl_robust.models import layout as layout_mod
from mtl_robust.models.layout import (
    Layout,
    all_shared,
    branch_at,
    enumerate_layouts,
    from_index,
    independent,
    index_of,
    num_layouts,
    resolve_layout,
)

SND = ("s", "n", "d")
NYU = ("seg", "normal", "depth")

# The paper's NYUv2 ResNet-34 layouts (docs/method.md *Models and layouts*) (s = seg, n = normal, d = depth):
# index -> (layout, shared blocks of the pairs s-n, s-d, n-d)
TABLE_6_6 = {
    0: ("B0-B4: {s,n,d}", (5, 5, 5)),
    47: ("B0-B3: {s,n,d}; B4: {s} {n,d}", (4, 4, 5)),
    49: ("B0-B3: {s,n,d}; B4: {s,d} {n}", (4, 5, 4)),
    48: ("B0-B3: {s,n,d}; B4: {s} {n} {d}", (4, 4, 4)),
    43: ("B0-B2: {s,n,d}; B3-B4: {s,d} {n}", (3, 5, 3)),
    42: ("B0-B2: {s,n,d}; B3: {s} {n,d}; B4: {s} {n} {d}", (3, 3, 4)),
    44: ("B0-B2: {s,n,d}; B3: {s,d} {n}; B4: {s} {n} {d}", (3, 4, 3)),
    30: ("B0-B1: {s,n,d}; B2-B4: {s} {n,d}", (2, 2, 5)),
    34: ("B0-B1: {s,n,d}; B2-B4: {s,d} {n}", (2, 5, 2)),
    41: ("B0-B2: {s,n,d}; B3-B4: {s} {n} {d}", (3, 3, 3)),
    33: ("B0-B1: {s,n,d}; B2-B3: {s} {n,d}; B4: {s} {n} {d}", (2, 2, 4)),
    36: ("B0-B1: {s,n,d}; B2-B3: {s,d} {n}; B4: {s} {n} {d}", (2, 4, 2)),
    39: ("B0-B1: {s,n,d}; B2-B3: {s,n} {d}; B4: {s} {n} {d}", (4, 2, 2)),
    17: ("B0: {s,n,d}; B1-B4: {s} {n,d}", (1, 1, 5)),
    26: ("B0: {s,n,d}; B1-B4: {s,n} {d}", (5, 1, 1)),
    35: ("B0-B1: {s,n,d}; B2: {s,d} {n}; B3-B4: {s} {n} {d}", (2, 3, 2)),
    38: ("B0-B1: {s,n,d}; B2: {s,n} {d}; B3-B4: {s} {n} {d}", (3, 2, 2)),
    21: ("B0: {s,n,d}; B1-B3: {s} {n,d}; B4: {s} {n} {d}", (1, 1, 4)),
    28: ("B0: {s,n,d}; B1-B2: {s,n} {d}; B3-B4: {s} {n} {d}", (3, 1, 1)),
    11: ("B0-B3: {s,d} {n}; B4: {s} {n} {d}", (0, 4, 0)),
    23: ("B0: {s,n,d}; B1: {s,d} {n}; B2-B4: {s} {n} {d}", (1, 2, 1)),
    5: ("B0-B2: {s} {n,d}; B3-B4: {s} {n} {d}", (0, 0, 3)),
    10: ("B0-B2: {s,d} {n}; B3-B4: {s} {n} {d}", (0, 3, 0)),
    4: ("B0-B1: {s} {n,d}; B2-B4: {s} {n} {d}", (0, 0, 2)),
    9: ("B0-B1: {s,d} {n}; B2-B4: {s} {n} {d}", (0, 2, 0)),
    14: ("B0-B1: {s,n} {d}; B2-B4: {s} {n} {d}", (2, 0, 0)),
    2: ("B0-B4: {s} {n} {d}", (0, 0, 0)),
    45: ("B0-B2: {s,n,d}; B3-B4: {s,n} {d}", (5, 3, 3)),
    50: ("B0-B3: {s,n,d}; B4: {s,n} {d}", (5, 4, 4)),
}


def _partitions(items: list[int]) -> list[frozenset[frozenset[int]]]:
    if not items:
        return [frozenset()]
    first, rest = items[0], items[1:]
    out = []
    for p in _partitions(rest):
        out.append(p | {frozenset({first})})
        for g in p:
            out.append((p - {g}) | {g | {first}})
    return out


def _all_trees(num_tasks: int, num_blocks: int) -> set[tuple[frozenset[frozenset[int]], ...]]:
    """Brute force: every sequence of partitions in which each block refines the previous one."""
    parts = _partitions(list(range(num_tasks)))

    def refines(fine, coarse) -> bool:
        return all(any(g <= c for c in coarse) for g in fine)

    trees = [(p,) for p in parts]
    for _ in range(num_blocks - 1):
        trees = [t + (p,) for t in trees for p in parts if refines(p, t[-1])]
    return set(trees)


# ----- enumeration ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("num_tasks", "expected"), [(1, 1), (2, 6), (3, 51), (4, 561)])
def test_counts_five_blocks(num_tasks, expected):
    assert num_layouts(num_tasks, 5) == expected
    assert len(enumerate_layouts(num_tasks, 5)) == expected


@pytest.mark.parametrize(("num_tasks", "bell"), [(1, 1), (2, 2), (3, 5), (4, 15), (5, 52)])
def test_single_block_gives_every_partition(num_tasks, bell):
    assert num_layouts(num_tasks, 1) == bell


def test_five_tasks_count_and_speed():
    layout_mod._enumerate_states.cache_clear()
    layout_mod._index_table.cache_clear()
    start = time.perf_counter()
    assert num_layouts(5, 5) == 7556
    assert time.perf_counter() - start < 5.0
    layouts = enumerate_layouts(5, 5)
    assert layouts[0] == all_shared(5, 5)
    assert layouts[4] == independent(5, 5)
    assert len(set(layouts)) == 7556


@pytest.mark.parametrize("num_tasks", [2, 3, 4])
def test_enumeration_is_exactly_the_set_of_trees(num_tasks):
    enumerated = [lay.canonical() for lay in enumerate_layouts(num_tasks, 5)]
    assert len(enumerated) == len(set(enumerated))
    assert set(enumerated) == _all_trees(num_tasks, 5)


def test_three_task_leading_indices():
    shared, split = [[0, 1, 2]], [[0], [1, 2]]
    ind = [[0], [1], [2]]
    assert from_index(0, SND, 5) == Layout(SND, [shared] * 5)
    assert from_index(1, SND, 5) == Layout(SND, [split] * 5)
    assert from_index(2, SND, 5) == Layout(SND, [ind] * 5)
    for k, idx in enumerate(range(3, 7), start=1):  # {1}|{2} split at B1..B4 after {0}|{1,2} at the stem
        assert from_index(idx, SND, 5) == Layout(SND, [split] * k + [ind] * (5 - k))


@pytest.mark.parametrize("idx", sorted(TABLE_6_6))
def test_reference_table_rows(idx):
    text, pairs = TABLE_6_6[idx]
    lay = from_index(idx, SND, 5)
    assert lay.describe() == text
    assert tuple(lay.pairwise_shared_blocks().values()) == pairs
    assert lay.sharing_score() == sum(pairs)
    assert index_of(lay) == idx


def test_enumeration_keeps_treemtl_group_order():
    # {0,1,2} is split as ({1,2}, {0}) first: divide_set never puts the smallest task in the first part
    assert from_index(1, SND, 5).state[0] == (frozenset({1, 2}), frozenset({0}))


def test_index_of_inverts_from_index():
    for T in (2, 3, 4):
        for i, lay in enumerate(enumerate_layouts(T, 5)):
            assert index_of(lay) == i
    assert index_of(from_index(1037, 5, 5)) == 1037


def test_from_index_out_of_range():
    with pytest.raises(ValueError, match="51 layouts"):
        from_index(51, SND, 5)
    with pytest.raises(ValueError, match="out of range"):
        from_index(-1, SND, 5)


# ----- named / explicit / string forms ------------------------------------------------------------------
def test_named_layouts():
    assert all_shared(NYU, 5) == from_index(0, NYU, 5)
    assert independent(NYU, 5) == from_index(2, NYU, 5)
    assert branch_at(0, NYU, 5) == independent(NYU, 5)
    assert branch_at(5, NYU, 5) == all_shared(NYU, 5)
    assert branch_at(4, NYU, 5) == from_index(48, NYU, 5)
    assert branch_at(3, NYU, 5) == from_index(41, NYU, 5)
    assert branch_at(2, NYU, 5).describe() == "B0-B1: {seg,normal,depth}; B2-B4: {seg} {normal} {depth}"
    with pytest.raises(ValueError, match="0..5"):
        branch_at(6, NYU, 5)


def test_all_forms_resolve_to_equal_layouts():
    expected = from_index(47, NYU, 5)
    sh = ["seg", "normal", "depth"]
    forms = [
        47,
        "47",
        expected,
        "B0-B3: {seg,normal,depth}; B4: {seg} {normal,depth}",
        "B0-B3: {seg,normal,depth}; B4: {normal,depth} {seg}",
        [[sh], [sh], [sh], [sh], [["seg"], ["normal", "depth"]]],
        [[[0, 1, 2]]] * 4 + [[[2, 1], [0]]],
        {"index": 47},
        {"blocks": [[sh]] * 4 + [[["seg"], ["normal", "depth"]]]},
        # the same tree over another task order
        Layout(("depth", "seg", "normal"), [[[0, 1, 2]]] * 4 + [[[1], [0, 2]]]),
    ]
    for form in forms:
        got = resolve_layout(form, NYU, 5)
        assert got == expected, form
        assert hash(got) == hash(expected)
        assert got.tasks == NYU
    assert resolve_layout("branch_at_3", NYU, 5) == resolve_layout({"name": "branch_at", "k": 3}, NYU, 5)
    assert resolve_layout("all-shared", NYU, 5) == all_shared(NYU, 5)
    assert resolve_layout("independent", NYU, 5) == independent(NYU, 5)


def test_equality_ignores_group_order_but_not_tasks():
    a = Layout(SND, [[[0, 1, 2]], [[0], [1, 2]]])
    b = Layout(SND, [[[2, 1, 0]], [[2, 1], [0]]])
    assert a == b and hash(a) == hash(b)
    assert a != Layout(("x", "y", "z"), a.state)
    assert a != Layout(SND, [[[0, 1, 2]], [[0, 1], [2]]])


def test_describe_round_trips_through_resolve_for_all_three_task_layouts():
    for lay in enumerate_layouts(3, 5, NYU):
        assert resolve_layout(lay.describe(), NYU, 5) == lay
        data = json.loads(json.dumps(lay.to_list()))
        assert Layout.from_list(data, NYU) == lay


def test_to_list_is_canonical_names():
    assert from_index(47, NYU, 5).to_list()[-1] == [["seg"], ["normal", "depth"]]


# ----- validation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ([[["seg"], ["normal", "depth"]], [["seg", "normal"], ["depth"]]], "only split"),
        ([[["seg", "normal"]]], r"\['depth'\] are in no group"),
        ([[["seg", "normal"], ["normal", "depth"]]], "more than one group"),
        ([[["seg", "normal", "depth", "seg"]]], "twice"),
        ([[["seg", "normal", "edges"]]], "unknown task 'edges'"),
        ([[["seg", "normal", "depth"]], [[]]], "empty task group"),
        ([["seg", "normal", "depth"]], "needs its own list"),
    ],
)
def test_invalid_layouts_are_rejected_with_reason(blocks, message):
    with pytest.raises(ValueError, match=message):
        Layout.from_list(blocks, NYU)


def test_wrong_block_count_rejected():
    sh = [["seg", "normal", "depth"]]
    with pytest.raises(ValueError, match="4 blocks but the backbone has 5"):
        resolve_layout([sh] * 4, NYU, 5)
    with pytest.raises(ValueError, match=r"expected B0..B4"):
        resolve_layout("B0-B3: {seg,normal,depth}", NYU, 5)


def test_bad_specs_rejected():
    with pytest.raises(ValueError, match="unknown layout"):
        resolve_layout("mostly_shared", NYU, 5)
    with pytest.raises(ValueError, match="unique"):
        all_shared(("seg", "seg"), 5)
    with pytest.raises(ValueError, match="task indices"):
        Layout(NYU, [[["seg", "normal", "depth"]]])
    with pytest.raises(ValueError, match="out of range"):
        Layout(NYU, [[[0, 1, 2, 3]]])


# ----- sharing measures ---------------------------------------------------------------------------------
def test_sharing_scores():
    assert all_shared(NYU, 5).sharing_score() == 15
    assert all_shared(NYU, 5).shared_fraction == 1.0
    assert independent(NYU, 5).sharing_score() == 0
    assert independent(NYU, 5).shared_fraction == 0.0
    lay = from_index(47, NYU, 5)
    assert lay.pairwise_shared_blocks() == {("seg", "normal"): 4, ("seg", "depth"): 4, ("normal", "depth"): 5}
    assert lay.shared_fraction == pytest.approx(13 / 15)
    # 5 tasks, 10 pairs, 5 blocks
    assert all_shared(5, 5).sharing_score() == 50
    assert all_shared(["only"], 5).shared_fraction == 1.0


def test_sharing_score_is_monotone_under_splitting():
    # any extra cut (a child in the enumeration tree) can only lower the score
    checked = 0
    for coarse, fine in itertools.permutations(enumerate_layouts(3, 5), 2):
        if all(
            any(g <= h for h in coarse_part)
            for fine_part, coarse_part in zip(fine.state, coarse.state)
            for g in fine_part
        ):
            assert fine.sharing_score() < coarse.sharing_score()
            checked += 1
    assert checked > 51


def test_fine_state_repeats_coarse_partition():
    groups = [[0], [1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11, 12, 13], [14, 15, 16]]
    fine = from_index(47, NYU, 5).fine_state(groups)
    assert len(fine) == 17
    assert all(fine[f] == [(0, 1, 2)] for f in range(14))
    assert all(fine[f] == [(0,), (1, 2)] for f in range(14, 17))
    with pytest.raises(ValueError, match="5 coarse blocks but the backbone has 4"):
        from_index(47, NYU, 5).fine_state(groups[:4])
