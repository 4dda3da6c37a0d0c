"""The bundled multi-task trainer: config, data, model, losses, loop, metrics, ensembles."""
