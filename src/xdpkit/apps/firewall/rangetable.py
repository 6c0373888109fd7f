"""Address -> class tables for the firewall's prefix sets, in a fixed number of steps.

Prefixes of any length, overlapping or duplicated, cut the address space into *intervals*
whose addresses are covered by the same rules (``intervals``). A table finds the interval of
an address in a few array reads whatever the set's size (``build``):

- a direct index on the top ``bits`` bits of the address (IPv4: 20, fixed; IPv6: grows with
  the set) gives the class when its chunk of the space is one interval, else the root of the
  chunk's tree;
- the tree is a static B+-tree over the chunk's interval starts, relative to the chunk, so a
  padding key above every relative address exists. Internal nodes hold separators and the
  index of their first child (children are consecutive); leaves hold starts and classes.

Every node has one size (a map value is a node). IPv6's direct index is packed into the first
nodes of the trees' array; IPv4's is an array of its own of fixed size, which the program reads
inline (see Format.direct_bits). A table's memory is its nodes: 11 to 32 bytes per interval (dense
chunks fill their leaves, a chunk of two intervals takes a whole leaf), plus IPv4's 4 MiB direct
index. Expanding prefixes into fixed-length blocks, as the firewall used to, cost up to 2^16
entries for a /8 and could not hold a mix of lengths.

Layouts: firewall.h (struct fw_node4 / fw_node6, FW_REF_*, FW_DIR4_BITS); fw_walk4/fw_walk6 in
firewall.bpf.c walk the nodes as ``lookup`` below does.
"""
from __future__ import annotations

import functools
import struct
import sys
from array import array
from bisect import bisect_left
from dataclasses import dataclass

from xdpkit.errors import ConfigError

# Mirrored from firewall.h; tests/unit/test_layouts.py checks them against the header.
REF_CLASS = 1 << 31       # FW_REF_CLASS: the reference is a class
REF_LEAF = 1 << 30        # FW_REF_LEAF: the reference is a leaf node's index
REF_INDEX = REF_LEAF - 1  # node index bits
NODE4 = struct.Struct("<16I")   # struct fw_node4 {w[FW_NODE_WORDS]}: read as words
NODE6 = struct.Struct("<16Q")   # struct fw_node6 {w[FW_NODE_WORDS]}


@dataclass(frozen=True)
class Format:
    """One family's node layout: ``words`` words of ``word_bits`` bits per node."""

    family: int
    width: int            # address bits
    word_bits: int        # node word: u32 (IPv4) or u64 (IPv6)
    key_words: int        # words per key
    leaf_keys: int        # (start, class) pairs per leaf
    fanout: int           # children per internal node (separators: fanout - 1)
    min_bits: int
    max_bits: int         # direct index bits: at most 2^max_bits entries
    max_depth: int        # tree levels fw_lookup walks at most
    direct_bits: int = 0  # a fixed-size direct index in a map of its own (0: sized with the set,
                          # in the first nodes of the tree's map)

    words = 16             # FW_NODE_WORDS

    @property
    def node_bytes(self) -> int:
        return (NODE4 if self.word_bits == 32 else NODE6).size

    @property
    def typecode(self) -> str:
        return "I" if self.word_bits == 32 else "Q"


# IPv4 (struct fw_node4, 16 x u32): leaf = 8 starts, 8 classes; internal = 15 separators, ref.
# Its direct index has 2^20 entries (4 MiB) in a map of fixed size, which the program reads
# inline: one call less per address than a map sized with the set.
V4 = Format(4, 32, 32, 1, 8, 16, 4, 20, 5, direct_bits=20)
# IPv6 (struct fw_node6, 16 x u64, a key = hi, lo): leaf = 5 starts, 5 classes; internal = 7
# separators, ref, one spare word.
V6 = Format(6, 128, 64, 2, 5, 8, 4, 20, 9)
FORMATS = {4: V4, 6: V6}


@dataclass
class Table:
    """A built table: the direct index's words, then the trees' nodes. With a fixed-size
    direct index (fmt.direct_bits) the two go to two maps and tree references count from the
    first tree node; otherwise one map holds both, the direct index first."""

    fmt: Format
    bits: int             # direct index bits
    direct: array         # fmt.typecode words, a direct entry each (fmt.words per node)
    tree: array           # fmt.words words per node
    intervals: int
    depth: int            # deepest tree (0: the direct index alone answers)

    @property
    def direct_nodes(self) -> int:
        return len(self.direct) // self.fmt.words

    @property
    def tree_nodes(self) -> int:
        return len(self.tree) // self.fmt.words

    @property
    def nodes(self) -> int:
        return self.direct_nodes + self.tree_nodes

    @property
    def nbytes(self) -> int:
        return self.nodes * self.fmt.node_bytes

    @functools.cached_property
    def words(self) -> array:
        """The nodes of the tree's map (with the direct index in front when it has no map of
        its own)."""
        return self.tree if self.fmt.direct_bits else self.direct + self.tree

    def tobytes(self, words: array | None = None) -> bytes:
        """Nodes as the kernel reads them (little-endian hosts: x86, arm64; swapped else)."""
        words = self.words if words is None else words
        if sys.byteorder == "little":
            return words.tobytes()
        w = array(self.fmt.typecode, words)
        w.byteswap()
        return w.tobytes()


def intervals(prefixes: dict[tuple[int, int], int], width: int, base: int) -> tuple[list[int], list[int]]:
    """(starts, masks) of the intervals that ``prefixes`` ({(network, length): rule mask},
    duplicates already merged) cut the ``width``-bit space into: the mask of an interval is
    ``base`` or'd with the masks of every prefix covering it. starts[0] is 0; neighbouring
    intervals have different masks.

    Prefixes nest or are disjoint, so one pass over them sorted by (start, length) with a
    stack of the prefixes still open finds every interval.
    """
    starts, masks = [0], [base]

    def boundary(at: int, mask: int) -> None:
        if starts[-1] == at:           # a prefix ends where the next begins
            masks[-1] = mask
            if len(masks) > 1 and masks[-2] == mask:
                starts.pop()
                masks.pop()
        elif masks[-1] != mask:
            starts.append(at)
            masks.append(mask)

    open_ends: list[int] = []
    open_masks: list[int] = []
    space = 1 << width
    for net, plen in sorted(prefixes):
        while open_ends and open_ends[-1] <= net:
            end = open_ends.pop()
            open_masks.pop()
            if end < space:
                boundary(end, open_masks[-1] if open_masks else base)
        mask = (open_masks[-1] if open_masks else base) | prefixes[(net, plen)]
        boundary(net, mask)
        open_ends.append(net + (1 << (width - plen)))
        open_masks.append(mask)
    while open_ends:
        end = open_ends.pop()
        open_masks.pop()
        if end < space:
            boundary(end, open_masks[-1] if open_masks else base)
    return starts, masks


def direct_bits(fmt: Format, n_intervals: int) -> int:
    """Direct index bits for a set: 2 to 4 intervals per chunk on average, so most chunks are one
    leaf (a tree level costs ~7 ns; a direct entry 4 or 8 bytes, a leaf 64 or 128)."""
    if fmt.direct_bits:
        return fmt.direct_bits
    return max(fmt.min_bits, min(fmt.max_bits, n_intervals.bit_length() - 2))


def build(fmt: Format, starts: list[int], classes: list[int]) -> Table:
    """The table of intervals ``starts`` (sorted, starts[0] == 0) with ``classes``."""
    bits = direct_bits(fmt, len(starts))
    shift = fmt.width - bits
    pad = 1 << shift                   # above every address relative to its chunk
    dir_nodes = ((1 << bits) + fmt.words - 1) // fmt.words   # a direct entry is a word
    direct = [0] * (dir_nodes * fmt.words)
    tree = _TreeWriter(fmt, 0 if fmt.direct_bits else dir_nodes, pad)
    n = len(starts)
    i = 0
    done = 0                           # chunks below this one have their entry
    while i < n:
        c = starts[i] >> shift
        if c > done:                   # chunks without a start: inside interval i - 1
            direct[done:c] = [REF_CLASS | classes[i - 1]] * (c - done)
        base = c << shift
        j = bisect_left(starts, base + pad, i)
        lo = i if starts[i] == base else i - 1
        if j - lo == 1:
            direct[c] = REF_CLASS | classes[lo]
        else:
            rel = [0] + [s - base for s in starts[lo + 1:j]]
            direct[c] = tree.add(rel, classes[lo:j])
        done, i = c + 1, j
    if done < 1 << bits:
        direct[done:1 << bits] = [REF_CLASS | classes[n - 1]] * ((1 << bits) - done)
    return Table(fmt, bits, array(fmt.typecode, direct), tree.words, n, tree.depth)


class _TreeWriter:
    """Appends chunk trees after the direct index's nodes."""

    def __init__(self, fmt: Format, first_node: int, pad: int):
        self.fmt, self.first, self.pad = fmt, first_node, pad
        self.words = array(fmt.typecode)
        self.depth = 0

    @property
    def next_node(self) -> int:
        return self.first + len(self.words) // self.fmt.words

    def _key_words(self, keys: list[int], count: int) -> list[int]:
        keys = keys + [self.pad] * (count - len(keys))
        if self.fmt.key_words == 1:
            return keys
        out = []
        for k in keys:
            out += (k >> 64, k & 0xFFFFFFFFFFFFFFFF)
        return out

    def _node(self, words: list[int]) -> None:
        words += [0] * (self.fmt.words - len(words))
        self.words.extend(words)

    def add(self, keys: list[int], classes: list[int]) -> int:
        """Write one chunk's tree; returns the reference to its root."""
        fmt = self.fmt
        L, F = fmt.leaf_keys, fmt.fanout
        level_first = self.next_node
        for k in range(0, len(keys), L):
            cls = classes[k:k + L]
            self._node(self._key_words(keys[k:k + L], L) + cls + [0] * (L - len(cls)))
        level_keys = keys[0::L]
        kind, depth = REF_LEAF, 1
        while len(level_keys) > 1:
            parent_first = self.next_node
            for g in range(0, len(level_keys), F):
                ref = kind | (level_first + g)
                self._node(self._key_words(level_keys[g + 1:g + F], F - 1) + [ref])
            level_keys = level_keys[0::F]
            level_first, kind, depth = parent_first, 0, depth + 1
        if depth > fmt.max_depth:
            raise ConfigError(f"an IPv{fmt.family} prefix table needs {depth} levels under one direct "
                              f"entry; the firewall walks at most {fmt.max_depth}",
                              hint="split the set over more rules or use fewer prefixes")
        if level_first > REF_INDEX:
            raise ConfigError(f"an IPv{fmt.family} prefix table needs more than {REF_INDEX:,} nodes")
        self.depth = max(self.depth, depth)
        return kind | level_first


def lookup(table: Table, addr: int) -> int:
    """The class of ``addr``, read from the packed nodes the way the BPF program reads them."""
    fmt, w = table.fmt, table.words
    shift = fmt.width - table.bits
    c, rel = addr >> shift, addr & ((1 << shift) - 1)
    ref = table.direct[c]
    for _ in range(fmt.max_depth):
        if ref & REF_CLASS:
            return ref & ~REF_CLASS
        at = (ref & REF_INDEX) * fmt.words
        node = w[at:at + fmt.words]
        kw = fmt.key_words
        if ref & REF_LEAF:
            keys = _keys(node, fmt.leaf_keys, kw)
            r = sum(k <= rel for k in keys)
            return node[fmt.leaf_keys * kw + r - 1]
        seps = _keys(node, fmt.fanout - 1, kw)
        ref = node[(fmt.fanout - 1) * kw] + sum(s <= rel for s in seps)
    raise AssertionError("deeper than max_depth")


def _keys(node, count: int, kw: int) -> list[int]:
    if kw == 1:
        return list(node[:count])
    return [(node[2 * i] << 64) | node[2 * i + 1] for i in range(count)]
