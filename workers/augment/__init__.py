"""Augmenters (back-translation, masked-LM substitution, WordNet synonyms), quality filters and the planner.

Light modules (params, catalog, planner, textspans) import no ML stack, so the API can validate requests;
the augmenters import torch/transformers/nltk and are loaded by the worker only.
"""
