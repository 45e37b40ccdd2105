"""Recall's grouped jackknife with the samples' k-NN balls regrown for each left-out group.

Recall (Kynkaanniemi et al. 2019, "Improved precision and recall metric for assessing
generative models"; Naeem et al. 2020) is the share of reference points inside the k-NN ball
of some sample, a sample's ball reaching its k-th nearest *other sample*. The delete-a-group
jackknife of :func:`~.stats.grouped_jackknife_variance` removes one of the ``G`` random sample
groups at a time. That does two things to recall: the group's own balls go, and every
remaining sample that had a group member among its ``k`` nearest neighbours gets a larger ball
(its ``k``-th remaining neighbour is farther). A jackknife that held the radii at their
full-sample values saw only the first; it missed most of recall's variance at d >= 32 (95 %
intervals held the truth 0.79-0.89 of the time, ``benchmarks/shares.py``).

This module supplies the second at almost no cost, from two passes the panel runs anyway:

* the samples' self pass keeps each sample's ``2k`` nearest other samples with their indices
  (:func:`~._knn_blocks._self_knn_ids`, the same products as the radius pass): a sample's radius
  without group ``g`` is its ``k``-th nearest neighbour outside ``g``; only the groups of its
  ``k`` nearest neighbours change it. (When more than ``k`` of its ``2k`` nearest share one
  group, with 20 random groups about once in 20,000 samples and often with two or three
  groups, that sample's list is recomputed densely, twice as long each round, until it holds
  ``k`` outside every group.)
* the reference x samples cross pass collects the entries between a sample's radius and its
  largest regrown radius (:class:`~._knn_blocks.Shells`): one more comparison per entry, and
  a few entries per sample.

:meth:`Regrow.gains` then marks, per reference point and group ``g``, whether removing ``g``
brings the point inside a regrown ball of a sample outside ``g``. Only points that at most one
group's balls hold can change (balls only grow). The leave-one-group-out recall counts are
exact (tested against brute-force recomputation); like the coverage shares' jackknife, the
variance they give is conservative (Efron & Stein 1981).

The radii stay fixed (``ref_ball_gains`` None) with fewer than two groups, ``2k`` or fewer
samples, a group whose removal leaves ``k`` or fewer (``prdc``'s radius then reaches the farthest
remaining sample and can shrink), on the inverted-file path, and past
:data:`~._knn_blocks.SHELL_LIMIT` collected entries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._knn_blocks import Shells

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: neighbours kept per sample, in units of k
NEIGHBOURS_PER_K = 2

_ROWS = 65536


def without_self(vals: np.ndarray, ids: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's neighbour lists (ascending, the row itself included) less the row itself
    (one column fewer; where the row is not in its list, more than that many copies at
    distance 0, the last column goes). ``rows``: the lists' own row indices (default: all, in
    order)."""
    m, kk = ids.shape
    own = np.arange(m) if rows is None else rows
    is_self = ids == own[:, None]
    drop = np.where(is_self.any(axis=1), np.argmax(is_self, axis=1), kk - 1)
    keep = np.ones((m, kk), dtype=bool)
    keep[np.arange(m), drop] = False
    return vals[keep].reshape(m, kk - 1), ids[keep].reshape(m, kk - 1)


def rows_knn_ids(x: torch.Tensor, rows: np.ndarray, kk: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """``(values, indices)``, ascending, of the ``kk`` nearest rows of ``x`` for the rows
    ``rows``, the row itself first and its exact copies at distance 0 (as
    :func:`~.knn._rows_kth_d2`): the neighbour lists of the samples float32 cannot resolve (in
    float64) and the lists recomputed longer. Copies are found among the entries at round-off
    distance (hashing every row to find them cost 1.1 s for 3 rows at 50k x 512)."""
    import torch

    from ._knn_blocks import _operands

    n = x.shape[0]
    idx = torch.from_numpy(rows).to(x.device)
    xq = x.index_select(0, idx)
    lhs = _operands(xq, rhs=False)[0]
    rhs = _operands(x, lhs=False)[1][:n]
    sq, sq_q = rhs[:, -1], lhs[:, -2]
    # the expansion's rounding bound for rows x, y: (d + 2) eps sum |a_i b_i|, which is at most
    # (d + 2) eps 2 (|x|^2 + |y|^2) (the bound without its factor 2 could miss a copy)
    eps = 2 * (x.shape[1] + 2) * float(torch.finfo(x.dtype).eps)
    vals = np.empty((rows.size, kk))
    ids = np.empty((rows.size, kk), dtype=np.int64)
    for a in range(0, rows.size, step):
        b = min(rows.size, a + step)
        d2 = torch.mm(lhs[a:b], rhs.T)
        near_r, near_c = (d2 <= eps * (sq_q[a:b, None] + sq[None, :])).nonzero(as_tuple=True)
        copy = (xq[a + near_r] == x[near_c]).all(dim=1)
        d2[near_r[copy], near_c[copy]] = 0.0
        d2[torch.arange(b - a), idx[a:b]] = -1.0  # the row itself first
        t = torch.topk(d2, kk, dim=1, largest=False, sorted=True)
        vals[a:b] = t.values.clamp_min(0.0).cpu().numpy()
        ids[a:b] = t.indices.cpu().numpy()
    return vals, ids


def _slots_and_grown(
    labels: np.ndarray,
    own: np.ndarray,
    radii2: np.ndarray,
    nb_vals: np.ndarray,
    nb_ids: np.ndarray,
    k: int,
    complete: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows whose groups are ``own`` (their squared radii ``radii2``, their neighbour lists
    without themselves): per slot of the ``k`` nearest neighbours, its group (``-1`` where it is
    the row's own), the squared radius without that group, and per row whether a list ran short
    (fewer than ``k`` neighbours outside some slot's group; the radius is then the list's last
    distance, a lower bound). ``complete``: the lists hold every other sample, so none is short
    (the caller makes sure every group leaves more than ``k`` samples)."""
    m, width = nb_ids.shape
    slots = labels[nb_ids[:, :k]]
    pos = np.empty((m, k), dtype=np.int64)
    short = np.zeros(m, dtype=bool)
    for a in range(0, m, _ROWS):  # in row blocks: the m x k x K temporaries stay small
        nb_groups = labels[nb_ids[a : a + _ROWS]]
        others = nb_groups[:, None, :] != slots[a : a + _ROWS, :, None]  # outside slot j's group
        counted = np.cumsum(others, axis=2, dtype=np.int16)
        enough = counted[:, :, -1] >= k
        pos[a : a + _ROWS] = np.where(enough, np.argmax(counted >= k, axis=2), width - 1)
        short[a : a + _ROWS] = ~enough.all(axis=1)
    grown = np.maximum(np.take_along_axis(nb_vals, pos, axis=1), radii2[:, None])
    if complete:
        short[:] = False
    slots[slots == own[:, None]] = -1
    short &= (slots >= 0).any(axis=1)
    return slots, grown, short


class Regrow:
    """The samples' regrown radii: per sample and each of its ``k`` nearest neighbours' slots,
    the neighbour's group (``-1`` for the sample's own group, whose removal removes the sample)
    and the sample's squared radius without that group (never below ``radii2``, the radii the
    pass uses); ``reach``, the largest of them (``-inf`` where no removal grows the ball);
    ``short``, the samples whose neighbour list was too short to find a regrown radius (more
    than ``k`` of it in one group: few groups), which :meth:`refine` recomputes."""

    def __init__(self, labels: np.ndarray, radii2: np.ndarray, nb_vals: np.ndarray, nb_ids: np.ndarray, k: int):
        self.labels, self.k = labels, k
        self.radii2 = np.asarray(radii2, dtype=np.float64)
        complete = nb_ids.shape[1] >= len(labels) - 1
        got = _slots_and_grown(labels, labels, self.radii2, nb_vals, nb_ids, k, complete)
        self.slots, self.grown, self.short = got
        self._set_reach()

    def _set_reach(self) -> None:
        top = np.where(self.slots >= 0, self.grown, -np.inf).max(axis=1)
        self.reach = np.where(top > self.radii2, top, -np.inf)

    def refine(self, rows: np.ndarray, nb_vals: np.ndarray, nb_ids: np.ndarray) -> None:
        """Recompute the rows ``rows`` from longer neighbour lists (without themselves)."""
        complete = nb_ids.shape[1] >= len(self.labels) - 1
        got = _slots_and_grown(self.labels, self.labels[rows], self.radii2[rows], nb_vals, nb_ids, self.k, complete)
        self.slots[rows], self.grown[rows], self.short[rows] = got
        self._set_reach()

    def shells(self, dtype: torch.dtype, device: Any, unresolved: np.ndarray | None = None) -> Shells:
        """A :class:`Shells` collector for a cross pass in ``dtype`` (the ``unresolved``
        samples' balls left out: their pass runs apart)."""
        import torch

        reach = self.reach.copy()
        if unresolved is not None:
            reach[unresolved] = -np.inf
        as_t = lambda a: torch.from_numpy(a).to(device=device, dtype=dtype)  # noqa: E731
        # a radius-0 ball holds nothing in the pass (its threshold is -inf), so its whole reach
        # is shell: a point at distance 0 (or a rounded -1e-13) comes inside when it grows
        lower = np.where(self.radii2 > 0, self.radii2, -np.inf)
        return Shells(as_t(reach), as_t(lower))

    def gains(self, entries: Any, ball_groups: np.ndarray) -> np.ndarray | None:
        """``n x G`` bool: removing group ``g`` brings reference point ``i`` inside the regrown
        ball of a sample outside ``g``; rows that two groups' balls hold stay false (they stay
        inside whatever group goes). None when the pass gave up collecting (``entries`` None)."""
        if entries is None:
            return None
        rows, cols, vals = entries
        bg = np.asarray(ball_groups, dtype=bool)
        gains = np.zeros(bg.shape, dtype=bool)
        fragile = bg.sum(axis=1) <= 1
        keep = fragile[rows]
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        grown = self.grown[cols]
        hit = (vals[:, None] < grown) & (grown > 0) & (self.slots[cols] >= 0)  # a radius of 0 holds nothing
        at, slot = np.nonzero(hit)
        gains[rows[at], self.slots[cols[at], slot]] = True
        return gains
