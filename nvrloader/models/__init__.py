"""Model zoo: every implicit video representation behind one registry.

Importing this package registers every model family (the imports below are for that side effect).
"""
from nvrloader.models import dnerv, enerv, hnerv, nerv, snerv  # noqa: F401  (registration)
from nvrloader.models.parts import weights_per_part
from nvrloader.models.registry import (count_model_params, count_params, create_model, list_models, model_class,
                                       model_config, model_family, register_model, solve_width)
from nvrloader.models.sizing import fit_budget, minimum_params

__all__ = ["count_model_params", "count_params", "create_model", "fit_budget", "list_models", "minimum_params",
           "model_class", "model_config", "model_family", "register_model", "solve_width", "weights_per_part"]
