"""Model zoo: every implicit video representation behind one registry.

Importing this package registers every model family (the imports below are for that side effect).
"""
from nvrloader.models import dnerv, enerv, hnerv, nerv, snerv  # noqa: F401  (registration)
from nvrloader.models.registry import (count_model_params, count_params, create_model, list_models, model_class,
                                       model_config, model_family, register_model, solve_width)

__all__ = ["count_model_params", "count_params", "create_model", "list_models", "model_class", "model_config",
           "model_family", "register_model", "solve_width"]
