"""The layer everything stands on: settings, the feature schema, the tables, the prediction log
(written and read), typing of datasets, the checks validation and quality share, synthetic data
and the drift injector."""
