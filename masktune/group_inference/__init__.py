"""Group inference: each method writes one groups file (masktune/groups.py), a group id for every
train and val row, which any robust trainer (masktune/robust_train/, masktune/last_layer/) reads.

One module per method, imported by its own stages only (this package imports none of them, so editing
one method reruns only its stages): `labels` (the true groups, ✓, and the classes as groups), `jtt`
(JTT's error set: per class, misclassified or not), `exmap` (ExMap's clusters of LRP heatmaps, global and
per class; `clustering`: spectral + eigengap, UMAP + k-means), `clusterfix` (ClusterFix's k-means clusters
of backbone features). The diagnostic of each file against the true groups is
`masktune.eval.clusters.groups_report`.
"""
