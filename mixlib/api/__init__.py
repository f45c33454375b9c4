"""The Python API: scikit-learn-style estimators over the same fits as the jobs (:mod:`mixlib.fit`).

Numpy inputs are fitted in this process with the kernels a batch job runs inside a task; Dask arrays are fitted on
the current ``distributed`` client (or an embedded local cluster) with the tree reductions of the jobs. The names
users import are re-exported by :mod:`mixlib`.
"""
