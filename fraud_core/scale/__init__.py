"""The heavy steps of the ML core on a dask.distributed cluster (when FRAUD_DASK_ADDRESS is set).

`cluster` connects and describes the cluster; `features` computes the card contract's behavioural
features per hash partition of the keys (exactly `fraud_core.cards.features.compute_features`);
`training` trains the classifier with `xgboost.dask` and fits and applies the anomaly feature in
parallel, returning the single-process path's result types (same bundle, same served format).

Only the Dagster code location's image installs dask: nothing outside this package imports it,
and this module imports none of its submodules, so `import fraud_core.scale` needs no dask.
"""
