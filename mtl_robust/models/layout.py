"""Sharing layouts: for every coarse backbone block, a partition of the tasks into groups that share it.

A layout is a tree: going deeper, groups may only split (each group at block b+1 lies inside one group at
block b). TreeMTL numbers all such trees with a depth-first enumeration (`--layout_idx`); `from_index` and
`index_of` reproduce that numbering exactly, so checkpoints and results of the original code can be matched.

Forms that all resolve to equal `Layout` objects (see `resolve_layout`):
  * a name: "all_shared", "independent", "branch_at_<k>" (shared through coarse blocks 0..k-1, every task on
    its own from block k on; "branch_at_0" is "independent", "branch_at_<B>" is "all_shared");
  * a TreeMTL index (int, or a string of digits);
  * an explicit list, one entry per coarse block, each a list of groups of task names or indices:
    ``[[["seg", "normal", "depth"]], [["seg"], ["normal", "depth"]], ...]``;
  * the `describe()` string: ``"B0-B3: {seg,normal,depth}; B4: {seg} {normal,depth}"``;
  * a mapping ``{"index": 47}``, ``{"name": "branch_at", "k": 2}`` or ``{"blocks": [...]}`` (config files).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

Partition = tuple[frozenset[int], ...]
State = tuple[Partition, ...]

__all__ = [
    "Layout",
    "enumerate_layouts",
    "from_index",
    "index_of",
    "num_layouts",
    "all_shared",
    "independent",
    "branch_at",
    "resolve_layout",
    "parse_layout_string",
]


def _validate_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(tasks, str):
        raise ValueError(f"tasks must be a sequence of task names, got the string {tasks!r}")
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("a layout needs at least one task; got an empty task list")
    for t in tasks:
        if not isinstance(t, str) or not t:
            raise ValueError(f"task names must be non-empty strings, got {t!r} in {tasks}")
    dupes = sorted({t for t in tasks if tasks.count(t) > 1})
    if dupes:
        raise ValueError(f"task names must be unique, got duplicates {dupes} in {tasks}")
    return tasks


def _validate_state(state: State, tasks: tuple[str, ...]) -> None:
    num_tasks = len(tasks)
    everyone = frozenset(range(num_tasks))
    if not state:
        raise ValueError("a layout needs at least one block; got an empty state")
    for b, partition in enumerate(state):
        seen: set[int] = set()
        for group in partition:
            if not group:
                raise ValueError(f"block {b}: empty task group in {_fmt_partition(partition, tasks)}")
            bad = sorted(t for t in group if not 0 <= t < num_tasks)
            if bad:
                raise ValueError(f"block {b}: task indices {bad} out of range for {num_tasks} tasks {tasks}")
            both = sorted(seen & group)
            if both:
                names = [tasks[t] for t in both]
                raise ValueError(
                    f"block {b}: task(s) {names} appear in more than one group "
                    f"({_fmt_partition(partition, tasks)}); each task must be in exactly one group per block"
                )
            seen |= group
        missing = sorted(everyone - seen)
        if missing:
            names = [tasks[t] for t in missing]
            raise ValueError(
                f"block {b}: task(s) {names} are in no group ({_fmt_partition(partition, tasks)}); "
                f"each block must partition all tasks {tasks}"
            )
    for b in range(1, len(state)):
        for group in state[b]:
            if not any(group <= parent for parent in state[b - 1]):
                raise ValueError(
                    f"block {b}: group {_fmt_group(group, tasks)} is not inside one group of block {b - 1} "
                    f"({_fmt_partition(state[b - 1], tasks)}); groups may only split going deeper "
                    "(tasks separated at one block cannot share a later block)"
                )


def _sorted_groups(partition: Iterable[frozenset[int]]) -> list[tuple[int, ...]]:
    return sorted((tuple(sorted(g)) for g in partition), key=lambda g: g[0])


def _fmt_group(group: Iterable[int], tasks: Sequence[str]) -> str:
    return "{" + ",".join(tasks[t] if 0 <= t < len(tasks) else str(t) for t in sorted(group)) + "}"


def _fmt_partition(partition: Iterable[frozenset[int]], tasks: Sequence[str]) -> str:
    groups = [g for g in partition if g]
    ordered = sorted(groups, key=min)
    return " ".join(_fmt_group(g, tasks) for g in ordered)


def _canonical(state: State) -> tuple[frozenset[frozenset[int]], ...]:
    return tuple(frozenset(p) for p in state)


@dataclass(frozen=True, eq=False)
class Layout:
    """An immutable sharing tree over `tasks`.

    `state[b]` is the partition of task indices (positions in `tasks`) at coarse block b. The group order
    inside a block is kept as given (TreeMTL's order for enumerated layouts) but does not matter for
    equality, hashing or any derived quantity. Two layouts are equal when their tasks tuples are equal and,
    block by block, they contain the same groups.
    """

    tasks: tuple[str, ...]
    state: State

    def __post_init__(self) -> None:
        tasks = _validate_tasks(self.tasks)
        if isinstance(self.state, str | bytes) or not isinstance(self.state, Iterable):
            raise ValueError(f"state must be a sequence of partitions, got {type(self.state).__name__}")
        state: list[Partition] = []
        for b, partition in enumerate(self.state):
            if isinstance(partition, str | bytes) or not isinstance(partition, Iterable):
                raise ValueError(f"block {b}: expected a list of task groups, got {partition!r}")
            groups = []
            for group in partition:
                if isinstance(group, str | bytes) or not isinstance(group, Iterable):
                    raise ValueError(f"block {b}: expected a group (set of task indices), got {group!r}")
                members = list(group)
                if any(isinstance(t, bool) or not isinstance(t, int) for t in members):
                    raise ValueError(
                        f"block {b}: Layout state holds task indices (int); got {members!r}. "
                        "Use Layout.from_list or resolve_layout for task names."
                    )
                if len(set(members)) != len(members):
                    raise ValueError(f"block {b}: a task is listed twice in the group {members!r}")
                groups.append(frozenset(members))
            state.append(tuple(groups))
        frozen = tuple(state)
        _validate_state(frozen, tasks)
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "state", frozen)

    # ----- basic properties -------------------------------------------------------------------------
    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_blocks(self) -> int:
        return len(self.state)

    def canonical(self) -> tuple[frozenset[frozenset[int]], ...]:
        """Order-free form used for equality and hashing."""
        return _canonical(self.state)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        return self.tasks == other.tasks and self.canonical() == other.canonical()

    def __hash__(self) -> int:
        return hash((self.tasks, self.canonical()))

    def __repr__(self) -> str:
        return f"Layout({self.describe()!r}, tasks={self.tasks})"

    def groups(self, block: int) -> list[tuple[int, ...]]:
        """Groups at `block` in canonical order (by smallest task index), each a sorted tuple."""
        return _sorted_groups(self.state[block])

    def fine_state(self, coarse_groups: Sequence[Sequence[int]]) -> list[list[tuple[int, ...]]]:
        """Per fine backbone block, the canonical groups of its coarse block (TreeMTL `coarse_to_fined`)."""
        if len(coarse_groups) != self.num_blocks:
            raise ValueError(
                f"layout has {self.num_blocks} coarse blocks but the backbone has {len(coarse_groups)}"
            )
        fine: dict[int, list[tuple[int, ...]]] = {}
        for c, members in enumerate(coarse_groups):
            for f in members:
                fine[f] = self.groups(c)
        if sorted(fine) != list(range(len(fine))):
            raise ValueError(f"coarse groups {coarse_groups} must cover fine blocks 0..N-1 exactly once")
        return [fine[f] for f in range(len(fine))]

    # ----- sharing measures -------------------------------------------------------------------------
    def pairwise_shared_blocks(self) -> dict[tuple[str, str], int]:
        """Number of coarse blocks each task pair shares, keyed by (task_i, task_j) with i < j."""
        out: dict[tuple[str, str], int] = {}
        for i, j in itertools.combinations(range(self.num_tasks), 2):
            out[(self.tasks[i], self.tasks[j])] = sum(
                1 for partition in self.state if any(i in g and j in g for g in partition)
            )
        return out

    def sharing_score(self) -> int:
        """Sum over task pairs of the number of shared coarse blocks (15: all shared, 3 tasks x 5 blocks)."""
        return sum(self.pairwise_shared_blocks().values())

    @property
    def shared_fraction(self) -> float:
        """`sharing_score` divided by its all-shared maximum, in [0, 1]; 1.0 for a single task."""
        pairs = self.num_tasks * (self.num_tasks - 1) // 2
        if pairs == 0:
            return 1.0
        return self.sharing_score() / (pairs * self.num_blocks)

    # ----- text and serialisation ------------------------------------------------------------------
    def describe(self) -> str:
        """E.g. ``"B0-B3: {seg,normal,depth}; B4: {seg} {normal,depth}"`` (runs of equal blocks merged)."""
        parts = []
        start = 0
        for b in range(1, self.num_blocks + 1):
            if b < self.num_blocks and self.groups(b) == self.groups(start):
                continue
            span = f"B{start}" if b - 1 == start else f"B{start}-B{b - 1}"
            groups = " ".join(_fmt_group(g, self.tasks) for g in self.groups(start))
            parts.append(f"{span}: {groups}")
            start = b
        return "; ".join(parts)

    def to_list(self) -> list[list[list[str]]]:
        """JSON-friendly form: per block, the canonical groups as lists of task names."""
        return [[[self.tasks[t] for t in g] for g in self.groups(b)] for b in range(self.num_blocks)]

    @classmethod
    def from_list(cls, blocks: Sequence[Sequence[Sequence[str | int]]], tasks: Sequence[str]) -> Layout:
        """Inverse of `to_list`; groups may name tasks or give their indices in `tasks`."""
        tasks = _validate_tasks(tasks)
        if isinstance(blocks, str) or not isinstance(blocks, Iterable):
            raise ValueError(f"expected a list of blocks (lists of task groups), got {blocks!r}")
        state = []
        for b, partition in enumerate(blocks):
            if isinstance(partition, str) or not isinstance(partition, Iterable):
                raise ValueError(
                    f"block {b}: expected a list of task groups such as [['seg'], ['normal', 'depth']], "
                    f"got {partition!r}"
                )
            groups = []
            for group in partition:
                if isinstance(group, str) or not isinstance(group, Iterable):
                    raise ValueError(
                        f"block {b}: expected a group given as a list of task names/indices, got {group!r} "
                        "(a single task still needs its own list, e.g. ['seg'])"
                    )
                groups.append([_task_to_index(t, tasks, b) for t in group])
            state.append(groups)
        return cls(tasks, state)

    def with_tasks(self, tasks: Sequence[str]) -> Layout:
        """The same tree expressed over a reordering of the same task names."""
        tasks = _validate_tasks(tasks)
        if sorted(tasks) != sorted(self.tasks):
            raise ValueError(f"layout tasks {self.tasks} and requested tasks {tasks} are not the same set")
        return Layout.from_list(self.to_list(), tasks)


def _task_to_index(t: Any, tasks: tuple[str, ...], block: int) -> int:
    if isinstance(t, bool):
        raise ValueError(f"block {block}: task {t!r} is neither a name nor an index")
    if isinstance(t, int):
        if not 0 <= t < len(tasks):
            raise ValueError(f"block {block}: task index {t} out of range for tasks {tasks}")
        return t
    if isinstance(t, str):
        if t in tasks:
            return tasks.index(t)
        if t.isdigit() and int(t) < len(tasks):
            return int(t)
        raise ValueError(f"block {block}: unknown task {t!r}; expected one of {tasks} or an index")
    raise ValueError(f"block {block}: task {t!r} is neither a name nor an index")


# ----- TreeMTL enumeration ---------------------------------------------------------------------------
def _divide_set(group: frozenset[int]) -> list[tuple[frozenset[int], frozenset[int]]]:
    # TreeMTL's divide_set: Boolean patterns in itertools.product order (True first) over the members in
    # ascending order, keeping those whose first entry is False and which are not all False; the first part
    # is the flagged members, so it never holds min(group).
    members = sorted(group)
    out = []
    for pattern in itertools.product((True, False), repeat=len(members)):
        if pattern[0] is False and any(pattern):
            first = frozenset(m for flag, m in zip(pattern, members) if flag)
            out.append((first, group - first))
    return out


@cache
def _enumerate_states(num_tasks: int, num_blocks: int) -> tuple[State, ...]:
    """TreeMTL `enumerator(T, B)`: pre-order depth-first cuts, duplicates (order-free) skipped."""
    if num_tasks < 1 or num_blocks < 1:
        raise ValueError(f"need at least one task and one block, got T={num_tasks}, B={num_blocks}")
    root: State = tuple((frozenset(range(num_tasks)),) for _ in range(num_blocks))
    out: list[State] = [root]
    seen = {_canonical(root)}

    def recurse(state: State, num_cut: int, lowest_avail_cut: int) -> None:
        if num_cut >= num_tasks - 1:
            return
        for i in range(lowest_avail_cut, num_blocks):
            for group in state[i]:
                if len(group) == 1:
                    continue
                for first, second in _divide_set(group):
                    # Blocks i..B-1 are identical here (all earlier cuts sit at positions <= i), so the cut
                    # group is present in each of them; it is removed and its two parts appended at the end.
                    new = state[:i] + tuple(
                        tuple(g for g in state[j] if g != group) + (first, second)
                        for j in range(i, num_blocks)
                    )
                    key = _canonical(new)
                    if key in seen:
                        continue
                    seen.add(key)
                    out.append(new)
                    recurse(new, num_cut + 1, i)

    recurse(root, 0, 0)
    return tuple(out)


@cache
def _index_table(num_tasks: int, num_blocks: int) -> dict[tuple[frozenset[frozenset[int]], ...], int]:
    return {_canonical(s): i for i, s in enumerate(_enumerate_states(num_tasks, num_blocks))}


def _default_tasks(tasks: Sequence[str] | int) -> tuple[str, ...]:
    if isinstance(tasks, int) and not isinstance(tasks, bool):
        if tasks < 1:
            raise ValueError(f"need at least one task, got {tasks}")
        return tuple(f"t{i}" for i in range(tasks))
    return _validate_tasks(tasks)


def num_layouts(num_tasks: int, num_blocks: int) -> int:
    """How many distinct layouts TreeMTL enumerates (51 for 3 tasks x 5 blocks, 7556 for 5 x 5)."""
    return len(_enumerate_states(num_tasks, num_blocks))


def enumerate_layouts(num_tasks: int, num_blocks: int, tasks: Sequence[str] | None = None) -> list[Layout]:
    """All layouts in TreeMTL's `--layout_idx` order; tasks default to names t0, t1, ..."""
    names = _default_tasks(num_tasks if tasks is None else tasks)
    if len(names) != num_tasks:
        raise ValueError(f"num_tasks={num_tasks} but {len(names)} task names were given: {names}")
    return [Layout(names, s) for s in _enumerate_states(num_tasks, num_blocks)]


def from_index(index: int, tasks: Sequence[str] | int, num_blocks: int) -> Layout:
    """The layout TreeMTL numbers `index` for these tasks (in this order) and `num_blocks` coarse blocks."""
    names = _default_tasks(tasks)
    states = _enumerate_states(len(names), num_blocks)
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"layout index must be an int, got {index!r}")
    if not 0 <= index < len(states):
        raise ValueError(
            f"layout index {index} out of range: {len(names)} tasks x {num_blocks} blocks "
            f"have {len(states)} layouts (0..{len(states) - 1})"
        )
    return Layout(names, states[index])


def index_of(layout: Layout) -> int:
    """TreeMTL enumeration index of `layout` (inverse of `from_index`)."""
    return _index_table(layout.num_tasks, layout.num_blocks)[layout.canonical()]


# ----- named layouts ---------------------------------------------------------------------------------
def all_shared(tasks: Sequence[str] | int, num_blocks: int) -> Layout:
    names = _default_tasks(tasks)
    return Layout(names, [[range(len(names))]] * num_blocks)


def independent(tasks: Sequence[str] | int, num_blocks: int) -> Layout:
    names = _default_tasks(tasks)
    return Layout(names, [[[t] for t in range(len(names))]] * num_blocks)


def branch_at(k: int, tasks: Sequence[str] | int, num_blocks: int) -> Layout:
    """Shared through coarse blocks 0..k-1, one branch per task from block k on (k = 0..num_blocks)."""
    names = _default_tasks(tasks)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= num_blocks:
        raise ValueError(
            f"branch_at k must be an int in 0..{num_blocks} (0 = independent, {num_blocks} = all shared), "
            f"got {k!r}"
        )
    shared = [list(range(len(names)))]
    split = [[t] for t in range(len(names))]
    return Layout(names, [shared] * k + [split] * (num_blocks - k))


_NAME_RE = re.compile(r"^branch_?at_?(\d+)$")
_ALIASES = {
    "all_shared": "all_shared",
    "allshared": "all_shared",
    "shared": "all_shared",
    "independent": "independent",
    "ind": "independent",
    "separate": "independent",
}


def _named(name: str, tasks: tuple[str, ...], num_blocks: int) -> Layout | None:
    key = name.strip().lower().replace("-", "_")
    if key in _ALIASES:
        fn = all_shared if _ALIASES[key] == "all_shared" else independent
        return fn(tasks, num_blocks)
    m = _NAME_RE.match(key)
    if m:
        return branch_at(int(m.group(1)), tasks, num_blocks)
    return None


_SPAN_RE = re.compile(r"^\s*B(\d+)\s*(?:-\s*B?(\d+))?\s*:\s*(.*?)\s*$", re.IGNORECASE)
_GROUP_RE = re.compile(r"\{([^{}]*)\}")


def parse_layout_string(text: str, tasks: Sequence[str], num_blocks: int) -> Layout:
    """Parse the `describe()` form, e.g. ``"B0-B3: {seg,normal,depth}; B4: {seg} {normal,depth}"``."""
    names = _validate_tasks(tasks)
    blocks: dict[int, list[list[str]]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        m = _SPAN_RE.match(part)
        if not m:
            raise ValueError(
                f"cannot parse {part!r} in layout string {text!r}; expected 'B<a>[-B<b>]: {{t1,t2}} {{t3}}'"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        body = m.group(3)
        groups = [[t.strip() for t in g.split(",") if t.strip()] for g in _GROUP_RE.findall(body)]
        if not groups or _GROUP_RE.sub("", body).strip():
            raise ValueError(f"cannot parse the groups {body!r} in {text!r}; write them as {{a,b}} {{c}}")
        for b in range(lo, hi + 1):
            if b in blocks:
                raise ValueError(f"block B{b} is given twice in layout string {text!r}")
            blocks[b] = groups
    if sorted(blocks) != list(range(num_blocks)):
        raise ValueError(
            f"layout string {text!r} covers blocks {sorted(blocks)}; expected B0..B{num_blocks - 1}"
        )
    return Layout.from_list([blocks[b] for b in range(num_blocks)], names)


def resolve_layout(spec: Any, tasks: Sequence[str], num_blocks: int) -> Layout:
    """Turn any accepted layout form (see the module docstring) into a validated `Layout`."""
    names = _validate_tasks(tasks)
    layout = _resolve(spec, names, num_blocks)
    if layout.num_blocks != num_blocks:
        raise ValueError(
            f"layout {layout.describe()!r} has {layout.num_blocks} blocks but the backbone has {num_blocks} "
            "coarse blocks"
        )
    return layout


def _resolve(spec: Any, names: tuple[str, ...], num_blocks: int) -> Layout:
    if isinstance(spec, Layout):
        return spec if spec.tasks == names else spec.with_tasks(names)
    if isinstance(spec, bool):
        raise ValueError(f"a layout cannot be a bool ({spec!r})")
    if isinstance(spec, int):
        return from_index(spec, names, num_blocks)
    if isinstance(spec, str):
        text = spec.strip()
        if text.isdigit():
            return from_index(int(text), names, num_blocks)
        named = _named(text, names, num_blocks)
        if named is not None:
            return named
        if ":" in text or "{" in text:
            return parse_layout_string(text, names, num_blocks)
        raise ValueError(
            f"unknown layout {spec!r}; use 'all_shared', 'independent', 'branch_at_<k>' "
            f"(k in 0..{num_blocks}), "
            "a TreeMTL index, a 'B0-B2: {a,b} {c}; ...' string or an explicit list of groups per block"
        )
    if isinstance(spec, Mapping):
        keys = set(spec)
        if "index" in keys:
            return from_index(int(spec["index"]), names, num_blocks)
        if "blocks" in keys:
            return Layout.from_list(spec["blocks"], names)
        if "name" in keys:
            name = str(spec["name"])
            if "k" in keys:
                name = f"branch_at_{int(spec['k'])}"
            return _resolve(name, names, num_blocks)
        raise ValueError(
            f"a layout mapping needs 'index', 'name' (+ 'k') or 'blocks'; got keys {sorted(keys)}"
        )
    if isinstance(spec, Iterable):
        return Layout.from_list(list(spec), names)
    raise ValueError(f"cannot interpret {spec!r} ({type(spec).__name__}) as a layout")
