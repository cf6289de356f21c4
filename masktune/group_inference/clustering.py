"""Clustering for group inference: spectral clustering with ExMap's eigengap choice of k, and UMAP to
2-D + k-means (ExMap's CelebA setting). Both seeded: the same data and seed give the same clusters.

Followed as rwchakra/exmap src/exmap/cluster.py and src/exmap/eigen.py:
- affinity: the k-nearest-neighbour connectivity graph, self included, symmetrised 0.5 (A + A^T), with
  k = floor(ln N), N the number of points clustered (cluster.py L10-24: what scikit-learn's
  `SpectralClustering(affinity="nearest_neighbors")` builds; built directly here, the official code
  runs a whole clustering with k = 2 to read it);
- eigengap (eigen.py L9-47, cluster.py L31): the 13 smallest eigenvalues of the symmetric normalised
  Laplacian (diagonal set to 1; the official code imports scikit-learn's private `_set_diag`), by
  scipy's LOBPCG from a seeded start whose first column is the square-root degree, as scikit-learn's
  `spectral_embedding`; k = argmax over k in 2..10 of lambda_k - lambda_(k-1);
- clustering: `SpectralClustering(affinity="precomputed", assign_labels="cluster_qr",
  eigen_solver="lobpcg")` on that affinity (cluster.py L33-47);
- UMAP + k-means (cluster.py L52-65): UMAP to 2-D with n_neighbors = floor(ln N) (other settings
  umap-learn's defaults), then `KMeans(k, n_init=10, max_iter=300, tol=1e-4)`. The official UMAP is
  unseeded (its clusters change from run to run); here `random_state` is the seed.
"""
from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

# Expected on k-nearest-neighbour graphs, and not a problem for the rules here: a graph in several
# components (its eigengap is what picks k), and LOBPCG on a matrix too small for its block (scipy
# then solves it densely).
QUIET = (r"Graph is not fully connected.*", r"The problem size .* too small relative to the block size.*")


@contextlib.contextmanager
def _expected_warnings_silenced():
    with warnings.catch_warnings():
        for message in QUIET:
            warnings.filterwarnings("ignore", message=message)
        yield


EIGENVALUES = 13            # eigen.py: botK = 12, 13 vectors
K_RANGE = (2, 10)           # cluster.py L31: np.diff(eigv)[1:10].argmax() + 2

CLUSTERINGS = ("spectral", "umap_kmeans")  # spectral + eigengap | UMAP 2-D + k-means (`cluster`)

def neighbours(n: int) -> int:
    """ExMap's k of the k-nearest-neighbour graph and of UMAP: floor(ln N), at least 2."""
    return max(2, int(math.log(n)))


def knn_affinity(x: np.ndarray):
    """The symmetrised k-nearest-neighbour connectivity (sparse N x N), k = floor(ln N), self included."""
    from sklearn.neighbors import kneighbors_graph

    connectivity = kneighbors_graph(x, n_neighbors=neighbours(len(x)), include_self=True)
    return 0.5 * (connectivity + connectivity.T)


def laplacian_eigenvalues(affinity, count: int = EIGENVALUES, seed: int = 0) -> np.ndarray:
    """The `count` smallest eigenvalues of the symmetric normalised Laplacian, ascending."""
    from scipy.sparse import csgraph
    from scipy.sparse.linalg import lobpcg

    laplacian, sqrt_degree = csgraph.laplacian(affinity, normed=True, return_diag=True)
    laplacian = laplacian.tolil()
    laplacian.setdiag(1.0)
    laplacian = laplacian.tocsr()
    count = min(count, laplacian.shape[0] - 1)
    start = np.random.RandomState(seed).standard_normal(size=(laplacian.shape[0], count))
    start[:, 0] = np.ravel(sqrt_degree)
    eigenvalues, _ = lobpcg(laplacian, start.astype(laplacian.dtype), tol=None, largest=False, maxiter=2000)
    return np.sort(eigenvalues)


def eigengap_k(eigenvalues: np.ndarray, k_range: tuple[int, int] = K_RANGE) -> int:
    """ExMap's number of clusters: the k in k_range after which the eigenvalues jump most,
    argmax_k (lambda_k - lambda_(k-1)) with 0-based ascending eigenvalues."""
    low, high = k_range
    gaps = np.diff(eigenvalues)[low - 1:high]  # gaps[i] = lambda_(low+i) - lambda_(low+i-1)
    return int(gaps.argmax()) + low


def spectral_clusters(x: np.ndarray, k: int | None, seed: int) -> tuple[np.ndarray, int]:
    """Cluster ids of the rows of x by spectral clustering on the kNN affinity; k None: eigengap."""
    from sklearn.cluster import SpectralClustering

    affinity = knn_affinity(x)
    if k is None:
        k = eigengap_k(laplacian_eigenvalues(affinity, seed=seed))
    if k == 1:
        return np.zeros(len(x), dtype=np.int64), 1
    model = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed, assign_labels="cluster_qr",
                               eigen_solver="lobpcg")
    return model.fit_predict(affinity).astype(np.int64), k


def umap_2d(x: np.ndarray, seed: int, exact_neighbours: bool = False) -> np.ndarray:
    """ExMap's 2-D UMAP of the rows of x (n_neighbors floor(ln N)), seeded.

    exact_neighbours: give UMAP the exact k-nearest-neighbour graph (scikit-learn's, what umap-learn
    itself computes below 4,096 points) instead of letting it run NN-descent. For figures: NN-descent's
    numba code compiles afresh in every process (about 30 s of a 35 s UMAP of 12,000 heatmaps here), the
    exact search of those 12,000 x 2,352 heatmaps about 8 s. The clustering keeps umap-learn's default,
    as the official code.
    """
    import warnings

    import umap  # ~10 s the first time (numba compiles): only where UMAP runs

    k = neighbours(len(x))
    knn = (None, None, None)  # umap-learn's default: it finds the neighbours
    if exact_neighbours and len(x) > k:
        from sklearn.neighbors import NearestNeighbors

        distances, ids = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
        knn = (ids, distances.astype(np.float32), None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        warnings.filterwarnings("ignore", message=".*precomputed_knn.*")
        reducer = umap.UMAP(n_components=2, n_neighbors=k, random_state=seed, precomputed_knn=knn)
        return reducer.fit_transform(x)


def umap_kmeans_clusters(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, int]:
    """Cluster ids by k-means (k clusters) on the 2-D UMAP of the rows of x."""
    from sklearn.cluster import KMeans

    embedded = umap_2d(x, seed)
    model = KMeans(n_clusters=k, n_init=10, max_iter=300, tol=1e-4, random_state=seed)
    return model.fit_predict(embedded).astype(np.int64), k


def cluster(x: np.ndarray, method: str, k: int | None, seed: int) -> tuple[np.ndarray, int]:
    """Cluster ids (0..k-1) of the rows of x and the k used. method: spectral | umap_kmeans."""
    if len(x) < 3:
        return np.zeros(len(x), dtype=np.int64), 1
    if method == "umap_kmeans" and k is None:
        raise ValueError("umap_kmeans needs a number of clusters (the eigengap rule is spectral's)")
    with _expected_warnings_silenced():
        return spectral_clusters(x, k, seed) if method == "spectral" else umap_kmeans_clusters(x, k, seed)
