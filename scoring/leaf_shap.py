"""Exact SHAP values of a CatBoost model from its leaf indexes, at about the cost of a prediction.

CatBoost grows oblivious trees: every node at one depth splits on the same condition, so a record's
path through a tree is fully described by its leaf index, and so is the tree's exact (path-dependent
TreeSHAP) attribution for that record. :class:`LeafShap` computes, once per model, a small table per
tree: leaf index -> contribution of each feature. Explaining a batch is then one
``calc_leaf_indexes`` call (about the work of a prediction) plus a gather-and-add over those tables,
where ``get_feature_importance(type="ShapValues")`` walks every tree's paths again for every record
(measured 13-15x a bare prediction on the lead model). The same leaf indexes give the prediction
itself: the trees' leaf values added in model order, exactly as ``predict`` adds them.

The tables reproduce CatBoost's own ``ShapValues`` (``shap_calc_type="Regular"``) to rounding:

* a tree's players are *combination classes*: a float feature, or the categorical features whose
  values a one-hot split or a CTR reads (the binarised float parts and exact-value parts of a CTR's
  combination are not players); a class's share is split equally between its features;
* the expectation over a player left out follows the training cover (leaf weights) the way CatBoost
  nests it: the split stored last in a tree is the outermost one.

Anything this module does not model (non-symmetric trees, several dimensions, text or embedding
features, scaled outputs, trees deeper than :data:`MAX_DEPTH`) makes :meth:`LeafShap.from_catboost`
return None, and callers use CatBoost's ``ShapValues``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_DEPTH = 6
"""Deeper trees are left to CatBoost: a tree's table costs about 8**depth to build (depth 6 took
about 4 ms a tree, depth 8 about 70 ms)."""
INDEXES_PER_CHUNK = 1 << 22
"""Leaf indexes transposed at a time (rows x trees), to bound the working memory."""
WORK_PER_CHUNK = 1 << 22
"""Trees whose tables are built together are chunked to about this many intermediate cells."""
_SPLIT_TYPES = frozenset({"FloatFeature", "OneHotFeature", "OnlineCtr"})


@dataclass(frozen=True)
class TreeTable:
    """What one tree adds to each feature it can move, per leaf."""

    tree: int
    """Position of the tree in the model (column of ``calc_leaf_indexes``)."""
    features: tuple[int, ...]
    """Features the tree moves, ascending."""
    contributions: np.ndarray
    """(features, leaves): contribution of each of ``features`` for a record in each leaf."""


@dataclass(frozen=True)
class LeafShap:
    """Per-tree, per-leaf SHAP tables of one CatBoost model."""

    n_features: int
    leaf_values: tuple[np.ndarray, ...]
    """Every tree's leaf values, in model order."""
    bias: float
    """Added to the sum of the trees' values (CatBoost's ``scale_and_bias``, scale being 1)."""
    tables: tuple[TreeTable, ...]
    """Trees that move any feature, in model order (a feature's total is added tree by tree, in
    the order CatBoost adds it)."""

    @property
    def n_trees(self) -> int:
        """Trees in the model (columns of ``calc_leaf_indexes``)."""
        return len(self.leaf_values)

    @classmethod
    def from_catboost(cls, model: Any, n_features: int) -> LeafShap | None:
        """Tables for a fitted ``CatBoostClassifier``; None when this module cannot reproduce it.

        Args:
            model: the fitted CatBoost model.
            n_features: columns of the pools it will explain.
        """
        try:
            exported = _export_json(model)
        except Exception:  # an unexportable model is explained by CatBoost itself
            return None
        return cls.from_export(exported, n_features)

    @classmethod
    def from_export(cls, exported: dict[str, Any], n_features: int) -> LeafShap | None:
        """Tables from a model's JSON export (``save_model(format="json")``); None when unsupported."""
        trees = exported.get("oblivious_trees")
        info = exported.get("features_info") or {}
        scale, bias = (exported.get("scale_and_bias") or [1.0, [0.0]])[:2]
        if not trees or float(scale) != 1.0 or len(bias) != 1:
            return None
        if info.get("text_features") or info.get("embedding_features"):
            return None
        bins = _bin_classes(info)
        if bins is None:
            return None
        classes_by_tree = []
        for tree in trees:
            splits = tree.get("splits") or []
            leaves = 1 << len(splits)
            if len(splits) > MAX_DEPTH or len(tree.get("leaf_values") or []) != leaves:
                return None  # too deep, or several values per leaf (multiclass)
            if len(tree.get("leaf_weights") or []) != leaves:
                return None  # no training cover to take expectations over
            classes: list[tuple[int, ...]] = []
            for split in splits:
                found = _split_class(split, bins)
                if found is None or any(not 0 <= f < n_features for f in found):
                    return None
                classes.append(found)
            classes_by_tree.append(classes)
        by_tree: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        players_by_tree = []
        for index, classes in enumerate(classes_by_tree):
            players = list(dict.fromkeys(classes))
            players_by_tree.append(players)
            groups[(len(classes), len(players))].append(index)
        for (depth, n_players), members in groups.items():
            if not n_players:
                continue  # a tree without splits only shifts the expected value
            chunk = max(1, WORK_PER_CHUNK // ((1 << n_players) * (1 << depth) ** 2 * depth))
            phi = np.concatenate(
                [
                    _tree_shapley(
                        [trees[i] for i in part],
                        [[players_by_tree[i].index(c) for c in classes_by_tree[i]] for i in part],
                        depth,
                        n_players,
                    )
                    for part in (members[k : k + chunk] for k in range(0, len(members), chunk))
                ]
            )
            for row, tree_index in enumerate(members):
                moved = by_tree[tree_index]
                for player, flat_features in enumerate(players_by_tree[tree_index]):
                    # A class of several categorical features shares its value equally.
                    share = phi[row, :, player] / len(flat_features)
                    for feature in flat_features:
                        moved[feature] = moved[feature] + share if feature in moved else share
        tables = tuple(
            TreeTable(
                tree=index,
                features=tuple(sorted(by_tree[index])),
                contributions=np.stack([by_tree[index][f] for f in sorted(by_tree[index])]),
            )
            for index in sorted(by_tree)
        )
        return cls(
            n_features=n_features,
            leaf_values=tuple(np.asarray(t["leaf_values"], dtype=float) for t in trees),
            bias=float(bias[0]),
            tables=tables,
        )

    def evaluate(self, leaf_indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw predictions and SHAP values of the records whose ``calc_leaf_indexes`` are given.

        Returns:
            The log-odds (CatBoost's ``RawFormulaVal``: the trees' values added in model order,
            then the bias) and the SHAP values, rows x features, expected value left out.
        """
        leaves = np.asarray(leaf_indexes)
        if leaves.ndim != 2 or leaves.shape[1] != self.n_trees:
            raise ValueError(f"expected (rows, {self.n_trees}) leaf indexes, got {leaves.shape}")
        raw = np.zeros(len(leaves))
        # Features by rows, so that each tree adds one contiguous row per feature it moves.
        shap = np.zeros((self.n_features, len(leaves)))
        step = max(1024, INDEXES_PER_CHUNK // max(1, self.n_trees))
        for start in range(0, len(leaves), step):
            paths = np.ascontiguousarray(leaves[start : start + step].T, dtype=np.intp)
            # Leaf indexes are in range by construction; "wrap" skips take's bounds checks.
            total = raw[start : start + step]
            for values, path in zip(self.leaf_values, paths, strict=True):
                total += values.take(path, mode="wrap")
            block = shap[:, start : start + step]
            for table in self.tables:
                path = paths[table.tree]
                for feature, by_leaf in zip(table.features, table.contributions, strict=True):
                    block[feature] += by_leaf.take(path, mode="wrap")
        raw += self.bias
        return raw, shap.T


# --------------------------------------------------------------------------------------------------
# Building the tables


def _export_json(model: Any) -> dict[str, Any]:
    handle, path = tempfile.mkstemp(suffix=".json")
    os.close(handle)
    try:
        model.save_model(path, format="json")
        with open(path, encoding="utf-8") as stream:
            return dict(json.load(stream))
    finally:
        os.unlink(path)


@dataclass(frozen=True)
class _Bins:
    float_flat: dict[int, int]
    """Float feature index -> flat feature index."""
    cat_flat: dict[int, int]
    """Categorical feature index -> flat feature index."""
    ctr_classes: list[tuple[int, ...]]
    """Class of each binary feature from ``ctr_start`` on."""
    ctr_start: int


def _bin_classes(info: dict[str, Any]) -> _Bins | None:
    """Binary features in CatBoost's order (float borders, one-hot values, CTR borders)."""
    floats = info.get("float_features") or []
    cats = info.get("categorical_features") or []
    float_flat = {f["feature_index"]: f["flat_feature_index"] for f in floats}
    cat_flat = {c["feature_index"]: c["flat_feature_index"] for c in cats}
    start = sum(len(f.get("borders") or []) for f in floats)
    start += sum(len(c.get("values") or []) for c in cats)
    ctr_classes: list[tuple[int, ...]] = []
    for ctr in info.get("ctrs") or []:
        members = []
        for element in ctr.get("elements") or []:
            kind = element.get("combination_element", "")
            if kind == "cat_feature_value":
                if element.get("cat_feature_index") not in cat_flat:
                    return None
                members.append(cat_flat[element["cat_feature_index"]])
            elif kind not in {"float_feature", "cat_feature_exact_value"}:
                return None  # an element this module does not know how CatBoost credits
        if not members:
            return None
        ctr_classes += [tuple(members)] * len(ctr.get("borders") or [])
    return _Bins(float_flat, cat_flat, ctr_classes, start)


def _split_class(split: dict[str, Any], bins: _Bins) -> tuple[int, ...] | None:
    kind = split.get("split_type")
    if kind not in _SPLIT_TYPES:
        return None
    if kind == "FloatFeature":
        flat = bins.float_flat.get(split.get("float_feature_index", -1))
        return None if flat is None else (flat,)
    if kind == "OneHotFeature":
        flat = bins.cat_flat.get(split.get("cat_feature_index", -1))
        return None if flat is None else (flat,)
    position = int(split.get("split_index", -1)) - bins.ctr_start
    return bins.ctr_classes[position] if 0 <= position < len(bins.ctr_classes) else None


def _shapley_weights(n_players: int) -> np.ndarray:
    """(2**n, n): phi_i = sum over coalitions S of weights[S, i] * v(S)."""
    weights = np.zeros((1 << n_players, n_players))
    factorial = math.factorial
    for coalition in range(1 << n_players):
        size = bin(coalition).count("1")
        for player in range(n_players):
            if coalition >> player & 1:
                k = size - 1
                weights[coalition, player] = (
                    factorial(k) * factorial(n_players - k - 1) / factorial(n_players)
                )
            else:
                weights[coalition, player] = -(
                    factorial(size) * factorial(n_players - size - 1) / factorial(n_players)
                )
    return weights


def _tree_shapley(
    trees: list[dict[str, Any]], level_players: list[list[int]], depth: int, n_players: int
) -> np.ndarray:
    """(trees, leaves, players) exact Shapley values of same-shaped trees, for every leaf.

    The value of a coalition S for a record in leaf ``a`` is the tree's expectation when the splits
    of S's players follow ``a`` and the others branch by training cover, the split stored last
    being the outermost. That expectation weighs each leaf ``b`` agreeing with ``a`` on S's splits
    by the product, over the free splits, of cover(child)/cover(parent) along ``b``'s own path.
    """
    n_leaves = 1 << depth
    values = np.array([t["leaf_values"] for t in trees], dtype=float)
    weights = np.array([t["leaf_weights"] for t in trees], dtype=float)
    leaves = np.arange(n_leaves)
    bits = (leaves[:, None] >> np.arange(depth)[None, :]) & 1
    # cover[t, b, k]: training weight of the node at nesting step k on leaf b's path (step 0 is the
    # root, which splits on the last stored split); step k+1 decides bit depth-1-k.
    cover = np.stack(
        [
            weights.reshape(len(trees), 1 << step, n_leaves >> step).sum(axis=2)[
                :, leaves >> (depth - step)
            ]
            for step in range(depth + 1)
        ],
        axis=2,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        step_ratio = np.where(cover[:, :, :-1] > 0, cover[:, :, 1:] / cover[:, :, :-1], 0.0)
    level_ratio = step_ratio[:, :, ::-1]  # (trees, leaves, levels): ratio of the split at a level
    players = np.array(level_players, dtype=np.int64).reshape(len(trees), depth)
    coalitions = np.arange(1 << n_players)
    fixed = ((coalitions[None, :, None] >> players[:, None, :]) & 1).astype(bool)
    # reach[t, S, b]: cover product over S's free splits along b's path
    reach = np.prod(np.where(fixed[:, :, None, :], 1.0, level_ratio[:, None, :, :]), axis=3)
    same = bits[:, None, :] == bits[None, :, :]  # (a, b, levels)
    agree = np.all(same[None, None, :, :, :] | ~fixed[:, :, None, None, :], axis=4)
    coalition_value = np.einsum("tsab,tsb->tsa", agree, reach * values[:, None, :])
    return np.einsum("tsa,sp->tap", coalition_value, _shapley_weights(n_players))
