"""Training and the registry: the pipeline's steps, evaluation and calibration, the compiled
scorer, the MLflow registry (aliases only), the three promotion gates and the training runs."""
