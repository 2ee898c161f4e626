"""The synthetic source (``--source synthetic``, the default): a recommender data set with planted structure.

DATA.md §3. Everything is drawn from numpy ``Generator(PCG64(...))`` streams derived from ``config.seed``,
so the same seed and the same :class:`~recmtl.config.SyntheticConfig` give identical tables. The output
does not depend on ``chunk_interactions`` (a memory knob only), and each auxiliary table has its own
stream: changing ``social_signal`` changes only the social table, never the interactions.

Generative model (``C = categories`` clusters, ``d = factors`` dimensions):

1. **Latent factors.** ``C`` cluster centroids ``m_c`` are random unit vectors. Item ``i`` belongs to a
   uniformly drawn cluster ``k_i`` and has factors ``v_i = m_{k_i} + noise`` (noise norm ~0.5); user ``u``
   has a uniformly drawn home cluster ``g_u`` and ``x_u = m_{g_u} + noise``. A user's *dominant cluster* is
   ``argmax_c x_u . m_c`` (almost always ``g_u``).
2. **Popularity.** Item weights ``w_i = rank_i ** -popularity_exponent`` over a random ranking (Zipf-like;
   0 = uniform popularity).
3. **Activity.** User ``u`` gets ``n_u = clip(round(s * a_u), 1, items // 2)`` interactions with
   ``a_u ~ LogNormal(0, activity_sigma)`` and ``s`` chosen so that ``sum n_u`` is about ``interactions``:
   many cold users with 1-3 interactions and a few heavy ones (sigma 0 = everyone equally active).
4. **Interactions.** Each of a user's draws picks a cluster with
   ``P(c | u) ∝ W_c * exp(x_u . m_c / preference_temperature)`` (``W_c`` = the cluster's total popularity),
   then an item within the cluster with ``P(i | c) ∝ w_i`` (inverse CDF: ``searchsorted`` on per-cluster
   cumulative weights). Repeated (user, item) pairs are dropped and re-drawn, so pairs are unique.
   A low temperature concentrates users on their home cluster; a high one leaves only popularity.
   ``rating = clip(round(3 + 2 * x_u . v_i + rating_noise * N(0, 1)), 1, 5)`` (explicit, integer-valued
   Float32); ``ts`` is uniform between the user's (random) join time and the end of a 5-year window.
5. **Social** (``social_per_user * users`` directed edges, sources uniform): with probability
   ``social_signal`` the target is a uniformly random *other* user with the same dominant cluster
   (homophily), otherwise a uniformly random other user. 1 = every edge is homophilous, 0 = pure noise
   with the same sources and (before de-duplication) the same count.
6. **Item categories** (names ``c00``, ``c01``, ...; category ``c`` is cluster ``c``): an item gets
   ``categories_per_item`` labels; label ``j`` is, with probability ``category_signal``, the item's cluster
   (``j = 0``) or its ``j``-th nearest other centroid (``j >= 1``), otherwise a uniformly random category.
   1 = labels are the planted clusters, 0 = random labels. Duplicate labels of an item are merged.
7. **Co-view** (``coview_per_item * items`` ``also_viewed`` edges, sources uniform): with probability
   ``coview_signal`` the target is a uniformly random other item of the same cluster, otherwise a uniformly
   random other item. 1 = all within-cluster, 0 = pure noise.

Edges are de-duplicated, so social and co-view tables hold slightly fewer rows than requested when the
clusters are small. Raw ids are 0-based Int64 (users ``0..users-1``, items ``0..items-1``).

Scale: interactions are generated in fixed blocks of :data:`BLOCK_USERS` users, each with its own random
stream, processed in chunks of about ``chunk_interactions`` rows with vectorised numpy. 10 million
interactions (500k users, 200k items) take about 10-15 s on 2 cores with a peak RSS under 1 GB (the
interaction frame itself is 280 MB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from recmtl.config import PrepareConfig, SyntheticConfig
from recmtl.data.schema import RawTables
from recmtl.errors import ConfigError

#: Users per random-stream block of the interaction sampler (fixed so that output is chunk independent).
BLOCK_USERS = 1024
#: Norm (in expectation) of the noise added to the centroid for item and user factors.
ITEM_NOISE = 0.5
USER_NOISE = 0.5
#: rating = clip(round(RATING_CENTER + RATING_SCALE * affinity + noise), 1, 5)
RATING_CENTER = 3.0
RATING_SCALE = 2.0
#: Timestamps lie in [TS_START, TS_END): 2015-01-01 .. 2020-01-01 UTC.
TS_START = 1_420_070_400
TS_END = 1_577_836_800
#: Re-draw rounds for repeated (user, item) pairs before accepting a (tiny) shortfall.
MAX_ROUNDS = 12

# independent random streams: SeedSequence(seed, spawn_key=(stream, ...))
_LATENT, _ACTIVITY, _INTERACTIONS, _SOCIAL, _CATEGORY, _COVIEW = range(6)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int64 array (sort-based; faster than ``np.unique``'s hashing here)."""
    values = np.sort(values, axis=None)
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


# --------------------------------------------------------------------------------------------------
# validation


def validate(cfg: SyntheticConfig, seed: int = 0) -> None:
    """Raise :class:`ConfigError` naming the first invalid parameter of ``cfg`` (or ``seed``)."""

    def bad(name: str, value: object, want: str) -> ConfigError:
        return ConfigError(f"synthetic.{name} must be {want}, got {value!r}")

    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    for name, low in (
        ("users", 2),
        ("items", 2),
        ("interactions", 1),
        ("factors", 1),
        ("categories", 1),
        ("categories_per_item", 1),
        ("chunk_interactions", 1),
    ):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise bad(name, value, f"an integer >= {low}")
    for name in ("social_signal", "category_signal", "coview_signal"):
        value = getattr(cfg, name)
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise bad(name, value, "a number in [0, 1]")
    for name in (
        "social_per_user",
        "coview_per_item",
        "activity_sigma",
        "popularity_exponent",
        "rating_noise",
    ):
        value = getattr(cfg, name)
        if not _is_number(value) or not 0.0 <= value < math.inf:
            raise bad(name, value, "a finite number >= 0")
    if not _is_number(cfg.preference_temperature) or not 0.0 < cfg.preference_temperature < math.inf:
        raise bad("preference_temperature", cfg.preference_temperature, "a finite number > 0")
    if cfg.categories_per_item > cfg.categories:
        raise bad("categories_per_item", cfg.categories_per_item, f"at most categories={cfg.categories}")
    if cfg.interactions < cfg.users:
        raise bad(
            "interactions",
            cfg.interactions,
            f"at least users={cfg.users} (every user has at least one interaction)",
        )
    if cfg.interactions > cfg.users * _max_per_user(cfg.items):
        raise bad(
            "interactions",
            cfg.interactions,
            f"at most users * items // 2 = {cfg.users * _max_per_user(cfg.items)} (too dense)",
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _max_per_user(items: int) -> int:
    return max(1, items // 2)


# --------------------------------------------------------------------------------------------------
# latent structure


@dataclass(frozen=True)
class Latent:
    """The planted structure behind a synthetic data set (also what tests measure against).

    Shapes: U users, I items, C clusters (= categories), d factors.
    """

    centroids: np.ndarray  # [C, d] float32, unit rows
    item_factors: np.ndarray  # [I, d] float32
    item_cluster: np.ndarray  # [I] int64: planted cluster (= true category) of each item
    user_factors: np.ndarray  # [U, d] float32
    user_cluster: np.ndarray  # [U] int64: dominant cluster argmax_c x_u . m_c
    popularity: np.ndarray  # [I] float64: unnormalised item popularity weights
    activity: np.ndarray  # [U] int64: target number of interactions per user
    join_ts: np.ndarray  # [U] int64: earliest timestamp of each user


def latent(cfg: SyntheticConfig, seed: int) -> Latent:
    """Draw the latent factors, clusters, popularity and activity (validated first)."""
    validate(cfg, seed)
    rng = _rng(seed, _LATENT)
    n_c, dim = cfg.categories, cfg.factors
    centroids = rng.standard_normal((n_c, dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    centroids = centroids.astype(np.float32)
    scale = np.float32(1.0 / math.sqrt(dim))
    item_cluster = rng.integers(0, n_c, size=cfg.items)
    item_factors = rng.standard_normal((cfg.items, dim), dtype=np.float32)
    item_factors *= np.float32(ITEM_NOISE) * scale
    item_factors += centroids[item_cluster]
    home = rng.integers(0, n_c, size=cfg.users)
    user_factors = rng.standard_normal((cfg.users, dim), dtype=np.float32)
    user_factors *= np.float32(USER_NOISE) * scale
    user_factors += centroids[home]
    popularity = (rng.permutation(cfg.items) + 1.0) ** -float(cfg.popularity_exponent)

    act = _rng(seed, _ACTIVITY)
    weights = act.lognormal(0.0, float(cfg.activity_sigma), size=cfg.users)
    join = TS_START + np.floor(act.random(cfg.users) * (TS_END - TS_START) * 0.8).astype(np.int64)
    return Latent(
        centroids=centroids,
        item_factors=item_factors,
        item_cluster=item_cluster,
        user_factors=user_factors,
        user_cluster=nearest_centroid(user_factors, centroids),
        popularity=popularity,
        activity=activity_counts(weights, cfg.interactions, _max_per_user(cfg.items)),
        join_ts=join,
    )


def nearest_centroid(factors: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """``argmax_c factors[n] . centroids[c]`` for each row: [N, d], [C, d] -> [N] int64."""
    out = np.empty(len(factors), dtype=np.int64)
    for lo in range(0, len(factors), chunk):
        out[lo : lo + chunk] = np.argmax(factors[lo : lo + chunk] @ centroids.T, axis=1)
    return out


def activity_counts(weights: np.ndarray, total: int, cap: int) -> np.ndarray:
    """Per-user counts ``clip(round(s * weights), 1, cap)`` with the smallest ``s`` reaching ``total``.

    [U] float -> [U] int64. The sum is at least ``total`` (when reachable) and exceeds it only by rounding.
    """

    def counts(s: float) -> np.ndarray:
        return np.clip(np.rint(s * weights), 1, cap).astype(np.int64)

    lo, hi = 0.0, total / weights.sum()
    while counts(hi).sum() < total and hi < 1e300:
        lo, hi = hi, hi * 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if counts(mid).sum() >= total:
            hi = mid
        else:
            lo = mid
    return counts(hi)


# --------------------------------------------------------------------------------------------------
# sampling helpers (pure given their generator)


@dataclass(frozen=True)
class ClusterSampler:
    """Inverse-CDF sampling of an item within a cluster by popularity."""

    order: np.ndarray  # [I] item ids sorted by cluster
    cumulative: np.ndarray  # [I] cumulative popularity along ``order``
    base: np.ndarray  # [C] cumulative popularity before each cluster's segment
    mass: np.ndarray  # [C] total popularity of each cluster (W_c)
    first: np.ndarray  # [C] first index of each cluster's segment in ``order``
    last: np.ndarray  # [C] last index (first - 1 for an empty cluster)

    @classmethod
    def build(cls, item_cluster: np.ndarray, popularity: np.ndarray, n_clusters: int) -> ClusterSampler:
        order = np.argsort(item_cluster, kind="stable")
        cumulative = np.cumsum(popularity[order])
        mass = np.bincount(item_cluster, weights=popularity, minlength=n_clusters)
        sizes = np.bincount(item_cluster, minlength=n_clusters)
        first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        base = np.concatenate([[0.0], np.cumsum(mass)[:-1]])
        return cls(order, cumulative, base, mass, first, first + sizes - 1)

    def sample(self, cluster: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """Items drawn ``∝ popularity`` within ``cluster`` (non-empty) from uniforms in [0, 1): [N] -> [N]."""
        target = self.base[cluster] + uniform * self.mass[cluster]
        idx = np.searchsorted(self.cumulative, target, side="right")
        return self.order[np.clip(idx, self.first[cluster], self.last[cluster])]


def cluster_cdf(
    user_factors: np.ndarray, centroids: np.ndarray, log_mass: np.ndarray, temperature: float
) -> np.ndarray:
    """Row-wise CDF of ``P(c | u) ∝ W_c exp(x_u . m_c / T)``: [U, d] -> [U, C] float64, last column 1."""
    logits = (user_factors @ centroids.T).astype(np.float64) / temperature + log_mass
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    np.cumsum(logits, axis=1, out=logits)
    logits /= logits[:, -1:]
    logits[:, -1] = 1.0
    return logits


def sample_rows_clusters(cdf: np.ndarray, rows: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Cluster index for each draw: ``rows`` [N] index the rows of ``cdf`` [R, C]; ``uniform`` [N] in [0, 1).

    One ``searchsorted`` over the flattened, row-offset CDF (row r covers the interval [r, r + 1]).
    """
    n_rows, n_c = cdf.shape
    flat = (cdf + np.arange(n_rows, dtype=np.float64)[:, None]).ravel()
    idx = np.searchsorted(flat, rows + uniform, side="right")
    return np.clip(idx - rows * n_c, 0, n_c - 1)


def planted_edges(
    rng: np.random.Generator, groups: np.ndarray, n_edges: int, signal: float
) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges between ``N = len(groups)`` nodes with homophily ``signal``.

    Sources are uniform; with probability ``signal`` the target is a uniformly random other node of the
    source's group (when the group has one), otherwise a uniformly random other node. All random numbers
    are drawn regardless of ``signal``, so only the rewired edges differ between signal values.
    Returns (src, dst), de-duplicated and sorted, int64.
    """
    n = len(groups)
    order = np.argsort(groups, kind="stable")
    sizes = np.bincount(groups)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n) - first[groups[order]]

    src = rng.integers(0, n, size=n_edges)
    coin, u_same, u_any = rng.random((3, n_edges))
    g = groups[src]
    size = sizes[g]
    r = np.floor(u_same * (size - 1)).astype(np.int64)
    r += r >= position[src]
    same = order[np.minimum(first[g] + r, n - 1)]
    anyone = np.floor(u_any * (n - 1)).astype(np.int64)
    anyone += anyone >= src
    dst = np.where((coin < signal) & (size >= 2), same, anyone)
    keys = sorted_unique(src * n + dst)
    return keys // n, keys % n


def category_labels(
    rng: np.random.Generator, lat: Latent, per_item: int, signal: float, chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """(item, category) labels: planted (own cluster, then nearest other centroids) with prob ``signal``.

    Returns de-duplicated (item, category) int64 arrays sorted by item then category.
    """
    n_items, n_c = len(lat.item_cluster), len(lat.centroids)
    planted = np.empty((n_items, per_item), dtype=np.int64)
    planted[:, 0] = lat.item_cluster
    if per_item > 1:
        for lo in range(0, n_items, chunk):
            scores = lat.item_factors[lo : lo + chunk] @ lat.centroids.T
            scores[np.arange(len(scores)), lat.item_cluster[lo : lo + chunk]] = -np.inf
            top = np.argpartition(-scores, per_item - 2, axis=1)[:, : per_item - 1]
            rank = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
            planted[lo : lo + chunk, 1:] = np.take_along_axis(top, rank, axis=1)
    coin = rng.random((n_items, per_item))
    noise = rng.integers(0, n_c, size=(n_items, per_item))
    labels = np.where(coin < signal, planted, noise)
    keys = sorted_unique(np.arange(n_items)[:, None] * n_c + labels)
    return keys // n_c, keys % n_c


# --------------------------------------------------------------------------------------------------
# interactions


def _chunks(counts: np.ndarray, n_users: int, limit: int, n_c: int) -> list[tuple[int, int]]:
    """Group consecutive blocks into (first block, end block) chunks of about ``limit`` rows (and cells)."""
    n_blocks = -(-n_users // BLOCK_USERS)
    block_rows = np.add.reduceat(counts, np.arange(n_blocks) * BLOCK_USERS)
    out, start, rows = [], 0, 0
    for b in range(n_blocks):
        block_users = min(BLOCK_USERS, n_users - b * BLOCK_USERS)
        add = max(int(block_rows[b]), block_users * n_c)
        if b > start and rows + add > limit:
            out.append((start, b))
            start, rows = b, 0
        rows += add
    out.append((start, n_blocks))
    return out


def _block_uniforms(rngs: list[np.random.Generator], per_block: np.ndarray, width: int) -> np.ndarray:
    """Concatenated ``rngs[b].random((per_block[b], width))``: each block draws from its own stream."""
    return np.concatenate([rng.random((int(m), width)) for rng, m in zip(rngs, per_block, strict=True)])


def sample_interactions(cfg: SyntheticConfig, seed: int, lat: Latent) -> dict[str, np.ndarray]:
    """All interactions as numpy columns ``user``, ``item`` (int64), ``rating`` (float32), ``ts`` (int64).

    Sorted by (user, item); pairs unique. Deterministic given (seed, cfg minus chunk_interactions).
    """
    n_users, n_items, n_c = cfg.users, cfg.items, cfg.categories
    sampler = ClusterSampler.build(lat.item_cluster, lat.popularity, n_c)
    with np.errstate(divide="ignore"):
        log_mass = np.log(sampler.mass)
    n_blocks = -(-n_users // BLOCK_USERS)
    rngs = [_rng(seed, _INTERACTIONS, b) for b in range(n_blocks)]
    total = int(lat.activity.sum())
    out = {
        "user": np.empty(total, np.int64),
        "item": np.empty(total, np.int64),
        "rating": np.empty(total, np.float32),
        "ts": np.empty(total, np.int64),
    }
    filled = 0
    for b0, b1 in _chunks(lat.activity, n_users, cfg.chunk_interactions, n_c):
        u0, u1 = b0 * BLOCK_USERS, min(b1 * BLOCK_USERS, n_users)
        block_starts = np.arange(b0, b1) * BLOCK_USERS - u0
        cdf = cluster_cdf(lat.user_factors[u0:u1], lat.centroids, log_mass, cfg.preference_temperature)
        target = lat.activity[u0:u1]
        keys = np.empty(0, np.int64)
        deficit = target
        for _ in range(MAX_ROUNDS):
            per_block = np.add.reduceat(deficit, block_starts)
            if per_block.sum() == 0:
                break
            rows = np.repeat(np.arange(u1 - u0), deficit)
            uni = _block_uniforms(rngs[b0:b1], per_block, 2)
            cluster = sample_rows_clusters(cdf, rows, uni[:, 0])
            item = sampler.sample(cluster, uni[:, 1])
            new = sorted_unique((rows + u0) * n_items + item)
            if len(keys):
                pos = np.minimum(np.searchsorted(keys, new), len(keys) - 1)
                new = new[keys[pos] != new]
                keys = np.sort(np.concatenate([keys, new]), kind="stable")
            else:
                keys = new
            deficit = target - np.bincount(keys // n_items - u0, minlength=u1 - u0)
        user, item = keys // n_items, keys % n_items
        per_block = np.add.reduceat(np.bincount(user - u0, minlength=u1 - u0), block_starts)
        block_rngs = rngs[b0:b1]
        pairs = zip(block_rngs, per_block, strict=True)
        noise = np.concatenate([rng.standard_normal(int(m)) for rng, m in pairs])
        when = _block_uniforms(block_rngs, per_block, 1)[:, 0]
        affinity = np.einsum("nd,nd->n", lat.user_factors[user], lat.item_factors[item])
        rating = np.rint(RATING_CENTER + RATING_SCALE * affinity + cfg.rating_noise * noise)
        join = lat.join_ts[user]
        sl = slice(filled, filled + len(keys))
        out["user"][sl], out["item"][sl] = user, item
        out["rating"][sl] = np.clip(rating, 1.0, 5.0)
        out["ts"][sl] = join + np.floor(when * (TS_END - join)).astype(np.int64)
        filled += len(keys)
    return {name: col[:filled] for name, col in out.items()}


# --------------------------------------------------------------------------------------------------
# the reader


def category_name(index: int, n_categories: int) -> str:
    """Name of category ``index``: ``c07`` (zero-padded to at least two digits)."""
    return f"c{index:0{max(2, len(str(n_categories - 1)))}d}"


def generate(cfg: SyntheticConfig, seed: int) -> tuple[RawTables, Latent]:
    """The synthetic tables and the latent structure they were drawn from."""
    lat = latent(cfg, seed)
    cols = sample_interactions(cfg, seed, lat)
    interactions = pl.DataFrame(
        {
            "user": pl.Series(cols.pop("user"), dtype=pl.Int64),
            "item": pl.Series(cols.pop("item"), dtype=pl.Int64),
            "rating": pl.Series(cols.pop("rating"), dtype=pl.Float32),
            "ts": pl.Series(cols.pop("ts"), dtype=pl.Int64),
        }
    )

    social = None
    n_social = round(cfg.social_per_user * cfg.users)
    if n_social:
        src, dst = planted_edges(_rng(seed, _SOCIAL), lat.user_cluster, n_social, cfg.social_signal)
        social = pl.DataFrame({"src": src, "dst": dst}, schema={"src": pl.Int64, "dst": pl.Int64})

    item, cat = category_labels(_rng(seed, _CATEGORY), lat, cfg.categories_per_item, cfg.category_signal)
    names = pl.Series([category_name(c, cfg.categories) for c in range(cfg.categories)], dtype=pl.String)
    item_category = pl.DataFrame({"item": pl.Series(item, dtype=pl.Int64), "category": names.gather(cat)})

    item_item = None
    n_coview = round(cfg.coview_per_item * cfg.items)
    if n_coview:
        src, dst = planted_edges(_rng(seed, _COVIEW), lat.item_cluster, n_coview, cfg.coview_signal)
        item_item = pl.DataFrame({"src": src, "dst": dst}, schema={"src": pl.Int64, "dst": pl.Int64})
        item_item = item_item.with_columns(kind=pl.lit("also_viewed", dtype=pl.String))

    tables = RawTables(
        interactions=interactions,
        social=social,
        item_category=item_category,
        item_item=item_item,
        explicit=True,
    )
    return tables, lat


def read(config: PrepareConfig) -> RawTables:
    """``--source synthetic``: generate the tables from ``config.seed`` and ``config.synthetic``."""
    return generate(config.synthetic, config.seed)[0]
